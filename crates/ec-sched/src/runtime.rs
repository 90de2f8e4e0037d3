//! The scheduler thread and the handle other threads use to reach it.
//!
//! The loop waits on one inbox for commands from handles and events from
//! sessions, at most until the next timer deadline. Then it fires due
//! timers, dispatches work and passes records to the observer.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ec_types::{
    Binding, BindingSlot, Config, ConfigError, ConnectionHandle, Domain, Route, SessionEvent,
    Submission,
};
use thiserror::Error;
use tracing::{debug, error, info};

use crate::audit::AuditError;
use crate::driver::SessionDriver;
use crate::report::Observer;
use crate::scheduler::{BindingError, Scheduler, SchedulerOptions, SubmitError};
use crate::stats::Stats;
use crate::token::SchedulerToken;

/// Maximum wait without a deadline, so the loop notices that every handle
/// was dropped.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Inbox messages handled before timers and dispatch run again, so a flood
/// of events cannot starve them.
const INBOX_BURST: usize = 256;

/// A message for the scheduler thread.
pub(crate) enum Inbox {
    Session(ConnectionHandle, SessionEvent),
    /// Events of several connections, in the order their sessions sent
    /// them: one wake-up of the scheduler thread for all of them.
    Sessions(Vec<(ConnectionHandle, SessionEvent)>),
    Command(Command),
}

pub(crate) enum Command {
    Submit {
        binding: BindingSlot,
        submission: Submission,
    },
    RegisterBinding {
        binding: Binding,
        reply: mpsc::Sender<Result<BindingSlot, BindingError>>,
    },
    RegisterDomain {
        domain: Domain,
        route: Route,
    },
    Shutdown,
    Stats(mpsc::Sender<Stats>),
    Audit(mpsc::Sender<Result<(), AuditError>>),
}

/// State shared between handles and the loop.
#[derive(Debug)]
struct Shared {
    /// False once a shutdown was asked for: handles refuse new work.
    accepting: AtomicBool,
    /// Submissions between their `accepting` check and their send. The
    /// loop waits for zero before its last inbox drain, so no submission
    /// that passed the check is dropped unseen.
    submitting: AtomicUsize,
    /// Registered binding slots, for checking a submission's binding
    /// without a round trip.
    bindings: AtomicU32,
    /// True once the loop has taken its last submission: a submission is
    /// then refused as stopped rather than as shutting down.
    stopped: AtomicBool,
}

/// The error of a handle call.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The scheduler thread has stopped.
    #[error("the scheduler has stopped")]
    Stopped,
    /// The binding was not registered.
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The route cannot work, such as an empty address list.
    #[error(transparent)]
    Route(#[from] ConfigError),
}

/// A cloneable, thread-safe handle to a scheduler thread. When the last
/// handle is dropped the scheduler shuts down.
#[derive(Clone)]
pub struct SchedulerHandle {
    inbox: mpsc::Sender<Inbox>,
    shared: Arc<Shared>,
    /// Wakes a [`LocalLoop`]'s thread after each message; `None` for a
    /// scheduler thread, which blocks on the inbox itself.
    wake: Option<Wake>,
}

/// Wakes the thread that runs a [`LocalLoop`].
pub type Wake = Arc<dyn Fn() + Send + Sync>;

