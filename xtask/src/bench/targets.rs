//! The targets ec is measured against, and whether each was met.
//!
//! Every comparison uses medians from the same run, in which the
//! contenders alternated, so a slower stretch of a shared machine hits
//! them alike. CPU per message is counted once started (startup CPU
//! subtracted), because a delivery engine runs for long and starts once.

use super::cases::{CaseResult, Contender};
use super::report::thousands;
use super::sched::SchedResult;

/// How much the scheduler's cost per connection may grow from the fewest
/// to the most domains and still count as flat: the spread between
/// repetitions of one case is about this large.
pub(crate) const FLAT_TOLERANCE: f64 = 1.25;

/// One target and how ec did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// The requirement, as the report words it.
    pub(crate) target: String,
    /// `None` when a contender's figures are missing.
    pub(crate) met: Option<bool>,
    /// The numbers behind the verdict.
    pub(crate) detail: String,
    /// The case whose ec run to profile when the target is missed.
    pub(crate) case: Option<String>,
}

/// Medians of one contender in one case.
#[derive(Debug, Clone, Copy)]
struct Medians {
    rate: f64,
    cpu: f64,
}

fn medians(result: &CaseResult, contender: Contender) -> Option<Medians> {
    let row = result.row(contender)?;
    Some(Medians {
        rate: row.rate()?.median,
        cpu: row.steady_cpu()?.median,
    })
}

/// The throughput and CPU targets of an SMTP case against `other`: ec's
/// rate must be at least `rate_factor` times the other's, and its CPU per
/// message at most `cpu_factor` times (no CPU target when `None`).
pub(crate) fn against(
    result: &CaseResult,
    other: Contender,
    rate_factor: f64,
    cpu_factor: Option<f64>,
) -> Verdict {
    let times = |factor: f64| {
        if factor == 1.0 {
            String::new()
        } else {
            format!("{factor}× ")
        }
    };
    let mut target = format!(
        "{}: ec ≥ {}{} msg/s",
        result.case.title,
        times(rate_factor),
        other.label()
    );
    if let Some(factor) = cpu_factor {
        target.push_str(&format!(", CPU/msg ≤ {}{}'s", times(factor), other.label()));
    }
    let case = Some(result.case.title.clone());
    let (Some(ec), Some(theirs)) = (medians(result, Contender::Ec), medians(result, other)) else {
        return Verdict {
            target,
            met: None,
            detail: "not measured".to_owned(),
            case: None,
        };
    };
    let rate_ratio = ec.rate / theirs.rate;
    let cpu_ratio = ec.cpu / theirs.cpu;
    let rate_met = rate_ratio >= rate_factor;
    let cpu_met = cpu_factor.is_none_or(|factor| cpu_ratio <= factor);
    let mut detail = format!(
        "ec {} msg/s, {:.1} µs CPU/msg; {} {} msg/s, {:.1} µs CPU/msg: rate {:.2}×",
        thousands(ec.rate),
        ec.cpu,
        other.label(),
        thousands(theirs.rate),
        theirs.cpu,
        rate_ratio
    );
    if cpu_factor.is_some() {
        detail.push_str(&format!(", CPU {cpu_ratio:.2}×"));
    }
    Verdict {
        target,
        met: Some(rate_met && cpu_met),
        detail,
        case,
    }
}

/// TLS churn within `factor` of the handshake floor: ec's CPU per message
/// at most `factor` times the floor's CPU per session. The rates are shown
/// but not judged, because the floor sends no message, so Postfix (the
/// bottleneck) does less work per floor session than per ec session.
pub(crate) fn near_floor(result: &CaseResult, factor: f64) -> Verdict {
    let target = format!(
        "{}: ec's CPU/msg within {factor}× of the handshake floor's CPU/session",
        result.case.title
    );
    let (Some(ec), Some(floor)) = (
        medians(result, Contender::Ec),
        medians(result, Contender::TlsFloor),
    ) else {
        return Verdict {
            target,
            met: None,
            detail: "not measured".to_owned(),
            case: None,
        };
    };
    let cpu_ratio = ec.cpu / floor.cpu;
    Verdict {
        target,
        met: Some(cpu_ratio <= factor),
        detail: format!(
            "ec {} msg/s, {:.1} µs CPU/msg; floor {} sessions/s, {:.1} µs CPU/session: \
             CPU {cpu_ratio:.2}× the floor",
            thousands(ec.rate),
            ec.cpu,
            thousands(floor.rate),
            floor.cpu,
        ),
        case: Some(result.case.title.clone()),
    }
}

