//! The test process's own resources, read from `/proc/self`: open file
//! descriptors, threads and resident memory, and the open-file limit.

use std::fs;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Entries of `/proc/self/fd`, the directory handle used to list them
    /// included (it is counted the same way in every sample).
    pub open_fds: usize,
    /// `Threads:` of `/proc/self/status`.
    pub threads: usize,
    /// `VmRSS:` of `/proc/self/status`, in bytes.
    pub rss_bytes: u64,
}

impl ProcessSample {
    /// Reads the three values now.
    ///
    /// # Errors
    ///
    /// When `/proc/self` cannot be read (not Linux, or no procfs mounted).
    pub fn now() -> io::Result<Self> {
        let open_fds = fs::read_dir("/proc/self/fd")?.count();
        let status = fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| -> io::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("/proc/self/status has no numeric {name} line"),
                    )
                })
        };
        Ok(Self {
            open_fds,
            threads: field("Threads:")? as usize,
            rss_bytes: field("VmRSS:")? * 1024,
        })
    }

    /// Reads until the descriptor and thread counts are back at `baseline`'s
    /// or below, or `patience` has passed, and returns the last reading.
    /// Threads of a stopped runtime and sockets in their last close exit a
    /// moment after the call that stopped them returns.
    ///
    /// # Errors
    ///
    /// As [`ProcessSample::now`].
    pub fn settled(baseline: &Self, patience: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + patience;
        loop {
            let sample = Self::now()?;
            let settled =
                sample.open_fds <= baseline.open_fds && sample.threads <= baseline.threads;
            if settled || Instant::now() >= deadline {
                return Ok(sample);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Raises the soft limit on open files to at least `wanted`, up to the
/// hard limit, and returns the soft limit now in force.
///
/// # Errors
///
/// When the limit cannot be read or set, or the hard limit is below
/// `wanted`. The message tells how to raise it.
pub fn raise_open_file_limit(wanted: u64) -> Result<u64, String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|error| format!("reading RLIMIT_NOFILE failed: {error}"))?;
    if soft >= wanted {
        return Ok(soft);
    }
    if hard < wanted {
        return Err(format!(
            "the hard open-file limit is {hard}, below the {wanted} this test needs; \
             raise it (ulimit -Hn {wanted} as root) and run the test again"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).map_err(|error| {
        format!("raising RLIMIT_NOFILE from {soft} to {wanted} failed: {error}")
    })?;
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_reads_procfs() {
        let sample = ProcessSample::now().expect("procfs");
        // stdin, stdout, stderr and the directory handle at least.
        assert!(sample.open_fds >= 4, "{sample:?}");
        assert!(
            sample.threads >= 1 && sample.rss_bytes > 1024 * 1024,
            "{sample:?}"
        );
    }
}
