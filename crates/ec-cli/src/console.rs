//! Printing to standard output and standard error without panicking.
//!
//! `println!` panics when the stream is closed, as with `ec demo | head -1`,
//! and the run then ends with exit status 101 instead of its own. These
//! macros write the same text and drop it when the stream is gone. A reader
//! that went away (broken pipe) stops the output quietly, and any other
//! error is reported once on standard error.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set after the first failed write that was not a broken pipe.
static REPORTED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to standard output. Use [`out!`](crate::out) and
/// [`outln!`](crate::outln).
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if let Err(error) = io::stdout().lock().write_fmt(args) {
        report(&error, "standard output");
    }
}

/// Writes `args` to standard error. Use [`errln!`](crate::errln).
pub fn write_stderr(args: fmt::Arguments<'_>) {
    if let Err(error) = io::stderr().lock().write_fmt(args) {
        report(&error, "standard error");
    }
}

fn report(error: &io::Error, stream: &str) {
    if error.kind() == io::ErrorKind::BrokenPipe || REPORTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let _ = writeln!(io::stderr(), "ec: failed to write to {stream}: {error}");
}

/// `print!` that does not panic when standard output is closed.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::console::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that does not panic when standard output is closed.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that does not panic when standard error is closed.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
