//! Folding the engine's records into counts as they arrive, in memory that
//! does not grow with the run: one byte per recipient for its final
//! records, one per submission for the recipients still pending.

use std::collections::BTreeMap;
use std::time::Duration;

use ec_sched::{ConnectionClosed, RecipientOutcome, RecipientRecord, Report};

/// Maximum recipients of a soak submission.
pub(crate) const MAX_RECIPIENTS: usize = 2;

/// Returns the recipient count of the submission tagged `tag`: one, or two
/// for a quarter of them, so per-recipient faults split a message's fate.
pub(crate) fn recipient_count(tag: u64) -> usize {
    if tag % 4 == 3 {
        2
    } else {
        1
    }
}

/// Builds the local part of recipient `index` of submission `tag`. The
/// collector reads the index back from it.
pub(crate) fn local_part(tag: u64, index: usize) -> String {
    format!("r{index}-{tag}")
}

/// Counts of what the records reported.
#[derive(Debug)]
pub(crate) struct Collector {
    /// Final records per recipient, at `tag * MAX_RECIPIENTS + index`.
    finals: Vec<u8>,
    /// Recipients without a final record, per submission.
    pending: Vec<u8>,
    /// Submissions whose every recipient has a final record.
    pub(crate) finished: u64,
    /// Records that came after the recipient's final one.
    pub(crate) after_final: u64,
    /// Records naming a tag or recipient the run never submitted.
    pub(crate) foreign: u64,
    /// Records by outcome name.
    pub(crate) outcomes: BTreeMap<&'static str, u64>,
    /// Records whose reply names a chaos fault, by fault and outcome.
    pub(crate) by_fault: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Connection closes by (reason, outcome).
    pub(crate) closes: BTreeMap<(&'static str, &'static str), u64>,
    /// Connections opened.
    pub(crate) opened: u64,
    /// Maximum time from a connect's start to its socket's release.
    pub(crate) longest_connection: Duration,
}

impl Collector {
    /// Creates a collector for submissions tagged `0..submissions`.
    pub(crate) fn new(submissions: u64) -> Self {
        let submissions = usize::try_from(submissions).expect("submissions fit in memory");
        // Filled with their final values up front, so the pages are touched
        // now and not as the run goes: the RSS samples then see the engine.
        let pending = (0..submissions as u64)
            .map(|tag| recipient_count(tag) as u8)
            .collect();
        Self {
            finals: vec![0; submissions * MAX_RECIPIENTS],
            pending,
            finished: 0,
            after_final: 0,
            foreign: 0,
            outcomes: BTreeMap::new(),
            by_fault: BTreeMap::new(),
            closes: BTreeMap::new(),
            opened: 0,
            longest_connection: Duration::ZERO,
        }
    }

    /// Takes one record.
    pub(crate) fn take(&mut self, report: Report) {
        match report {
            Report::Recipient(record) => self.recipient(&record),
            Report::ConnectionOpened(_) => self.opened += 1,
            Report::ConnectionClosed(closed) => self.closed(&closed),
            _ => {}
        }
    }

    fn recipient(&mut self, record: &RecipientRecord) {
        *self.outcomes.entry(record.outcome.as_str()).or_default() += 1;
        if let Some(fault) = fault_in_reply(&record.outcome) {
            *self
                .by_fault
                .entry(fault)
                .or_default()
                .entry(record.outcome.as_str())
                .or_default() += 1;
        }

        let Some(slot) = self.slot(record) else {
            self.foreign += 1;
            return;
        };
        if self.finals[slot] > 0 {
            self.after_final += 1;
        }
        if !record.outcome.is_final() {
            return;
        }
        self.finals[slot] = self.finals[slot].saturating_add(1);
        if self.finals[slot] == 1 {
            let pending = &mut self.pending[record.tag as usize];
            *pending -= 1;
            if *pending == 0 {
                self.finished += 1;
            }
        }
    }

    /// Finds the recipient's index in `finals` from its local part.
    fn slot(&self, record: &RecipientRecord) -> Option<usize> {
        let tag = usize::try_from(record.tag).ok()?;
        let index = record
            .recipient
            .local_part()
            .strip_prefix('r')?
            .split('-')
            .next()?
            .parse::<usize>()
            .ok()?;
        let expected = format!("r{index}-{tag}");
        let known = tag < self.pending.len()
            && index < recipient_count(record.tag)
            && record.recipient.local_part() == expected;
        known.then_some(tag * MAX_RECIPIENTS + index)
    }

    fn closed(&mut self, closed: &ConnectionClosed) {
        let key = (closed.reason.as_str(), closed.outcome.as_str());
        *self.closes.entry(key).or_default() += 1;
        self.longest_connection = self.longest_connection.max(closed.duration);
    }

    /// Recipients of the first `submitted` submissions with no final
    /// record, and with more than one.
    pub(crate) fn missing_and_doubled(&self, submitted: u64) -> (u64, u64) {
        let (mut missing, mut doubled) = (0, 0);
        for tag in 0..submitted {
            for index in 0..recipient_count(tag) {
                match self.finals[tag as usize * MAX_RECIPIENTS + index] {
                    0 => missing += 1,
                    1 => {}
                    _ => doubled += 1,
                }
            }
        }
        (missing, doubled)
    }
}

/// Returns the chaos fault a reply names (`451 4.3.0 chaos rcpt_451`), if
/// any.
fn fault_in_reply(outcome: &RecipientOutcome) -> Option<String> {
    let reply = match outcome {
        RecipientOutcome::Delivered(reply) | RecipientOutcome::Failed(reply) => reply,
        RecipientOutcome::Deferred {
            reply: Some(reply), ..
        } => reply,
        _ => return None,
    };
    let text = reply.text();
    let (_, after) = text.split_once("chaos ")?;
    after.split_whitespace().next().map(str::to_owned)
}
