//! Session events gathered per runtime tick and sent to the scheduler in
//! one inbox message.
//!
//! Sessions push their events into one queue. A flusher task sends the
//! queue once the runtime has run every ready task and polled its sockets,
//! so one inbox message carries what a whole tick produced. With the
//! sessions on a runtime of their own, that is one wake-up of the scheduler
//! thread per tick instead of one per event (each a pair of futex calls and
//! a context switch). With the sessions on the scheduler's thread, it is one
//! pass of the scheduler's loop per tick. A tick ends when the runtime runs
//! out of ready tasks, so an event reaches the scheduler at most one tick
//! after its session produced it.

use std::sync::{Arc, Mutex, PoisonError};

use ec_sched::{BatchSender, EventSender, Wake};
use ec_types::{ConnectionHandle, SessionEvent};
use tokio::sync::Notify;

use super::session::EventSink;

/// The queue shared by every session of one driver.
#[derive(Debug)]
pub(crate) struct EventBatcher {
    queue: Mutex<Vec<(ConnectionHandle, SessionEvent)>>,
    pending: Notify,
}

impl EventBatcher {
    /// Starts the flusher task on `runtime`; it sends through `sender`,
    /// then calls `wake` if there is one, until the runtime shuts down.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        sender: BatchSender,
        wake: Option<Wake>,
    ) -> Arc<Self> {
        let batcher = Arc::new(Self {
            queue: Mutex::new(Vec::new()),
            pending: Notify::new(),
        });
        runtime.spawn(flush_forever(Arc::clone(&batcher), sender, wake));
        batcher
    }

    /// Queues one event; the first event of a tick wakes the flusher.
    fn push(&self, handle: ConnectionHandle, event: SessionEvent) {
        let was_empty = {
            // No code panics while holding the lock, so a poisoned queue
            // still holds whole entries.
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let was_empty = queue.is_empty();
            queue.push((handle, event));
            was_empty
        };
        if was_empty {
            self.pending.notify_one();
        }
    }

    fn take(&self) -> Vec<(ConnectionHandle, SessionEvent)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

async fn flush_forever(batcher: Arc<EventBatcher>, sender: BatchSender, wake: Option<Wake>) {
    loop {
        batcher.pending.notified().await;

        // Let every task that is ready now run first (tokio wakes a
        // yielding task only after the ready tasks ran and the sockets were
        // polled), so their events join this batch.
        tokio::task::yield_now().await;

        let events = batcher.take();
        if let Err(events) = sender.send(events) {
            tracing::debug!(
                events = events.len(),
                "scheduler gone; session events dropped"
            );
        }
        if let Some(wake) = &wake {
            wake();
        }
    }
}

/// One session's end of the batcher. Its scheduler's [`EventSender`]
/// gives the connection's handle and counts the bytes sent.
#[derive(Debug)]
pub(crate) struct BatchedEvents {
    batcher: Arc<EventBatcher>,
    sender: EventSender,
}

impl BatchedEvents {
    pub(crate) fn new(batcher: Arc<EventBatcher>, sender: EventSender) -> Self {
        Self { batcher, sender }
    }
}

impl EventSink for BatchedEvents {
    fn report(&self, event: SessionEvent) {
        self.batcher.push(self.sender.handle(), event);
    }

    fn bytes_sent(&self, bytes: u64) {
        self.sender.bytes_sent(bytes);
    }
}
