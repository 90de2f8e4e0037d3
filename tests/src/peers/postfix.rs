//! The Postfix test peer started by `cargo xtask peers up`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::maildir::read_messages;
use super::status::StatusFile;
use super::{PeersError, MAILDIR_DOMAIN};

/// How long [`Postfix::get`] waits for each listener to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the `wait_for_*` methods look at a Maildir.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How much of the end of Postfix's log a timeout message searches.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

/// The SMTP listeners of the Postfix peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostfixPorts {
    /// Plain SMTP; STARTTLS is offered and optional.
    pub plain: u16,
    /// TLS from the first byte (the SMTPS convention of port 465).
    pub implicit_tls: u16,
    /// Plain SMTP that rejects MAIL with 530 until STARTTLS completes.
    pub tls_required: u16,
    /// Plain SMTP (STARTTLS offered) that answers a command or message
    /// line ending in a bare LF with `550 5.5.2` and ends the session
    /// (`smtpd_forbid_bare_newline = reject`). `None` when the status file
    /// was written by an older `peers up` that did not start it.
    pub bare_lf_reject: Option<u16>,
}

/// The running Postfix peer: where it listens, the CA that signed its
/// certificate, and where it delivers mail.
#[derive(Debug)]
pub struct Postfix {
    host: Ipv4Addr,
    host_v6: Option<IpAddr>,
    ports: PostfixPorts,
    pid: u32,
    ca_file: PathBuf,
    server_name: String,
    maildir_root: PathBuf,
    log_file: PathBuf,
}

