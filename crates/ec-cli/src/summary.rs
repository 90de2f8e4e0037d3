//! The totals of a run, the summary table printed at its end, and the exit
//! status they give.
//!
//! Recipient outcomes are counted per recipient, invalid input per message
//! file, because an invalid file may have no readable recipient at all.

use std::fmt::{self, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use ec_types::{CloseOutcome, CloseReason};

use crate::delivery_log::LogResult;

/// The exit status of `ec`, from sysexits.h where it defines one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ExitStatus {
    /// 0: every recipient delivered, no invalid input.
    Success = 0,
    /// 64 (`EX_USAGE`): bad options, values, configuration or PATHs.
    Usage = 64,
    /// 65 (`EX_DATAERR`): some message files were invalid; the rest were
    /// delivered.
    InvalidInput = 65,
    /// 69 (`EX_UNAVAILABLE`): mail was to be sent but no connection could
    /// be made at all.
    Unavailable = 69,
    /// 75 (`EX_TEMPFAIL`): some recipients were deferred or their delivery
    /// is unknown; running again (with `--resume`) may deliver them.
    TempFail = 75,
    /// 70 (`EX_SOFTWARE`): an error stopped the run before every outcome
    /// was known, such as a delivery engine that could not start.
    Software = 70,
    /// 74 (`EX_IOERR`): a write to the delivery log failed. The run
    /// stopped taking new work at once, and the log lacks the outcomes
    /// from that write on.
    LogWriteFailed = 74,
    /// 76: some recipients failed permanently. sysexits.h defines 76 as
    /// `EX_PROTOCOL`; `ec` uses it for permanent SMTP failures, which no
    /// sysexits code names.
    Failed = 76,
}

impl ExitStatus {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}

/// How many connections ended each way.
///
/// A connection whose session failed can still end with an orderly
/// transport shutdown: the server hung up, sent 421 or broke the protocol,
/// or a reply timed out. Such a close counts under its close reason (the
/// `reason` label its metrics get, such as `peer_closed` or `greeting`),
/// not as [`CloseOutcome::Clean`]. A session that the server closed may
/// have left a final dot without a reply, and none of them ended the way
/// ec chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseCounts {
    counts: [u64; CloseOutcome::ALL.len()],
    failed: [u64; CloseReason::ALL.len()],
}

/// The summary's name for connections that the server closed first; it is
/// the `reason` label that the metrics give them.
pub const PEER_CLOSED: &str = "peer_closed";

impl CloseCounts {
    /// Counts one connection that was closed for `reason` and whose
    /// transport shutdown ended with `outcome`.
    pub fn record(&mut self, outcome: CloseOutcome, reason: CloseReason) {
        if outcome == CloseOutcome::Clean && is_failure(reason) {
            if let Some(index) = CloseReason::ALL.iter().position(|r| *r == reason) {
                self.failed[index] += 1;
                return;
            }
        }
        if let Some(index) = CloseOutcome::ALL.iter().position(|o| *o == outcome) {
            self.counts[index] += 1;
        }
    }

    /// How many connections ended with `outcome`, not counting the clean
    /// closes of failed sessions.
    pub fn get(&self, outcome: CloseOutcome) -> u64 {
        CloseOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |index| self.counts[index])
    }

    /// Returns how many connections the server closed before ec ended the
    /// session, with an orderly transport shutdown.
    pub fn peer_closed(&self) -> u64 {
        self.failed_with(CloseReason::PeerClosed)
    }

    /// Returns how many sessions failed for `reason` and then closed with
    /// an orderly transport shutdown.
    pub fn failed_with(&self, reason: CloseReason) -> u64 {
        CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |index| self.failed[index])
    }

    /// Lists every non-zero count with its name: the outcomes in
    /// [`CloseOutcome::ALL`] order, then the close reasons of failed
    /// sessions in [`CloseReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let outcomes = CloseOutcome::ALL
            .iter()
            .map(|outcome| outcome.as_str())
            .zip(self.counts);
        let failures = CloseReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .zip(self.failed);
        outcomes.chain(failures).filter(|(_, count)| *count > 0)
    }

    /// All closed connections.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.failed.iter().sum::<u64>()
    }
}

/// Returns whether a close for `reason` ends a session that failed, as
/// opposed to one that ec ended: idle, at a limit, at shutdown or on
/// request.
fn is_failure(reason: CloseReason) -> bool {
    !matches!(
        reason,
        CloseReason::IdleTimeout
            | CloseReason::MaxDeliveries
            | CloseReason::MaxAge
            | CloseReason::Shutdown
            | CloseReason::Requested
    )
}

/// Totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipients whose last outcome was a transient failure.
    pub deferred: u64,
    /// Recipients failed permanently.
    pub failed: u64,
    /// Recipients whose final dot got no reply.
    pub delivery_unknown: u64,
    /// Message files that could not be sent.
    pub invalid_input: u64,
    /// Message files whose every recipient has an outcome.
    pub messages_done: u64,
    /// Message files delivered to every recipient.
    pub messages_delivered: u64,
    /// Connection attempts: connections whose connect was started, whether
    /// or not it completed.
    pub connections_attempted: u64,
    /// Connections that completed the TCP connect.
    pub connections_established: u64,
    /// Connections that completed a TLS handshake.
    pub connections_tls: u64,
    /// Established connections that the end of the run closed before they
    /// carried a transaction and without TLS: cut off during their setup,
    /// or idle in clear text. They are left out of the TLS share.
    pub connections_unused: u64,
    /// Closed connections by close outcome.
    pub closes: CloseCounts,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl RunTotals {
    /// Counts one outcome: a recipient's, or for
    /// [`LogResult::InvalidInput`] a message file's.
    pub fn record_result(&mut self, result: LogResult) {
        match result {
            LogResult::Delivered => self.delivered += 1,
            LogResult::Deferred => self.deferred += 1,
            LogResult::Failed => self.failed += 1,
            LogResult::DeliveryUnknown => self.delivery_unknown += 1,
            LogResult::InvalidInput => self.invalid_input += 1,
        }
    }

    /// Recipients that got an outcome from the engine.
    pub fn recipients(&self) -> u64 {
        self.delivered + self.deferred + self.failed + self.delivery_unknown
    }

    /// Message files delivered to every recipient, per second of the run;
    /// 0 for a run of no time.
    pub fn messages_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.messages_delivered as f64 / seconds
        } else {
            0.0
        }
    }

    /// The share of established connections that used TLS, in percent,
    /// leaving out [`connections_unused`](Self::connections_unused); `None`
    /// when no other connection was established. The summary table prints
    /// `None` as 0.0%, since no connection used TLS.
    pub fn tls_percent(&self) -> Option<f64> {
        let used = self
            .connections_established
            .saturating_sub(self.connections_unused);
        (used > 0).then(|| 100.0 * self.connections_tls as f64 / used as f64)
    }

    /// The exit status for these totals.
    pub fn exit_status(&self) -> ExitStatus {
        exit_status(self)
    }
}

/// The exit status of a run that got past option parsing: the first rule
/// that applies, in this order:
///
/// 1. [`ExitStatus::Unavailable`] (69): recipients were handed to the engine,
///    not one connection was established, and not every recipient failed
///    for good (a null MX or a domain that does not exist fails its mail
///    without a connection).
/// 2. [`ExitStatus::TempFail`] (75): some recipient deferred or its delivery
///    unknown.
/// 3. [`ExitStatus::Failed`] (76): some recipient failed permanently.
/// 4. [`ExitStatus::InvalidInput`] (65): some message file invalid.
/// 5. [`ExitStatus::Success`] (0).
///
/// [`ExitStatus::Usage`] (64) comes before all of them, but from option
/// parsing, never from totals.
pub fn exit_status(totals: &RunTotals) -> ExitStatus {
    let all_failed = totals.failed == totals.recipients();
    if totals.recipients() > 0 && totals.connections_established == 0 && !all_failed {
        ExitStatus::Unavailable
    } else if totals.deferred + totals.delivery_unknown > 0 {
        ExitStatus::TempFail
    } else if totals.failed > 0 {
        ExitStatus::Failed
    } else if totals.invalid_input > 0 {
        ExitStatus::InvalidInput
    } else {
        ExitStatus::Success
    }
}

/// The end-of-run table, as `Display`.
///
/// ```text
/// recipients   delivered 1200   deferred 3   failed 1   unknown 0   invalid files 2
/// connections  attempted 17   established 16   over TLS 100.0%
/// closed       clean 14   quit_timed_out 1   peer_closed 1
/// rate         1203 of 1204 messages delivered to every recipient in 2.41 s, 499.2 messages/s
/// ```
///
/// `closed` counts connections by how their transport shutdown ended, with
/// the names of the `outcome` label of `ec_connections_closed_total`. A
/// failed session's orderly close counts under its `reason` label instead,
/// such as `peer_closed` (see [`CloseCounts`]).
#[derive(Debug, Clone, Copy)]
pub struct SummaryTable<'a>(pub &'a RunTotals);

