//! `cargo xtask peers up|down|status`: the real SMTP servers that the
//! end-to-end tests talk to, on loopback only.
//!
//! `up` makes a test CA and server certificate, writes a private Postfix
//! instance's configuration, starts it (or reloads it when it runs), and
//! writes the status file that `tests/src/peers` reads. Every generated
//! file is under one state directory, `/var/lib/ec-peers` by default.

mod layout;
mod postfix;
mod postfix_config;
mod status_file;
mod tls;
mod users;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process;
use layout::{Layout, DOMAIN_DISCARD, DOMAIN_MAILDIR, DOMAIN_REPLY};
use postfix_config::{Settings, MAILBOX_USER};
use status_file::Status;

/// Configures and starts the peers, or reloads them when they run.
pub(crate) fn up() -> Result<()> {
    let layout = Layout::from_env()?;
    if !process::is_root() {
        bail!(
            "`cargo xtask peers up` must run as root, because it starts Postfix and \
             writes {}; run it again as root",
            layout.root.display()
        );
    }
    postfix::ensure_installed()?;
    if !process::exists("openssl") {
        bail!("openssl is not installed; install it with: apt-get install -y openssl");
    }

    fs::create_dir_all(&layout.root)
        .with_context(|| format!("failed to create {}", layout.root.display()))?;
    fs::set_permissions(&layout.root, fs::Permissions::from_mode(0o755))?;
    tls::ensure_certificates(&layout)?;

    let settings = settings();
    prepare_maildir_root(&layout)?;
    postfix_config::write(&layout, settings)?;
    let postfix_pid = postfix::start_or_reload(&layout)?;

    let status = Status {
        postfix_pid,
        ipv6: settings.ipv6,
        promtool: process::find_on_path("promtool"),
    };
    status.write(&layout)?;
    print_status(&layout, &status);
    Ok(())
}

/// Stops Postfix and removes the status file. Certificates and delivered
/// mail stay, so the next `up` reuses the same CA.
pub(crate) fn down() -> Result<()> {
    let layout = Layout::from_env()?;
    status_file::remove(&layout)?;
    if postfix::stop(&layout)? {
        println!("peers: stopped Postfix");
    } else {
        println!("peers: Postfix was not running");
    }
    Ok(())
}

/// Prints where the peers listen and whether each listener accepts a
/// connection. Exits 1 when they are not up.
pub(crate) fn status() -> Result<ExitCode> {
    let layout = Layout::from_env()?;
    let Some(entries) = status_file::read(&layout)? else {
        println!(
            "peers: down ({} does not exist); start them with `cargo xtask peers up`",
            layout.status_file().display()
        );
        return Ok(ExitCode::FAILURE);
    };
    for (key, value) in &entries {
        println!("{key}={value}");
    }

    let mut healthy = true;
    match postfix::running_pid(&layout) {
        Some(pid) => println!("postfix: master running, pid {pid}"),
        None => {
            println!("postfix: not running");
            healthy = false;
        }
    }
    for (port, what) in postfix::LISTENERS {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let answers = TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok();
        println!(
            "postfix: {address} ({what}) {}",
            if answers {
                "answers"
            } else {
                "does not answer"
            }
        );
        healthy &= answers;
    }

    if healthy {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("peers: not healthy; run `cargo xtask peers up`");
        Ok(ExitCode::FAILURE)
    }
}

/// Succeeds when the peers are running, for callers without root, which
/// cannot start them.
pub(crate) fn ensure_up() -> Result<()> {
    let layout = Layout::from_env()?;
    if status_file::read(&layout)?.is_none() || postfix::running_pid(&layout).is_none() {
        bail!(
            "the test peers are not running and this process is not root, so it cannot \
             start them; run `cargo xtask peers up` as root first"
        );
    }
    Ok(())
}

fn settings() -> Settings {
    Settings {
        ipv6: TcpListener::bind("[::1]:0").is_ok(),
    }
}

/// Creates the Maildir root, owned by the user the delivery script runs as.
fn prepare_maildir_root(layout: &Layout) -> Result<()> {
    let root = layout.maildir_root();
    fs::create_dir_all(&root).with_context(|| format!("failed to create {}", root.display()))?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    let (uid, gid) = users::lookup(MAILBOX_USER)?;
    std::os::unix::fs::chown(&root, Some(uid), Some(gid))
        .with_context(|| format!("failed to give {} to {MAILBOX_USER}", root.display()))
}

fn print_status(layout: &Layout, status: &Status) {
    println!("peers: up; status file {}", layout.status_file().display());
    for (port, what) in postfix::LISTENERS {
        println!("  postfix 127.0.0.1:{port}  {what}");
    }
    if status.ipv6 {
        println!("  postfix also listens on [::1] at the same ports");
    }
    println!("  postfix pid    {}", status.postfix_pid);
    println!("  postfix log    {}", layout.postfix_log().display());
    println!("  CA certificate {}", layout.ca_cert().display());
    println!(
        "  maildirs       {}/<domain>/<local part>/",
        layout.maildir_root().display()
    );
    println!(
        "  domains        {DOMAIN_MAILDIR} (Maildir), {DOMAIN_DISCARD} (dropped), \
         {DOMAIN_REPLY} (defer*: 451, reject*: 550, others: Maildir)"
    );
}
