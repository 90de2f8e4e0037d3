//! Ctrl-C and SIGTERM: stop taking new work and finish the run cleanly.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};

/// Starts a thread that sets the returned flag on the first SIGINT or
/// SIGTERM. The run then shuts the engine down: connections close through
/// `closeconn` under the close deadline and every outcome is recorded.
///
/// # Errors
///
/// Returns an error when the thread or the signal handlers cannot be set
/// up.
pub fn stop_flag() -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Both handlers are installed here, before the function returns: a
    // signal that arrives before the thread first polls them is kept, not
    // left to the default action, which would end the process unrecorded.
    let (mut interrupt, mut terminate) = {
        let _guard = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    let set = flag.clone();
    std::thread::Builder::new()
        .name("ec-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            set.store(true, Ordering::SeqCst);
            crate::errln!("ec: stopping; open connections close and every outcome is recorded");
        })?;
    Ok(flag)
}