/// closeconn's scheduler-side cost per connection, flat within
/// [`FLAT_TOLERANCE`] from the fewest to the most domains, for one
/// access pattern.
pub(crate) fn flat(sched: &SchedResult, pattern: &str) -> Verdict {
    let target = format!(
        "closeconn / scheduler cost per connection flat (≤ {FLAT_TOLERANCE}×) from the fewest \
         to the most domains, pattern {pattern}"
    );
    let Some((small, large)) = sched.extremes(pattern) else {
        return Verdict {
            target,
            met: None,
            detail: "not measured".to_owned(),
            case: None,
        };
    };
    let ratio = large.median_ns / small.median_ns;
    // The fastest repetition is the least disturbed by other work on the
    // machine, so its ratio is shown beside the medians'.
    let fastest_ratio = large.min_ns / small.min_ns;
    Verdict {
        target,
        met: Some(ratio <= FLAT_TOLERANCE),
        detail: format!(
            "medians {:.2} µs with {} domains, {:.2} µs with {}: {ratio:.2}×; \
             fastest repetitions {:.2} and {:.2} µs: {fastest_ratio:.2}×",
            small.median_ns / 1_000.0,
            thousands(small.domains as f64),
            large.median_ns / 1_000.0,
            thousands(large.domains as f64),
            small.min_ns / 1_000.0,
            large.min_ns / 1_000.0,
        ),
        case: None,
    }
}

/// Returns the pattern that a [`flat`] verdict's target names, or `None`
/// for any other target.
pub(crate) fn flat_pattern(target: &str) -> Option<&str> {
    if !target.starts_with("closeconn") {
        return None;
    }
    target.rsplit_once("pattern ").map(|(_, pattern)| pattern)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::cases::{Case, Peer, Row};
    use crate::bench::measure::{Sample, Switches};

    fn result(ec: (f64, f64), other: (f64, f64)) -> CaseResult {
        let sample = |(rate, cpu_micros): (f64, f64)| Sample {
            messages: 1_000,
            seconds: 1_000.0 / rate,
            cpu_seconds: cpu_micros * 1_000.0 / 1e6,
            switches: Switches::default(),
            server_cpu_seconds: None,
        };
        CaseResult {
            case: Case {
                title: "case".to_owned(),
                size: 1_024,
                connections: 8,
                churn: false,
                messages: 1_000,
                slow_messages: 100,
                contenders: vec![Contender::Ec, Contender::SmtpSource],
            },
            peer: Peer {
                address: "127.0.0.1:25".parse().expect("address"),
                domain: "d.test".to_owned(),
                tls: None,
                server_pid: None,
            },
            rows: vec![
                Row {
                    contender: Contender::Ec,
                    messages: 1_000,
                    samples: vec![sample(ec)],
                    startup_cpu: None,
                },
                Row {
                    contender: Contender::SmtpSource,
                    messages: 1_000,
                    samples: vec![sample(other)],
                    startup_cpu: None,
                },
            ],
            error: None,
        }
    }

    #[test]
    fn rate_and_cpu_both_count() {
        let faster_cheaper = result((2_000.0, 40.0), (1_000.0, 50.0));
        let verdict = against(&faster_cheaper, Contender::SmtpSource, 1.0, Some(1.0));
        assert_eq!(verdict.met, Some(true), "{verdict:?}");

        let faster_dearer = result((2_000.0, 60.0), (1_000.0, 50.0));
        assert_eq!(
            against(&faster_dearer, Contender::SmtpSource, 1.0, Some(1.0)).met,
            Some(false)
        );
        assert_eq!(
            against(&faster_dearer, Contender::SmtpSource, 1.0, None).met,
            Some(true)
        );
        assert_eq!(
            against(&faster_dearer, Contender::SmtpSource, 2.5, None).met,
            Some(false)
        );
    }

    #[test]
    fn flat_target_names_its_pattern() {
        let sched = SchedResult {
            open_release: Vec::new(),
            queued: None,
            command: String::new(),
            metrics: true,
        };
        for pattern in ["hot10", "spread"] {
            let verdict = flat(&sched, pattern);
            assert_eq!(flat_pattern(&verdict.target), Some(pattern));
        }

        let other = against(
            &result((1.0, 1.0), (1.0, 1.0)),
            Contender::SmtpSource,
            1.0,
            None,
        );
        assert_eq!(flat_pattern(&other.target), None);
    }

    #[test]
    fn missing_contender_is_not_measured() {
        let verdict = against(
            &result((1.0, 1.0), (1.0, 1.0)),
            Contender::LettreNodelay,
            1.0,
            None,
        );
        assert_eq!(verdict.met, None);
    }
}
