//! The machine the benchmarks ran on, the load on it, and the versions
//! of everything measured.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::process;

/// The machine and the versions, for the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) memory_gib: f64,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) os: String,
    pub(crate) rustc: String,
    pub(crate) lettre: String,
    /// The commit measured, with `-dirty` when the tree had changes.
    pub(crate) commit: String,
    pub(crate) started: String,
    /// `/proc/loadavg`'s 1-minute average at the start and the end.
    pub(crate) load_start: String,
    pub(crate) load_end: String,
}

impl Machine {
    /// Reads everything but the end load and Postfix's version.
    pub(crate) fn describe(root: &Path) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: memory_kib / (1_024.0 * 1_024.0),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            kernel: command_text(Command::new("uname").arg("-r")),
            os: os_name(),
            rustc: command_text(Command::new("rustc").arg("--version")),
            lettre: locked_version(root, "lettre"),
            commit: commit(root),
            started: command_text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            load_start: load_average(),
            load_end: String::new(),
        }
    }

    /// Records the load at the end of the run.
    pub(crate) fn finish(&mut self) {
        self.load_end = load_average();
    }
}

fn command_text(command: &mut Command) -> String {
    process::output(command)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn commit(root: &Path) -> String {
    let head = command_text(Command::new("git").arg("-C").arg(root).args([
        "rev-parse",
        "--short",
        "HEAD",
    ]));
    let dirty = process::output(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["status", "--porcelain"]),
    )
    .map(|text| !text.trim().is_empty())
    .unwrap_or(false);
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// The version of `package` in Cargo.lock.
pub(crate) fn locked_version(root: &Path, package: &str) -> String {
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    lock_version(&lock, package).unwrap_or_else(|| "unknown".to_owned())
}

fn lock_version(lock: &str, package: &str) -> Option<String> {
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = ")?;
            return Some(version.trim_matches('"').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_locked_version() {
        let lock = "[[package]]\nname = \"lettre\"\nversion = \"0.11.23\"\n";
        assert_eq!(lock_version(lock, "lettre").as_deref(), Some("0.11.23"));
        assert_eq!(lock_version(lock, "tokio"), None);
    }
}
