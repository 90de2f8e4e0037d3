//! The fates a close gives a connection's batch. Messages whose
//! transaction never started go back to the active queue, unless the
//! failure is one no retry can change (a null MX, a domain that does not
//! exist), which fails them. The message whose
//! transaction the close cut short gets its fate from the rejections the
//! session reported before the cut, then from the session's failure.

use std::sync::Arc;
use std::time::Instant;

use ec_types::{
    BindingSlot, ConnectionState, MessageFate, MessageId, RecipientStatus, Reply, SessionError,
    SessionFailure, SharedMessage,
};

use crate::domain::DomainEntry;
use crate::fate::{Attempt, FateContext, LaneRef};
use crate::metrics::LaneMetrics;

/// The state a closing connection leaves to settle.
pub(crate) struct Settling<'a> {
    /// The messages handed to the session without a transaction outcome.
    pub(crate) batch: Vec<SharedMessage>,
    /// The rejection of MAIL in the transaction under way.
    pub(crate) mail_rejected: Option<(MessageId, Reply)>,
    /// RCPT rejections of the transaction under way.
    pub(crate) rejected: Vec<(MessageId, usize, Reply)>,
    /// The session's failure report, when a failure caused the close.
    pub(crate) failure: Option<&'a SessionFailure>,
    /// The connection's state before the close.
    pub(crate) prior: ConnectionState,
}

/// Gives each message of a closing connection's batch its fate, and under
/// a failure that no retry can change also each message queued in the
/// lane. Also returns whether one of them was in its transaction, and so
/// spent an attempt.
pub(crate) fn settle_batch(
    ctx: &mut FateContext<'_>,
    domain: &mut DomainEntry,
    binding: BindingSlot,
    settling: Settling<'_>,
    attempt: &Attempt,
    now: Instant,
) -> (Vec<(MessageId, MessageFate)>, bool) {
    let Settling {
        batch,
        mail_rejected,
        rejected,
        failure,
        prior,
    } = settling;
    let key = domain.lane_key(binding);
    let Some((record, lane)) = domain.split_mut(binding) else {
        return (Vec::new(), false);
    };

    let in_transaction = match failure {
        Some(failure) => failure.in_transaction,
        // Without a failure report, the head of a busy connection's batch
        // may be past its final dot.
        None if prior == ConnectionState::Busy => batch.first().map(|m| m.id),
        None => None,
    };

    let mut untouched = Vec::new();
    let mut current = None;
    for message in batch {
        if Some(message.id) == in_transaction {
            current = Some(message);
        } else {
            untouched.push(message);
        }
    }
    let permanent = failure.and_then(|failure| failure.error.permanent_reply());
    let mut fates = match permanent {
        // No later attempt can change the outcome (a null MX, a domain
        // that does not exist), so the batch and the messages queued behind
        // it fail now instead of waiting out the retry policy.
        Some(reply) => {
            let queued: Vec<SharedMessage> = lane.active.drain().collect();
            ctx.ledger.active -= queued.len() as u64;
            untouched
                .into_iter()
                .chain(queued)
                .map(|mut message| {
                    let id = message.id;
                    Arc::make_mut(&mut message).attempts += 1;
                    let lane = LaneRef {
                        key,
                        record: &mut *record,
                        lane: &mut *lane,
                    };
                    (id, ctx.fail(&mut message, lane, &reply, attempt, now))
                })
                .collect()
        }
        None => ctx.requeue(untouched, LaneRef { key, record, lane }, attempt, now),
    };

    let Some(mut message) = current else {
        return (fates, false);
    };
    Arc::make_mut(&mut message).attempts += 1;
    let id = message.id;
    let replies = CutShort {
        mail_rejected: mail_rejected
            .filter(|(rejected_message, _)| *rejected_message == id)
            .map(|(_, reply)| reply),
        rejected: rejected
            .into_iter()
            .filter(|(rejected_message, ..)| *rejected_message == id)
            .map(|(_, index, reply)| (index, reply))
            .collect(),
        failure,
    };
    let lane = LaneRef { key, record, lane };
    let fate = settle_cut_short(ctx, message, replies, lane, attempt, now);
    // The message in transaction goes first: it was the head of the batch.
    fates.insert(0, (id, fate));
    (fates, true)
}

/// The replies and the failure known of a transaction that a close cut
/// short.
struct CutShort<'a> {
    /// The server's rejection of MAIL.
    mail_rejected: Option<Reply>,
    /// The server's rejections of RCPT, by recipient index.
    rejected: Vec<(usize, Reply)>,
    /// The session's failure report, when a failure caused the close.
    failure: Option<&'a SessionFailure>,
}

