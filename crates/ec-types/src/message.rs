//! Messages, envelopes and per-recipient status.
//!
//! A message's bytes are held in [`bytes::Bytes`], so the copies of a message
//! that sit in several domain queues, and the batch a session is sending,
//! all share one buffer.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::address::{Address, Domain, ReversePath};
use crate::reply::Reply;

/// Engine-wide unique id of one queued message (one domain's share of a
/// submission). Ids are never reused within a process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// What a caller hands to the engine: message content and an envelope whose
/// recipients may span several domains.
///
/// The engine splits a submission into one [`Message`] per recipient domain,
/// because each domain has its own queues, limits and routes.
#[derive(Debug, Clone)]
pub struct Submission {
    /// An opaque value of the caller's, echoed in every outcome of this
    /// submission (for example, an index into the caller's input files).
    pub tag: u64,
    /// The MAIL FROM path.
    pub reverse_path: ReversePath,
    /// The RCPT TO paths, in the order given.
    pub recipients: Vec<Address>,
    /// The message content (RFC 5322 header and body), with any line endings.
    pub data: Bytes,
}

/// Delivery status of one recipient of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecipientStatus {
    /// Not yet attempted, or waiting for another attempt.
    Pending,
    /// The server accepted the message for this recipient (a 2xx reply to the
    /// final dot after a 2xx to RCPT).
    Delivered(Reply),
    /// A transient failure (4xx); the recipient stays queued for a retry.
    Deferred(Reply),
    /// A permanent failure (5xx), or a failure that the engine decided cannot
    /// succeed (for example a message larger than the server's SIZE limit).
    Failed(Reply),
    /// The final dot was sent but no reply came: the server may or may not
    /// have accepted the message. The engine retries, because a duplicate is
    /// better than a loss.
    DeliveryUnknown,
}

impl RecipientStatus {
    /// Whether this status ends the recipient's life in the engine.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delivered(_) | Self::Failed(_))
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The RCPT TO forward path.
    pub address: Address,
    /// Where this recipient stands.
    pub status: RecipientStatus,
}

/// One domain's share of a submission: the unit that queues hold, batches
/// carry and sessions deliver in one SMTP transaction.
#[derive(Debug, Clone)]
pub struct Message {
    /// Engine-wide id.
    pub id: MessageId,
    /// The submission's tag.
    pub tag: u64,
    /// The recipient domain that all of [`recipients`](Self::recipients) share.
    pub domain: Domain,
    /// The MAIL FROM path.
    pub reverse_path: ReversePath,
    /// Recipients in this domain, with their status.
    pub recipients: Vec<Recipient>,
    /// The content, shared with every other copy of the submission.
    pub data: Bytes,
    /// Delivery attempts spent so far. An attempt is spent when a transaction
    /// was started for the message, not when a connection failed before it.
    pub attempts: u32,
    /// When the message entered the engine.
    pub queued_at: Instant,
    /// Set while the message waits in a delayed queue: when it is due again.
    pub next_attempt: Option<Instant>,
}

impl Message {
    /// Splits a submission into one message per recipient domain, in the
    /// order the domains first appear among the recipients.
    ///
    /// `next_id` is called once for each message created.
    pub fn split(
        submission: Submission,
        now: Instant,
        mut next_id: impl FnMut() -> MessageId,
    ) -> Vec<Message> {
        let mut messages: Vec<Message> = Vec::new();
        for address in submission.recipients {
            let domain = address.domain().clone();
            let recipient = Recipient {
                address,
                status: RecipientStatus::Pending,
            };
            if let Some(message) = messages.iter_mut().find(|m| m.domain == domain) {
                message.recipients.push(recipient);
                continue;
            }
            messages.push(Message {
                id: next_id(),
                tag: submission.tag,
                domain,
                reverse_path: submission.reverse_path.clone(),
                recipients: vec![recipient],
                data: submission.data.clone(),
                attempts: 0,
                queued_at: now,
                next_attempt: None,
            });
        }
        messages
    }

    /// Recipients that still need a delivery attempt.
    pub fn pending_recipients(&self) -> impl Iterator<Item = (usize, &Recipient)> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.status.is_final())
    }

    /// Whether every recipient has a final status.
    pub fn is_done(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }

    /// Size of the content in octets, as given (before SMTP's line-ending
    /// normalization and dot-stuffing).
    pub fn size(&self) -> usize {
        self.data.len()
    }
}

/// A message shared between the scheduler and a session without copying the
/// envelope.
pub type SharedMessage = Arc<Message>;

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Address {
        Address::new(text).expect("valid test address")
    }

    #[test]
    fn split_groups_by_domain_and_shares_bytes() {
        let submission = Submission {
            tag: 7,
            reverse_path: ReversePath::new("from@sender.example").expect("valid"),
            recipients: vec![
                address("a@one.example"),
                address("b@two.example"),
                address("c@ONE.example"),
            ],
            data: Bytes::from_static(b"Subject: hi\r\n\r\nbody\r\n"),
        };
        let mut next = 0;
        let messages = Message::split(submission.clone(), Instant::now(), || {
            next += 1;
            MessageId(next)
        });

        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].domain.as_str(), "one.example");
        assert_eq!(messages[0].recipients.len(), 2);
        assert_eq!(messages[1].recipients.len(), 1);
        assert_eq!(messages[0].id, MessageId(1));
        assert_eq!(messages[1].id, MessageId(2));
        assert_eq!(messages[0].data.as_ptr(), submission.data.as_ptr());
        assert_eq!(messages[1].tag, 7);
    }

    #[test]
    fn final_statuses() {
        assert!(!RecipientStatus::Pending.is_final());
        assert!(!RecipientStatus::DeliveryUnknown.is_final());
    }
}
