//! The randomized fault mode: each connection's scenario is drawn from a
//! seed and the connection's number, so a soak run meets every fault in
//! many combinations, and a run can be replayed.
//!
//! A connection gets no fault, one, or two, each a [`Fault`] at a random
//! occurrence of its command (the 2nd `RCPT`, the 3rd message's final dot,
//! ...). About half the connections offer CHUNKING (RFC 3030), and only those
//! draw the faults around `BDAT` chunks as well. The others draw exactly what
//! they drew before chunking was added. A seed replays a schedule only under
//! the same list of faults: each fault added to [`Fault::ALL`] changes the
//! draws. Every fault response is named, so the peer's
//! [`Tally`](super::Tally) counts the faults a client actually met: a fault
//! scripted for the third message of a connection that carried two never
//! happens.
//!
//! Replaying a seed gives the n-th accepted connection the same scenario. The
//! client's timing decides which connection carries which message, so a
//! replay repeats the fault schedule, not the exact interleaving.
//!
//! ```
//! use ec_tests::fault_peer::{Chaos, Fault, ScenarioSource};
//!
//! let chaos = Chaos::new(42).fault_share(1.0);
//! let plan = chaos.plan(7);
//! assert!(!plan.faults.is_empty());
//! assert_eq!(plan, Chaos::new(42).fault_share(1.0).plan(7), "same seed, same plan");
//! let _scenario = chaos.scenario(7);
//! assert_eq!(Fault::from_name("rcpt_451"), Some(Fault::Rcpt451));
//! ```

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use super::capabilities::Capabilities;
use super::command::Verb;
use super::response::{After, Close, Response};
use super::scenario::{MidData, Scenario, ScenarioBuilder, Transfer};
use super::source::ScenarioSource;

/// The TLS alert a [`Fault::StartTlsAlert`] sends: `handshake_failure`.
const HANDSHAKE_FAILURE: u8 = 40;

/// Maximum data bytes a [`Fault::MidDataReset`], [`Fault::MidChunkReset`] or
/// [`Fault::MidChunkClose`] waits for before it closes: fewer than most soak
/// messages hold, so the close usually strikes before the final dot or the
/// chunk's last octet.
const MID_DATA_MAX_BYTES: u64 = 32;

/// Mixed into the seed for the CHUNKING draw (the ASCII of "CHUNKING"). That
/// draw comes from a generator of its own, so adding it left every other draw
/// of a connection as it was.
const CHUNKING_STREAM: u64 = 0x4348_554E_4B49_4E47;

/// One fault of the chaos mode. Command faults strike at one occurrence of
/// their command on a connection; the others strike once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// TCP reset right after the accept, before any banner.
    BannerDrop,
    /// `421` as the banner, then a clean close.
    Banner421,
    /// No banner at all: the client's banner timeout must end it.
    BannerStall,
    /// `421` to `EHLO`, then a clean close.
    Ehlo421,
    /// `502` to `EHLO`, so the client falls back to `HELO`.
    Ehlo502,
    /// A spontaneous `421` and a clean close once the connection has been
    /// idle for the idle delay.
    Idle421,
    /// `421` to the n-th `MAIL`, then a clean close.
    Mail421,
    /// `451` to the n-th `MAIL`, and `503` to the rest of its pipelined
    /// group, as for [`Fault::Mail550`].
    Mail451,
    /// `550` to the n-th `MAIL`. The rest of its pipelined group gets `503`,
    /// as a real server without a transaction replies: to each `RCPT`, and to
    /// `DATA` or to `BDAT` once its chunk arrived.
    Mail550,
    /// No reply to the n-th `MAIL`; a clean TCP close instead.
    MailDrop,
    /// `451` to the n-th `RCPT`.
    Rcpt451,
    /// `550` to the n-th `RCPT`.
    Rcpt550,
    /// No reply to the n-th `RCPT`, and no byte more: the RCPT timeout ends it.
    RcptStall,
    /// `451` to the n-th `DATA`.
    Data451,
    /// `554` to the n-th `DATA`.
    Data554,
    /// TCP reset after up to 32 bytes of the n-th message's data.
    MidDataReset,
    /// `451` to the n-th message's final dot.
    Dot451,
    /// `554` to the n-th message's final dot.
    Dot554,
    /// `421` to the n-th message's final dot, then a clean close.
    Dot421,
    /// No reply to the n-th final dot: delivery unknown after the timeout.
    DotStall,
    /// A clean close instead of a reply to the n-th final dot.
    DotDrop,
    /// `421` to the n-th `RSET`, then a clean close.
    Rset421,
    /// No reply to `QUIT`; the client's QUIT timeout ends the wait.
    QuitStall,
    /// `221` to `QUIT`, late but within the client's QUIT timeout.
    QuitDelay,
    /// A clean close instead of `221`.
    QuitDrop,
    /// TLS only: `221`, then a TCP close without `close_notify`.
    QuitNoCloseNotify,
    /// TLS only: a TCP close without `close_notify` instead of a reply to
    /// the n-th `MAIL` (a truncation).
    MailTruncate,
    /// TLS only: a TCP close without `close_notify` instead of a reply to
    /// the n-th final dot.
    DotTruncate,
    /// CHUNKING only: `451` to the n-th `BDAT`, once its chunk arrived.
    Bdat451,
    /// CHUNKING only: `554` to the n-th `BDAT`, once its chunk arrived.
    Bdat554,
    /// CHUNKING only: `421` to the n-th `BDAT`, once its chunk arrived, then a
    /// clean close.
    Bdat421,
    /// CHUNKING only: TCP reset after up to 32 octets of the n-th message's
    /// chunks.
    MidChunkReset,
    /// CHUNKING only: a clean close after up to 32 octets of the n-th
    /// message's chunks, without a reply.
    MidChunkClose,
    /// CHUNKING only: TCP reset once the n-th `BDAT`'s chunk arrived, instead
    /// of a reply.
    BdatReset,
    /// CHUNKING only: a clean close once the n-th `BDAT`'s chunk arrived,
    /// instead of a reply.
    BdatDrop,
    /// CHUNKING only: no reply to the n-th `BDAT` once its chunk arrived:
    /// delivery unknown after the timeout.
    BdatStall,
    /// CHUNKING and TLS only: a TCP close without `close_notify` instead of a
    /// reply to the n-th `BDAT`.
    BdatTruncate,
    /// TLS only: `220` to `STARTTLS`, then a fatal `handshake_failure` alert.
    StartTlsAlert,
}

