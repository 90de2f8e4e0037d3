//! The progress bar of `ec deliver` and `ec demo`: messages done out of the
//! total, the rate, and the connections open.
//!
//! It is drawn on standard error, and only when standard error is a terminal
//! and `--quiet` was not given. Otherwise it is hidden: every method still
//! works and draws nothing, so callers need no checks of their own.

use std::fmt;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Whether the bar is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Drawn on standard error.
    Shown,
    /// Not drawn.
    Hidden,
}

impl Visibility {
    /// Shown when standard error is a terminal and `quiet` is false.
    pub fn detect(quiet: bool) -> Self {
        Self::choose(quiet, std::io::stderr().is_terminal())
    }

    /// Shown when `terminal` and not `quiet`.
    pub fn choose(quiet: bool, terminal: bool) -> Self {
        if terminal && !quiet {
            Self::Shown
        } else {
            Self::Hidden
        }
    }
}

/// The progress bar; clones share one bar, so engine callbacks on other
/// threads can update it.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

/// Redraws per second at most; more would cost time in a fast run and show
/// nothing a reader can follow.
const REFRESH_RATE_HZ: u8 = 10;

impl Progress {
    /// A bar for `total_messages` messages.
    pub fn new(total_messages: u64, visibility: Visibility) -> Self {
        let target = match visibility {
            Visibility::Shown => ProgressDrawTarget::stderr_with_hz(REFRESH_RATE_HZ),
            Visibility::Hidden => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(Some(total_messages), target);
        bar.set_style(style());
        bar.set_message(connections_message(0));
        if visibility == Visibility::Shown {
            bar.enable_steady_tick(Duration::from_millis(1_000 / u64::from(REFRESH_RATE_HZ)));
        }
        Self { bar }
    }

    /// Counts `count` more messages as done.
    pub fn messages_done(&self, count: u64) {
        self.bar.inc(count);
    }

    /// Sets the number of connections open now.
    pub fn set_connections_open(&self, open: u64) {
        self.bar.set_message(connections_message(open));
    }

    /// Messages counted as done so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Whether the bar draws nothing.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Runs `print` with the bar cleared, so that a line printed to the
    /// terminal does not tear it; the bar is redrawn afterwards.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }

    /// Removes the bar from the terminal, before the summary is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn style() -> ProgressStyle {
    // The template is a constant, so a parse error is a bug caught by the
    // tests, not a run-time condition.
    ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} messages  {rate}  {msg}",
    )
    .expect("the progress template is valid")
    .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
        // indicatif's own {per_sec} prints four decimals.
        let _ = write!(out, "{:.0}/s", state.per_sec());
    })
    .progress_chars("=> ")
}

fn connections_message(open: u64) -> String {
    if open == 1 {
        "1 connection open".to_owned()
    } else {
        format!("{open} connections open")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_rules() {
        assert_eq!(Visibility::choose(false, true), Visibility::Shown);
        assert_eq!(Visibility::choose(true, true), Visibility::Hidden);
        assert_eq!(Visibility::choose(false, false), Visibility::Hidden);
        assert_eq!(Visibility::choose(true, false), Visibility::Hidden);
    }

    #[test]
    fn hidden_bar_still_counts() {
        let progress = Progress::new(10, Visibility::Hidden);
        assert!(progress.is_hidden());
        progress.messages_done(3);
        progress.clone().messages_done(2);
        progress.set_connections_open(4);
        assert_eq!(progress.position(), 5);
        assert_eq!(progress.suspend(|| 7), 7);
        progress.finish();
    }

    #[test]
    fn template_parses() {
        let _ = style();
        assert_eq!(connections_message(1), "1 connection open");
        assert_eq!(connections_message(3), "3 connections open");
    }
}