impl fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulerHandle")
            .field("accepting", &self.shared.accepting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SchedulerHandle {
    /// Queues a submission on the default binding.
    ///
    /// # Errors
    ///
    /// Returns the submission when it has no recipients, or the scheduler
    /// is shutting down or stopped.
    pub fn submit(&self, submission: Submission) -> Result<(), SubmitError> {
        self.submit_via(BindingSlot(0), submission)
    }

    /// Queues a submission on a binding. Every recipient then gets exactly
    /// one final record through the observer, unsent ones included if a
    /// shutdown comes first.
    ///
    /// # Errors
    ///
    /// Returns the submission when it has no recipients, the binding is
    /// not registered, or the scheduler is shutting down or stopped.
    pub fn submit_via(
        &self,
        binding: BindingSlot,
        submission: Submission,
    ) -> Result<(), SubmitError> {
        if submission.recipients.is_empty() {
            return Err(SubmitError::NoRecipients(Box::new(submission)));
        }
        if u32::from(binding.0) >= self.shared.bindings.load(Ordering::Acquire) {
            return Err(SubmitError::UnknownBinding {
                binding,
                submission: Box::new(submission),
            });
        }

        self.shared.submitting.fetch_add(1, Ordering::SeqCst);
        let result = if self.shared.stopped.load(Ordering::SeqCst) {
            Err(SubmitError::Stopped(Box::new(submission)))
        } else if self.shared.accepting.load(Ordering::SeqCst) {
            self.inbox
                .send(Inbox::Command(Command::Submit {
                    binding,
                    submission,
                }))
                .map_err(|error| match error.0 {
                    Inbox::Command(Command::Submit { submission, .. }) => {
                        SubmitError::Stopped(Box::new(submission))
                    }
                    _ => unreachable!("the message sent was a submission"),
                })
        } else {
            Err(SubmitError::ShuttingDown(Box::new(submission)))
        };
        self.shared.submitting.fetch_sub(1, Ordering::SeqCst);
        self.wake();
        result
    }

    /// Registers a binding and returns its slot.
    ///
    /// # Errors
    ///
    /// Returns an error when the name is taken, every slot is used, or the
    /// scheduler has stopped.
    pub fn register_binding(&self, binding: Binding) -> Result<BindingSlot, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::RegisterBinding { binding, reply })?;
        let slot = answer.recv().map_err(|_| HandleError::Stopped)??;
        self.shared
            .bindings
            .fetch_max(u32::from(slot.0) + 1, Ordering::AcqRel);
        Ok(slot)
    }

    /// Sets a domain's route. Mail for domains never registered uses the
    /// configured route.
    ///
    /// # Errors
    ///
    /// Returns [`HandleError::Route`] for a route that cannot work (see
    /// [`Route::validate`]), and an error when the scheduler has stopped.
    pub fn register_domain(&self, domain: Domain, route: Route) -> Result<(), HandleError> {
        route.validate(&format!("domain {domain}"))?;
        self.send(Command::RegisterDomain { domain, route })
    }

    /// Asks the scheduler to shut down: new submissions are refused, every
    /// connection is closed, and every message still queued is reported as
    /// unsent. Join the scheduler's thread to wait for the end.
    pub fn shutdown(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let _ = self.send(Command::Shutdown);
    }

    /// Takes a snapshot of the scheduler's counts.
    ///
    /// # Errors
    ///
    /// Returns an error when the scheduler has stopped.
    pub fn stats(&self) -> Result<Stats, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Stats(reply))?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// Runs the accounting audit on the scheduler thread and returns its
    /// result.
    ///
    /// # Errors
    ///
    /// The outer error means the scheduler has stopped; the inner one lists
    /// the audit's violations.
    pub fn audit(&self) -> Result<Result<(), AuditError>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Audit(reply))?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    fn send(&self, command: Command) -> Result<(), HandleError> {
        let sent = self
            .inbox
            .send(Inbox::Command(command))
            .map_err(|_| HandleError::Stopped);
        self.wake();
        sent
    }

    fn wake(&self) {
        if let Some(wake) = &self.wake {
            wake();
        }
    }
}

impl Scheduler {
    /// Starts a scheduler on a thread of its own, named `ec-scheduler`,
    /// with default [`SchedulerOptions`].
    ///
    /// The thread ends after a shutdown (asked for through a handle, or
    /// because every handle was dropped) and returns the final counts.
    ///
    /// # Errors
    ///
    /// Returns an error of kind `InvalidInput` when the configuration is
    /// invalid (see [`Config::validate`]), and an error when the thread
    /// cannot be started.
    pub fn spawn(
        config: Config,
        driver: impl SessionDriver,
        observer: impl Observer,
    ) -> std::io::Result<(SchedulerHandle, JoinHandle<Stats>)> {
        Self::spawn_with_options(config, SchedulerOptions::default(), driver, observer)
    }

    /// Starts a scheduler thread with the given options.
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with_options(
        config: Config,
        options: SchedulerOptions,
        driver: impl SessionDriver,
        observer: impl Observer,
    ) -> std::io::Result<(SchedulerHandle, JoinHandle<Stats>)> {
        config
            .validate()
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let (handle, parts) = LoopParts::new(None);
        let thread = thread::Builder::new()
            .name("ec-scheduler".to_owned())
            .spawn(move || parts.build(config, options, driver, observer).run())?;
        Ok((handle, thread))
    }

    /// Builds a scheduler loop that the calling thread runs itself: it
    /// calls [`LocalLoop::turn`] and waits in between. While it waits, the
    /// thread can do other work, such as running the tasks of an async
    /// runtime that drives the sessions. The sessions' events then reach
    /// the scheduler without a thread switch.
    ///
    /// Every message a [`SchedulerHandle`] sends calls `wake`, which must
    /// end the thread's wait. A driver whose sessions send events through
    /// an [`EventSender`](crate::EventSender) or a
    /// [`BatchSender`](crate::BatchSender) must end the wait itself after
    /// sending: those do not call `wake`.
    ///
    /// The configuration must have passed [`Config::validate`], as
    /// [`spawn`](Self::spawn) checks for itself.
    pub fn local(
        config: Config,
        options: SchedulerOptions,
        driver: impl SessionDriver,
        observer: impl Observer,
        wake: Wake,
    ) -> (SchedulerHandle, LocalLoop) {
        let (handle, parts) = LoopParts::new(Some(wake));
        let event_loop = parts.build(config, options, driver, observer);
        info!("scheduler started");
        (
            handle,
            LocalLoop {
                event_loop: Box::new(event_loop),
                finished: false,
            },
        )
    }
}

