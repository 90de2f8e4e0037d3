//! What a soak run measured, the rules it must meet, and its report as a
//! Markdown section.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use ec_sched::Stats;

use super::collect::MAX_RECIPIENTS;
use super::process::ProcessSample;
use crate::fault_peer::{Fault, Tally};

/// Audits asked for through the handle while the run went on, and the
/// scheduler's own periodic ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audits {
    /// Handle audits that passed.
    pub passed: u64,
    /// Handle audits that found a violation, or got no reply.
    pub failed: u64,
    /// The first failure's text.
    pub first_failure: Option<String>,
}

/// Resident memory at a share of the run's finished submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSample {
    /// Percent of the submissions finished (25, 50, 75, 100).
    pub percent: u8,
    /// Submissions finished when the sample was taken.
    pub finished: u64,
    /// Resident memory in bytes.
    pub bytes: u64,
}

/// Everything one soak run measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SoakReport {
    /// The chaos seed.
    pub seed: u64,
    /// Submissions asked for.
    pub requested: u64,
    /// Submissions the engine accepted.
    pub submitted: u64,
    /// Their recipients.
    pub recipients: u64,
    /// Submissions with every recipient final when the run ended.
    pub finished: u64,
    /// The delivery phase ran into its cap.
    pub capped: bool,
    /// From the first submission to the last final record.
    pub elapsed: Duration,
    /// Recipient records by outcome name.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Records whose reply names a chaos fault, by fault and outcome.
    pub by_fault: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Connection closes by (reason, outcome).
    pub closes: BTreeMap<(&'static str, &'static str), u64>,
    /// Connections opened, by the records.
    pub opened: u64,
    /// Maximum connection duration, connect to release.
    pub longest_connection: Duration,
    /// Recipients without a final record.
    pub missing: u64,
    /// Recipients with more than one.
    pub doubled: u64,
    /// Records after a recipient's final one.
    pub after_final: u64,
    /// Records for tags or recipients never submitted.
    pub foreign: u64,
    /// Handle audits.
    pub audits: Audits,
    /// Maximum live connections any stats snapshot showed.
    pub max_live: u32,
    /// The engine-wide connection limit.
    pub max_connections: u32,
    /// The scheduler's final counts, `None` if its thread panicked.
    pub stats: Option<Stats>,
    /// What the fault peer saw.
    pub peer: Tally,
    /// Message data after `DATA` the peer received that was not the
    /// dot-stuffed wire form of any body the run sent.
    pub unexpected_data: u64,
    /// `BDAT` chunks the peer received that were not the unstuffed chunk form
    /// of any body the run sent: the sign of a dot-stuffed or altered chunk,
    /// or of a message sent in several chunks.
    pub unexpected_chunks: u64,
    /// The share of connections on which the peer offered CHUNKING.
    pub chunking_share: f64,
    /// Faults the run's chaos never draws.
    pub not_drawn: Vec<Fault>,
    /// Connections the peer had not finished when the run ended.
    pub peer_open: usize,
    /// The process before the run (after a warm-up engine).
    pub before: ProcessSample,
    /// The process after the engine and every connection were gone.
    pub after: ProcessSample,
    /// Resident memory at 25, 50, 75 and 100% finished.
    pub rss: Vec<RssSample>,
    /// Allowed growth per message finished between the 25% and 100% samples.
    pub rss_bytes_per_message: u64,
    /// Allowed growth whatever the size.
    pub rss_floor: u64,
}

