//! What a fault peer does on each connection, written as data.
//!
//! A [`Scenario`] says what the peer sends as its banner, how it answers each
//! command (by verb, with overrides for the n-th occurrence on a connection), what it
//! does while message data arrives, and when it goes idle. Every answer is a
//! [`Response`]: what to write, how long to wait first, and what to do after
//! ([`After`]). Unscripted commands get the answer of a plain, permissive server
//! (see [`Response::standard`]); the peer does not check command order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rustls::ServerConfig;

use super::command::Verb;

/// What the peer writes in answer to something.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload {
    /// The reply the peer gives when nothing is scripted (see [`Response::standard`]).
    Standard,
    /// Nothing.
    Nothing,
    /// Exactly these bytes, in one write.
    Bytes(Bytes),
    /// `prefix`, then `unit` over and over, until `limit` bytes in all were written
    /// or a write fails (the client closed). For endless multi-line replies and lines
    /// that never end.
    Stream {
        /// Written first.
        prefix: Bytes,
        /// Repeated after the prefix; must not be empty.
        unit: Bytes,
        /// Total bytes to write, prefix included.
        limit: usize,
    },
}

/// How the peer closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Close {
    /// On TLS, send `close_notify`; then shut down the TCP write side (FIN) and read
    /// until the client closes or the drain timeout passes.
    Clean,
    /// Shut down the TCP write side (FIN) without `close_notify`, then read as
    /// `Clean` does. On a plain connection the same as `Clean`. A TLS client that
    /// still expects a reply sees a truncation attack.
    WithoutCloseNotify,
    /// Set `SO_LINGER` to zero and close the socket: the kernel sends a TCP RST and
    /// discards anything unsent.
    Reset,
}

/// What the peer does after writing a response's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum After {
    /// Read the next command (after a `354` to `DATA`: the message data).
    Continue,
    /// Never write again; record whatever arrives until the client closes.
    Silence,
    /// Close the connection.
    Close(Close),
    /// Start the TLS handshake as the server (after a `220` to `STARTTLS`).
    Handshake,
    /// Read the client's first TLS record, answer it with a fatal alert carrying
    /// this description code (RFC 8446 section 6), and close.
    RejectHandshake {
        /// The alert description, e.g. 40 for `handshake_failure`.
        alert: u8,
    },
}

/// One scripted answer: an optional delay, a payload and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    payload: Payload,
    delay: Duration,
    after: Option<After>,
}

impl Response {
    /// The peer's unscripted answer, as a plain server would give it: banner `220`,
    /// `HELO` `250`, `EHLO` the capabilities in force, `MAIL`/`RCPT`/`RSET`/`NOOP`
    /// `250`, `DATA` `354`, end of data `250`, `QUIT` `221`, `STARTTLS` `220` (or
    /// `454` without TLS, `503` inside TLS), `VRFY` `252`, anything else `502`, and
    /// `421` when the idle timer fires.
    pub fn standard() -> Self {
        Self::with(Payload::Standard)
    }

    /// A reply written as `text`, with CRLF appended unless it already ends in one;
    /// lines of a multi-line reply are separated by CRLF in `text`.
    pub fn reply(text: &str) -> Self {
        let mut bytes = BytesMut::from(text);
        if !text.ends_with("\r\n") {
            bytes.put_slice(b"\r\n");
        }
        Self::with(Payload::Bytes(bytes.freeze()))
    }

    /// Exactly these bytes, in one write: several replies, a reply and injected
    /// bytes, garbage, a line without its CRLF.
    pub fn raw(bytes: impl Into<Bytes>) -> Self {
        Self::with(Payload::Bytes(bytes.into()))
    }

    /// `prefix`, then `unit` repeated up to `limit` bytes in all (see
    /// [`Payload::Stream`]).
    ///
    /// # Panics
    ///
    /// When `unit` is empty.
    pub fn stream(prefix: impl Into<Bytes>, unit: impl Into<Bytes>, limit: usize) -> Self {
        let unit = unit.into();
        assert!(!unit.is_empty(), "a streamed reply needs a non-empty unit");
        Self::with(Payload::Stream {
            prefix: prefix.into(),
            unit,
            limit,
        })
    }

    /// No reply; then what a reply would have been followed by.
    pub fn nothing() -> Self {
        Self::with(Payload::Nothing)
    }

