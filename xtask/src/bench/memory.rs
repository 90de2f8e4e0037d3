//! Resident memory of ec's engine per idle open connection (plain and
//! TLS, to `ec sink`) and per queued message, measured by `ec-load` from
//! `/proc/self/status` before and after.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::measure::{number, result_of};
use super::servers::Server;
use super::tools::Tools;
use crate::process;

/// Memory per idle connection, from one `ec-load --mode hold` run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Held {
    pub(crate) tls: bool,
    /// Connections open and idle when memory was read.
    pub(crate) open: u64,
    pub(crate) bytes_per_connection: f64,
    pub(crate) command: String,
}

/// Memory per queued message, from one `ec-load --mode queue` run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Queued {
    pub(crate) messages: u64,
    pub(crate) bytes_per_message: f64,
    pub(crate) command: String,
}

/// Everything the memory group measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MemoryResult {
    pub(crate) held: Vec<Held>,
    pub(crate) queued: Option<Queued>,
}

/// Holds `connections` idle connections to a fresh `ec sink`, plain and
/// then over TLS, and queues `messages` messages with no connection
/// allowed.
pub(crate) fn run(
    tools: &Tools,
    scratch: &Path,
    connections: u64,
    messages: u64,
) -> Result<MemoryResult> {
    println!("\n==> bench: memory");
    let mut result = MemoryResult::default();
    let ca_file = scratch.join("ec-sink-ca.pem");
    for tls in [false, true] {
        // A fresh sink each time, so the TLS run meets no leftovers.
        let sink = Server::ec_sink(&tools.ec, &ca_file)?;
        let mut command = Command::new(&tools.ec_load);
        command.args(["--mode", "hold", "--server", &sink.address.to_string()]);
        command.args(["--connections", &connections.to_string()]);
        if tls {
            command.args(["--starttls", "--server-name", "localhost", "--ca-file"]);
            command.arg(&ca_file);
        }
        let fields = result_of(&mut command)?;
        let held = Held {
            tls,
            open: number(&fields, "open")? as u64,
            bytes_per_connection: number(&fields, "bytes_per_connection")?,
            command: process::describe(&command),
        };
        println!(
            "bench:   {} idle {} connections: {:.0} bytes each",
            held.open,
            if tls { "TLS" } else { "plain" },
            held.bytes_per_connection
        );
        result.held.push(held);
    }

    // No connection opens, so no server is needed; the address is only
    // where the route would point.
    let mut command = Command::new(&tools.ec_load);
    command.args(["--mode", "queue", "--server", "127.0.0.1:9"]);
    command.args(["--messages", &messages.to_string()]);
    let fields = result_of(&mut command).context("queueing messages in ec-load failed")?;
    let queued = Queued {
        messages: number(&fields, "queued")? as u64,
        bytes_per_message: number(&fields, "bytes_per_message")?,
        command: process::describe(&command),
    };
    println!(
        "bench:   {} queued messages: {:.0} bytes each",
        queued.messages, queued.bytes_per_message
    );
    result.queued = Some(queued);
    Ok(result)
}