impl fmt::Display for SummaryTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let totals = self.0;
        writeln!(
            f,
            "recipients   delivered {}   deferred {}   failed {}   unknown {}   invalid files {}",
            totals.delivered,
            totals.deferred,
            totals.failed,
            totals.delivery_unknown,
            totals.invalid_input
        )?;

        let tls = match totals.tls_percent() {
            Some(percent) => format!("{percent:.1}%"),
            None => "0.0%".to_owned(),
        };
        write!(
            f,
            "connections  attempted {}   established {}   over TLS {tls}",
            totals.connections_attempted, totals.connections_established
        )?;
        if totals.connections_unused > 0 {
            write!(
                f,
                "   closed unused at the end {}",
                totals.connections_unused
            )?;
        }
        writeln!(f)?;

        let mut closes = String::new();
        for (name, count) in totals.closes.iter() {
            if !closes.is_empty() {
                closes.push_str("   ");
            }
            write!(closes, "{name} {count}")?;
        }
        if closes.is_empty() {
            closes.push_str("none");
        }
        writeln!(f, "closed       {closes}")?;

        writeln!(
            f,
            "rate         {} of {} messages delivered to every recipient in {:.2} s, {:.1} messages/s",
            totals.messages_delivered,
            totals.messages_done,
            totals.elapsed.as_secs_f64(),
            totals.messages_per_second()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals() -> RunTotals {
        RunTotals {
            connections_attempted: 1,
            connections_established: 1,
            ..RunTotals::default()
        }
    }

    #[test]
    fn all_delivered_is_success() {
        let run = RunTotals {
            delivered: 10,
            ..totals()
        };
        assert_eq!(exit_status(&run), ExitStatus::Success);
        assert_eq!(exit_status(&RunTotals::default()), ExitStatus::Success);
    }

    #[test]
    fn no_connection_comes_first() {
        let run = RunTotals {
            deferred: 3,
            failed: 1,
            invalid_input: 1,
            connections_attempted: 5,
            connections_established: 0,
            ..RunTotals::default()
        };
        assert_eq!(exit_status(&run), ExitStatus::Unavailable);

        let null_mx = RunTotals {
            failed: 2,
            connections_attempted: 1,
            ..RunTotals::default()
        };
        assert_eq!(exit_status(&null_mx), ExitStatus::Failed);
    }

    #[test]
    fn invalid_only_needs_no_connection() {
        let run = RunTotals {
            invalid_input: 2,
            ..RunTotals::default()
        };
        assert_eq!(exit_status(&run), ExitStatus::InvalidInput);
    }

    #[test]
    fn deferred_beats_failed_and_invalid() {
        let run = RunTotals {
            delivered: 1,
            deferred: 1,
            failed: 1,
            invalid_input: 1,
            ..totals()
        };
        assert_eq!(exit_status(&run), ExitStatus::TempFail);
        let run = RunTotals {
            delivery_unknown: 1,
            failed: 1,
            ..totals()
        };
        assert_eq!(exit_status(&run), ExitStatus::TempFail);
    }

    #[test]
    fn failed_beats_invalid() {
        let run = RunTotals {
            delivered: 4,
            failed: 1,
            invalid_input: 1,
            ..totals()
        };
        assert_eq!(exit_status(&run), ExitStatus::Failed);
    }

    #[test]
    fn invalid_with_deliveries() {
        let run = RunTotals {
            delivered: 4,
            invalid_input: 1,
            ..totals()
        };
        assert_eq!(exit_status(&run), ExitStatus::InvalidInput);
    }

    #[test]
    fn status_codes_are_sysexits() {
        let codes = [
            (ExitStatus::Success, 0),
            (ExitStatus::Usage, 64),
            (ExitStatus::InvalidInput, 65),
            (ExitStatus::Unavailable, 69),
            (ExitStatus::Software, 70),
            (ExitStatus::TempFail, 75),
            (ExitStatus::Failed, 76),
        ];
        for (status, code) in codes {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }

    #[test]
    fn record_result_counts_each_kind() {
        let mut run = RunTotals::default();
        for result in [
            LogResult::Delivered,
            LogResult::Deferred,
            LogResult::Failed,
            LogResult::DeliveryUnknown,
            LogResult::InvalidInput,
        ] {
            run.record_result(result);
        }
        assert_eq!(
            (
                run.delivered,
                run.deferred,
                run.failed,
                run.delivery_unknown,
                run.invalid_input
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(run.recipients(), 4);
    }

    #[test]
    fn close_counts() {
        let mut closes = CloseCounts::default();
        closes.record(CloseOutcome::Clean, CloseReason::IdleTimeout);
        closes.record(CloseOutcome::Clean, CloseReason::Shutdown);
        closes.record(CloseOutcome::Reset, CloseReason::PeerClosed);
        assert_eq!(closes.get(CloseOutcome::Clean), 2);
        assert_eq!(closes.get(CloseOutcome::Reset), 1);
        assert_eq!(closes.get(CloseOutcome::Aborted), 0);
        assert_eq!(closes.total(), 3);
        let listed: Vec<_> = closes.iter().collect();
        assert_eq!(listed, [("clean", 2), ("reset", 1)]);
    }

    #[test]
    fn server_hang_up_is_not_clean() {
        let mut closes = CloseCounts::default();
        closes.record(CloseOutcome::Clean, CloseReason::PeerClosed);
        closes.record(CloseOutcome::Clean, CloseReason::PeerClosed);
        assert_eq!(closes.get(CloseOutcome::Clean), 0);
        assert_eq!(closes.peer_closed(), 2);
        assert_eq!(closes.total(), 2);

        let mut run = totals();
        run.closes = closes;
        let table = SummaryTable(&run).to_string();
        assert!(table.contains("closed       peer_closed 2\n"), "{table}");
    }

    #[test]
    fn failed_sessions_are_not_clean() {
        let mut closes = CloseCounts::default();
        closes.record(CloseOutcome::Clean, CloseReason::Greeting);
        closes.record(CloseOutcome::Clean, CloseReason::ServiceClosing);
        closes.record(CloseOutcome::Clean, CloseReason::Timeout);
        closes.record(CloseOutcome::Clean, CloseReason::MaxDeliveries);

        assert_eq!(closes.get(CloseOutcome::Clean), 1);
        assert_eq!(closes.failed_with(CloseReason::Greeting), 1);
        assert_eq!(closes.total(), 4);
        let listed: Vec<_> = closes.iter().collect();
        assert_eq!(
            listed,
            [
                ("clean", 1),
                ("greeting", 1),
                ("timeout", 1),
                ("service_closing", 1)
            ]
        );
    }

    #[test]
    fn table_shows_every_total() {
        let mut run = RunTotals {
            delivered: 1200,
            deferred: 3,
            failed: 1,
            delivery_unknown: 0,
            invalid_input: 2,
            messages_done: 1204,
            messages_delivered: 1200,
            connections_attempted: 17,
            connections_established: 16,
            connections_tls: 12,
            elapsed: Duration::from_millis(2_000),
            ..RunTotals::default()
        };
        run.closes
            .record(CloseOutcome::Clean, CloseReason::MaxDeliveries);
        run.closes
            .record(CloseOutcome::QuitTimedOut, CloseReason::IdleTimeout);
        run.closes
            .record(CloseOutcome::Clean, CloseReason::PeerClosed);

        let table = SummaryTable(&run).to_string();
        let expected = "\
recipients   delivered 1200   deferred 3   failed 1   unknown 0   invalid files 2
connections  attempted 17   established 16   over TLS 75.0%
closed       clean 1   quit_timed_out 1   peer_closed 1
rate         1200 of 1204 messages delivered to every recipient in 2.00 s, 600.0 messages/s
";
        assert_eq!(table, expected);
    }

    #[test]
    fn unused_connections_leave_tls_share() {
        let run = RunTotals {
            connections_attempted: 32,
            connections_established: 32,
            connections_tls: 14,
            connections_unused: 18,
            ..RunTotals::default()
        };
        assert_eq!(run.tls_percent(), Some(100.0));
        let table = SummaryTable(&run).to_string();
        assert!(
            table.contains("over TLS 100.0%   closed unused at the end 18\n"),
            "{table}"
        );

        let all_unused = RunTotals {
            connections_established: 2,
            connections_unused: 2,
            ..RunTotals::default()
        };
        assert_eq!(all_unused.tls_percent(), None);
    }

    #[test]
    fn table_without_connections() {
        let table = SummaryTable(&RunTotals::default()).to_string();
        assert!(table.contains("attempted 0   established 0"), "{table}");
        assert!(table.contains("over TLS 0.0%\n"), "{table}");
        assert!(table.contains("closed       none"), "{table}");
        assert!(table.contains("0.0 messages/s"), "{table}");
    }
}