impl Fault {
    /// Every fault, in the order of a session.
    pub const ALL: [Fault; 38] = [
        Self::BannerDrop,
        Self::Banner421,
        Self::BannerStall,
        Self::Ehlo421,
        Self::Ehlo502,
        Self::StartTlsAlert,
        Self::Idle421,
        Self::Rset421,
        Self::Mail421,
        Self::Mail451,
        Self::Mail550,
        Self::MailDrop,
        Self::MailTruncate,
        Self::Rcpt451,
        Self::Rcpt550,
        Self::RcptStall,
        Self::Data451,
        Self::Data554,
        Self::MidDataReset,
        Self::Dot451,
        Self::Dot554,
        Self::Dot421,
        Self::DotStall,
        Self::DotDrop,
        Self::DotTruncate,
        Self::Bdat451,
        Self::Bdat554,
        Self::Bdat421,
        Self::MidChunkReset,
        Self::MidChunkClose,
        Self::BdatReset,
        Self::BdatDrop,
        Self::BdatStall,
        Self::BdatTruncate,
        Self::QuitStall,
        Self::QuitDelay,
        Self::QuitDrop,
        Self::QuitNoCloseNotify,
    ];

    /// Returns the snake-case name the tally counts it under, and that fault replies
    /// carry in their text (`451 4.3.0 chaos rcpt_451`).
    pub fn name(self) -> &'static str {
        match self {
            Self::BannerDrop => "banner_drop",
            Self::Banner421 => "banner_421",
            Self::BannerStall => "banner_stall",
            Self::Ehlo421 => "ehlo_421",
            Self::Ehlo502 => "ehlo_502",
            Self::Idle421 => "idle_421",
            Self::Mail421 => "mail_421",
            Self::Mail451 => "mail_451",
            Self::Mail550 => "mail_550",
            Self::MailDrop => "mail_drop",
            Self::Rcpt451 => "rcpt_451",
            Self::Rcpt550 => "rcpt_550",
            Self::RcptStall => "rcpt_stall",
            Self::Data451 => "data_451",
            Self::Data554 => "data_554",
            Self::MidDataReset => "mid_data_reset",
            Self::Dot451 => "dot_451",
            Self::Dot554 => "dot_554",
            Self::Dot421 => "dot_421",
            Self::DotStall => "dot_stall",
            Self::DotDrop => "dot_drop",
            Self::Rset421 => "rset_421",
            Self::QuitStall => "quit_stall",
            Self::QuitDelay => "quit_delay",
            Self::QuitDrop => "quit_drop",
            Self::QuitNoCloseNotify => "quit_no_close_notify",
            Self::MailTruncate => "mail_truncate",
            Self::DotTruncate => "dot_truncate",
            Self::StartTlsAlert => "starttls_alert",
            Self::Bdat451 => "bdat_451",
            Self::Bdat554 => "bdat_554",
            Self::Bdat421 => "bdat_421",
            Self::MidChunkReset => "mid_chunk_reset",
            Self::MidChunkClose => "mid_chunk_close",
            Self::BdatReset => "bdat_reset",
            Self::BdatDrop => "bdat_drop",
            Self::BdatStall => "bdat_stall",
            Self::BdatTruncate => "bdat_truncate",
        }
    }

    /// Finds the fault named `name` by [`Fault::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|fault| fault.name() == name)
    }

    /// Describes what the peer does, in a few words, for reports.
    pub fn description(self) -> &'static str {
        match self {
            Self::BannerDrop => "TCP reset instead of the banner",
            Self::Banner421 => "421 as the banner",
            Self::BannerStall => "no banner",
            Self::Ehlo421 => "421 to EHLO",
            Self::Ehlo502 => "502 to EHLO (HELO fallback)",
            Self::Idle421 => "421 after the connection idled",
            Self::Mail421 => "421 to MAIL",
            Self::Mail451 => "451 to MAIL, 503 to the rest of the group",
            Self::Mail550 => "550 to MAIL, 503 to the rest of the group",
            Self::MailDrop => "close instead of a MAIL reply",
            Self::Rcpt451 => "451 to RCPT",
            Self::Rcpt550 => "550 to RCPT",
            Self::RcptStall => "no reply to RCPT",
            Self::Data451 => "451 to DATA",
            Self::Data554 => "554 to DATA",
            Self::MidDataReset => "TCP reset mid-DATA",
            Self::Dot451 => "451 to the final dot",
            Self::Dot554 => "554 to the final dot",
            Self::Dot421 => "421 to the final dot",
            Self::DotStall => "no reply to the final dot",
            Self::DotDrop => "close instead of a reply to the final dot",
            Self::Rset421 => "421 to RSET",
            Self::QuitStall => "no reply to QUIT",
            Self::QuitDelay => "221 to QUIT, late",
            Self::QuitDrop => "close instead of 221",
            Self::QuitNoCloseNotify => "221, then TLS closed without close_notify",
            Self::MailTruncate => "TLS closed without close_notify at MAIL",
            Self::DotTruncate => "TLS closed without close_notify at the final dot",
            Self::StartTlsAlert => "TLS alert instead of a handshake",
            Self::Bdat451 => "451 to BDAT",
            Self::Bdat554 => "554 to BDAT",
            Self::Bdat421 => "421 to BDAT",
            Self::MidChunkReset => "TCP reset mid-chunk",
            Self::MidChunkClose => "close mid-chunk, no reply",
            Self::BdatReset => "TCP reset instead of a reply to BDAT",
            Self::BdatDrop => "close instead of a reply to BDAT",
            Self::BdatStall => "no reply to BDAT",
            Self::BdatTruncate => "TLS closed without close_notify at BDAT",
        }
    }

    /// Whether the fault only makes sense on a connection that does TLS.
    pub fn needs_tls(self) -> bool {
        matches!(
            self,
            Self::QuitNoCloseNotify
                | Self::MailTruncate
                | Self::DotTruncate
                | Self::StartTlsAlert
                | Self::BdatTruncate
        )
    }

    /// Returns whether the fault strikes only at `BDAT` chunks, and so is
    /// drawn only on a connection that offers CHUNKING.
    pub fn needs_chunking(self) -> bool {
        matches!(
            self,
            Self::Bdat451
                | Self::Bdat554
                | Self::Bdat421
                | Self::MidChunkReset
                | Self::MidChunkClose
                | Self::BdatReset
                | Self::BdatDrop
                | Self::BdatStall
                | Self::BdatTruncate
        )
    }

    /// Whether the fault strikes at the n-th occurrence of a command or
    /// message, rather than once per connection.
    pub fn is_per_command(self) -> bool {
        matches!(
            self,
            Self::Mail421
                | Self::Mail451
                | Self::Mail550
                | Self::MailDrop
                | Self::MailTruncate
                | Self::Rcpt451
                | Self::Rcpt550
                | Self::RcptStall
                | Self::Data451
                | Self::Data554
                | Self::MidDataReset
                | Self::Dot451
                | Self::Dot554
                | Self::Dot421
                | Self::DotStall
                | Self::DotDrop
                | Self::DotTruncate
                | Self::Rset421
                | Self::Bdat451
                | Self::Bdat554
                | Self::Bdat421
                | Self::MidChunkReset
                | Self::MidChunkClose
                | Self::BdatReset
                | Self::BdatDrop
                | Self::BdatStall
                | Self::BdatTruncate
        )
    }
}

