//! The nightly toolchain and cargo-fuzz, which the fuzz targets need.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process;

/// The versions used, for the report.
#[derive(Debug)]
pub(super) struct Tools {
    /// `rustc +nightly --version`.
    pub(super) rustc: String,
    /// `cargo fuzz --version`.
    pub(super) cargo_fuzz: String,
}

/// Checks for nightly Rust, installs cargo-fuzz when it is missing, and
/// returns both versions.
///
/// Nightly is not installed here, because adding a toolchain is the user's
/// choice. The error message gives the command.
pub(super) fn ensure() -> Result<Tools> {
    let rustc = nightly_rustc()?;
    let cargo_fuzz = match cargo_fuzz_version() {
        Some(version) => version,
        None => {
            install_cargo_fuzz()?;
            cargo_fuzz_version().context(
                "cargo-fuzz was installed but `cargo +nightly fuzz --version` still fails",
            )?
        }
    };
    Ok(Tools { rustc, cargo_fuzz })
}

fn nightly_rustc() -> Result<String> {
    let mut command = Command::new("rustc");
    command.args(["+nightly", "--version"]);
    match process::capture(&mut command) {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        _ => bail!(
            "the nightly Rust toolchain is not installed (`rustc +nightly --version` failed); \
             cargo-fuzz needs it for the sanitizer and coverage flags. Install it with:\n  \
             rustup toolchain install nightly"
        ),
    }
}

fn cargo_fuzz_version() -> Option<String> {
    let mut command = Command::new("cargo");
    command.args(["+nightly", "fuzz", "--version"]);
    let output = process::capture(&mut command).ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn install_cargo_fuzz() -> Result<()> {
    let mut command = Command::new("cargo");
    command.args(["install", "cargo-fuzz", "--locked"]);
    println!(
        "xtask fuzz: cargo-fuzz is not installed; installing it with `{}` \
         (this takes a few minutes)",
        process::describe(&command)
    );
    process::run(&mut command).context(
        "failed to install cargo-fuzz; install it by hand with `cargo install cargo-fuzz --locked`",
    )
}
