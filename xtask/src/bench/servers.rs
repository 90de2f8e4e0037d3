//! The SMTP servers the benchmarks send to, all on 127.0.0.1: Postfix's
//! smtp-sink, our own `ec sink`, and the Postfix instance of
//! `cargo xtask peers up`.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{peers, process};

/// Postfix's benchmark sink.
pub(crate) const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
/// Postfix's load generator.
pub(crate) const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A server process this run started; it is stopped when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    /// The loopback address it listens on.
    pub(crate) address: SocketAddr,
}

impl Server {
    /// Returns the server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts smtp-sink on a free loopback port with `backlog` as its
    /// listen backlog. smtp-sink binds with SO_REUSEPORT, so a second copy
    /// on a busy port would start and take half of the connections: the
    /// port is checked first.
    pub(crate) fn smtp_sink(backlog: u32) -> Result<Self> {
        let address = free_port()?;
        let mut command = Command::new(SMTP_SINK);
        if process::is_root() {
            // As root, smtp-sink exits unless `-u` names the user to run as.
            command.args(["-u", "nobody"]);
        }
        command.arg(address.to_string()).arg(backlog.to_string());
        Self::start("smtp-sink", command, address)
    }

    /// Starts `ec sink` on a free loopback port; it writes its CA
    /// certificate to `ca_out`.
    pub(crate) fn ec_sink(ec: &Path, ca_out: &Path) -> Result<Self> {
        let address = free_port()?;
        let _ = fs::remove_file(ca_out);
        let mut command = Command::new(ec);
        command
            .arg("sink")
            .arg("--listen")
            .arg(address.to_string())
            .arg("--ca-out")
            .arg(ca_out);
        let server = Self::start("ec sink", command, address)?;
        if !ca_out.exists() {
            bail!(
                "`ec sink` accepts connections but wrote no CA file at {}",
                ca_out.display()
            );
        }
        Ok(server)
    }

    fn start(name: &'static str, mut command: Command, address: SocketAddr) -> Result<Self> {
        let line = process::describe(&command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("failed to start `{line}`"))?;
        let mut server = Self {
            name,
            child,
            address,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("`{line}` exited ({status}) before it accepted a connection");
            }
            if Instant::now() > deadline {
                bail!(
                    "`{line}` accepts no connection on {address} after {}s",
                    START_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        println!(
            "bench: {name} listens on {address} (pid {})",
            server.child.id()
        );
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        println!("bench: stopped {} on {}", self.name, self.address);
    }
}

/// Finds a loopback address with a port no program listens on.
fn free_port() -> Result<SocketAddr> {
    let probe =
        TcpListener::bind("127.0.0.1:0").context("cannot bind a probe socket on 127.0.0.1")?;
    let address = probe.local_addr()?;
    drop(probe);
    // The kernel handed out a free port; check it again just before use,
    // since smtp-sink would share a busy port silently.
    TcpListener::bind(address).with_context(|| {
        format!(
            "port {} on 127.0.0.1 was taken meanwhile; run again",
            address.port()
        )
    })?;
    Ok(address)
}

/// The STARTTLS listener of the Postfix of `cargo xtask peers up`, from
/// its status file.
#[derive(Debug, Clone)]
pub(crate) struct PostfixTls {
    /// The plain-text listener that offers STARTTLS.
    pub(crate) address: SocketAddr,
    /// The CA that signed Postfix's certificate.
    pub(crate) ca_file: PathBuf,
    /// The name in Postfix's certificate.
    pub(crate) server_name: String,
    /// The domain Postfix accepts and discards.
    pub(crate) discard_domain: String,
    /// Postfix's version, `mail_version`.
    pub(crate) version: String,
    /// The master's pid, the parent of every Postfix daemon.
    /// `None`, with a warning printed, when the status file names no
    /// running master.
    pub(crate) master_pid: Option<u32>,
}

/// Makes sure the Postfix peer runs (starting it as root when it does not)
/// and reads where it listens.
pub(crate) fn postfix() -> Result<PostfixTls> {
    if peers::ensure_up().is_err() {
        if !process::is_root() {
            bail!("the Postfix peer is down; run `cargo xtask peers up` as root first");
        }
        peers::up().context("starting the Postfix peer failed")?;
    }
    let root = std::env::var_os("EC_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/ec-peers"));
    let status_file = root.join("peers.env");
    let text = fs::read_to_string(&status_file).with_context(|| {
        format!(
            "cannot read the peers' status file {}",
            status_file.display()
        )
    })?;
    let entries: BTreeMap<&str, &str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim()))
        .collect();
    let get = |key: &str| {
        entries
            .get(key)
            .copied()
            .filter(|value| !value.is_empty())
            .with_context(|| format!("{} has no {key}", status_file.display()))
    };
    let address: SocketAddr = format!("{}:{}", get("POSTFIX_HOST")?, get("POSTFIX_PORT_PLAIN")?)
        .parse()
        .context("the status file's Postfix address is invalid")?;
    let version =
        process::output(Command::new("/usr/sbin/postconf").args(["-d", "-h", "mail_version"]))
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
    let master_pid = master_pid(get("POSTFIX_PID").ok());
    if master_pid.is_none() {
        eprintln!(
            "bench: warning: {} names no running Postfix master as POSTFIX_PID; \
             the report leaves out Postfix's CPU",
            status_file.display()
        );
    }
    Ok(PostfixTls {
        address,
        ca_file: PathBuf::from(get("TLS_CA_FILE")?),
        server_name: get("TLS_SERVER_NAME")?.to_owned(),
        discard_domain: get("DOMAIN_DISCARD")?.to_owned(),
        version,
        master_pid,
    })
}

/// Parses the pid in `text` and returns it when it is a running process
/// named `master`.
fn master_pid(text: Option<&str>) -> Option<u32> {
    let pid: u32 = text?.parse().ok()?;
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (name.trim() == "master").then_some(pid)
}