/// The inbox and shared state of a loop, made before its thread runs.
struct LoopParts {
    inbox: mpsc::Sender<Inbox>,
    receiver: mpsc::Receiver<Inbox>,
    shared: Arc<Shared>,
}

impl LoopParts {
    fn new(wake: Option<Wake>) -> (SchedulerHandle, Self) {
        let (inbox, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            accepting: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            bindings: AtomicU32::new(1),
        });
        let handle = SchedulerHandle {
            inbox: inbox.clone(),
            shared: shared.clone(),
            wake,
        };
        let parts = Self {
            inbox,
            receiver,
            shared,
        };
        (handle, parts)
    }

    /// Creates the scheduler and its token on the calling thread, which
    /// then owns them.
    fn build<D: SessionDriver, O: Observer>(
        self,
        config: Config,
        options: SchedulerOptions,
        driver: D,
        observer: O,
    ) -> EventLoop<D, O> {
        let (scheduler, token) = Scheduler::new(config, options, self.inbox, Instant::now());
        EventLoop {
            scheduler,
            token,
            driver,
            observer,
            receiver: self.receiver,
            shared: self.shared,
        }
    }
}

/// A scheduler loop run by the thread that built it with
/// [`Scheduler::local`]. It owns the scheduler and its token, so it cannot
/// leave that thread.
pub struct LocalLoop {
    event_loop: Box<dyn Turn>,
    finished: bool,
}

/// The next step for the thread that runs a [`LocalLoop`].
#[derive(Debug)]
#[non_exhaustive]
pub enum LoopTurn {
    /// Call `turn` again after `wake` was called or this much time passed,
    /// whichever comes first. Zero means that messages are still waiting:
    /// let other work run briefly, then call again.
    Wait(Duration),
    /// The scheduler has shut down; these are its final counts. Further
    /// calls return the same counts.
    Finished(Box<Stats>),
}

impl LocalLoop {
    /// Handles the messages waiting in the inbox (up to a burst, so that
    /// timers and dispatch keep running under a flood), fires due timers,
    /// dispatches work and passes records to the observer. It does not
    /// wait for the inbox.
    pub fn turn(&mut self) -> LoopTurn {
        if self.finished {
            return LoopTurn::Finished(Box::new(self.event_loop.stats()));
        }
        match self.event_loop.turn(None) {
            Step::Wait(timeout) => LoopTurn::Wait(timeout),
            Step::Finished => {
                self.finished = true;
                LoopTurn::Finished(Box::new(self.event_loop.finish()))
            }
        }
    }
}

impl fmt::Debug for LocalLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLoop")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The outcome of one pass of the loop.
enum Step {
    /// Wait at most this long for the next message.
    Wait(Duration),
    /// The shutdown is complete.
    Finished,
}

/// An event loop without its driver and observer types, so that a
/// [`LocalLoop`] needs no type parameters.
trait Turn {
    fn turn(&mut self, first: Option<Inbox>) -> Step;
    fn finish(&mut self) -> Stats;
    fn stats(&self) -> Stats;
}

impl<D: SessionDriver, O: Observer> Turn for EventLoop<D, O> {
    fn turn(&mut self, first: Option<Inbox>) -> Step {
        EventLoop::turn(self, first)
    }

    fn finish(&mut self) -> Stats {
        EventLoop::finish(self)
    }

    fn stats(&self) -> Stats {
        self.scheduler.stats()
    }
}

struct EventLoop<D, O> {
    scheduler: Scheduler,
    token: SchedulerToken,
    driver: D,
    observer: O,
    receiver: mpsc::Receiver<Inbox>,
    shared: Arc<Shared>,
}

