//! Named faults: shortcuts for the scripts the selftests and ec's fault tests use
//! most, each saying what goes over the wire.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::command::Verb;
use super::response::{After, Close, Response};
use super::scenario::{MidData, ScenarioBuilder};

impl ScenarioBuilder {
    /// Fault: no reply to `QUIT`; the connection stays open until the client closes.
    #[must_use]
    pub fn silence_after_quit(self) -> Self {
        self.on(Verb::Quit, Response::silence())
    }

    /// Fault: the peer closes on `QUIT` without sending `221`.
    #[must_use]
    pub fn close_without_221(self) -> Self {
        self.on(Verb::Quit, Response::close(Close::Clean))
    }

    /// Fault: `221` to `QUIT`, then a TCP close without TLS `close_notify`.
    #[must_use]
    pub fn quit_without_close_notify(self) -> Self {
        self.on(
            Verb::Quit,
            Response::reply("221 2.0.0 Bye").then(After::Close(Close::WithoutCloseNotify)),
        )
    }

    /// Fault: no reply to `verb`; a TCP close without TLS `close_notify` while the
    /// client waits for the reply (a truncation on TLS).
    #[must_use]
    pub fn truncate_at(self, verb: Verb) -> Self {
        self.on(verb, Response::close(Close::WithoutCloseNotify))
    }

    /// Fault: `421` to every `verb` command, then a clean close.
    #[must_use]
    pub fn reply_421_at(self, verb: Verb) -> Self {
        self.on(
            verb,
            Response::reply("421 4.3.2 Service shutting down, closing transmission channel"),
        )
    }

    /// Fault: `421` as the banner, then a clean close.
    #[must_use]
    pub fn banner_421(self) -> Self {
        self.banner(Response::reply("421 4.3.2 Service not available"))
    }

    /// Fault: a spontaneous `421` and a clean close once a connection was idle for
    /// `after`.
    #[must_use]
    pub fn idle_421_after(self, after: Duration) -> Self {
        self.idle(after, Response::standard())
    }

    /// Fault: the standard reply to every `verb` command, `delay` late.
    #[must_use]
    pub fn delay_reply(self, verb: Verb, delay: Duration) -> Self {
        self.on(verb, Response::standard().delayed(delay))
    }

    /// Fault: TCP reset once `after_bytes` bytes of each message's data arrived.
    #[must_use]
    pub fn reset_mid_data(self, after_bytes: usize) -> Self {
        self.mid_data(MidData {
            after_bytes,
            close: Close::Reset,
        })
    }

    /// Fault: no reply to the end of data; the connection stays open until the
    /// client closes.
    #[must_use]
    pub fn no_reply_to_dot(self) -> Self {
        self.on_end_of_data(Response::silence())
    }

    /// Fault: `502` to `EHLO`, so a client falls back to `HELO`.
    #[must_use]
    pub fn reject_ehlo(self) -> Self {
        self.on(
            Verb::Ehlo,
            Response::reply("502 5.5.2 EHLO not implemented"),
        )
    }

    /// Fault: `220` to `STARTTLS`, then no handshake and no byte more.
    #[must_use]
    pub fn starttls_then_silence(self) -> Self {
        self.on(
            Verb::StartTls,
            Response::reply("220 2.0.0 Ready to start TLS").then(After::Silence),
        )
    }

    /// Fault: `220` to `STARTTLS` followed by `injected` in the same write (e.g.
    /// `250 fake\r\n`, or `tls::FAKE_SERVER_HELLO`), then the handshake.
    #[must_use]
    pub fn starttls_with_injection(self, injected: &[u8]) -> Self {
        let mut bytes = BytesMut::from(&b"220 2.0.0 Ready to start TLS\r\n"[..]);
        bytes.put_slice(injected);
        self.on(
            Verb::StartTls,
            Response::raw(bytes.freeze()).then(After::Handshake),
        )
    }

    /// Fault: `220` to `STARTTLS`, then a fatal TLS alert with description `alert`
    /// instead of a ServerHello.
    #[must_use]
    pub fn starttls_alert(self, alert: u8) -> Self {
        self.on(
            Verb::StartTls,
            Response::reply("220 2.0.0 Ready to start TLS").then(After::RejectHandshake { alert }),
        )
    }
}
