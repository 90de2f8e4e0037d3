//! Where a message goes after a transaction or a close: the only code that
//! changes recipient statuses, moves messages between queues and lets them
//! leave the engine, and so the only code that emits recipient records.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ec_metrics::RecipientResult;
use ec_types::{
    BindingSlot, ConnectionId, DomainRecord, EnhancedStatusCode, Message, MessageFate, MessageId,
    RecipientStatus, Reply, ReplyCode, SharedMessage, TlsInfo,
};

use crate::domain::{BindingDomain, LaneKey};
use crate::ledger::Ledger;
use crate::metrics::LaneMetrics;
use crate::report::{RecipientOutcome, RecipientRecord, Report};
use crate::timers::{Timer, Timers};

/// Binding × domains with work to look at, each at most once.
#[derive(Debug, Default)]
pub(crate) struct WakeQueue {
    lanes: VecDeque<LaneKey>,
}

impl WakeQueue {
    pub(crate) fn wake(&mut self, key: LaneKey, lane: &mut BindingDomain) {
        if !lane.wake_pending {
            lane.wake_pending = true;
            self.lanes.push_back(key);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<LaneKey> {
        self.lanes.pop_front()
    }
}

/// The scheduler-wide state that fate decisions touch.
#[derive(Debug)]
pub(crate) struct FateContext<'a> {
    pub(crate) timers: &'a mut Timers,
    pub(crate) ledger: &'a mut Ledger,
    pub(crate) reports: &'a mut VecDeque<Report>,
    pub(crate) wake: &'a mut WakeQueue,
}

/// One binding × domain, borrowed with its domain record.
#[derive(Debug)]
pub(crate) struct LaneRef<'a> {
    pub(crate) key: LaneKey,
    pub(crate) record: &'a mut DomainRecord,
    pub(crate) lane: &'a mut BindingDomain,
}

/// The connection an outcome happened on, for the records.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempt {
    pub(crate) connection: Option<ConnectionId>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) tls: Option<TlsInfo>,
}

