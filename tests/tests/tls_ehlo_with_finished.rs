//! The TLS behaviour behind ec's EHLO after STARTTLS. An EHLO handed to
//! rustls before the handshake (`TlsConnector::connect_with`, as the
//! session driver does) leaves in the same write as the client's Finished
//! message. The server gets both at once, and the client saves a write.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ec_tests::pki::{TestCa, DEFAULT_NAMES};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, DuplexStream, ReadBuf};

const EHLO: &[u8] = b"EHLO client.ec.test\r\n";

/// The client's end of the stream, which records the size of every write.
struct CountingStream {
    inner: DuplexStream,
    writes: Arc<Mutex<Vec<usize>>>,
}

impl CountingStream {
    fn record(&self, written: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(len)) = written {
            self.writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(*len);
        }
    }
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs a TLS 1.3 handshake over an in-memory stream, with the EHLO handed
/// to rustls before it when `with_handshake` is set, or written after it
/// otherwise. Returns the client's writes up to the server's reading of
/// the EHLO line.
async fn client_writes(with_handshake: bool) -> Vec<usize> {
    let ca = TestCa::new().expect("test CA");
    let leaf = ca.leaf(&DEFAULT_NAMES).expect("test certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config().expect("server TLS"));
    let connector = tokio_rustls::TlsConnector::from(ca.client_config().expect("client TLS"));
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let stream = CountingStream {
        inner: client_end,
        writes: Arc::clone(&writes),
    };

    let server = tokio::spawn(async move {
        let tls = acceptor.accept(server_end).await.expect("server handshake");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        let mut line = Vec::new();
        BufReader::new(tls)
            .read_until(b'\n', &mut line)
            .await
            .expect("server read");
        line
    });

    let name = ServerName::try_from(DEFAULT_NAMES[0].to_owned()).expect("server name");
    let mut tls = connector
        .connect_with(name, stream, |connection| {
            if with_handshake {
                let queued = connection.writer().write(EHLO).expect("EHLO queued");
                assert_eq!(queued, EHLO.len());
            }
        })
        .await
        .expect("client handshake");
    if !with_handshake {
        tokio::io::AsyncWriteExt::write_all(&mut tls, EHLO)
            .await
            .expect("EHLO written");
        tokio::io::AsyncWriteExt::flush(&mut tls)
            .await
            .expect("EHLO flushed");
    }

    let line = server.await.expect("server task");
    assert_eq!(line, EHLO, "the server read the EHLO");
    let writes = writes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    writes
}

#[tokio::test]
async fn ehlo_leaves_with_client_finished() {
    // ClientHello, then the Finished with the EHLO record behind it.
    let writes = client_writes(true).await;
    assert_eq!(writes.len(), 2, "client writes: {writes:?}");
}

#[tokio::test]
async fn later_ehlo_costs_a_write() {
    // The comparison that shows the count above means something:
    // ClientHello, Finished, then the EHLO on its own.
    let writes = client_writes(false).await;
    assert_eq!(writes.len(), 3, "client writes: {writes:?}");
}