    /// No reply, and nothing ever again ([`After::Silence`]).
    pub fn silence() -> Self {
        Self::nothing().then(After::Silence)
    }

    /// No reply; close the connection as `how` says.
    pub fn close(how: Close) -> Self {
        Self::nothing().then(After::Close(how))
    }

    /// Waits `delay` before writing the payload, reading nothing meanwhile.
    #[must_use]
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Does `after` once the payload is written, instead of the natural follow-up
    /// (see [`Response::after`]).
    #[must_use]
    pub fn then(mut self, after: After) -> Self {
        self.after = Some(after);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The delay before the payload.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The follow-up set with [`Response::then`]. When unset, the peer closes
    /// cleanly after a payload starting with `421` or after anything to `QUIT`,
    /// starts the handshake after a payload starting with `220` to `STARTTLS`, and
    /// otherwise continues.
    pub fn after(&self) -> Option<After> {
        self.after
    }

    fn with(payload: Payload) -> Self {
        Self {
            payload,
            delay: Duration::ZERO,
            after: None,
        }
    }
}

/// A fault while message data arrives: once at least `after_bytes` bytes of a
/// message's data (end-of-data mark included) have arrived, close as `close` says,
/// without replying to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidData {
    /// Data bytes to wait for; 0 closes right after the `354`.
    pub after_bytes: usize,
    /// How to close.
    pub close: Close,
}

/// The ESMTP extensions an `EHLO` reply advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pipelining: bool,
    starttls: bool,
    size: Option<u64>,
    extra: Vec<String>,
}

impl Capabilities {
    /// PIPELINING, 8BITMIME and ENHANCEDSTATUSCODES; no STARTTLS, no SIZE.
    pub fn new() -> Self {
        Self {
            pipelining: true,
            starttls: false,
            size: None,
            extra: vec!["8BITMIME".into(), "ENHANCEDSTATUSCODES".into()],
        }
    }

    /// Whether to advertise PIPELINING (RFC 2920).
    #[must_use]
    pub fn pipelining(mut self, on: bool) -> Self {
        self.pipelining = on;
        self
    }

    /// Whether to advertise STARTTLS (RFC 3207), whether or not the peer can do TLS.
    #[must_use]
    pub fn starttls(mut self, on: bool) -> Self {
        self.starttls = on;
        self
    }

    /// The SIZE (RFC 1870) to advertise in bytes, or none.
    #[must_use]
    pub fn size(mut self, limit: Option<u64>) -> Self {
        self.size = limit;
        self
    }

    /// Advertises one more EHLO keyword line, e.g. `SMTPUTF8` or `AUTH PLAIN`.
    #[must_use]
    pub fn extension(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Drops every extension added with [`Capabilities::extension`] or by default.
    #[must_use]
    pub fn without_extras(mut self) -> Self {
        self.extra.clear();
        self
    }

    /// The keyword lines, in the order the `EHLO` reply lists them.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.pipelining {
            lines.push("PIPELINING".to_owned());
        }
        if let Some(size) = self.size {
            lines.push(format!("SIZE {size}"));
        }
        lines.extend(self.extra.iter().cloned());
        if self.starttls {
            lines.push("STARTTLS".to_owned());
        }
        lines
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}

/// A per-connection script: an answer for every occurrence, and answers for given
/// occurrences (1-based) that take precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script<T> {
    every: Option<T>,
    nth: BTreeMap<u32, T>,
}

impl<T> Default for Script<T> {
    fn default() -> Self {
        Self {
            every: None,
            nth: BTreeMap::new(),
        }
    }
}

impl<T> Script<T> {
    fn get(&self, occurrence: u32) -> Option<&T> {
        self.nth.get(&occurrence).or(self.every.as_ref())
    }

    fn set(&mut self, occurrence: Option<u32>, value: T) {
        match occurrence {
            Some(n) => {
                self.nth.insert(n, value);
            }
            None => self.every = Some(value),
        }
    }
}

/// Everything a fault peer does on one connection. Build it with
/// [`Scenario::builder`]; [`Scenario::default`] is a plain, well-behaved server
/// without TLS.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub(crate) hostname: String,
    pub(crate) banner: Response,
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) implicit_tls: bool,
    pub(crate) capabilities: Capabilities,
    pub(crate) capabilities_after_tls: Capabilities,
    commands: HashMap<Verb, Script<Response>>,
    end_of_data: Script<Response>,
    mid_data: Script<MidData>,
    pub(crate) idle: Option<(Duration, Response)>,
    pub(crate) connection_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

