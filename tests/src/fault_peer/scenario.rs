//! What a fault peer does on each connection, written as data.
//!
//! A [`Scenario`] defines what the peer sends as its banner, how it replies to each
//! command (by verb, with overrides for the n-th occurrence on a connection), what it
//! does while message data or `BDAT` chunks arrive, and when it goes idle. Every answer is a
//! [`Response`]: what to write, how long to wait first, and what to do after
//! ([`After`]). Unscripted commands get the answer of a plain, permissive server
//! (see [`Response::standard`]). The peer does not check command order, except
//! after a reply marked with [`Response::rejects_transaction`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::ServerConfig;

use super::capabilities::Capabilities;
use super::command::Verb;
use super::response::{Close, Occasion, Response};

/// A fault while message data arrives: once at least `after_bytes` bytes of a
/// message's data (end-of-data mark included) have arrived, close the way `close` names,
/// without replying to the data.
///
/// With `BDAT` (RFC 3030) the bytes counted are the octets of the message's chunks,
/// from its first chunk on. The peer takes no more than a chunk's size as its data,
/// so `after_bytes` equal to the size of a single `LAST` chunk closes once the whole
/// chunk arrived, before the reply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MidData {
    /// Data bytes to wait for; 0 closes right after the `354`, or right after the
    /// first `BDAT` line of a message.
    pub after_bytes: usize,
    /// How to close.
    pub close: Close,
}

/// How a message's data arrives: after `DATA`, or in `BDAT` chunks (RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transfer {
    /// Between the `354` to `DATA` and the end-of-data mark.
    Data,
    /// In the chunks that follow `BDAT` lines.
    Chunks,
}

/// A mid-data fault and the name it is counted under, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NamedMidData {
    fault: MidData,
    name: Option<&'static str>,
}

/// A per-connection script: a response for every occurrence, and responses for given
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
    mid_data: Script<NamedMidData>,
    mid_chunks: Script<NamedMidData>,
    pub(crate) idle: Option<(Duration, Response)>,
    pub(crate) connection_timeout: Duration,
    pub(crate) drain_timeout: Duration,
}

impl Scenario {
    /// A builder for a plain, well-behaved server, to add TLS and faults to.
    pub fn builder() -> ScenarioBuilder {
        ScenarioBuilder::default()
    }

    /// The response to the `occurrence`-th (1-based) command with `verb` on a connection.
    pub fn response_to(&self, verb: &Verb, occurrence: u32) -> Response {
        self.commands
            .get(verb)
            .and_then(|script| script.get(occurrence))
            .cloned()
            .unwrap_or_else(Response::standard)
    }

    /// The response to the end of the `message`-th (1-based) message's data sent
    /// with `DATA`. A `BDAT` chunk gets [`Scenario::response_to`] for [`Verb::Bdat`].
    pub fn response_to_end_of_data(&self, message: u32) -> Response {
        self.end_of_data
            .get(message)
            .cloned()
            .unwrap_or_else(Response::standard)
    }

    /// Returns the fault, if any, while the `message`-th (1-based) message's data
    /// arrives the way `transfer` names. Messages are counted in the order their data
    /// started on the connection, whichever way it came.
    pub fn mid_data(&self, message: u32, transfer: Transfer) -> Option<MidData> {
        self.mid_data_script(transfer)
            .get(message)
            .map(|named| named.fault)
    }

