//! [`Engine`]: the scheduler and the tokio runtime of its sessions,
//! started and stopped together. The quickest way to embed the whole
//! delivery engine.
//!
//! By default both run on one thread: the scheduler's loop is a task of a
//! single-threaded runtime, and the sessions are its other tasks. Events
//! and commands between them then never wake another thread. With
//! [`EngineOptions::io_threads`] above zero the sessions run on a runtime
//! of their own and the scheduler has its own thread.

use std::io;
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ec_sched::{
    LocalLoop, LoopTurn, Observer, Scheduler, SchedulerHandle, SchedulerOptions, Stats, Wake,
};
use ec_types::Config;
use tokio::sync::Notify;

use crate::driver::SmtpDriver;

/// How long a stopping engine lets its session tasks end after the
/// scheduler finished. Every session has reported its socket closed by
/// then, or passed its close deadline.
const RUNTIME_STOP: Duration = Duration::from_secs(1);

/// Settings of the engine's threads.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Worker threads of a session runtime separate from the scheduler's
    /// thread. Default 0: the sessions run on the scheduler's thread, which
    /// spares a thread switch for every event and command; one thread
    /// drives thousands of sessions. More threads help when TLS handshakes
    /// or large messages take more than one core.
    pub io_threads: usize,
    /// The scheduler's own options.
    pub scheduler: SchedulerOptions,
}

/// A running delivery engine: the scheduler thread, and the tokio runtime
/// its SMTP sessions run on.
///
/// Submit mail through [`handle`](Self::handle); every recipient's outcome
/// reaches the observer given to [`start`](Self::start). Dropping the
/// engine without [`shutdown`](Self::shutdown) shuts it down the same way.
#[derive(Debug)]
pub struct Engine {
    handle: SchedulerHandle,
    scheduler: Option<JoinHandle<Stats>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Engine {
    /// Starts the session runtime and the scheduler.
    ///
    /// # Errors
    ///
    /// Returns an error of kind `InvalidInput` when the configuration is
    /// invalid (see [`Config::validate`]), so that no connection is ever
    /// opened with a value it cannot send, and an error when a thread
    /// cannot be started.
    pub fn start(
        config: Config,
        options: EngineOptions,
        observer: impl Observer,
    ) -> io::Result<Self> {
        config
            .validate()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        if options.io_threads == 0 {
            return Self::start_local(config, options.scheduler, observer);
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.io_threads)
            .thread_name("ec-io")
            .enable_all()
            .build()?;
        let driver = SmtpDriver::new(runtime.handle().clone()).dns(config.dns.clone());
        let (handle, scheduler) =
            Scheduler::spawn_with_options(config, options.scheduler, driver, observer)?;
        Ok(Self {
            handle,
            scheduler: Some(scheduler),
            runtime: Some(runtime),
        })
    }

    /// Starts the scheduler's loop and its sessions on one new thread.
    fn start_local(
        config: Config,
        options: SchedulerOptions,
        observer: impl Observer,
    ) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (started, handle) = mpsc::channel();
        let scheduler = thread::Builder::new()
            .name("ec-scheduler".to_owned())
            .spawn(move || {
                let notify = Arc::new(Notify::new());
                let wake: Wake = {
                    let notify = Arc::clone(&notify);
                    Arc::new(move || notify.notify_one())
                };
                let driver = SmtpDriver::new(runtime.handle().clone())
                    .dns(config.dns.clone())
                    .waking(wake.clone());
                let (handle, mut local) = Scheduler::local(config, options, driver, observer, wake);
                // The receiver waits in `start_local` until this send.
                let _ = started.send(handle);
                let stats = runtime.block_on(drive(&mut local, &notify));
                runtime.shutdown_timeout(RUNTIME_STOP);
                stats
            })?;
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("the scheduler thread ended before its loop started"))?;
        Ok(Self {
            handle,
            scheduler: Some(scheduler),
            runtime: None,
        })
    }

    /// The handle to submit mail and query the scheduler with.
    pub fn handle(&self) -> &SchedulerHandle {
        &self.handle
    }

    /// Shuts down: the scheduler stops taking mail, closes every connection
    /// through `closeconn` under the close deadline, and reports every
    /// message still queued; then the session runtime stops. Returns the
    /// scheduler's final counts, or `None` if its thread panicked.
    pub fn shutdown(mut self) -> Option<Stats> {
        self.stop()
    }

    fn stop(&mut self) -> Option<Stats> {
        self.handle.shutdown();
        let stats = self
            .scheduler
            .take()
            .and_then(|thread| match thread.join() {
                Ok(stats) => Some(stats),
                Err(_) => {
                    tracing::error!("the scheduler thread panicked");
                    None
                }
            });
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside another runtime's task, a blocking wait for the
                // session runtime would panic. The scheduler has finished,
                // so every session reported its close or passed its close
                // deadline: what is left ends on its own.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(RUNTIME_STOP);
            }
        }
        stats
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.scheduler.is_some() {
            let _ = self.stop();
        }
    }
}

/// Runs a local scheduler loop as a task of the current runtime until the
/// scheduler finishes. Between passes the sessions run; a pass starts when
/// a handle or a session batch wakes the loop, or at the scheduler's next
/// deadline.
async fn drive(local: &mut LocalLoop, wake: &Notify) -> Stats {
    loop {
        match local.turn() {
            LoopTurn::Finished(stats) => return *stats,
            LoopTurn::Wait(timeout) if !timeout.is_zero() => {
                // The timeout elapsing is one of the two expected ends.
                let _ = tokio::time::timeout(timeout, wake.notified()).await;
            }
            // Messages are still waiting: let the sessions run first.
            _ => tokio::task::yield_now().await,
        }
    }
}