impl FateContext<'_> {
    fn record(
        &mut self,
        message: &Message,
        index: usize,
        binding: BindingSlot,
        outcome: RecipientOutcome,
        attempt: &Attempt,
        now: Instant,
    ) {
        let recipient = &message.recipients[index];
        self.reports.push_back(Report::Recipient(RecipientRecord {
            tag: message.tag,
            message: message.id,
            domain: message.domain.clone(),
            binding,
            recipient: recipient.address.clone(),
            outcome,
            attempts: message.attempts,
            connection: attempt.connection,
            peer: attempt.peer,
            tls: attempt.tls.clone(),
            at: now,
        }));
    }

    /// Applies a transaction's per-recipient statuses. A recipient that is
    /// already final keeps its status, so it is never reported twice.
    /// Returns how many statuses the session left out.
    pub(crate) fn apply_statuses(
        &mut self,
        message: &mut Message,
        statuses: Vec<RecipientStatus>,
        lane: (BindingSlot, &LaneMetrics),
        attempt: &Attempt,
        now: Instant,
    ) -> usize {
        let (binding, metrics) = lane;
        let given = statuses.len();
        let (mut delivered, mut failed) = (0, 0);
        for (index, status) in statuses.into_iter().enumerate() {
            let Some(recipient) = message.recipients.get_mut(index) else {
                break;
            };
            if recipient.status.is_final() {
                continue;
            }
            recipient.status = status;
            let outcome = match &recipient.status {
                RecipientStatus::Delivered(reply) => {
                    delivered += 1;
                    RecipientOutcome::Delivered(reply.clone())
                }
                RecipientStatus::Failed(reply) => {
                    failed += 1;
                    RecipientOutcome::Failed(reply.clone())
                }
                _ => continue,
            };
            self.record(message, index, binding, outcome, attempt, now);
        }
        metrics.recipients(RecipientResult::Delivered, delivered);
        metrics.recipients(RecipientResult::Failed, failed);
        message.recipients.len().saturating_sub(given)
    }

    /// Settles a message after its transaction: it leaves the engine when
    /// every recipient is final, fails when it outlived the retry policy,
    /// and otherwise waits in the delayed queue.
    pub(crate) fn settle(
        &mut self,
        mut message: SharedMessage,
        lane: LaneRef<'_>,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        if message.is_done() {
            return self.finish(&message, lane.record, &lane.lane.metrics);
        }
        if expired(&message, lane.lane, now) {
            return self.expire(&mut message, lane, attempt, now);
        }
        self.defer(message, lane, None, attempt, now)
    }

    /// Puts a message in the delayed queue with the retry policy's backoff.
    /// Each record carries the recipient's own 4xx when its status is
    /// `Deferred`, and `reply`, the failure's reply, otherwise. So the
    /// caller first sets the statuses of this attempt: a transaction's
    /// outcome sets every one, and a close resets those it has no reply for.
    pub(crate) fn defer(
        &mut self,
        mut message: SharedMessage,
        lane: LaneRef<'_>,
        reply: Option<&Reply>,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        let due = Self::next_attempt(&mut message, lane.lane, now);

        let binding = lane.key.binding;
        let mut deferred = 0;
        for (index, recipient) in message.pending_recipients() {
            let reply = match &recipient.status {
                RecipientStatus::Deferred(own) => Some(own.clone()),
                _ => reply.cloned(),
            };
            let outcome = RecipientOutcome::Deferred {
                reply,
                next_attempt: due,
            };
            self.record(&message, index, binding, outcome, attempt, now);
            deferred += 1;
        }
        let metrics = &lane.lane.metrics;
        metrics.recipients(RecipientResult::Deferred, deferred);
        metrics.message_fate(MessageFate::Deferred);

        self.delay(message, lane.key, lane.lane, due);
        self.ledger.deferred += 1;
        lane.record.counters.messages_deferred += 1;
        MessageFate::Deferred
    }

    /// Returns the retry policy's next attempt for a message that just spent
    /// one.
    fn next_attempt(message: &mut SharedMessage, lane: &BindingDomain, now: Instant) -> Instant {
        let due = now + lane.settings.retry.backoff(message.attempts.max(1));
        Arc::make_mut(message).next_attempt = Some(due);
        due
    }

    /// Puts a message in the delayed queue until `due`.
    fn delay(
        &mut self,
        message: SharedMessage,
        key: LaneKey,
        lane: &mut BindingDomain,
        due: Instant,
    ) {
        lane.delayed.insert(due, message);
        self.arm_retry(key, lane, due);
        self.ledger.delayed += 1;
    }

    /// Fails every pending recipient with `reply`, and the message leaves.
    pub(crate) fn fail(
        &mut self,
        message: &mut SharedMessage,
        lane: LaneRef<'_>,
        reply: &Reply,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        self.fail_each(message, lane, |_| reply.clone(), attempt, now)
    }

    /// Fails every pending recipient with the reply `reply_for` makes from
    /// its status, and the message leaves.
    fn fail_each(
        &mut self,
        message: &mut SharedMessage,
        lane: LaneRef<'_>,
        reply_for: impl Fn(&RecipientStatus) -> Reply,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        let binding = lane.key.binding;
        let pending: Vec<usize> = message
            .pending_recipients()
            .map(|(index, _)| index)
            .collect();
        lane.lane
            .metrics
            .recipients(RecipientResult::Failed, pending.len());
        let owned = Arc::make_mut(message);
        for index in pending {
            let reply = reply_for(&owned.recipients[index].status);
            owned.recipients[index].status = RecipientStatus::Failed(reply.clone());
            self.record(
                owned,
                index,
                binding,
                RecipientOutcome::Failed(reply),
                attempt,
                now,
            );
        }
        self.finish(message, lane.record, &lane.lane.metrics)
    }

    /// Fails the pending recipients of a message that outlived the retry
    /// policy. Each reply quotes the server's last reply to that recipient,
    /// when it has one, so the reason for the delay is not lost.
    fn expire(
        &mut self,
        message: &mut SharedMessage,
        lane: LaneRef<'_>,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        let age = now.saturating_duration_since(message.queued_at);
        self.ledger.expired += 1;
        let reply_for = |status: &RecipientStatus| {
            let last = match status {
                RecipientStatus::Deferred(reply) if !reply.local => Some(reply),
                _ => None,
            };
            expired_reply(age, last)
        };
        self.fail_each(message, lane, reply_for, attempt, now)
    }

    /// Marks the pending recipients of a message whose final dot got no
    /// reply, and puts it in the delayed queue with the retry policy's
    /// backoff: the message may have arrived, so it is sent again, but not
    /// at once. A message that outlived the retry policy fails instead, and
    /// then counts both fates.
    ///
    /// A recipient whose status is `Deferred` got a 4xx to its RCPT in this
    /// attempt, so the message cannot have reached it: its record is a
    /// deferral with that reply. When that leaves no recipient whose
    /// delivery is unknown, the message is settled as deferred.
    ///
    /// Sending it again at once would repeat the possible duplicate as fast
    /// as connections open. A server that drops every connection at one
    /// message's final dot would then get that message again and again,
    /// ahead of the rest of the queue.
    pub(crate) fn delivery_unknown(
        &mut self,
        mut message: SharedMessage,
        lane: LaneRef<'_>,
        attempt: &Attempt,
        now: Instant,
    ) -> MessageFate {
        let binding = lane.key.binding;
        let unknown: Vec<usize> = message
            .pending_recipients()
            .filter(|(_, recipient)| !matches!(recipient.status, RecipientStatus::Deferred(_)))
            .map(|(index, _)| index)
            .collect();
        if unknown.is_empty() {
            return self.settle(message, lane, attempt, now);
        }
        lane.lane
            .metrics
            .recipients(RecipientResult::DeliveryUnknown, unknown.len());
        let owned = Arc::make_mut(&mut message);
        for index in unknown {
            owned.recipients[index].status = RecipientStatus::DeliveryUnknown;
            self.record(
                owned,
                index,
                binding,
                RecipientOutcome::DeliveryUnknown,
                attempt,
                now,
            );
        }
        self.ledger.delivery_unknown += 1;
        lane.record.counters.messages_delivery_unknown += 1;
        lane.lane.metrics.message_fate(MessageFate::DeliveryUnknown);

        if expired(&message, lane.lane, now) {
            return self.expire(&mut message, lane, attempt, now);
        }
        let due = Self::next_attempt(&mut message, lane.lane, now);
        let mut deferred = 0;
        for (index, recipient) in message.pending_recipients() {
            if let RecipientStatus::Deferred(reply) = &recipient.status {
                let outcome = RecipientOutcome::Deferred {
                    reply: Some(reply.clone()),
                    next_attempt: due,
                };
                self.record(&message, index, binding, outcome, attempt, now);
                deferred += 1;
            }
        }
        lane.lane
            .metrics
            .recipients(RecipientResult::Deferred, deferred);
        self.delay(message, lane.key, lane.lane, due);
        MessageFate::DeliveryUnknown
    }

    /// Puts messages back at the front of the active queue, in the given
    /// order, without spending an attempt. A message that outlived the
    /// retry policy fails instead. Returns each message's fate, in order.
    pub(crate) fn requeue(
        &mut self,
        messages: Vec<SharedMessage>,
        lane: LaneRef<'_>,
        attempt: &Attempt,
        now: Instant,
    ) -> Vec<(MessageId, MessageFate)> {
        let LaneRef { key, record, lane } = lane;
        let mut fates = Vec::with_capacity(messages.len());
        let mut requeued = 0;
        for mut message in messages.into_iter().rev() {
            let id = message.id;
            if expired(&message, lane, now) {
                let lane = LaneRef {
                    key,
                    record: &mut *record,
                    lane: &mut *lane,
                };
                fates.push((id, self.expire(&mut message, lane, attempt, now)));
                continue;
            }
            lane.active.push_front(message);
            fates.push((id, MessageFate::Requeued));
            lane.metrics.message_fate(MessageFate::Requeued);
            requeued += 1;
        }
        fates.reverse();

        self.ledger.active += requeued;
        self.ledger.requeued += requeued;
        if !lane.active.is_empty() {
            self.wake.wake(key, lane);
        }
        fates
    }

    /// Moves due messages of a delayed queue to the end of the active queue
    /// and re-arms the retry timer for the next one.
    pub(crate) fn promote_due(&mut self, key: LaneKey, lane: &mut BindingDomain, now: Instant) {
        self.timers.cancel_slot(&mut lane.retry_timer);
        let mut moved = 0;
        while let Some(mut message) = lane.delayed.pop_due(now) {
            Arc::make_mut(&mut message).next_attempt = None;
            lane.active.push_back(message);
            moved += 1;
        }
        self.ledger.delayed -= moved;
        self.ledger.active += moved;
        if let Some(due) = lane.delayed.next_due() {
            lane.retry_timer = Some(self.timers.schedule(due, Timer::Retry(key)));
        }
        if moved > 0 {
            self.wake.wake(key, lane);
        }
    }

    /// Reports every pending recipient of a message as unsent; the message
    /// leaves the engine.
    pub(crate) fn unsent(&mut self, message: &Message, binding: BindingSlot, now: Instant) {
        for (index, _) in message.pending_recipients() {
            self.record(
                message,
                index,
                binding,
                RecipientOutcome::Unsent,
                &Attempt::default(),
                now,
            );
        }
        self.ledger.unsent += 1;
    }

    fn finish(
        &mut self,
        message: &Message,
        record: &mut DomainRecord,
        metrics: &LaneMetrics,
    ) -> MessageFate {
        let delivered = message
            .recipients
            .iter()
            .any(|r| matches!(r.status, RecipientStatus::Delivered(_)));
        let failed = message
            .recipients
            .iter()
            .any(|r| matches!(r.status, RecipientStatus::Failed(_)));
        if failed {
            record.counters.messages_failed += 1;
        }
        let fate = if delivered {
            record.counters.messages_delivered += 1;
            self.ledger.delivered += 1;
            MessageFate::Delivered
        } else {
            self.ledger.failed += 1;
            MessageFate::Failed
        };
        metrics.message_fate(fate);
        fate
    }

    fn arm_retry(&mut self, key: LaneKey, lane: &mut BindingDomain, due: Instant) {
        if lane.retry_timer.is_some_and(|timer| timer.at <= due) {
            return;
        }
        self.timers.cancel_slot(&mut lane.retry_timer);
        lane.retry_timer = Some(self.timers.schedule(due, Timer::Retry(key)));
    }
}

fn expired(message: &Message, lane: &BindingDomain, now: Instant) -> bool {
    now.saturating_duration_since(message.queued_at) >= lane.settings.retry.max_age
}

/// The reply recorded for recipients that outlived the retry policy:
/// 554 with RFC 3463's 5.4.7, "delivery time expired", quoting the
/// server's `last` reply when there is one.
pub(crate) fn expired_reply(age: Duration, last: Option<&Reply>) -> Reply {
    let last = match last {
        Some(reply) => format!("; the server's last reply was \"{reply}\""),
        None => String::new(),
    };
    Reply::made_locally(
        ReplyCode::TRANSACTION_FAILED,
        EnhancedStatusCode::new(5, 4, 7).ok(),
        &format!(
            "delivery time expired: queued {}s ago, past the retry policy's maximum age{last} \
             (reply made by ec)",
            age.as_secs()
        ),
    )
}
