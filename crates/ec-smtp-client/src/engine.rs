//! [`Engine`]: a scheduler thread and a tokio runtime for its sessions,
//! started and stopped together. The quickest way to embed the whole
//! delivery engine.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use ec_sched::{Observer, Scheduler, SchedulerHandle, SchedulerOptions, Stats};
use ec_types::Config;

use crate::driver::SmtpDriver;

/// Settings of the engine's threads.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineOptions {
    /// Worker threads of the session runtime. Default 1: the scheduler has
    /// its own thread, and one I/O thread drives thousands of sessions.
    pub io_threads: usize,
    /// The scheduler's own options.
    pub scheduler: SchedulerOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            io_threads: 1,
            scheduler: SchedulerOptions::default(),
        }
    }
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.io_threads.max(1))
            .thread_name("ec-io")
            .enable_all()
            .build()?;
        let driver = SmtpDriver::new(runtime.handle().clone());
        let (handle, scheduler) =
            Scheduler::spawn_with_options(config, options.scheduler, driver, observer)?;
        Ok(Self {
            handle,
            scheduler: Some(scheduler),
            runtime: Some(runtime),
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
            // Every session has reported its socket closed by now, or passed
            // its close deadline; this bounds any task that is still running.
            runtime.shutdown_timeout(Duration::from_secs(1));
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
