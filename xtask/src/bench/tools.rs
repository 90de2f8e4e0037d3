//! Building the load clients and the `TCP_NODELAY` shim, and installing
//! the system tools the benchmarks use.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::options::{Group, Options};
use super::servers::{SMTP_SINK, SMTP_SOURCE};
use crate::process;

/// Paths of everything the benchmarks run.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// `ec-load`, ec's engine as a load client.
    pub(crate) ec_load: PathBuf,
    /// `lettre-load`.
    pub(crate) lettre_load: PathBuf,
    /// `tls-floor`, the bare STARTTLS handshake loop.
    pub(crate) tls_floor: PathBuf,
    /// The `ec` binary, for `ec sink`.
    pub(crate) ec: PathBuf,
    /// The scheduler's benchmark example.
    pub(crate) sched_bench: PathBuf,
    /// The `LD_PRELOAD` shim that sets `TCP_NODELAY` at `connect`.
    pub(crate) nodelay_shim: PathBuf,
    /// `perf`, when it is installed.
    pub(crate) perf: Option<PathBuf>,
    /// `strace`, when it is installed.
    pub(crate) strace: Option<PathBuf>,
}

/// Installs what is missing (as root, from Debian's archive), then builds
/// the release binaries and the shim.
pub(crate) fn prepare(root: &Path, options: &Options) -> Result<Tools> {
    let needs_peers =
        options.runs(Group::Reuse) || options.runs(Group::Churn) || options.runs(Group::Tls);
    if needs_peers {
        for program in [SMTP_SINK, SMTP_SOURCE] {
            if !process::exists(program) {
                bail!(
                    "{program} is missing; it comes with Debian's postfix package, which \
                     `cargo xtask peers up` installs and configures (as root)"
                );
            }
        }
        ensure_program("gcc", "gcc")?;
    }
    let perf = options
        .profile
        .then(|| optional_program("perf", "linux-perf"))
        .flatten();
    let strace = options
        .profile
        .then(|| optional_program("strace", "strace"))
        .flatten();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let build = |args: &[&str]| {
        process::run(Command::new(&cargo).args(args).current_dir(root))
            .context("building the benchmark binaries failed")
    };
    build(&["build", "--release", "-p", "ec-bench", "--bins"])?;
    if options.runs(Group::Memory) {
        build(&["build", "--release", "-p", "ec-cli", "--bin", "ec"])?;
    }
    if options.runs(Group::Sched) {
        build(&[
            "build",
            "--release",
            "-p",
            "ec-sched",
            "--example",
            "sched_bench",
        ])?;
    }

    let release = target_dir(root).join("release");
    let nodelay_shim = release.join("libnodelay.so");
    if needs_peers {
        build_shim(root, &nodelay_shim)?;
    }
    Ok(Tools {
        ec_load: release.join("ec-load"),
        lettre_load: release.join("lettre-load"),
        tls_floor: release.join("tls-floor"),
        ec: release.join("ec"),
        sched_bench: release.join("examples").join("sched_bench"),
        nodelay_shim,
        perf,
        strace,
    })
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or `target` in the
/// workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Compiles `bench/nodelay-shim/nodelay.c` into a shared object.
fn build_shim(root: &Path, output: &Path) -> Result<()> {
    let source = root.join("bench").join("nodelay-shim").join("nodelay.c");
    process::output(
        Command::new("gcc")
            .args([
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
            ])
            .arg(output)
            .arg(&source)
            .arg("-ldl"),
    )
    .with_context(|| format!("compiling the TCP_NODELAY shim {} failed", source.display()))?;
    Ok(())
}

/// Fails unless `program` is on PATH, installing `package` first when
/// this process is root.
fn ensure_program(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(path) = process::find_on_path(program) {
        return Ok(path);
    }
    if process::is_root() {
        apt_install(package)?;
    }
    process::find_on_path(program).with_context(|| {
        format!("`{program}` is not installed; install it with `apt-get install -y {package}`")
    })
}

/// `program` when it is on PATH or can be installed; a warning otherwise.
fn optional_program(program: &str, package: &str) -> Option<PathBuf> {
    match ensure_program(program, package) {
        Ok(path) => Some(path),
        Err(error) => {
            eprintln!("bench: warning: {error:#}; profiles will be left out");
            None
        }
    }
}

fn apt_install(package: &str) -> Result<()> {
    let install = || {
        process::output(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", package])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_ok() {
        return Ok(());
    }
    // A fresh machine may have no package lists yet.
    process::output(Command::new("apt-get").arg("update"))?;
    install().map(|_| ())
}