/// What the chaos mode chose for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whether the peer offers STARTTLS.
    pub tls: bool,
    /// Whether the peer advertises PIPELINING.
    pub pipelining: bool,
    /// Whether the peer advertises CHUNKING, before and after TLS.
    pub chunking: bool,
    /// The faults, each with its occurrence (1-based; 1 for once-per-connection
    /// faults) and, for the mid-data and mid-chunk faults, the data bytes
    /// before the close in `bytes`.
    pub faults: Vec<PlannedFault>,
}

/// One fault of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedFault {
    /// The fault.
    pub fault: Fault,
    /// The occurrence of its command it strikes at (1-based).
    pub occurrence: u32,
    /// Data bytes to wait for, for a mid-data fault.
    pub bytes: usize,
}

/// The randomized fault mode: a [`ScenarioSource`] that draws each
/// connection's faults from a seed.
#[derive(Debug, Clone)]
pub struct Chaos {
    seed: u64,
    fault_share: f64,
    second_fault_share: f64,
    tls: Option<Arc<ServerConfig>>,
    tls_share: f64,
    no_pipelining_share: f64,
    chunking_share: f64,
    max_occurrence: u32,
    quit_delay: Duration,
    idle_after: Duration,
    faults: Vec<Fault>,
}

impl Chaos {
    /// Creates chaos from `seed`. 30% of connections get a fault, and a
    /// quarter of those a second one. 10% do without PIPELINING, and half
    /// offer CHUNKING. Command faults strike at one of the first 3
    /// occurrences. No connection offers TLS until [`Chaos::tls`] is given.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            fault_share: 0.3,
            second_fault_share: 0.25,
            tls: None,
            tls_share: 0.25,
            no_pipelining_share: 0.1,
            chunking_share: 0.5,
            max_occurrence: 3,
            quit_delay: Duration::from_millis(100),
            idle_after: Duration::from_millis(200),
            faults: Fault::ALL.to_vec(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sets the share of connections (0 to 1) that get at least one fault.
    #[must_use]
    pub fn fault_share(mut self, share: f64) -> Self {
        self.fault_share = share;
        self
    }

    /// Lets the peer offer STARTTLS with `config` on a share of connections
    /// (default 25%), which also enables the TLS-only faults there.
    #[must_use]
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets the share of connections (0 to 1) that offer STARTTLS, when TLS
    /// is configured.
    #[must_use]
    pub fn tls_share(mut self, share: f64) -> Self {
        self.tls_share = share;
        self
    }

    /// Sets the share of connections (0 to 1) that offer CHUNKING, which also
    /// enables the faults around `BDAT` chunks there. A client that sends no
    /// `BDAT` meets none of them. Default 50%.
    #[must_use]
    pub fn chunking_share(mut self, share: f64) -> Self {
        self.chunking_share = share;
        self
    }

    /// Command faults strike at a uniformly drawn occurrence from 1 to `max`.
    #[must_use]
    pub fn max_occurrence(mut self, max: u32) -> Self {
        self.max_occurrence = max.max(1);
        self
    }

    /// Sets how late [`Fault::QuitDelay`] sends its `221`. Keep it below the
    /// client's QUIT timeout. Default 100 ms.
    #[must_use]
    pub fn quit_delay(mut self, delay: Duration) -> Self {
        self.quit_delay = delay;
        self
    }

    /// Sets how long a connection idles before [`Fault::Idle421`]. Default
    /// 200 ms.
    #[must_use]
    pub fn idle_after(mut self, after: Duration) -> Self {
        self.idle_after = after;
        self
    }

    /// Draws only from `faults`.
    #[must_use]
    pub fn only(mut self, faults: &[Fault]) -> Self {
        self.faults = faults.to_vec();
        self
    }

    /// Draws the choices for the `connection`-th connection (from 0).
    pub fn plan(&self, connection: usize) -> Plan {
        let mut rng = SplitMix64::for_connection(self.seed, connection);
        let tls = self.tls.is_some() && rng.chance(self.tls_share);
        let pipelining = !rng.chance(self.no_pipelining_share);
        let chunking = SplitMix64::for_connection(self.seed ^ CHUNKING_STREAM, connection)
            .chance(self.chunking_share);

        let usable: Vec<Fault> = self
            .faults
            .iter()
            .copied()
            .filter(|fault| tls || !fault.needs_tls())
            .filter(|fault| chunking || !fault.needs_chunking())
            .collect();
        let mut faults = Vec::new();
        if !usable.is_empty() && rng.chance(self.fault_share) {
            let count = if rng.chance(self.second_fault_share) {
                2
            } else {
                1
            };
            for _ in 0..count {
                let fault = usable[rng.below(usable.len() as u64) as usize];
                let occurrence = if fault.is_per_command() {
                    1 + rng.below(u64::from(self.max_occurrence)) as u32
                } else {
                    1
                };
                let bytes = rng.below(MID_DATA_MAX_BYTES + 1) as usize;
                faults.push(PlannedFault {
                    fault,
                    occurrence,
                    bytes,
                });
            }
        }
        Plan {
            tls,
            pipelining,
            chunking,
            faults,
        }
    }

    /// Builds the scenario of the `connection`-th connection (from 0).
    pub fn scenario(&self, connection: usize) -> Scenario {
        let plan = self.plan(connection);
        let mut builder = Scenario::builder().capabilities(
            Capabilities::new()
                .pipelining(plan.pipelining)
                .chunking(plan.chunking)
                .starttls(plan.tls),
        );
        if plan.tls {
            if let Some(config) = &self.tls {
                builder = builder.tls(Arc::clone(config));
            }
        }
        for planned in &plan.faults {
            builder = self.apply(builder, *planned);
        }
        builder.build()
    }

    fn apply(&self, builder: ScenarioBuilder, planned: PlannedFault) -> ScenarioBuilder {
        let PlannedFault {
            fault,
            occurrence: n,
            bytes,
        } = planned;
        let name = fault.name();
        let reply = |code: &str| Response::reply(&format!("{code} chaos {name}")).fault(name);
        let close = |how: Close| Response::close(how).fault(name);
        let silence = || Response::silence().fault(name);
        match fault {
            Fault::BannerDrop => builder.banner(close(Close::Reset)),
            Fault::Banner421 => builder.banner(reply("421 4.3.2")),
            Fault::BannerStall => builder.banner(silence()),
            Fault::Ehlo421 => builder.on_nth(Verb::Ehlo, 1, reply("421 4.3.2")),
            Fault::Ehlo502 => builder.on_nth(Verb::Ehlo, 1, reply("502 5.5.2")),
            Fault::Idle421 => builder.idle(self.idle_after, Response::standard().fault(name)),
            Fault::Mail421 => builder.on_nth(Verb::Mail, n, reply("421 4.3.2")),
            Fault::Mail451 => {
                builder.on_nth(Verb::Mail, n, reply("451 4.3.0").rejects_transaction())
            }
            Fault::Mail550 => {
                builder.on_nth(Verb::Mail, n, reply("550 5.7.1").rejects_transaction())
            }
            Fault::MailDrop => builder.on_nth(Verb::Mail, n, close(Close::Clean)),
            Fault::MailTruncate => builder.on_nth(Verb::Mail, n, close(Close::WithoutCloseNotify)),
            Fault::Rcpt451 => builder.on_nth(Verb::Rcpt, n, reply("451 4.3.0")),
            Fault::Rcpt550 => builder.on_nth(Verb::Rcpt, n, reply("550 5.1.1")),
            Fault::RcptStall => builder.on_nth(Verb::Rcpt, n, silence()),
            Fault::Data451 => builder.on_nth(Verb::Data, n, reply("451 4.3.0")),
            Fault::Data554 => builder.on_nth(Verb::Data, n, reply("554 5.6.0")),
            Fault::MidDataReset => builder.mid_data_fault_nth(
                n,
                Transfer::Data,
                MidData {
                    after_bytes: bytes,
                    close: Close::Reset,
                },
                name,
            ),
            Fault::Dot451 => builder.on_end_of_data_nth(n, reply("451 4.3.0")),
            Fault::Dot554 => builder.on_end_of_data_nth(n, reply("554 5.6.0")),
            Fault::Dot421 => builder.on_end_of_data_nth(n, reply("421 4.3.2")),
            Fault::DotStall => builder.on_end_of_data_nth(n, silence()),
            Fault::DotDrop => builder.on_end_of_data_nth(n, close(Close::Clean)),
            Fault::DotTruncate => builder.on_end_of_data_nth(n, close(Close::WithoutCloseNotify)),
            Fault::Bdat451 => builder.on_nth(Verb::Bdat, n, reply("451 4.3.0")),
            Fault::Bdat554 => builder.on_nth(Verb::Bdat, n, reply("554 5.6.0")),
            Fault::Bdat421 => builder.on_nth(Verb::Bdat, n, reply("421 4.3.2")),
            Fault::MidChunkReset | Fault::MidChunkClose => {
                let close = if fault == Fault::MidChunkReset {
                    Close::Reset
                } else {
                    Close::Clean
                };
                let mid_chunk = MidData {
                    after_bytes: bytes,
                    close,
                };
                builder.mid_data_fault_nth(n, Transfer::Chunks, mid_chunk, name)
            }
            Fault::BdatReset => builder.on_nth(Verb::Bdat, n, close(Close::Reset)),
            Fault::BdatDrop => builder.on_nth(Verb::Bdat, n, close(Close::Clean)),
            Fault::BdatStall => builder.on_nth(Verb::Bdat, n, silence()),
            Fault::BdatTruncate => builder.on_nth(Verb::Bdat, n, close(Close::WithoutCloseNotify)),
            Fault::Rset421 => builder.on_nth(Verb::Rset, n, reply("421 4.3.2")),
            Fault::QuitStall => builder.on(Verb::Quit, silence()),
            Fault::QuitDelay => builder.on(
                Verb::Quit,
                Response::standard().delayed(self.quit_delay).fault(name),
            ),
            Fault::QuitDrop => builder.on(Verb::Quit, close(Close::Clean)),
            Fault::QuitNoCloseNotify => builder.on(
                Verb::Quit,
                Response::reply("221 2.0.0 chaos quit_no_close_notify")
                    .then(After::Close(Close::WithoutCloseNotify))
                    .fault(name),
            ),
            Fault::StartTlsAlert => builder.on(
                Verb::StartTls,
                Response::reply("220 2.0.0 Ready to start TLS")
                    .then(After::RejectHandshake {
                        alert: HANDSHAKE_FAILURE,
                    })
                    .fault(name),
            ),
        }
    }
}

impl ScenarioSource for Chaos {
    fn scenario(&self, connection: usize) -> Arc<Scenario> {
        Arc::new(Chaos::scenario(self, connection))
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast generator whose
/// output depends only on its seed, which is all a replayable fault schedule
/// needs.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn for_connection(seed: u64, connection: usize) -> Self {
        let mut mixer = Self(seed ^ (connection as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let start = mixer.next_u64();
        Self(start)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a number below `n` (`n` > 0). The modulo bias is below 2^-40
    /// for the small `n` used here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Returns true with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConnectionRecord, Event, FaultPeer};
    use super::*;

    #[test]
    fn every_fault_name_round_trips() {
        for fault in Fault::ALL {
            assert_eq!(Fault::from_name(fault.name()), Some(fault));
        }
    }

    #[test]
    fn shares_are_roughly_kept() {
        let chaos = Chaos::new(7);
        let plans: Vec<Plan> = (0..10_000).map(|n| chaos.plan(n)).collect();
        let faulty = plans.iter().filter(|plan| !plan.faults.is_empty()).count();
        assert!((2_700..3_300).contains(&faulty), "{faulty} of 10000");
        let chunking = plans.iter().filter(|plan| plan.chunking).count();
        assert!((4_700..5_300).contains(&chunking), "{chunking} of 10000");
    }

    #[test]
    fn chunking_share_is_kept_at_its_ends() {
        let never = Chaos::new(11).chunking_share(0.0);
        let always = Chaos::new(11).chunking_share(1.0);
        assert!((0..1_000).all(|n| !never.plan(n).chunking));
        assert!((0..1_000).all(|n| always.plan(n).chunking));
    }

    /// The CHUNKING choice has a generator of its own: a connection that does
    /// not offer CHUNKING gets the plan it got before chunking existed, and one
    /// that does keeps its other choices and its number of faults.
    #[test]
    fn chunking_draw_leaves_the_other_draws_alone() {
        for seed in [0, 5, 1_796_454_561_814_156_370] {
            let chaos = Chaos::new(seed).fault_share(0.6);
            let without = Chaos::new(seed).fault_share(0.6).chunking_share(0.0);
            for n in 0..3_000 {
                let plan = chaos.plan(n);
                let before = without.plan(n);
                if plan.chunking {
                    assert_eq!(plan.tls, before.tls);
                    assert_eq!(plan.pipelining, before.pipelining);
                    assert_eq!(plan.faults.len(), before.faults.len());
                } else {
                    assert_eq!(plan, before, "seed {seed}, connection {n}");
                }
            }
        }
    }

    #[test]
    fn chunk_faults_need_chunking() {
        let chaos = Chaos::new(3).fault_share(1.0);
        let mut drawn = std::collections::BTreeSet::new();
        for n in 0..4_000 {
            let plan = chaos.plan(n);
            for planned in &plan.faults {
                if planned.fault.needs_chunking() {
                    assert!(plan.chunking, "{plan:?}");
                    drawn.insert(planned.fault);
                }
            }
        }
        let expected: std::collections::BTreeSet<Fault> = Fault::ALL
            .into_iter()
            .filter(|fault| fault.needs_chunking() && !fault.needs_tls())
            .collect();
        assert_eq!(drawn, expected, "every plain-text chunk fault is drawn");
    }

    #[test]
    fn scenario_offers_chunking_as_planned() {
        let chaos = Chaos::new(9);
        let (mut offered, mut withheld) = (0, 0);
        for n in 0..200 {
            let plan = chaos.plan(n);
            let scenario = chaos.scenario(n);
            assert_eq!(scenario.offers_chunking(false), plan.chunking, "{plan:?}");
            assert_eq!(scenario.offers_chunking(true), plan.chunking, "{plan:?}");
            if plan.chunking {
                offered += 1;
            } else {
                withheld += 1;
            }
        }
        assert!(
            offered > 0 && withheld > 0,
            "{offered} offered, {withheld} not"
        );
    }

    #[test]
    fn tls_faults_need_tls() {
        let chaos = Chaos::new(1).fault_share(1.0);
        for n in 0..2_000 {
            let plan = chaos.plan(n);
            assert!(!plan.tls);
            assert!(plan.faults.iter().all(|p| !p.fault.needs_tls()), "{plan:?}");
        }
    }

    /// Returns the first connection number whose plan has only `fault`, at
    /// the first occurrence, on a connection that offers CHUNKING and
    /// PIPELINING.
    fn connection_with(chaos: &Chaos, fault: Fault) -> usize {
        (0..1_000)
            .find(|&n| {
                let plan = chaos.plan(n);
                plan.pipelining
                    && plan.chunking
                    && plan.faults.iter().all(|planned| {
                        planned.fault == fault && planned.occurrence == 1 && planned.bytes > 0
                    })
            })
            .expect("such a plan among the first 1000")
    }

    fn only(fault: Fault) -> Chaos {
        Chaos::new(21)
            .fault_share(1.0)
            .chunking_share(1.0)
            .max_occurrence(1)
            .only(&[fault])
    }

    /// What [`play`] saw.
    struct Played {
        replies: String,
        /// The peer closed or reset before the client gave up reading.
        peer_ended: bool,
        record: ConnectionRecord,
    }

    /// Plays `wire` (`EHLO` first) against the scenario of `connection`, reads
    /// until the peer closes or goes quiet for half a second, then closes.
    async fn play(chaos: &Chaos, connection: usize, wire: &[u8]) -> Played {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let peer = FaultPeer::start(chaos.scenario(connection))
            .await
            .expect("peer starts");
        let mut client = tokio::net::TcpStream::connect(peer.addr())
            .await
            .expect("connects");
        client.write_all(wire).await.expect("writes");
        let mut replies = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            client.read_to_end(&mut replies),
        )
        .await;
        drop(client);
        let mut records = peer
            .wait_for_connections(1, std::time::Duration::from_secs(10))
            .await
            .expect("the connection finishes");
        Played {
            replies: String::from_utf8_lossy(&replies).into_owned(),
            peer_ended: read.is_ok(),
            record: records.remove(0),
        }
    }

    const BODY: &[u8] =
        b"Subject: chaos\r\n\r\nA body longer than the 32 octets a mid-data fault waits for.\r\n";

    fn by_data() -> Vec<u8> {
        let mut wire =
            b"EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nDATA\r\n".to_vec();
        wire.extend_from_slice(BODY);
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        wire
    }

    fn by_bdat() -> Vec<u8> {
        let mut wire = format!(
            "EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nBDAT {} LAST\r\n",
            BODY.len()
        )
        .into_bytes();
        wire.extend_from_slice(BODY);
        wire.extend_from_slice(b"QUIT\r\n");
        wire
    }

    fn faults_of(record: &ConnectionRecord) -> Vec<&'static str> {
        record
            .events
            .iter()
            .filter_map(|timed| match timed.event {
                Event::FaultInjected(name) => Some(name),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn chunk_reply_faults_strike_at_bdat() {
        for (fault, code) in [
            (Fault::Bdat451, "451 4.3.0 chaos bdat_451"),
            (Fault::Bdat554, "554 5.6.0 chaos bdat_554"),
            (Fault::Bdat421, "421 4.3.2 chaos bdat_421"),
        ] {
            let chaos = only(fault);
            let connection = connection_with(&chaos, fault);
            let Played {
                replies, record, ..
            } = play(&chaos, connection, &by_bdat()).await;
            assert!(replies.contains(code), "{fault:?}: {replies}");
            assert_eq!(
                record.bodies(),
                [BODY],
                "{fault:?}: the chunk arrived whole"
            );
            assert_eq!(faults_of(&record), [fault.name()]);
        }
    }

    #[tokio::test]
    async fn closes_after_the_chunk_send_no_reply() {
        for (fault, close) in [
            (Fault::BdatReset, Close::Reset),
            (Fault::BdatDrop, Close::Clean),
        ] {
            let chaos = only(fault);
            let connection = connection_with(&chaos, fault);
            let Played {
                replies,
                peer_ended,
                record,
            } = play(&chaos, connection, &by_bdat()).await;
            assert!(!replies.contains("queued"), "{fault:?}: {replies}");
            assert_eq!(record.chunks().len(), 1, "{fault:?}: {record:#?}");
            assert!(peer_ended, "{fault:?}");
            assert_eq!(record.peer_close(), Some(close), "{fault:?}");
            assert_eq!(faults_of(&record), [fault.name()]);
        }

        let chaos = only(Fault::BdatStall);
        let connection = connection_with(&chaos, Fault::BdatStall);
        let Played {
            replies,
            peer_ended,
            record,
        } = play(&chaos, connection, &by_bdat()).await;
        assert!(!replies.contains("queued"), "{replies}");
        assert_eq!(record.chunks().len(), 1, "{record:#?}");
        assert!(!peer_ended, "the peer waits for the client to close");
        assert_eq!(faults_of(&record), ["bdat_stall"]);
    }

    /// Returns the replies after the banner and the `EHLO` reply, one line each.
    fn replies_after_ehlo(replies: &str) -> Vec<&str> {
        replies
            .lines()
            .skip_while(|line| line.starts_with("220 ") || line.starts_with("250-"))
            .skip(1)
            .collect()
    }

    const MAIL_550: &str = "550 5.7.1 chaos mail_550";
    const NEED_MAIL: &str = "503 5.5.1 Error: need MAIL command";
    const NEED_RCPT: &str = "503 5.5.1 Error: need RCPT command";

    #[tokio::test]
    async fn mail_550_rejects_data_group() {
        let chaos = only(Fault::Mail550);
        let connection = connection_with(&chaos, Fault::Mail550);
        // A client sends the message data only after a 354, so the group
        // ends with DATA.
        let wire = b"EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\n\
                     RCPT TO:<c@ec.test>\r\nDATA\r\nQUIT\r\n";

        let Played {
            replies, record, ..
        } = play(&chaos, connection, wire).await;
        assert_eq!(
            replies_after_ehlo(&replies),
            [MAIL_550, NEED_MAIL, NEED_MAIL, NEED_RCPT, "221 2.0.0 Bye"],
            "{replies}"
        );
        assert!(record.bodies().is_empty(), "{record:#?}");
        assert_eq!(faults_of(&record), ["mail_550"]);
    }

    #[tokio::test]
    async fn mail_451_rejects_data_group() {
        let chaos = only(Fault::Mail451);
        let connection = connection_with(&chaos, Fault::Mail451);
        let wire = b"EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nDATA\r\nQUIT\r\n";

        let Played {
            replies, record, ..
        } = play(&chaos, connection, wire).await;
        assert_eq!(
            replies_after_ehlo(&replies),
            [
                "451 4.3.0 chaos mail_451",
                NEED_MAIL,
                NEED_RCPT,
                "221 2.0.0 Bye"
            ],
            "{replies}"
        );
        assert!(record.bodies().is_empty(), "{record:#?}");
        assert_eq!(faults_of(&record), ["mail_451"]);
    }

    #[tokio::test]
    async fn mail_550_rejects_bdat_group() {
        let chaos = only(Fault::Mail550);
        let connection = connection_with(&chaos, Fault::Mail550);

        let Played {
            replies, record, ..
        } = play(&chaos, connection, &by_bdat()).await;
        assert_eq!(
            replies_after_ehlo(&replies),
            [MAIL_550, NEED_MAIL, NEED_RCPT, "221 2.0.0 Bye"],
            "{replies}"
        );
        assert_eq!(record.chunks().len(), 1, "the chunk is read: {record:#?}");
        assert_eq!(
            record.verbs(),
            [Verb::Ehlo, Verb::Mail, Verb::Rcpt, Verb::Bdat, Verb::Quit],
            "the chunk is not read as commands"
        );
        assert_eq!(faults_of(&record), ["mail_550"]);
    }

    #[tokio::test]
    async fn mail_550_ends_at_rset() {
        let chaos = only(Fault::Mail550);
        let connection = connection_with(&chaos, Fault::Mail550);
        let mut wire = b"EHLO c\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nDATA\r\n\
                         RSET\r\nMAIL FROM:<a@ec.test>\r\nRCPT TO:<b@ec.test>\r\nDATA\r\n"
            .to_vec();
        wire.extend_from_slice(BODY);
        wire.extend_from_slice(b".\r\nQUIT\r\n");

        let Played {
            replies, record, ..
        } = play(&chaos, connection, &wire).await;
        assert_eq!(
            replies_after_ehlo(&replies),
            [
                MAIL_550,
                NEED_MAIL,
                NEED_RCPT,
                "250 2.0.0 Ok",
                "250 2.1.0 Ok",
                "250 2.1.5 Ok",
                "354 End data with <CR><LF>.<CR><LF>",
                "250 2.0.0 Ok: queued as FP1",
                "221 2.0.0 Bye",
            ],
            "{replies}"
        );
        assert_eq!(record.bodies(), [BODY]);
        assert_eq!(faults_of(&record), ["mail_550"]);
    }

    /// A mid-chunk fault cuts a chunk and leaves data after `DATA` alone, and a
    /// mid-data fault the other way round, so each is counted under the name
    /// of the way it cut.
    #[tokio::test]
    async fn mid_data_faults_strike_only_their_own_transfer() {
        for (fault, close) in [
            (Fault::MidChunkReset, Close::Reset),
            (Fault::MidChunkClose, Close::Clean),
        ] {
            let chaos = only(fault);
            let connection = connection_with(&chaos, fault);

            let Played {
                replies, record, ..
            } = play(&chaos, connection, &by_data()).await;
            assert!(replies.contains("queued as FP1"), "{fault:?}: {replies}");
            assert!(faults_of(&record).is_empty(), "{fault:?}: {record:#?}");

            let Played {
                replies,
                peer_ended,
                record,
            } = play(&chaos, connection, &by_bdat()).await;
            assert!(!replies.contains("queued"), "{fault:?}: {replies}");
            assert!(record.chunks().is_empty(), "{fault:?}: {record:#?}");
            assert!(peer_ended, "{fault:?}");
            assert_eq!(record.peer_close(), Some(close), "{fault:?}");
            assert_eq!(faults_of(&record), [fault.name()]);
        }

        let chaos = only(Fault::MidDataReset);
        let connection = connection_with(&chaos, Fault::MidDataReset);
        let Played {
            replies, record, ..
        } = play(&chaos, connection, &by_bdat()).await;
        assert!(replies.contains("queued as FP1"), "{replies}");
        assert!(faults_of(&record).is_empty(), "{record:#?}");
        let Played {
            peer_ended, record, ..
        } = play(&chaos, connection, &by_data()).await;
        assert!(peer_ended);
        assert_eq!(record.peer_close(), Some(Close::Reset));
        assert_eq!(faults_of(&record), ["mid_data_reset"]);
    }
}
