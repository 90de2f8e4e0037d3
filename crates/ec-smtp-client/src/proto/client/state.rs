//! The session states, each named after what it waits for, and the data of
//! a transaction in flight.

use std::collections::VecDeque;

use bytes::Bytes;
use ec_types::{Reply, Stage};

use super::timer::Timer;
use super::TransmitParts;

/// The state of a [`Client`](super::Client), without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientState {
    /// Waiting for the 220 banner.
    ExpectBanner,
    /// EHLO sent.
    ExpectEhlo,
    /// HELO sent, after EHLO was rejected with 5xx.
    ExpectHelo,
    /// STARTTLS sent.
    ExpectStartTls,
    /// The server accepted STARTTLS; the driver runs the TLS handshake.
    ExpectTlsHandshake,
    /// EHLO sent again over TLS.
    ExpectEhloAfterTls,
    /// Idle, ready for a transaction or QUIT.
    Ready,
    /// In step with the server but unable to carry mail (TLS required but
    /// unavailable, EHLO and HELO rejected): only QUIT is possible.
    Unusable,
    /// RSET sent, at the start of a transaction on a reused connection.
    ExpectRset,
    /// MAIL sent.
    ExpectMail,
    /// RCPT sent, one reply per recipient due.
    ExpectRcpt,
    /// DATA sent.
    ExpectData,
    /// Message data and final dot sent (or being written), or the BDAT
    /// LAST chunk: the final reply is due.
    ExpectDataReply,
    /// QUIT sent.
    ExpectQuit,
    /// Nothing more to send or read.
    Closed,
}

impl ClientState {
    /// Returns whether a transaction is under way.
    pub fn in_transaction(self) -> bool {
        matches!(
            self,
            Self::ExpectRset
                | Self::ExpectMail
                | Self::ExpectRcpt
                | Self::ExpectData
                | Self::ExpectDataReply
        )
    }

    /// Returns the Momentum stage of this state.
    pub(super) fn stage(self) -> Option<Stage> {
        let stage = match self {
            Self::ExpectBanner => Stage::Banner,
            Self::ExpectEhlo | Self::ExpectHelo | Self::ExpectEhloAfterTls => Stage::Ehlo,
            Self::ExpectStartTls => Stage::StartTls,
            Self::ExpectTlsHandshake => Stage::TlsHandshake,
            Self::Ready | Self::Unusable => Stage::Idle,
            Self::ExpectRset => Stage::Rset,
            Self::ExpectMail => Stage::Mail,
            Self::ExpectRcpt => Stage::Rcpt,
            Self::ExpectData => Stage::Data,
            Self::ExpectDataReply => Stage::Body,
            Self::ExpectQuit => Stage::Quit,
            Self::Closed => return None,
        };
        Some(stage)
    }

    /// Returns the timer that bounds the wait of this state, started on
    /// entry.
    pub(super) fn timer(self) -> Option<Timer> {
        let timer = match self {
            Self::ExpectBanner => Timer::Banner,
            Self::ExpectEhlo | Self::ExpectHelo | Self::ExpectEhloAfterTls => Timer::Ehlo,
            Self::ExpectStartTls => Timer::StartTls,
            Self::ExpectTlsHandshake => Timer::TlsHandshake,
            Self::Ready | Self::Unusable => Timer::Idle,
            Self::ExpectRset => Timer::Rset,
            Self::ExpectMail => Timer::Mail,
            Self::ExpectRcpt => Timer::Rcpt,
            Self::ExpectData => Timer::DataInitiation,
            Self::ExpectDataReply => Timer::DataBlock,
            Self::ExpectQuit => Timer::Quit,
            Self::Closed => return None,
        };
        Some(timer)
    }
}

/// The state with the data valid in it.
#[derive(Debug)]
pub(super) enum State {
    ExpectBanner,
    ExpectEhlo,
    ExpectHelo,
    ExpectStartTls,
    ExpectTlsHandshake,
    ExpectEhloAfterTls,
    Ready,
    Unusable,
    ExpectRset(Box<InFlight>),
    ExpectMail(Box<InFlight>),
    ExpectRcpt(Box<InFlight>),
    ExpectData(Box<InFlight>),
    ExpectDataReply(Box<InFlight>),
    ExpectQuit,
    Closed,
}

impl State {
    /// Returns whether a transaction is under way whose data went as a
    /// BDAT chunk in the group with its commands.
    pub(super) fn chunked(&self) -> bool {
        match self {
            Self::ExpectRset(in_flight)
            | Self::ExpectMail(in_flight)
            | Self::ExpectRcpt(in_flight)
            | Self::ExpectData(in_flight)
            | Self::ExpectDataReply(in_flight) => in_flight.chunked,
            _ => false,
        }
    }

    pub(super) fn kind(&self) -> ClientState {
        match self {
            Self::ExpectBanner => ClientState::ExpectBanner,
            Self::ExpectEhlo => ClientState::ExpectEhlo,
            Self::ExpectHelo => ClientState::ExpectHelo,
            Self::ExpectStartTls => ClientState::ExpectStartTls,
            Self::ExpectTlsHandshake => ClientState::ExpectTlsHandshake,
            Self::ExpectEhloAfterTls => ClientState::ExpectEhloAfterTls,
            Self::Ready => ClientState::Ready,
            Self::Unusable => ClientState::Unusable,
            Self::ExpectRset(_) => ClientState::ExpectRset,
            Self::ExpectMail(_) => ClientState::ExpectMail,
            Self::ExpectRcpt(_) => ClientState::ExpectRcpt,
            Self::ExpectData(_) => ClientState::ExpectData,
            Self::ExpectDataReply(_) => ClientState::ExpectDataReply,
            Self::ExpectQuit => ClientState::ExpectQuit,
            Self::Closed => ClientState::Closed,
        }
    }
}

/// A transaction between `start_transaction` and its last reply.
#[derive(Debug)]
pub(super) struct InFlight {
    /// Whether every command went out in one group (RFC 2920), so replies
    /// only need counting. Without PIPELINING each command waits in `unsent`
    /// for the previous reply.
    pub(super) pipelined: bool,
    /// Whether the data went as one BDAT LAST chunk with the commands
    /// (RFC 3030), so no 354 comes and the last reply is BDAT's.
    pub(super) chunked: bool,
    /// Commands not yet sent, in order (MAIL, each RCPT, DATA); empty when
    /// pipelined.
    pub(super) unsent: VecDeque<Bytes>,
    /// Number of recipients.
    pub(super) recipients: usize,
    /// Index of the recipient whose RCPT reply is due next.
    pub(super) next_rcpt: usize,
    /// Recipients the server accepted.
    pub(super) accepted: usize,
    /// The MAIL rejection, kept while the replies to the rest of a
    /// pipelined group are read.
    pub(super) mail_rejected: Option<Reply>,
    /// Message data with its final dot; taken when the 354 arrives. `None`
    /// for a chunked transaction, whose data went with the commands.
    pub(super) data: Option<TransmitParts>,
    /// Only the end-of-data line was sent, because no recipient was accepted
    /// but the server still replied 354 to DATA.
    pub(super) lone_dot: bool,
}
