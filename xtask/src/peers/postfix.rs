//! Starting, reloading and stopping the private Postfix instance.
//!
//! Every command runs as `postfix -c <config_directory>`, so the instance
//! has its own queue, pid file and log and leaves the system's Postfix
//! (if one is configured) alone.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::layout::{
    Layout, PORT_BARE_LF_REJECT, PORT_IMPLICIT_TLS, PORT_PLAIN, PORT_TLS_REQUIRED,
};
use super::{status_file, users};
use crate::process;

const POSTFIX: &str = "/usr/sbin/postfix";
const POSTCONF: &str = "/usr/sbin/postconf";

/// Postfix's `mail_owner`, the user the Debian package creates.
pub(crate) const MAIL_OWNER: &str = "postfix";

/// How long to wait for the listeners after a start or reload, and for the
/// master to exit after a stop.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Install command. The debconf preset makes Debian's installer run without
/// questions and leave no main.cf.
pub(crate) const INSTALL_HINT: &str = "\
echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections \
&& apt-get update && apt-get install -y --no-install-recommends postfix";

/// All listeners as (port, what it is) pairs.
pub(crate) const LISTENERS: [(u16, &str); 4] = [
    (PORT_PLAIN, "plain + STARTTLS"),
    (PORT_IMPLICIT_TLS, "implicit TLS"),
    (PORT_TLS_REQUIRED, "STARTTLS required"),
    (PORT_BARE_LF_REJECT, "bare LF rejected"),
];

/// Fails with the apt command to run when Postfix is not installed.
pub(crate) fn ensure_installed() -> Result<()> {
    for program in [POSTFIX, POSTCONF, "/usr/sbin/smtp-sink"] {
        if !process::exists(program) {
            bail!(
                "Postfix is not installed ({program} not found); the test peers need \
                 Debian's `postfix` package. Install it as root with:\n  {INSTALL_HINT}"
            );
        }
    }
    Ok(())
}

fn postfix(layout: &Layout) -> Command {
    let mut command = Command::new(POSTFIX);
    command.arg("-c").arg(layout.postfix_config());
    command
}

/// The master's pid when the instance is running. Postfix's pid file is
/// readable only by root, so other users fall back to the pid in the
/// status file.
pub(crate) fn running_pid(layout: &Layout) -> Option<u32> {
    let from_pid_file = fs::read_to_string(layout.postfix_pid_file())
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let pid = from_pid_file.or_else(|| status_file_pid(layout))?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "master").then_some(pid)
}

fn status_file_pid(layout: &Layout) -> Option<u32> {
    let entries = status_file::read(layout).ok()??;
    let (_, pid) = entries.iter().find(|(key, _)| key == "POSTFIX_PID")?;
    pid.parse().ok()
}

/// Checks the written configuration, then starts the instance or, when it
/// is already running, reloads it.
pub(crate) fn start_or_reload(layout: &Layout) -> Result<u32> {
    let queue = layout.postfix_queue();
    fs::create_dir_all(&queue).with_context(|| format!("failed to create {}", queue.display()))?;

    // The master and its daemons write their lock and caches here as
    // `mail_owner`.
    let data = layout.postfix_data();
    fs::create_dir_all(&data).with_context(|| format!("failed to create {}", data.display()))?;
    let (uid, gid) = users::lookup(MAIL_OWNER)?;
    std::os::unix::fs::chown(&data, Some(uid), Some(gid))
        .with_context(|| format!("failed to give {} to {MAIL_OWNER}", data.display()))?;

    // `postfix check` creates missing queue subdirectories with the right
    // owners and reports configuration errors before the master starts.
    process::output(postfix(layout).arg("check"))
        .context("Postfix rejected the generated configuration")?;

    if running_pid(layout).is_some() {
        process::output(postfix(layout).arg("reload"))?;
        println!("peers: reloaded Postfix");
    } else {
        ensure_ports_free()?;
        process::output(postfix(layout).arg("start")).with_context(|| {
            format!(
                "Postfix failed to start; its log is {}",
                layout.postfix_log().display()
            )
        })?;
        println!("peers: started Postfix");
    }

    wait_for_listeners(layout)?;
    running_pid(layout).with_context(|| {
        format!(
            "Postfix started but {} names no running master",
            layout.postfix_pid_file().display()
        )
    })
}

/// Stops the instance if it runs and waits until its master has exited.
pub(crate) fn stop(layout: &Layout) -> Result<bool> {
    let Some(pid) = running_pid(layout) else {
        return Ok(false);
    };
    process::output(postfix(layout).arg("stop"))?;

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            bail!(
                "the Postfix master (pid {pid}) is still running {}s after `postfix stop`",
                SETTLE_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Fails when another program already listens on one of the peer ports,
/// because Postfix would then start without that listener.
fn ensure_ports_free() -> Result<()> {
    for (port, _) in LISTENERS {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(error) = TcpListener::bind(address) {
            bail!(
                "port {port} on 127.0.0.1 is taken ({error}); stop the program that \
                 listens there (`ss -ltnp 'sport = :{port}'` shows it) and run \
                 `cargo xtask peers up` again"
            );
        }
    }
    Ok(())
}

fn wait_for_listeners(layout: &Layout) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for (port, _) in LISTENERS {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "Postfix does not accept connections on {address} after {}s; \
                     see its log {}",
                    SETTLE_TIMEOUT.as_secs(),
                    layout.postfix_log().display()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
