//! A server that accepts connections and never sends a byte: the far end of
//! a connection storm, where every client must give up at its banner
//! timeout.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The listen backlog asked for; Linux caps it at `net.core.somaxconn`
/// (4096 by default), enough for a storm of a few thousand connects.
const BACKLOG: u32 = 4096;

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
    bytes: AtomicU64,
}

/// Accepts on 127.0.0.1, never writes a byte, and closes each connection
/// once the client has closed its side. Dropping it closes every connection
/// still open and joins its thread.
#[derive(Debug)]
pub struct SilentSink {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SilentSink {
    /// Starts the sink on an ephemeral port, on a thread of its own.
    ///
    /// # Errors
    ///
    /// When the runtime, the socket or the thread cannot be set up.
    pub fn start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            socket.listen(BACKLOG)?
        };
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel();
        let serving = serve(listener, Arc::clone(&counts), stopped);
        let thread = thread::Builder::new()
            .name(format!("silent-sink-{}", addr.port()))
            .spawn(move || runtime.block_on(serving))?;
        Ok(Self {
            addr,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Returns the address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now: accepted and not yet closed by the client.
    pub fn open(&self) -> u64 {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Maximum connections open at once. The sink notices a close a moment
    /// after the client makes it, so this can exceed the client's own count
    /// by the connections that were closing at that moment.
    pub fn max_open(&self) -> u64 {
        self.counts.max_open.load(Ordering::SeqCst)
    }

    /// Bytes clients sent; a client waiting for a banner sends none.
    pub fn bytes_received(&self) -> u64 {
        self.counts.bytes.load(Ordering::SeqCst)
    }

    /// Waits until at least `accepted` connections were accepted and none
    /// is open, or `timeout` passes; returns whether that happened.
    pub fn wait_all_closed(&self, accepted: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.accepted() >= accepted && self.open() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for SilentSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("silent sink thread panicked");
            }
        }
    }
}

async fn serve(listener: TcpListener, counts: Arc<Counts>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    counts.accepted.fetch_add(1, Ordering::SeqCst);
                    let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
                    counts.max_open.fetch_max(open, Ordering::SeqCst);
                    connections.spawn(hold(stream, Arc::clone(&counts)));
                }
                Err(error) => {
                    // EMFILE and the like clear once connections close.
                    tracing::warn!(%error, "silent sink failed to accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Reads (and drops) whatever arrives until the client closes, then closes.
async fn hold(mut stream: tokio::net::TcpStream, counts: Arc<Counts>) {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counts.bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    counts.open.fetch_sub(1, Ordering::SeqCst);
}
