//! The scheduler token: proof that code runs on the scheduler's thread.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// Proof that the holder runs on a scheduler's thread, with access to that
/// scheduler's state.
///
/// Only this crate creates tokens: the scheduler loop makes one for its
/// thread, and [`testing::Harness`](crate::testing::Harness) makes one that
/// it keeps. Every API that changes scheduler state takes `&SchedulerToken`,
/// or `&mut SchedulerToken` where exclusive access is the point (closing a
/// connection).
///
/// The token is zero-sized in release builds and neither `Send` nor `Sync`,
/// so it cannot be moved or shared to another thread or task:
///
/// ```compile_fail
/// fn leak(token: ec_sched::SchedulerToken) {
///     std::thread::spawn(move || drop(token));
/// }
/// ```
///
/// Debug builds also record which scheduler made the token and check it on
/// use, so a harness's token cannot drive another scheduler by mistake.
#[must_use = "a token is only useful when passed to the scheduler's APIs"]
pub struct SchedulerToken {
    // A raw pointer is neither Send nor Sync, and so the token is neither.
    _not_send: PhantomData<*mut ()>,
    #[cfg(debug_assertions)]
    owner: SchedulerId,
}

impl SchedulerToken {
    /// Creates the token of the scheduler `owner`. Callers make one per
    /// scheduler, on the thread that runs it.
    pub(crate) fn new(owner: SchedulerId) -> Self {
        #[cfg(not(debug_assertions))]
        let _ = owner;
        Self {
            _not_send: PhantomData,
            #[cfg(debug_assertions)]
            owner,
        }
    }

    /// Panics in debug builds when the token belongs to another scheduler.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn check(&self, scheduler: SchedulerId) {
        #[cfg(debug_assertions)]
        assert_eq!(
            self.owner, scheduler,
            "a scheduler token was used with a scheduler that did not create it"
        );
        #[cfg(not(debug_assertions))]
        let _ = scheduler;
    }
}

impl fmt::Debug for SchedulerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SchedulerToken")
    }
}

/// Process-wide unique number of one scheduler, for the debug check above
/// and for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchedulerId(u64);

impl SchedulerId {
    /// Allocates the next id.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(debug_assertions))]
    fn token_is_zero_sized_in_release() {
        assert_eq!(std::mem::size_of::<SchedulerToken>(), 0);
    }

    #[test]
    fn token_accepts_its_scheduler() {
        let id = SchedulerId::next();
        let token = SchedulerToken::new(id);
        token.check(id);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "did not create it")]
    fn token_rejects_other_scheduler() {
        let token = SchedulerToken::new(SchedulerId::next());
        token.check(SchedulerId::next());
    }
}
