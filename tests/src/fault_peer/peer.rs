//! The handle a test holds: start a peer, learn its address, read its records,
//! stop it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::record::{ConnectionRecord, Recorder};
use super::scenario::Scenario;
use super::server::serve;
use super::source::{ScenarioSource, Sequence};
use super::tally::{Retention, Tally};
use super::FaultPeerError;

/// A scripted SMTP server on 127.0.0.1 with a port of its own.
///
/// Dropping it stops accepting and ends every open connection, so no task or
/// thread outlives it. With [`FaultPeer::start`] the tasks end at their next poll.
/// With [`FaultPeer::start_on_thread`] they end before `drop` returns.
#[derive(Debug)]
pub struct FaultPeer {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    driver: Driver,
}

#[derive(Debug)]
enum Driver {
    /// The accept loop runs as a task on the caller's runtime.
    Task(Option<tokio::task::JoinHandle<()>>),
    /// The accept loop runs on a runtime of its own on this thread.
    Thread(Option<std::thread::JoinHandle<()>>),
}

impl FaultPeer {
    /// Starts a peer playing `scenario` on every connection, as tasks on the
    /// current tokio runtime (for `#[tokio::test]`).
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::Bind`] when no loopback port can be bound.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start(scenario: Scenario) -> Result<Self, FaultPeerError> {
        Self::start_sequence(vec![scenario]).await
    }

    /// Starts a peer playing `scenarios[n]` on the n-th connection (from 0) and the
    /// last scenario on every later one, as tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::NoScenario`] for an empty list, [`FaultPeerError::Bind`]
    /// when no loopback port can be bound.
    pub async fn start_sequence(scenarios: Vec<Scenario>) -> Result<Self, FaultPeerError> {
        Self::start_source(shared(scenarios)?, Retention::All).await
    }

    /// Starts a peer playing the scenarios `source` chooses, as tasks on the
    /// current tokio runtime, keeping what `retention` names of finished
    /// connections.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::Bind`] when no loopback port can be bound.
    pub async fn start_source(
        source: Arc<dyn ScenarioSource>,
        retention: Retention,
    ) -> Result<Self, FaultPeerError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(FaultPeerError::Bind)?;
        let addr = listener.local_addr().map_err(FaultPeerError::Bind)?;

        let recorder = Recorder::new(retention);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, source, Arc::clone(&recorder), stopped));
        Ok(Self {
            addr,
            recorder,
            stop: Some(stop),
            driver: Driver::Task(Some(task)),
        })
    }

    /// Starts a peer playing `scenario` on every connection on a thread with a
    /// tokio runtime of its own, for tests that are not async or whose client runs
    /// its own scheduler thread.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::Bind`] when no loopback port can be bound,
    /// [`FaultPeerError::Runtime`] when the runtime or thread cannot be started.
    pub fn start_on_thread(scenario: Scenario) -> Result<Self, FaultPeerError> {
        Self::start_sequence_on_thread(vec![scenario])
    }

    /// [`FaultPeer::start_sequence`] on a thread of its own.
    ///
    /// # Errors
    ///
    /// As [`FaultPeer::start_sequence`], and [`FaultPeerError::Runtime`] when the
    /// runtime or thread cannot be started.
    pub fn start_sequence_on_thread(scenarios: Vec<Scenario>) -> Result<Self, FaultPeerError> {
        Self::start_source_on_thread(shared(scenarios)?, Retention::All)
    }

    /// [`FaultPeer::start_source`] on a thread of its own.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::Bind`] when no loopback port can be bound,
    /// [`FaultPeerError::Runtime`] when the runtime or thread cannot be started.
    pub fn start_source_on_thread(
        source: Arc<dyn ScenarioSource>,
        retention: Retention,
    ) -> Result<Self, FaultPeerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FaultPeerError::Runtime)?;

        let std_listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(FaultPeerError::Bind)?;
        std_listener
            .set_nonblocking(true)
            .map_err(FaultPeerError::Bind)?;
        let addr = std_listener.local_addr().map_err(FaultPeerError::Bind)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener).map_err(FaultPeerError::Bind)?
        };

        let recorder = Recorder::new(retention);
        let (stop, stopped) = oneshot::channel();
        let serving = serve(listener, source, Arc::clone(&recorder), stopped);
        let thread = std::thread::Builder::new()
            .name(format!("fault-peer-{}", addr.port()))
            .spawn(move || runtime.block_on(serving))
            .map_err(FaultPeerError::Runtime)?;

        Ok(Self {
            addr,
            recorder,
            stop: Some(stop),
            driver: Driver::Thread(Some(thread)),
        })
    }

    /// The address the peer listens on (127.0.0.1, an ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The records of all connections accepted so far, open ones included, in the
    /// order of acceptance. Under [`Retention::Tally`], only the open ones.
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.recorder.snapshot()
    }

    /// Returns the totals over every finished connection, whatever the
    /// retention.
    pub fn tally(&self) -> Tally {
        self.recorder.tally()
    }

    /// Counts the connections the peer has accepted, and those of them that
    /// have finished.
    pub fn accepted_and_finished(&self) -> (usize, usize) {
        self.recorder.counts()
    }

    /// Waits until at least `count` connections have finished (the peer is done
    /// with them), then returns the records of all accepted connections.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::WaitTimedOut`] when fewer had finished after `timeout`.
    pub async fn wait_for_connections(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionRecord>, FaultPeerError> {
        self.recorder.wait_finished(count, timeout).await
    }

    /// [`FaultPeer::wait_for_connections`], blocking the calling thread. Use it with
    /// [`FaultPeer::start_on_thread`]; on a runtime thread that also runs the peer
    /// it would wait for itself.
    ///
    /// # Errors
    ///
    /// [`FaultPeerError::WaitTimedOut`] when fewer had finished after `timeout`.
    pub fn wait_for_connections_blocking(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<ConnectionRecord>, FaultPeerError> {
        self.recorder.wait_finished_blocking(count, timeout)
    }

    /// Stops the peer and waits until every connection is closed and every task
    /// has ended.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        match &mut self.driver {
            Driver::Task(task) => {
                if let Some(task) = task.take() {
                    if let Err(error) = task.await {
                        tracing::error!(%error, "fault peer accept loop failed");
                    }
                }
            }
            Driver::Thread(_) => self.join_thread(),
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An accept loop that is gone already needs no signal.
            let _ = stop.send(());
        }
    }

    fn join_thread(&mut self) {
        if let Driver::Thread(thread) = &mut self.driver {
            if let Some(thread) = thread.take() {
                if thread.join().is_err() {
                    tracing::error!("fault peer thread panicked");
                }
            }
        }
    }
}

impl Drop for FaultPeer {
    fn drop(&mut self) {
        self.signal_stop();
        self.join_thread();
    }
}

fn shared(scenarios: Vec<Scenario>) -> Result<Arc<dyn ScenarioSource>, FaultPeerError> {
    if scenarios.is_empty() {
        return Err(FaultPeerError::NoScenario);
    }
    let scenarios = scenarios.into_iter().map(Arc::new).collect();
    Ok(Arc::new(Sequence(scenarios)))
}