    /// Returns the fault name of the `message`-th message's mid-data fault for
    /// `transfer`, if it was set with [`ScenarioBuilder::mid_data_fault_nth`].
    pub fn mid_data_fault_name(&self, message: u32, transfer: Transfer) -> Option<&'static str> {
        self.mid_data_script(transfer)
            .get(message)
            .and_then(|named| named.name)
    }

    fn mid_data_script(&self, transfer: Transfer) -> &Script<NamedMidData> {
        match transfer {
            Transfer::Data => &self.mid_data,
            Transfer::Chunks => &self.mid_chunks,
        }
    }

    /// Returns whether the `EHLO` reply in force advertises CHUNKING, so that a
    /// `BDAT` line is followed by chunk data.
    pub fn offers_chunking(&self, tls_active: bool) -> bool {
        let capabilities = if tls_active {
            &self.capabilities_after_tls
        } else {
            &self.capabilities
        };
        capabilities.offers_chunking()
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
    chunking: bool,
    commands: HashMap<Verb, Script<Response>>,
    end_of_data: Script<Response>,
    mid_data: Script<NamedMidData>,
    mid_chunks: Script<NamedMidData>,
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
            chunking: false,
            commands: HashMap::new(),
            end_of_data: Script::default(),
            mid_data: Script::default(),
            mid_chunks: Script::default(),
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

    /// Advertises CHUNKING (RFC 3030) before and after TLS, on top of the
    /// capabilities set otherwise, so the peer reads the chunk after each `BDAT`
    /// line. A `BDAT` whose size is not a decimal number, or whose size is followed
    /// by anything but `LAST`, gets `501` and no chunk is read. Replies to the
    /// others come from the script for [`Verb::Bdat`]; unscripted, `250`. For
    /// CHUNKING on one side of TLS only, use [`Capabilities::chunking`] instead.
    #[must_use]
    pub fn chunking(mut self) -> Self {
        self.chunking = true;
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

    /// Replies with `response` to the end of every message's data sent with `DATA`.
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

    /// Applies `fault` while every message's data arrives, after `DATA` or in
    /// chunks (see [`MidData`] for `BDAT`).
    #[must_use]
    pub fn mid_data(mut self, fault: MidData) -> Self {
        let named = NamedMidData { fault, name: None };
        self.mid_data.set(None, named);
        self.mid_chunks.set(None, named);
        self
    }

    /// Applies `fault` while the `message`-th (1-based) message's data arrives,
    /// after `DATA` or in chunks.
    #[must_use]
    pub fn mid_data_nth(mut self, message: u32, fault: MidData) -> Self {
        let named = NamedMidData { fault, name: None };
        self.mid_data.set(Some(message), named);
        self.mid_chunks.set(Some(message), named);
        self
    }

    /// Applies `fault` while the `message`-th (1-based) message's data arrives
    /// the way `transfer` names, and records
    /// [`Event::FaultInjected`](super::Event::FaultInjected) with `name` when it
    /// strikes. A message whose data comes the other way meets no fault, so the
    /// name always says which way the data was cut.
    #[must_use]
    pub fn mid_data_fault_nth(
        mut self,
        message: u32,
        transfer: Transfer,
        fault: MidData,
        name: &'static str,
    ) -> Self {
        let named = NamedMidData {
            fault,
            name: Some(name),
        };
        match transfer {
            Transfer::Data => self.mid_data.set(Some(message), named),
            Transfer::Chunks => self.mid_chunks.set(Some(message), named),
        }
        self
    }

    /// When the peer has waited `after` for the next command, it answers with
    /// `response` once, as if a command had come (default: `421`, then close).
    #[must_use]
    pub fn idle(mut self, after: Duration, response: Response) -> Self {
        self.idle = Some((after, response));
        self
    }

    /// The maximum duration of a connection, after which the peer drops it.
    /// Default 30 s.
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

    /// The scenario.
    pub fn build(self) -> Scenario {
        let mut capabilities = self
            .capabilities
            .unwrap_or_else(|| Capabilities::new().starttls(self.tls.is_some()));
        let mut capabilities_after_tls = self
            .capabilities_after_tls
            .unwrap_or_else(|| capabilities.clone().starttls(false));
        if self.chunking {
            capabilities = capabilities.chunking(true);
            capabilities_after_tls = capabilities_after_tls.chunking(true);
        }
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
            mid_chunks: self.mid_chunks,
            idle: self.idle,
            connection_timeout: self.connection_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
}

impl Scenario {
    /// The reply [`Payload::Standard`] stands for on `occasion`, in a mail
    /// transaction or before one.
    pub(crate) fn standard_reply(&self, occasion: &Occasion, tls_active: bool) -> Bytes {
        let host = &self.hostname;
        let text = match occasion {
            Occasion::Banner => format!("220 {host} ESMTP ec fault peer"),
            Occasion::Idle => format!("421 4.4.2 {host} Error: timeout exceeded"),
            Occasion::EndOfData(n)
            | Occasion::Chunk {
                message: n,
                last: true,
                ..
            } => {
                format!("250 2.0.0 Ok: queued as FP{n}")
            }
            Occasion::Chunk { size, .. } => format!("250 2.0.0 Ok: {size} octets received"),
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

    /// Returns the reply [`Payload::Standard`] stands for on `occasion` while
    /// the session has no mail transaction (see
    /// [`Response::rejects_transaction`]), where it differs from
    /// [`Scenario::standard_reply`]. The texts are Postfix 3.7's.
    pub(crate) fn reply_without_transaction(occasion: &Occasion) -> Option<Bytes> {
        let text = match occasion {
            Occasion::Command(Verb::Rcpt) => "503 5.5.1 Error: need MAIL command\r\n",
            Occasion::Command(Verb::Data) | Occasion::Chunk { .. } => {
                "503 5.5.1 Error: need RCPT command\r\n"
            }
            _ => return None,
        };
        Some(Bytes::from_static(text.as_bytes()))
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
