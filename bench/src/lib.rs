//! Load clients for `cargo xtask bench`, and what they share.
//!
//! Three binaries drive SMTP load against loopback servers and print one
//! result line each:
//!
//! - `ec-load` runs ec's whole [`Engine`](ec_smtp_client::Engine):
//!   scheduler thread, tokio sessions, `closeconn`, with the Prometheus
//!   recorder installed as in production. It also measures resident memory
//!   per idle connection and per queued message.
//! - `lettre-load` sends the same messages through lettre's pooled async
//!   SMTP transport (tokio), with or without STARTTLS.
//! - `tls-floor` does only what every TLS session needs before its first
//!   message (connect, banner, EHLO, STARTTLS, handshake, `close_notify`):
//!   the floor that TLS churn cannot go below.
//!
//! A result line starts with [`RESULT_PREFIX`] and contains `key=value` pairs
//! with no spaces inside a value, so that xtask can parse it.

#![warn(missing_docs)]

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};

/// First word of every result line.
pub const RESULT_PREFIX: &str = "ec-bench-result";

/// One result line, built field by field.
#[derive(Debug, Clone)]
pub struct ResultLine {
    fields: Vec<(&'static str, String)>,
}

impl ResultLine {
    /// A line for `client` (`ec`, `lettre`, `tls-floor`).
    pub fn new(client: &str) -> Self {
        Self {
            fields: vec![("client", client.to_owned())],
        }
    }

    /// Adds `key=value`; whitespace in the value becomes `_`.
    pub fn field(mut self, key: &'static str, value: impl ToString) -> Self {
        let value = value.to_string().replace(char::is_whitespace, "_");
        self.fields.push((key, value));
        self
    }

    /// Adds `key=value` for a duration, in seconds with microseconds.
    pub fn seconds(self, key: &'static str, value: Duration) -> Self {
        self.field(key, format!("{:.6}", value.as_secs_f64()))
    }

    /// The line as printed.
    pub fn render(&self) -> String {
        let mut line = String::from(RESULT_PREFIX);
        for (key, value) in &self.fields {
            let _ = write!(line, " {key}={value}");
        }
        line
    }

    /// Prints the line on standard output.
    pub fn print(&self) {
        println!("{}", self.render());
    }
}

/// User plus system CPU time this process has used, from
/// `getrusage(RUSAGE_SELF)`.
///
/// # Errors
///
/// Fails when the system call fails.
pub fn cpu_time() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage(RUSAGE_SELF) failed")?;
    Ok(timeval(usage.user_time()) + timeval(usage.system_time()))
}

fn timeval(value: nix::sys::time::TimeVal) -> Duration {
    let micros = value.tv_sec() as i128 * 1_000_000 + value.tv_usec() as i128;
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Resident memory of this process in octets, from `VmRSS` in
/// `/proc/self/status` (which is in KiB whatever the page size).
///
/// # Errors
///
/// Fails when the file cannot be read or has no `VmRSS` line.
pub fn resident_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok())
        .context("/proc/self/status has no VmRSS line; is this Linux?")?;
    Ok(kib * 1_024)
}

/// Raises the soft open-file limit to at least `wanted` descriptors, and
/// the hard limit too when it is lower (which needs `CAP_SYS_RESOURCE`).
///
/// # Errors
///
/// Fails when the limit cannot be raised that far; the message says how
/// to raise it by hand.
pub fn raise_open_files(wanted: u64) -> Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE) failed")?;
    if soft >= wanted {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted)).with_context(|| {
        format!(
            "cannot raise the open-file limit from {soft} (hard limit {hard}) to {wanted}; \
             raise the hard limit first (`ulimit -Hn {wanted}` as root) or ask for fewer \
             connections"
        )
    })
}

/// An RFC 5322 message of `size` octets (at least its headers, about 120
/// octets): a few headers and lines of 76 `x` characters, every line ended
/// by CRLF. Every client sends the same shape of message.
pub fn message(size: usize) -> Vec<u8> {
    let mut data = String::with_capacity(size + 80);
    data.push_str(
        "From: <sender@bench.ec.test>\r\nTo: <rcpt@bench.ec.test>\r\n\
         Subject: ec bench\r\nMessage-ID: <bench@bench.ec.test>\r\n\r\n",
    );
    const LINE: &str =
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    while data.len() + 2 <= size {
        let room = size - data.len() - 2;
        data.push_str(&LINE[..room.min(LINE.len())]);
        data.push_str("\r\n");
    }
    data.into_bytes()
}

/// The envelope recipient of message `index`: one local part per message
/// in `domain`.
pub fn recipient(index: u64, domain: &str) -> String {
    format!("user{index}@{domain}")
}

/// Envelope sender of every benchmark message.
pub const SENDER: &str = "sender@bench.ec.test";

/// Name sent in EHLO by every client.
pub const EHLO_NAME: &str = "bench.ec.test";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_requested_size() {
        for size in [200, 1_024, 102_400] {
            let data = message(size);
            assert_eq!(data.len(), size, "size {size}");
            assert!(data.ends_with(b"\r\n"));
            let text = std::str::from_utf8(&data).expect("ASCII");
            assert!(
                !text.replace("\r\n", "").contains(['\r', '\n']),
                "bare CR or LF"
            );
        }
    }

    #[test]
    fn result_line_renders_pairs() {
        let line = ResultLine::new("ec")
            .field("messages", 10)
            .field("note", "two words")
            .seconds("seconds", Duration::from_millis(1_500));
        assert_eq!(
            line.render(),
            "ec-bench-result client=ec messages=10 note=two_words seconds=1.500000"
        );
    }

    #[test]
    fn own_cpu_and_memory_are_readable() {
        assert!(resident_bytes().expect("VmRSS") > 0);
        let _ = cpu_time().expect("getrusage");
    }
}
