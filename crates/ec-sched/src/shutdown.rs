//! Shutting the engine down without losing a message: close every
//! connection, wait for their sockets, then report what is left as unsent.

use std::time::Instant;

use ec_types::{CloseReason, ConnectionState, Event};
use tracing::{debug, info};

use crate::driver::SessionDriver;
use crate::scheduler::Scheduler;
use crate::timers::{Timer, TimerKey};
use crate::token::SchedulerToken;

/// The progress of a shutdown.
#[derive(Debug)]
pub(crate) struct ShutdownState {
    pub(crate) started: Instant,
    pub(crate) grace: Option<TimerKey>,
    /// Every connection is gone and every queued message was reported.
    pub(crate) finished: bool,
}

impl Scheduler {
    /// Begins a shutdown: no new connections and no new batches. Connecting
    /// and idle connections are closed now. Busy ones are closed when their
    /// batch is done or when the shutdown grace period ends, whichever
    /// comes first. Calling it again does nothing.
    pub fn begin_shutdown(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        now: Instant,
    ) {
        token.check(self.id);
        if self.shutdown.is_some() {
            return;
        }
        let grace = self
            .timers
            .schedule(now + self.options.shutdown_grace, Timer::ShutdownGrace);
        self.shutdown = Some(ShutdownState {
            started: now,
            grace: Some(grace),
            finished: false,
        });
        info!(
            connections = self.connections.len(),
            "scheduler shutting down"
        );

        let quiet: Vec<_> = self
            .connections
            .iter()
            .filter(|(_, entry)| {
                matches!(
                    entry.connection.state,
                    ConnectionState::Connecting | ConnectionState::Idle
                )
            })
            .map(|(handle, _)| handle)
            .collect();
        for handle in quiet {
            self.request_close(
                token,
                driver,
                handle,
                &Event::Shutdown,
                CloseReason::Shutdown,
                now,
            );
        }
    }

    /// Closes the connections still busy when the grace period ends.
    pub(crate) fn close_busy_for_shutdown(
        &mut self,
        token: &mut SchedulerToken,
        driver: &mut dyn SessionDriver,
        now: Instant,
    ) {
        if let Some(state) = self.shutdown.as_mut() {
            state.grace = None;
        }
        let busy: Vec<_> = self
            .connections
            .iter()
            .filter(|(_, entry)| entry.connection.closing.is_none())
            .map(|(handle, _)| handle)
            .collect();
        debug!(
            connections = busy.len(),
            "shutdown grace period over; closing busy connections"
        );
        for handle in busy {
            self.request_close(
                token,
                driver,
                handle,
                &Event::Shutdown,
                CloseReason::Shutdown,
                now,
            );
        }
    }

    /// Finishes a shutdown once every connection is gone: each message
    /// still queued leaves the engine with its pending recipients reported
    /// as unsent. Returns whether the shutdown has finished; false when no
    /// shutdown was begun.
    pub fn poll_shutdown(&mut self, token: &SchedulerToken, now: Instant) -> bool {
        token.check(self.id);
        let Some(state) = self.shutdown.as_ref() else {
            return false;
        };
        if state.finished {
            return true;
        }
        if !self.connections.is_empty() {
            return false;
        }

        let started = state.started;
        let mut unsent = 0u64;
        for domain in &mut self.domains {
            let slots: Vec<_> = domain.bindings().map(|(slot, _)| slot).collect();
            self.timers.cancel_slot(&mut domain.backoff_timer);
            for slot in slots {
                let Some(lane) = domain.lane_mut(slot) else {
                    continue;
                };
                self.timers.cancel_slot(&mut lane.retry_timer);
                let active: Vec<_> = lane.active.drain().collect();
                let delayed: Vec<_> = lane.delayed.drain().collect();
                self.ledger.active -= active.len() as u64;
                self.ledger.delayed -= delayed.len() as u64;
                let mut context = crate::fate::FateContext {
                    timers: &mut self.timers,
                    ledger: &mut self.ledger,
                    reports: &mut self.reports,
                    wake: &mut self.wake,
                };
                for message in active.iter().chain(delayed.iter()) {
                    context.unsent(message, slot, now);
                    unsent += 1;
                }
            }
        }
        if let Some(state) = self.shutdown.as_mut() {
            if let Some(grace) = state.grace.take() {
                self.timers.cancel(grace);
            }
            state.finished = true;
        }
        info!(
            unsent,
            duration_ms = now.saturating_duration_since(started).as_millis() as u64,
            "scheduler shut down"
        );
        true
    }

    /// Whether a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }
}
