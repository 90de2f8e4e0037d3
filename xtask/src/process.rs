//! Running external programs with errors that name the command.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `command` with inherited stdio and fails unless it exits 0.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    let status = command
        .status()
        .with_context(|| format!("failed to start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command`, captures its output, and fails unless it exits 0.
/// The error carries the command's stderr and stdout.
pub(crate) fn output(command: &mut Command) -> Result<String> {
    let result = capture(command)?;
    if !result.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            describe(command),
            result.status,
            String::from_utf8_lossy(&result.stderr),
            String::from_utf8_lossy(&result.stdout),
        );
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

/// Runs `command` with stdin closed and returns its output whatever its
/// exit status.
pub(crate) fn capture(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", describe(command)))
}

/// The command line as a shell user would type it, for messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Whether `program` is an executable file, either an absolute path or a
/// name found on `PATH`.
pub(crate) fn exists(program: &str) -> bool {
    if program.contains('/') {
        return is_executable(Path::new(program));
    }
    find_on_path(program).is_some()
}

/// Finds the executable `name` in the directories of `PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Whether this process runs as root. The owner of `/proc/self` is the
/// process's effective user.
pub(crate) fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