impl Scenario {
    /// A builder for a plain, well-behaved server, to add TLS and faults to.
    pub fn builder() -> ScenarioBuilder {
        ScenarioBuilder::default()
    }

    /// The answer to the `occurrence`-th (1-based) command with `verb` on a connection.
    pub fn response_to(&self, verb: &Verb, occurrence: u32) -> Response {
        self.commands
            .get(verb)
            .and_then(|script| script.get(occurrence))
            .cloned()
            .unwrap_or_else(Response::standard)
    }

    /// The answer to the end of the `message`-th (1-based) message's data.
    pub fn response_to_end_of_data(&self, message: u32) -> Response {
        self.end_of_data
            .get(message)
            .cloned()
            .unwrap_or_else(Response::standard)
    }

    /// The fault, if any, while the `message`-th (1-based) message's data arrives.
    pub fn mid_data(&self, message: u32) -> Option<MidData> {
        self.mid_data.get(message).copied()
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::builder().build()
    }
}

/// Builds a [`Scenario`]. Later calls for the same command and occurrence replace
/// earlier ones.
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    hostname: String,
    banner: Response,
    tls: Option<Arc<ServerConfig>>,
    implicit_tls: bool,
    capabilities: Option<Capabilities>,
    capabilities_after_tls: Option<Capabilities>,
    commands: HashMap<Verb, Script<Response>>,
    end_of_data: Script<Response>,
    mid_data: Script<MidData>,
    idle: Option<(Duration, Response)>,
    connection_timeout: Duration,
    drain_timeout: Duration,
}

impl Default for ScenarioBuilder {
    fn default() -> Self {
        Self {
            hostname: "fault-peer.ec.test".to_owned(),
            banner: Response::standard(),
            tls: None,
            implicit_tls: false,
            capabilities: None,
            capabilities_after_tls: None,
            commands: HashMap::new(),
            end_of_data: Script::default(),
            mid_data: Script::default(),
            idle: None,
            connection_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(2),
        }
    }
}