impl Postfix {
    /// The Postfix peer, checked once per test process.
    ///
    /// # Panics
    ///
    /// Panics when the peers are not up or a listener rejects the
    /// connection. The message names what is missing and the command that
    /// starts the peers (`cargo xtask peers up`).
    pub fn get() -> &'static Postfix {
        static PEER: OnceLock<Postfix> = OnceLock::new();
        if let Some(peer) = PEER.get() {
            return peer;
        }
        match Self::try_get() {
            Ok(peer) => PEER.get_or_init(|| peer),
            Err(error) => panic!("{error}"),
        }
    }

    /// Reads the status file and checks that every listener accepts a TCP
    /// connection within two seconds.
    ///
    /// # Errors
    ///
    /// [`PeersError::NotStarted`] without a status file,
    /// [`PeersError::InvalidStatus`] for a malformed one, and
    /// [`PeersError::NotAnswering`] when a listener refuses or times out.
    pub fn try_get() -> Result<Postfix, PeersError> {
        let status = StatusFile::read()?;
        let host_v6 = status.text("POSTFIX_HOST_V6")?;
        let peer = Postfix {
            host: status.parse_value("POSTFIX_HOST")?,
            host_v6: if host_v6.is_empty() {
                None
            } else {
                Some(status.parse_value("POSTFIX_HOST_V6")?)
            },
            ports: PostfixPorts {
                plain: status.parse_value("POSTFIX_PORT_PLAIN")?,
                implicit_tls: status.parse_value("POSTFIX_PORT_IMPLICIT_TLS")?,
                tls_required: status.parse_value("POSTFIX_PORT_TLS_REQUIRED")?,
                bare_lf_reject: match status.text("POSTFIX_PORT_BARE_LF_REJECT") {
                    Ok(_) => Some(status.parse_value("POSTFIX_PORT_BARE_LF_REJECT")?),
                    Err(_) => None,
                },
            },
            pid: status.parse_value("POSTFIX_PID")?,
            ca_file: status.parse_value("TLS_CA_FILE")?,
            server_name: status.text("TLS_SERVER_NAME")?.to_owned(),
            maildir_root: status.parse_value("MAILDIR_ROOT")?,
            log_file: status.parse_value("POSTFIX_LOG")?,
        };
        peer.check_listeners()?;
        Ok(peer)
    }

    fn check_listeners(&self) -> Result<(), PeersError> {
        let mut listeners = vec![
            ("plain + STARTTLS", self.plain_addr()),
            ("implicit TLS", self.implicit_tls_addr()),
            ("STARTTLS required", self.tls_required_addr()),
        ];
        if let Some(port) = self.ports.bare_lf_reject {
            listeners.push(("bare LF rejected", SocketAddr::from((self.host, port))));
        }
        for (listener, address) in listeners {
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(|source| {
                PeersError::NotAnswering {
                    listener,
                    address,
                    log: self.log_file.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The listener ports.
    pub fn ports(&self) -> PostfixPorts {
        self.ports
    }

    /// 127.0.0.1 and the plain port, where STARTTLS is optional.
    pub fn plain_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.ports.plain))
    }

    /// 127.0.0.1 and the implicit-TLS port.
    pub fn implicit_tls_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.ports.implicit_tls))
    }

    /// 127.0.0.1 and the port that requires STARTTLS before MAIL.
    pub fn tls_required_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host, self.ports.tls_required))
    }

    /// 127.0.0.1 and the port that rejects bare LF line endings
    /// (`smtpd_forbid_bare_newline = reject`, loopback not exempt).
    ///
    /// # Panics
    ///
    /// When the running peers predate that listener; the message says to
    /// run `cargo xtask peers up` again.
    pub fn bare_lf_reject_addr(&self) -> SocketAddr {
        let port = self.ports.bare_lf_reject.unwrap_or_else(|| {
            panic!(
                "the status file has no POSTFIX_PORT_BARE_LF_REJECT: the peers were started \
                 by an older `cargo xtask peers up`; run it again"
            )
        });
        SocketAddr::from((self.host, port))
    }

    /// `::1` when the machine has IPv6 loopback; Postfix then serves the
    /// same ports there.
    pub fn ipv6_host(&self) -> Option<IpAddr> {
        self.host_v6
    }

    /// The Postfix master's process id when `peers up` last ran.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// PEM file of the CA that signed the server certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The name in the server certificate and in the 220 banner
    /// (`mx.ec.test`). The certificate also covers `localhost`,
    /// 127.0.0.1 and ::1.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Postfix's log file, for failure messages.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The Maildir of `local_part@domain`. Postfix lower-cases the local
    /// part before delivery, and so does this path.
    pub fn maildir_path(&self, domain: &str, local_part: &str) -> PathBuf {
        self.maildir_root
            .join(domain.to_ascii_lowercase())
            .join(local_part.to_ascii_lowercase())
    }

    /// Messages delivered so far to `local_part@maildir.test`, oldest first,
    /// as stored: `Return-Path:`, `Delivered-To:` and `Received:` headers
    /// that Postfix prepends, then the message as its cleanup(8) passed it
    /// on, with LF line endings. Cleanup removes a client's own
    /// `Return-Path:` header and repairs some malformed header sections.
    ///
    /// # Panics
    ///
    /// Panics when the Maildir exists but cannot be read.
    pub fn maildir(&self, local_part: &str) -> Vec<Vec<u8>> {
        self.mailbox(MAILDIR_DOMAIN, local_part)
    }

    /// Messages delivered so far to `local_part@domain`, for the domains
    /// that deliver into Maildirs ([`MAILDIR_DOMAIN`] and
    /// [`REPLY_DOMAIN`](super::REPLY_DOMAIN)).
    ///
    /// # Panics
    ///
    /// Panics when the Maildir exists but cannot be read.
    pub fn mailbox(&self, domain: &str, local_part: &str) -> Vec<Vec<u8>> {
        read_messages(&self.maildir_path(domain, local_part)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `local_part@maildir.test` contains at least `count`
    /// messages and returns all of them.
    ///
    /// # Panics
    ///
    /// Panics after `timeout` with the number found and the log lines that
    /// mention the recipient.
    pub fn wait_for_messages(
        &self,
        local_part: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Vec<u8>> {
        self.wait_for_mailbox(MAILDIR_DOMAIN, local_part, count, timeout)
    }

    /// [`wait_for_messages`](Self::wait_for_messages) for any Maildir domain.
    ///
    /// # Panics
    ///
    /// Panics after `timeout` with the number found and the log lines that
    /// mention the recipient.
    pub fn wait_for_mailbox(
        &self,
        domain: &str,
        local_part: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.mailbox(domain, local_part);
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() >= deadline {
                let recipient = format!("{local_part}@{domain}");
                panic!(
                    "expected {count} message(s) for {recipient} in {} within {:?}, found {}; \
                     Postfix log {} says:\n{}",
                    self.maildir_path(domain, local_part).display(),
                    timeout,
                    messages.len(),
                    self.log_file.display(),
                    self.log_lines_mentioning(&recipient),
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// A local part no earlier test run has used: `prefix`, this process's
    /// id, the time in nanoseconds and a counter. It is lower case, so it
    /// matches the Maildir name Postfix delivers to.
    ///
    /// # Panics
    ///
    /// Panics unless `prefix` is ASCII letters, digits and `-`, starting
    /// with a letter or digit: the peer rejects other local parts.
    pub fn unique_local_part(&self, prefix: &str) -> String {
        let valid = prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        assert!(
            valid,
            "local part prefix {prefix:?} must be ASCII letters, digits and '-'"
        );

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}-{}-{nanos}-{sequence}",
            prefix.to_ascii_lowercase(),
            std::process::id()
        )
    }

    /// The last lines of Postfix's log that contain `needle`, or a note
    /// saying why there are none.
    fn log_lines_mentioning(&self, needle: &str) -> String {
        let mut tail = String::new();
        let read = File::open(&self.log_file).and_then(|mut file| {
            let length = file.metadata()?.len();
            file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            tail = String::from_utf8_lossy(&bytes).into_owned();
            Ok(())
        });
        if let Err(error) = read {
            return format!("(log unreadable: {error})");
        }

        let needle = needle.to_ascii_lowercase();
        let lines: Vec<&str> = tail
            .lines()
            .filter(|line| line.to_ascii_lowercase().contains(&needle))
            .collect();
        if lines.is_empty() {
            return "(no line mentions it)".to_owned();
        }
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}
