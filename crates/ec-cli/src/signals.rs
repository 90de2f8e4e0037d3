//! Ctrl-C and SIGTERM: the first stops taking new work and finishes the
//! run cleanly; a second ends the process at once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Starts a thread that sets the returned flag on the first SIGINT or
/// SIGTERM. The run then shuts the engine down: connections close through
/// `closeconn` under the close deadline and every outcome is recorded.
///
/// A second SIGINT or SIGTERM ends the process at once with status 128 plus
/// the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
/// reports a process that a signal ended. Open connections are then cut,
/// without QUIT unless a connection sent it with its last transaction, and
/// recipients whose outcome was not yet written have no record in the
/// delivery log, so `--resume` sends them again.
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
            runtime.block_on(next_signal(&mut interrupt, &mut terminate));
            set.store(true, Ordering::SeqCst);
            crate::errln!(
                "ec: stopping; open connections close and every outcome is recorded \
                 (a second Ctrl-C or SIGTERM stops at once)"
            );

            let second = runtime.block_on(next_signal(&mut interrupt, &mut terminate));
            crate::errln!(
                "\nec: stopped at once by a second signal: open connections were cut, and \
                 recipients still in progress have no record in the delivery log, so \
                 --resume sends them again (a message in flight may have been delivered)"
            );
            std::process::exit(128 + second);
        })?;
    Ok(flag)
}

/// Waits for the next SIGINT or SIGTERM and returns its number.
async fn next_signal(interrupt: &mut Signal, terminate: &mut Signal) -> i32 {
    tokio::select! {
        _ = interrupt.recv() => libc::SIGINT,
        _ = terminate.recv() => libc::SIGTERM,
    }
}