impl SoakReport {
    /// Lists every rule the run broke, one line each; empty when it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut rules = Rules::default();
        self.check_records(&mut rules);
        self.check_mail_rejections(&mut rules);
        self.check_engine(&mut rules);
        self.check_peer(&mut rules);
        self.check_process(&mut rules);
        rules.0
    }

    fn check_records(&self, rules: &mut Rules) {
        rules.check(self.missing == 0, || {
            format!("{} recipients have no final record", self.missing)
        });
        rules.check(self.doubled == 0, || {
            format!(
                "{} recipients have more than one final record",
                self.doubled
            )
        });
        rules.check(self.after_final == 0, || {
            format!("{} records came after a final one", self.after_final)
        });
        rules.check(self.foreign == 0, || {
            format!("{} records name a recipient never submitted", self.foreign)
        });
    }

    /// Checks that each `550` to `MAIL` failed its message once: every
    /// record carrying that reply is final and a failure, and each injection
    /// gave one such record per recipient of its message, so at least one
    /// and at most [`MAX_RECIPIENTS`]. A run stopped by the time cap may have
    /// cut a transaction after the `550` went out, so it is not held to the
    /// lower bound.
    fn check_mail_rejections(&self, rules: &mut Rules) {
        let name = Fault::Mail550.name();
        let injected = self.peer.faults.get(name).copied().unwrap_or(0);
        let carried = self.by_fault.get(name).cloned().unwrap_or_default();
        let failed = carried.get("failed").copied().unwrap_or(0);
        let records: u64 = carried.values().sum();

        rules.check(records == failed, || {
            format!("records carrying the reply of {name} are not all failures: {carried:?}")
        });
        let max = injected * MAX_RECIPIENTS as u64;
        rules.check(failed <= max, || {
            format!(
                "{failed} failures carry the reply of {name}, more than the {max} recipients \
                 of the {injected} messages it rejected"
            )
        });
        rules.check(self.capped || failed >= injected, || {
            format!(
                "{name} rejected {injected} messages, but only {failed} failures carry its reply"
            )
        });
    }

    fn check_engine(&self, rules: &mut Rules) {
        rules.check(self.audits.failed == 0, || {
            format!(
                "{} handle audits failed; first: {}",
                self.audits.failed,
                self.audits.first_failure.as_deref().unwrap_or("-")
            )
        });
        rules.check(self.max_live <= self.max_connections, || {
            format!(
                "{} live connections, above the limit of {}",
                self.max_live, self.max_connections
            )
        });

        let Some(stats) = &self.stats else {
            rules.check(false, || {
                "the scheduler thread did not stop cleanly".to_owned()
            });
            return;
        };
        let ledger = &stats.ledger;
        let connections = &stats.connections;
        rules.check(
            connections.live() == 0 && connections.opened() == connections.closed(),
            || format!("connections at the end: {connections:?}"),
        );
        rules.check(connections.opened() == self.opened, || {
            format!(
                "the scheduler opened {} connections, the records show {}",
                connections.opened(),
                self.opened
            )
        });
        for (what, count) in [
            ("periodic audits failed", ledger.audit_failures),
            ("count underflows", ledger.count_underflows),
            ("protocol violations", ledger.protocol_violations),
            ("releases at the close deadline", ledger.close_deadlines),
        ] {
            rules.check(count == 0, || format!("{what}: {count}"));
        }
        rules.check(ledger.audits > 0, || {
            "the scheduler ran no periodic audit".to_owned()
        });
        rules.check(ledger.in_engine() == Some(0), || {
            format!("messages left in the engine: {ledger:?}")
        });
    }

    fn check_peer(&self, rules: &mut Rules) {
        let delivered = self.stats.as_ref().map_or(0, |s| s.ledger.delivered);
        rules.check(self.peer.bodies >= delivered, || {
            format!(
                "{delivered} messages delivered, but the peer received only {} bodies",
                self.peer.bodies
            )
        });
        let chunks = self.peer.chunks;
        let data_bodies: u64 = self.peer.data_contents.values().sum();
        rules.check(self.chunking_share <= 0.0 || chunks > 0, || {
            format!(
                "the peer received no BDAT chunk, though {:.0}% of connections offered CHUNKING",
                self.chunking_share * 100.0
            )
        });
        rules.check(self.chunking_share >= 1.0 || data_bodies > 0, || {
            "the peer received no message data after DATA".to_owned()
        });
        for (what, count) in [
            (
                "message data after DATA that is no sent body, dot-stuffed",
                self.unexpected_data,
            ),
            (
                "BDAT chunks that are no sent body, unstuffed and whole",
                self.unexpected_chunks,
            ),
            ("connections the client left open", self.peer.unclosed),
            (
                "unknown commands at the peer (smuggled data?)",
                self.peer.unknown_commands,
            ),
            ("command lines ended by bare LF", self.peer.bare_lf_commands),
            ("bare CR or LF in message data", self.peer.bare_line_ends),
            ("unstuffed leading dots", self.peer.unstuffed_dots),
        ] {
            rules.check(count == 0, || format!("{what}: {count}"));
        }
        rules.check(self.peer_open == 0, || {
            format!("{} peer connections still open", self.peer_open)
        });
        rules.check(self.peer.examples.is_empty(), || {
            format!(
                "the peer kept these connections as examples: {:#?}",
                self.peer.examples
            )
        });
    }

    fn check_process(&self, rules: &mut Rules) {
        rules.check(self.after.open_fds == self.before.open_fds, || {
            format!(
                "{} open file descriptors before the run, {} after",
                self.before.open_fds, self.after.open_fds
            )
        });
        rules.check(self.after.threads == self.before.threads, || {
            format!(
                "{} threads before the run, {} after",
                self.before.threads, self.after.threads
            )
        });

        match self.rss_growth() {
            Some((growth, allowed)) => rules.check(growth <= allowed as i64, || {
                format!(
                    "resident memory grew {growth} bytes from the 25% to the 100% sample; \
                     allowed {allowed}: {:?}",
                    self.rss
                )
            }),
            None => rules.check(self.capped, || {
                format!("RSS samples missing: {:?}", self.rss)
            }),
        }
    }

    /// Returns the growth of resident memory from the 25% sample to the
    /// 100% one, and the growth allowed, when both samples exist.
    pub fn rss_growth(&self) -> Option<(i64, u64)> {
        let first = self.rss.iter().find(|s| s.percent == 25)?;
        let last = self.rss.iter().find(|s| s.percent == 100)?;
        let growth = last.bytes as i64 - first.bytes as i64;
        let finished = last.finished.saturating_sub(first.finished);
        let allowed = (finished * self.rss_bytes_per_message).max(self.rss_floor);
        Some((growth, allowed))
    }

    /// Messages finished per second of the delivery phase.
    pub fn rate(&self) -> f64 {
        self.finished as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Renders the report as Markdown tables, for `docs/ROBUSTNESS.md`.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let problems = self.problems();
        let verdict = if problems.is_empty() {
            "passed".to_owned()
        } else {
            format!("FAILED ({} broken rules, listed below)", problems.len())
        };
        let _ = writeln!(
            out,
            "Run: {} submissions ({} recipients), seed {}, {:.1} s of delivery \
             ({:.0} messages/s), {}{}.\n",
            self.submitted,
            self.recipients,
            self.seed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            verdict,
            if self.capped {
                ", stopped by the time cap"
            } else {
                ""
            },
        );
        self.faults_table(&mut out);
        self.outcomes_table(&mut out);
        self.closes_table(&mut out);
        self.totals_table(&mut out);
        if !problems.is_empty() {
            out.push_str("\nBroken rules:\n\n");
            for problem in problems {
                let first_line = problem.lines().next().unwrap_or_default();
                let _ = writeln!(out, "- {first_line}");
            }
        }
        out
    }

    fn faults_table(&self, out: &mut String) {
        out.push_str(
            "| fault | what the peer did | injected | records carrying its reply |\n\
             |---|---|---:|---|\n",
        );
        for fault in Fault::ALL {
            let injected = match self.peer.faults.get(fault.name()) {
                _ if self.not_drawn.contains(&fault) => "not drawn".to_owned(),
                Some(count) => count.to_string(),
                None => "0".to_owned(),
            };
            let carried = self
                .by_fault
                .get(fault.name())
                .map(|outcomes| {
                    outcomes
                        .iter()
                        .map(|(outcome, count)| format!("{outcome} {count}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(
                out,
                "| `{}` | {} | {injected} | {carried} |",
                fault.name(),
                fault.description()
            );
        }
        let total: u64 = self.peer.faults.values().sum();
        let _ = writeln!(
            out,
            "| all | over {} connections | {total} | |\n",
            self.peer.connections
        );
    }

    fn outcomes_table(&self, out: &mut String) {
        out.push_str("| recipient record | count | final |\n|---|---:|---|\n");
        for (outcome, count) in &self.outcomes {
            let last = matches!(*outcome, "delivered" | "failed" | "unsent");
            let _ = writeln!(
                out,
                "| {outcome} | {count} | {} |",
                if last { "yes" } else { "no" }
            );
        }
        out.push('\n');
    }

    fn closes_table(&self, out: &mut String) {
        out.push_str("| close reason | close outcome | connections |\n|---|---|---:|\n");
        for ((reason, outcome), count) in &self.closes {
            let _ = writeln!(out, "| {reason} | {outcome} | {count} |");
        }
        let _ = writeln!(out, "| all | | {} |\n", self.closes.values().sum::<u64>());
    }

    fn totals_table(&self, out: &mut String) {
        out.push_str("| total | value |\n|---|---:|\n");
        let rows = [
            self.engine_totals(),
            self.peer_totals(),
            self.process_totals(),
        ];
        for (what, value) in rows.into_iter().flatten() {
            let _ = writeln!(out, "| {what} | {value} |");
        }
    }

    fn engine_totals(&self) -> Vec<(&'static str, String)> {
        let stats = self.stats.as_ref();
        let ledger = stats.map(|s| s.ledger);
        let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
        vec![
            (
                "recipients lost (no final record)",
                self.missing.to_string(),
            ),
            (
                "recipients with two final records",
                self.doubled.to_string(),
            ),
            (
                "connections opened / closed",
                or_dash(
                    stats.map(|s| {
                        format!("{} / {}", s.connections.opened(), s.connections.closed())
                    }),
                ),
            ),
            (
                "live connections at the end",
                or_dash(stats.map(|s| s.connections.live().to_string())),
            ),
            (
                "most live connections (limit)",
                format!("{} ({})", self.max_live, self.max_connections),
            ),
            (
                "longest connection, connect to release",
                format!("{:.2} s", self.longest_connection.as_secs_f64()),
            ),
            (
                "audits through the handle: passed / failed",
                format!("{} / {}", self.audits.passed, self.audits.failed),
            ),
            (
                "periodic audits: run / failed",
                or_dash(ledger.map(|l| format!("{} / {}", l.audits, l.audit_failures))),
            ),
            (
                "count underflows, protocol violations, close-deadline releases",
                or_dash(ledger.map(|l| {
                    format!(
                        "{}, {}, {}",
                        l.count_underflows, l.protocol_violations, l.close_deadlines
                    )
                })),
            ),
        ]
    }

    fn peer_totals(&self) -> Vec<(&'static str, String)> {
        let peer = &self.peer;
        vec![
            (
                "peer: connections / TLS / bodies received",
                format!("{} / {} / {}", peer.connections, peer.tls, peer.bodies),
            ),
            (
                "peer: bodies after DATA / in BDAT chunks",
                format!(
                    "{} / {}",
                    peer.data_contents.values().sum::<u64>(),
                    peer.chunk_contents.values().sum::<u64>()
                ),
            ),
            (
                "peer: bodies that are no sent body's wire form (DATA, BDAT)",
                format!("{}, {}", self.unexpected_data, self.unexpected_chunks),
            ),
            (
                "peer: connections the client left open",
                peer.unclosed.to_string(),
            ),
            (
                "peer: unknown commands, bare CR/LF in data, unstuffed dots",
                format!(
                    "{}, {}, {}",
                    peer.unknown_commands, peer.bare_line_ends, peer.unstuffed_dots
                ),
            ),
        ]
    }

    fn process_totals(&self) -> Vec<(&'static str, String)> {
        let leaked = self.after.open_fds as i64 - self.before.open_fds as i64;
        let samples: Vec<String> = self
            .rss
            .iter()
            .map(|s| format!("{}%: {:.1}", s.percent, mib(s.bytes)))
            .collect();
        let mut rows = vec![
            (
                "open file descriptors before / after (leaked sockets)",
                format!(
                    "{} / {} ({leaked})",
                    self.before.open_fds, self.after.open_fds
                ),
            ),
            (
                "threads before / after",
                format!("{} / {}", self.before.threads, self.after.threads),
            ),
            (
                "resident memory, MiB",
                format!(
                    "before: {:.1}; {}; after: {:.1}",
                    mib(self.before.rss_bytes),
                    samples.join("; "),
                    mib(self.after.rss_bytes)
                ),
            ),
        ];
        if let Some((growth, allowed)) = self.rss_growth() {
            rows.push((
                "memory growth 25% to 100% (allowed)",
                format!("{:.2} MiB ({:.2} MiB)", growth as f64 / MIB, mib(allowed)),
            ));
        }
        rows
    }
}

/// The rules a run broke, as they are found.
#[derive(Debug, Default)]
struct Rules(Vec<String>);

impl Rules {
    /// Notes `problem` unless `ok`.
    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns a report of an uncapped run in which `mail_550` was injected
    /// `injected` times and the records carrying its reply had `carried`
    /// outcomes.
    fn report(injected: u64, carried: &[(&'static str, u64)]) -> SoakReport {
        let name = Fault::Mail550.name();
        let mut peer = Tally::default();
        peer.faults.insert(name, injected);
        let mut by_fault = BTreeMap::new();
        by_fault.insert(name.to_owned(), carried.iter().copied().collect());
        let sample = ProcessSample {
            open_fds: 10,
            threads: 3,
            rss_bytes: 0,
        };
        SoakReport {
            seed: 0,
            requested: 0,
            submitted: 0,
            recipients: 0,
            finished: 0,
            capped: false,
            elapsed: Duration::ZERO,
            outcomes: BTreeMap::new(),
            by_fault,
            closes: BTreeMap::new(),
            opened: 0,
            longest_connection: Duration::ZERO,
            missing: 0,
            doubled: 0,
            after_final: 0,
            foreign: 0,
            audits: Audits::default(),
            max_live: 0,
            max_connections: 0,
            stats: None,
            peer,
            unexpected_data: 0,
            unexpected_chunks: 0,
            chunking_share: 0.0,
            not_drawn: Vec::new(),
            peer_open: 0,
            before: sample,
            after: sample,
            rss: Vec::new(),
            rss_bytes_per_message: 0,
            rss_floor: 0,
        }
    }

    fn mail_rejection_problems(report: &SoakReport) -> Vec<String> {
        let mut rules = Rules::default();
        report.check_mail_rejections(&mut rules);
        rules.0
    }

    #[test]
    fn mail_rejections_failed_once_pass() {
        for (injected, failed) in [(0, 0), (3, 3), (3, 6)] {
            let problems = mail_rejection_problems(&report(injected, &[("failed", failed)]));
            assert!(problems.is_empty(), "{injected} injected: {problems:?}");
        }
    }

    #[test]
    fn mail_rejection_not_failed_breaks_rule() {
        let problems = mail_rejection_problems(&report(3, &[("failed", 3), ("deferred", 1)]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("not all failures"), "{problems:?}");
    }

    #[test]
    fn mail_rejection_counts_bounded() {
        let too_many = mail_rejection_problems(&report(3, &[("failed", 7)]));
        assert_eq!(too_many.len(), 1, "{too_many:?}");
        assert!(
            too_many[0].contains("more than the 6 recipients"),
            "{too_many:?}"
        );

        let too_few = mail_rejection_problems(&report(3, &[("failed", 2)]));
        assert_eq!(too_few.len(), 1, "{too_few:?}");
        assert!(too_few[0].contains("only 2 failures"), "{too_few:?}");

        let mut capped = report(3, &[("failed", 2)]);
        capped.capped = true;
        let problems = mail_rejection_problems(&capped);
        assert!(problems.is_empty(), "{problems:?}");
    }
}
