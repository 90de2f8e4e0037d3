//! The two queues of a binding × domain (Momentum's active and delayed
//! `mail_queue`s).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use ec_types::{MessageId, SharedMessage};

/// Messages ready to send, first in first out. Messages that come back from
/// a connection without a transaction go to the front, so they keep their
/// place.
#[derive(Debug, Default)]
pub struct ActiveQueue {
    messages: VecDeque<SharedMessage>,
}

impl ActiveQueue {
    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The queued messages, next to send first.
    pub fn iter(&self) -> impl Iterator<Item = &SharedMessage> {
        self.messages.iter()
    }

    pub(crate) fn push_back(&mut self, message: SharedMessage) {
        self.messages.push_back(message);
    }

    pub(crate) fn push_front(&mut self, message: SharedMessage) {
        self.messages.push_front(message);
    }

    /// Removes up to `count` messages from the front, in queue order.
    /// Taking the whole queue hands its buffer to the batch, so the batch
    /// needs no allocation of its own and the emptied queue keeps no
    /// memory until its next message.
    pub(crate) fn take_batch(&mut self, count: usize) -> Vec<SharedMessage> {
        if count >= self.messages.len() {
            return Vec::from(std::mem::take(&mut self.messages));
        }
        self.messages.drain(..count).collect()
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = SharedMessage> + '_ {
        self.messages.drain(..)
    }
}

/// Messages waiting for their next attempt, ordered by due time (ties by
/// message id, which is the order they entered the engine).
#[derive(Debug, Default)]
pub struct DelayedQueue {
    messages: BTreeMap<(Instant, MessageId), SharedMessage>,
}

impl DelayedQueue {
    /// Number of waiting messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// When the earliest message is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.messages.keys().next().map(|(due, _)| *due)
    }

    /// The waiting messages with their due times, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = (Instant, &SharedMessage)> {
        self.messages
            .iter()
            .map(|((due, _), message)| (*due, message))
    }

    pub(crate) fn insert(&mut self, due: Instant, message: SharedMessage) {
        self.messages.insert((due, message.id), message);
    }

    /// Removes and returns the earliest message if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<SharedMessage> {
        let entry = self.messages.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    pub(crate) fn drain(&mut self) -> impl Iterator<Item = SharedMessage> {
        std::mem::take(&mut self.messages).into_values()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use ec_types::{Domain, Message, ReversePath};

    use super::*;

    fn message(id: u64) -> SharedMessage {
        Arc::new(Message {
            id: MessageId(id),
            tag: id,
            domain: Domain::new("example.com").expect("valid domain"),
            reverse_path: ReversePath::Null,
            recipients: Vec::new(),
            data: Bytes::new(),
            attempts: 0,
            queued_at: Instant::now(),
            next_attempt: None,
        })
    }

    fn ids<'a>(messages: impl Iterator<Item = &'a SharedMessage>) -> Vec<u64> {
        messages.map(|m| m.id.0).collect()
    }

    #[test]
    fn active_queue_is_fifo() {
        let mut queue = ActiveQueue::default();
        for id in 1..=5 {
            queue.push_back(message(id));
        }
        let batch = queue.take_batch(2);
        assert_eq!(ids(batch.iter()), vec![1, 2]);
        assert_eq!(ids(queue.iter()), vec![3, 4, 5]);
    }

    #[test]
    fn active_requeue_goes_first() {
        let mut queue = ActiveQueue::default();
        queue.push_back(message(3));
        queue.push_front(message(2));
        queue.push_front(message(1));
        assert_eq!(ids(queue.iter()), vec![1, 2, 3]);
        assert_eq!(queue.take_batch(10).len(), 3);
        assert!(queue.is_empty());
    }

    #[test]
    fn delayed_queue_orders_by_due_time() {
        let start = Instant::now();
        let mut queue = DelayedQueue::default();
        queue.insert(start + Duration::from_secs(30), message(1));
        queue.insert(start + Duration::from_secs(10), message(2));
        queue.insert(start + Duration::from_secs(10), message(3));
        assert_eq!(queue.next_due(), Some(start + Duration::from_secs(10)));

        assert!(queue.pop_due(start).is_none());
        let due: Vec<u64> = std::iter::from_fn(|| queue.pop_due(start + Duration::from_secs(10)))
            .map(|m| m.id.0)
            .collect();
        assert_eq!(due, vec![2, 3]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.drain().count(), 1);
        assert!(queue.is_empty());
    }
}