impl ScenarioBuilder {
    /// The name the peer gives in its banner and `EHLO` reply.
    #[must_use]
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_owned();
        self
    }

    /// The banner: e.g. `Response::reply("421 4.3.2 busy")` for a 421 at the banner
    /// (the peer then closes), or a delayed banner.
    #[must_use]
    pub fn banner(mut self, response: Response) -> Self {
        self.banner = response;
        self
    }

    /// Lets the peer do TLS with this configuration (see `pki::TestCert::server_config`)
    /// and, unless capabilities are set explicitly, advertise STARTTLS.
    #[must_use]
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Starts the TLS handshake right after accepting, before the banner (implicit
    /// TLS, RFC 8314). Needs [`ScenarioBuilder::tls`].
    #[must_use]
    pub fn implicit_tls(mut self) -> Self {
        self.implicit_tls = true;
        self
    }

    /// The extensions advertised before TLS. Default: [`Capabilities::new`], with
    /// STARTTLS when TLS is configured.
    #[must_use]
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// The extensions advertised after TLS, e.g. fewer than before to test a
    /// downgrade. Default: those before TLS, without STARTTLS.
    #[must_use]
    pub fn capabilities_after_tls(mut self, capabilities: Capabilities) -> Self {
        self.capabilities_after_tls = Some(capabilities);
        self
    }

    /// Answers every `verb` command with `response`.
    #[must_use]
    pub fn on(mut self, verb: Verb, response: Response) -> Self {
        self.commands.entry(verb).or_default().set(None, response);
        self
    }

    /// Answers the `occurrence`-th (1-based, per connection) `verb` command with
    /// `response`.
    #[must_use]
    pub fn on_nth(mut self, verb: Verb, occurrence: u32, response: Response) -> Self {
        self.commands
            .entry(verb)
            .or_default()
            .set(Some(occurrence), response);
        self
    }

    /// Answers the end of every message's data with `response`.
    #[must_use]
    pub fn on_end_of_data(mut self, response: Response) -> Self {
        self.end_of_data.set(None, response);
        self
    }

    /// Answers the end of the `message`-th (1-based, per connection) message's data
    /// with `response`.
    #[must_use]
    pub fn on_end_of_data_nth(mut self, message: u32, response: Response) -> Self {
        self.end_of_data.set(Some(message), response);
        self
    }

    /// Applies `fault` while every message's data arrives.
    #[must_use]
    pub fn mid_data(mut self, fault: MidData) -> Self {
        self.mid_data.set(None, fault);
        self
    }

    /// Applies `fault` while the `message`-th (1-based) message's data arrives.
    #[must_use]
    pub fn mid_data_nth(mut self, message: u32, fault: MidData) -> Self {
        self.mid_data.set(Some(message), fault);
        self
    }

    /// When the peer has waited `after` for the next command, it answers with
    /// `response` once, as if a command had come (default: `421`, then close).
    #[must_use]
    pub fn idle(mut self, after: Duration, response: Response) -> Self {
        self.idle = Some((after, response));
        self
    }

    /// The longest a connection may last; then the peer drops it. Default 30 s.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long the peer reads after closing its side, to see how the client
    /// closes. Default 2 s.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

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

    /// The scenario.
    pub fn build(self) -> Scenario {
        let capabilities = self
            .capabilities
            .unwrap_or_else(|| Capabilities::new().starttls(self.tls.is_some()));
        let capabilities_after_tls = self
            .capabilities_after_tls
            .unwrap_or_else(|| capabilities.clone().starttls(false));
        Scenario {
            hostname: self.hostname,
            banner: self.banner,
            tls: self.tls,
            implicit_tls: self.implicit_tls,
            capabilities,
            capabilities_after_tls,
            commands: self.commands,
            end_of_data: self.end_of_data,
            mid_data: self.mid_data,
            idle: self.idle,
            connection_timeout: self.connection_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
}

/// What the peer is answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Occasion {
    Banner,
    Command(Verb),
    EndOfData(u32),
    Idle,
}

impl Scenario {
    /// The reply [`Payload::Standard`] stands for on `occasion`.
    pub(crate) fn standard_reply(&self, occasion: &Occasion, tls_active: bool) -> Bytes {
        let host = &self.hostname;
        let text = match occasion {
            Occasion::Banner => format!("220 {host} ESMTP ec fault peer"),
            Occasion::Idle => format!("421 4.4.2 {host} Error: timeout exceeded"),
            Occasion::EndOfData(n) => format!("250 2.0.0 Ok: queued as FP{n}"),
            Occasion::Command(verb) => match verb {
                Verb::Helo => format!("250 {host}"),
                Verb::Ehlo => return self.ehlo_reply(tls_active),
                Verb::Mail => "250 2.1.0 Ok".to_owned(),
                Verb::Rcpt => "250 2.1.5 Ok".to_owned(),
                Verb::Data => "354 End data with <CR><LF>.<CR><LF>".to_owned(),
                Verb::Rset | Verb::Noop => "250 2.0.0 Ok".to_owned(),
                Verb::Quit => "221 2.0.0 Bye".to_owned(),
                Verb::StartTls if tls_active => "503 5.5.1 TLS already active".to_owned(),
                Verb::StartTls if self.tls.is_some() => "220 2.0.0 Ready to start TLS".to_owned(),
                Verb::StartTls => "454 4.7.0 TLS not available".to_owned(),
                Verb::Vrfy => "252 2.0.0 Cannot VRFY user".to_owned(),
                _ => "502 5.5.2 Error: command not recognized".to_owned(),
            },
        };
        Bytes::from(text + "\r\n")
    }

    fn ehlo_reply(&self, tls_active: bool) -> Bytes {
        let capabilities = if tls_active {
            &self.capabilities_after_tls
        } else {
            &self.capabilities
        };
        let mut lines = vec![self.hostname.clone()];
        lines.extend(capabilities.lines());

        let mut reply = String::new();
        for (i, line) in lines.iter().enumerate() {
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            reply.push_str(&format!("250{separator}{line}\r\n"));
        }
        Bytes::from(reply)
    }
}

impl Response {
    /// What follows this response once `written` (the payload, or its prefix for a
    /// stream) went out on `occasion`.
    pub(crate) fn resolved_after(&self, occasion: &Occasion, written: &[u8]) -> After {
        if let Some(after) = self.after {
            return after;
        }
        if written.starts_with(b"421") {
            return After::Close(Close::Clean);
        }
        match occasion {
            Occasion::Command(Verb::Quit) => After::Close(Close::Clean),
            Occasion::Command(Verb::StartTls) if written.starts_with(b"220") => After::Handshake,
            _ => After::Continue,
        }
    }
}
