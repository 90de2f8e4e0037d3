//! The scheduler of `ec`, an outbound SMTP delivery engine built the way
//! Momentum builds its SMTP client: one thread owns every queue, count and
//! timer, SMTP sessions elsewhere do the I/O, and one function,
//! [`begin_close`] (called by `closeconn`), ends a connection and puts every
//! message where it belongs.
//!
//! # What it does
//!
//! - Queues: per binding × domain an active queue (first in, first out) and
//!   a delayed queue (ordered by retry time).
//! - Connections: opens them for backlogs, reuses idle ones, closes them at
//!   their idle timeout or maximum age, within four limits that hold at
//!   every moment: engine-wide, per binding, per binding × domain
//!   (`max_outbound_connections`) and per remote host. A connection counts
//!   from the start of its connect until its socket is gone, closing
//!   included.
//! - Fates: every message of a connection's batch ends delivered, failed,
//!   deferred with backoff, requeued without spending an attempt, or
//!   delivery unknown (final dot sent, no reply: retried with backoff,
//!   because a duplicate is better than a loss).
//! - Backoff: a domain whose connects fail waits, doubling up to a cap.
//! - Records: an [`Observer`] gets one record per recipient outcome and per
//!   connection opened or closed; every recipient gets exactly one final
//!   record.
//! - Audit: [`Scheduler::audit`] recounts everything and checks the
//!   accounting invariants; the loop runs it periodically.
//!
//! Per event, the cost does not depend on the number of domains: nothing
//! scans the domain table outside the audit and the end of a shutdown.
//!
//! It does no I/O and speaks no SMTP: a [`SessionDriver`] (the SMTP client
//! crate's, or your own) runs sessions and reports [`SessionEvent`]s.
//!
//! # The token
//!
//! [`SchedulerToken`] is a zero-sized proof of being on the scheduler's
//! thread. Only this crate makes one (the loop, and the test harness, which
//! never hands it out by value). It is neither `Send` nor `Sync`, and every
//! API that changes scheduler state takes it, so that state can be plain
//! data with no lock and still never be touched from another thread.
//!
//! # Running it
//!
//! [`Scheduler::spawn`] runs the loop on a thread named `ec-scheduler` and
//! returns a [`SchedulerHandle`] for submitting mail, registering bindings
//! and domains, reading [`Stats`] and shutting down. [`testing::Harness`]
//! runs the same scheduler on the current thread in virtual time:
//!
//! ```
//! use ec_sched::testing::Harness;
//! use ec_sched::RecipientOutcome;
//! use ec_types::{CloseOutcome, CloseReason, Config, ReplyCode};
//!
//! let mut harness = Harness::new(Config::default());
//! let binding = harness.default_binding();
//! harness.submit_to(binding, 7, &["a@example.com", "b@example.com"]);
//!
//! // One message for example.com: the scheduler opens one connection.
//! let connection = harness.opened()[0];
//! harness.connected(connection);
//! harness.ready(connection);
//!
//! // The server defers it: it waits in the delayed queue.
//! harness.deliver(connection, ReplyCode::new(451)?);
//! assert_eq!(harness.scheduler().ledger().delayed, 1);
//!
//! // Closing releases nothing until the socket is gone.
//! let _ = harness.close(connection, CloseReason::Requested);
//! assert_eq!(harness.scheduler().engine_counts().live(), 1);
//! harness.closed(connection, CloseOutcome::Clean);
//! assert_eq!(harness.scheduler().engine_counts().live(), 0);
//!
//! // A shutdown reports what is left, so no recipient goes unreported.
//! harness.shutdown();
//! let finals = harness.final_outcomes();
//! assert_eq!(finals.len(), 2);
//! assert!(finals.iter().all(|(tag, _, outcome)| *tag == 7 && *outcome == RecipientOutcome::Unsent));
//! harness.audit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod audit;
mod close;
mod connection;
mod counts;
mod dispatch;
mod domain;
mod driver;
mod events;
mod fate;
mod ledger;
mod limits;
mod metrics;
mod queues;
mod release;
mod report;
mod runtime;
mod scheduler;
mod settle;
mod shutdown;
mod slots;
mod stats;
pub mod testing;
mod timers;
mod token;

pub use audit::{AuditError, Place, Scope, Violation};
pub use close::{
    begin_close, close_connection, default_send_quit, failure_of, CloseParts, CloseRequest,
    CloseTicket,
};
pub use connection::{Closing, Connection};
pub use counts::{ConnectionCounts, CountUnderflow};
pub use domain::{BindingDomain, DomainEntry};
pub use driver::{BatchSender, EventSender, SessionDriver, SessionLink};
pub use ledger::Ledger;
pub use limits::{BindingEntry, HostKey};
pub use queues::{ActiveQueue, DelayedQueue};
pub use report::{
    ConnectionClosed, ConnectionOpened, Observer, RecipientOutcome, RecipientRecord, Report,
};
pub use runtime::{HandleError, LocalLoop, LoopTurn, SchedulerHandle, Wake};
pub use scheduler::{BindingError, Scheduler, SchedulerOptions, SubmitError, TimerLag};
pub use stats::Stats;
pub use token::SchedulerToken;

// Re-exported so the docs above link; the types live in ec-types.
#[doc(no_inline)]
pub use ec_types::SessionEvent;