impl<D: SessionDriver, O: Observer> EventLoop<D, O> {
    /// Runs the loop on the scheduler's own thread, blocking on the inbox
    /// between passes.
    fn run(mut self) -> Stats {
        info!("scheduler started");
        let mut first = None;
        while let Step::Wait(timeout) = self.turn(first.take()) {
            match self.receiver.recv_timeout(timeout) {
                Ok(message) => first = Some(message),
                Err(RecvTimeoutError::Timeout) => {}
                // The scheduler keeps a sender for its sessions, so the
                // inbox never disconnects while it runs.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish()
    }

    /// Runs one pass: handles `first` and the messages waiting after it (up
    /// to a burst), then due timers, dispatch, the shutdown's progress,
    /// records to the observer and the gauges. It does not wait for the
    /// inbox.
    fn turn(&mut self, first: Option<Inbox>) -> Step {
        let mut handled = 0;
        if let Some(message) = first {
            self.handle(message);
            handled += 1;
        }
        while handled < INBOX_BURST {
            let Ok(message) = self.receiver.try_recv() else {
                break;
            };
            self.handle(message);
            handled += 1;
        }

        let now = Instant::now();
        self.catch_up(now);
        if Arc::strong_count(&self.shared) == 1 && !self.scheduler.is_shutting_down() {
            debug!("every scheduler handle was dropped; shutting down");
            self.begin_shutdown();
        }
        let finished = self.scheduler.poll_shutdown(&self.token, now);
        self.flush_reports();
        self.scheduler.publish_gauges(&self.token);
        if finished {
            return Step::Finished;
        }

        if handled == INBOX_BURST {
            return Step::Wait(Duration::ZERO);
        }
        let now = Instant::now();
        let timeout = self
            .scheduler
            .next_deadline()
            .map_or(IDLE_POLL, |deadline| {
                deadline.saturating_duration_since(now)
            })
            .min(IDLE_POLL);
        Step::Wait(timeout)
    }

    fn handle(&mut self, message: Inbox) {
        let now = Instant::now();
        match message {
            Inbox::Session(handle, event) => self.session_event(handle, event, now),
            Inbox::Sessions(events) => {
                for (handle, event) in events {
                    self.session_event(handle, event, now);
                }
            }
            Inbox::Command(command) => self.command(command, now),
        }
    }

    fn session_event(&mut self, handle: ConnectionHandle, event: SessionEvent, now: Instant) {
        self.scheduler
            .handle_session_event(&mut self.token, &mut self.driver, handle, event, now);
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Submit {
                binding,
                submission,
            } => {
                if let Err(rejected) = self.scheduler.submit(&self.token, binding, submission, now)
                {
                    // The handle checked the same conditions, so this is a
                    // bug; the submission is dropped, and logged with its tag.
                    error!(error = %rejected, "scheduler rejected a submission its handle accepted");
                }
            }
            Command::RegisterBinding { binding, reply } => {
                let _ = reply.send(self.scheduler.register_binding(&self.token, binding));
            }
            Command::RegisterDomain { domain, route } => {
                if let Err(error) = self.scheduler.register_domain(&self.token, domain, route) {
                    // The handle checked the route, so this is a bug.
                    error!(%error, "scheduler rejected a route its handle accepted");
                }
            }
            Command::Shutdown => self.begin_shutdown(),
            Command::Stats(reply) => {
                self.catch_up(now);
                let _ = reply.send(self.scheduler.stats());
            }
            Command::Audit(reply) => {
                self.catch_up(now);
                let _ = reply.send(self.scheduler.run_audit(&self.token));
            }
        }
    }

    /// Fires due timers and dispatches, so that a snapshot taken now
    /// reflects every command received before it.
    fn catch_up(&mut self, now: Instant) {
        self.scheduler
            .fire_due_timers(&mut self.token, &mut self.driver, now);
        self.scheduler
            .run_pending(&mut self.token, &mut self.driver, now);
    }

    fn begin_shutdown(&mut self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        self.scheduler
            .begin_shutdown(&mut self.token, &mut self.driver, Instant::now());
    }

    fn flush_reports(&mut self) {
        for report in self.scheduler.drain_reports(&self.token) {
            self.observer.report(report);
        }
    }

    /// Takes the submissions that raced with the shutdown, so each of them
    /// is reported, then returns the final counts.
    fn finish(&mut self) -> Stats {
        self.shared.accepting.store(false, Ordering::SeqCst);
        while self.shared.submitting.load(Ordering::SeqCst) != 0 {
            thread::yield_now();
        }
        while let Ok(message) = self.receiver.try_recv() {
            self.handle(message);
        }
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Err(failure) = self.scheduler.run_audit(&self.token) {
            error!(%failure, "final accounting audit failed");
        }
        self.flush_reports();
        self.scheduler.publish_gauges(&self.token);
        let stats = self.scheduler.stats();
        info!(
            delivered = stats.ledger.delivered,
            failed = stats.ledger.failed,
            unsent = stats.ledger.unsent,
            "scheduler stopped"
        );
        stats
    }
}
