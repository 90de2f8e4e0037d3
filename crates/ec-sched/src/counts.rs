//! Live-connection counts with checked arithmetic.

use thiserror::Error;

/// Connections of one scope (engine, binding, binding × domain, host): how
/// many are live (connecting, open or closing) and how many were ever
/// opened and closed. `opened - closed == live` always holds unless an
/// accounting bug released a connection twice, which is reported as a
/// [`CountUnderflow`] instead of wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    live: u32,
    opened: u64,
    closed: u64,
}

/// A release was attempted on a scope with no live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("released a connection from a scope with no live connection ({opened} opened, {closed} closed); this is an accounting bug in the scheduler")]
pub struct CountUnderflow {
    /// Connections opened in the scope.
    pub opened: u64,
    /// Connections closed in the scope before the failed release.
    pub closed: u64,
}

impl ConnectionCounts {
    /// Connections that are connecting, open or closing.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Connections ever opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Connections whose socket is gone.
    pub fn closed(&self) -> u64 {
        self.closed
    }

    /// Whether one more connection stays within `limit`.
    pub fn has_room(&self, limit: u32) -> bool {
        self.live < limit
    }

    /// Counts a connection whose connect starts.
    pub(crate) fn open(&mut self) {
        self.live = self.live.saturating_add(1);
        self.opened += 1;
    }

    /// Counts a connection whose socket is gone.
    pub(crate) fn release(&mut self) -> Result<(), CountUnderflow> {
        let underflow = CountUnderflow {
            opened: self.opened,
            closed: self.closed,
        };
        self.live = self.live.checked_sub(1).ok_or(underflow)?;
        self.closed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_track_open_and_release() {
        let mut counts = ConnectionCounts::default();
        counts.open();
        counts.open();
        counts.release().expect("one is live");
        assert_eq!(counts.live(), 1);
        assert_eq!(counts.opened(), 2);
        assert_eq!(counts.closed(), 1);
        assert!(counts.has_room(2));
        assert!(!counts.has_room(1));
    }

    #[test]
    fn release_without_live_is_underflow() {
        let mut counts = ConnectionCounts::default();
        let error = counts.release().expect_err("nothing is live");
        assert_eq!(
            error,
            CountUnderflow {
                opened: 0,
                closed: 0
            }
        );
        assert_eq!(counts.closed(), 0);
        assert_eq!(counts.live(), 0);
    }
}