/// Gives the message of a transaction cut short its fate.
///
/// A rejection of MAIL decides for every recipient: the server rejected the
/// whole transaction, so a 5xx fails them all and a 4xx defers them all,
/// with its reply. Otherwise each rejected recipient keeps its own RCPT
/// reply: failed on a 5xx, deferred with it on a 4xx, never "delivery
/// unknown". The failure decides for the other recipients.
fn settle_cut_short(
    ctx: &mut FateContext<'_>,
    mut message: SharedMessage,
    replies: CutShort<'_>,
    lane: LaneRef<'_>,
    attempt: &Attempt,
    now: Instant,
) -> MessageFate {
    // Statuses left by earlier attempts must not stand for this one: a
    // deferral record carries a 4xx only when this attempt got it.
    let owned = Arc::make_mut(&mut message);
    for recipient in &mut owned.recipients {
        if !recipient.status.is_final() {
            recipient.status = RecipientStatus::Pending;
        }
    }

    if let Some(reply) = replies.mail_rejected {
        return if reply.is_permanent() {
            ctx.fail(&mut message, lane, &reply, attempt, now)
        } else {
            settle_undecided(ctx, message, Some(&reply), lane, attempt, now)
        };
    }
    if !replies.rejected.is_empty() {
        let metrics = (lane.key.binding, &lane.lane.metrics);
        apply_rejections(ctx, &mut message, &replies.rejected, metrics, attempt, now);
    }
    if message.is_done() {
        // Every recipient the transaction reached was rejected for good:
        // nothing is left to retry, and no copy can have been delivered.
        return ctx.settle(message, lane, attempt, now);
    }

    match replies.failure {
        None => ctx.delivery_unknown(message, lane, attempt, now),
        Some(failure) if failure.final_dot_sent => {
            ctx.delivery_unknown(message, lane, attempt, now)
        }
        Some(failure) => match &failure.error {
            SessionError::Reply { reply, .. } => {
                settle_undecided(ctx, message, Some(reply), lane, attempt, now)
            }
            _ => settle_undecided(ctx, message, None, lane, attempt, now),
        },
    }
}

/// Gives the recipients that no RCPT reply decided the status of the
/// failure's `reply` (failed on a 5xx, deferred on a 4xx, pending without
/// one), then settles the message. Settling fails a message that outlived
/// the retry policy, so a server that keeps cutting the transaction short
/// cannot keep a message queued past its maximum age.
fn settle_undecided(
    ctx: &mut FateContext<'_>,
    mut message: SharedMessage,
    reply: Option<&Reply>,
    lane: LaneRef<'_>,
    attempt: &Attempt,
    now: Instant,
) -> MessageFate {
    if let Some(reply) = reply {
        let owned = Arc::make_mut(&mut message);
        let statuses: Vec<RecipientStatus> = owned
            .recipients
            .iter()
            .map(|recipient| match recipient.status {
                RecipientStatus::Pending if reply.is_permanent() => {
                    RecipientStatus::Failed(reply.clone())
                }
                RecipientStatus::Pending => RecipientStatus::Deferred(reply.clone()),
                ref other => other.clone(),
            })
            .collect();
        let metrics = (lane.key.binding, &lane.lane.metrics);
        ctx.apply_statuses(owned, statuses, metrics, attempt, now);
    }
    ctx.settle(message, lane, attempt, now)
}

/// Gives each recipient that the server rejected at RCPT before the
/// transaction was cut short the status of its own reply: failed on a
/// 5xx, which is recorded now, and deferred on a 4xx, which the message's
/// fate records.
fn apply_rejections(
    ctx: &mut FateContext<'_>,
    message: &mut SharedMessage,
    rejected: &[(usize, Reply)],
    lane: (BindingSlot, &LaneMetrics),
    attempt: &Attempt,
    now: Instant,
) {
    let owned = Arc::make_mut(message);
    let mut statuses: Vec<RecipientStatus> =
        owned.recipients.iter().map(|r| r.status.clone()).collect();
    for (index, reply) in rejected {
        if let Some(status) = statuses.get_mut(*index) {
            *status = if reply.is_permanent() {
                RecipientStatus::Failed(reply.clone())
            } else {
                RecipientStatus::Deferred(reply.clone())
            };
        }
    }
    ctx.apply_statuses(owned, statuses, lane, attempt, now);
}
