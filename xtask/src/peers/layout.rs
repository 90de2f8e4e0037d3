//! State paths of the test peers, and the fixed ports and names they
//! serve. `tests/src/peers` reads the same values from the status file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Default state directory. `EC_PEERS_DIR` overrides it, for both xtask and
/// the test library.
pub(crate) const DEFAULT_ROOT: &str = "/var/lib/ec-peers";

/// Plain SMTP with STARTTLS offered (`smtpd_tls_security_level=may`).
pub(crate) const PORT_PLAIN: u16 = 10025;
/// Implicit TLS from the first byte (`smtpd_tls_wrappermode=yes`).
pub(crate) const PORT_IMPLICIT_TLS: u16 = 10465;
/// STARTTLS required before MAIL (`smtpd_tls_security_level=encrypt`).
pub(crate) const PORT_TLS_REQUIRED: u16 = 10587;
/// Plain SMTP that rejects a command or message line ending in a bare LF
/// (`smtpd_forbid_bare_newline=reject`), for the SMTP smuggling tests.
pub(crate) const PORT_BARE_LF_REJECT: u16 = 10026;

/// Host name in Postfix's banner and in the server certificate.
pub(crate) const SERVER_NAME: &str = "mx.ec.test";
/// Delivered into one Maildir per local part.
pub(crate) const DOMAIN_MAILDIR: &str = "maildir.test";
/// Accepted and dropped by Postfix's `discard` transport.
pub(crate) const DOMAIN_DISCARD: &str = "discard.test";
/// Scripted replies by local part: `defer*` gets 451 4.7.1, `reject*` gets
/// 550 5.1.1, anything else is delivered into a Maildir.
pub(crate) const DOMAIN_REPLY: &str = "reply.test";

/// Paths of everything the peers generate, all under one root directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: PathBuf,
}

impl Layout {
    /// The layout under `EC_PEERS_DIR`, or under [`DEFAULT_ROOT`].
    pub(crate) fn from_env() -> Result<Self> {
        let root = std::env::var_os("EC_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let text = root.to_string_lossy();
        if !root.is_absolute() {
            bail!("EC_PEERS_DIR={text} is not an absolute path; give an absolute one");
        }
        // The status file and Postfix's main.cf hold these paths unquoted.
        if text.contains(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '$' | ',')) {
            bail!("EC_PEERS_DIR={text:?} contains whitespace, a quote, '$' or ','; choose a plain path");
        }
        Ok(Self { root })
    }

    pub(crate) fn status_file(&self) -> PathBuf {
        self.root.join("peers.env")
    }

    pub(crate) fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    pub(crate) fn ca_cert(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    pub(crate) fn ca_key(&self) -> PathBuf {
        self.tls_dir().join("ca.key")
    }

    pub(crate) fn server_cert(&self) -> PathBuf {
        self.tls_dir().join("server.pem")
    }

    pub(crate) fn server_key(&self) -> PathBuf {
        self.tls_dir().join("server.key")
    }

    pub(crate) fn maildir_root(&self) -> PathBuf {
        self.root.join("maildir")
    }

    pub(crate) fn postfix_dir(&self) -> PathBuf {
        self.root.join("postfix")
    }

    /// Postfix `config_directory`: main.cf, master.cf and the lookup tables.
    pub(crate) fn postfix_config(&self) -> PathBuf {
        self.postfix_dir().join("etc")
    }

    /// The pipe(8) command that writes one message into a Maildir.
    pub(crate) fn deliver_script(&self) -> PathBuf {
        self.postfix_config().join("deliver-maildir")
    }

    /// Postfix `queue_directory`; the master's pid file is under it.
    pub(crate) fn postfix_queue(&self) -> PathBuf {
        self.postfix_dir().join("spool")
    }

    /// Postfix `data_directory`.
    pub(crate) fn postfix_data(&self) -> PathBuf {
        self.postfix_dir().join("data")
    }

    /// Postfix `maillog_file`.
    pub(crate) fn postfix_log(&self) -> PathBuf {
        self.postfix_dir().join("maillog")
    }

    pub(crate) fn postfix_pid_file(&self) -> PathBuf {
        self.postfix_queue().join("pid").join("master.pid")
    }
}

/// `path` as text for configuration files; [`Layout::from_env`] has
/// already rejected roots that would need quoting.
pub(crate) fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
