//! The machine-readable status file, `peers.env` in the state directory.
//!
//! One `KEY=value` per line, `#` comments, no quoting: a shell can source it
//! and the `ec-tests` crate parses it. Keys are only ever added, so older
//! readers keep working.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::layout::{
    text, Layout, DOMAIN_DISCARD, DOMAIN_MAILDIR, DOMAIN_REPLY, PORT_BARE_LF_REJECT,
    PORT_IMPLICIT_TLS, PORT_PLAIN, PORT_TLS_REQUIRED, SERVER_NAME,
};

/// What `peers up` started, as written to the status file.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) postfix_pid: u32,
    pub(crate) ipv6: bool,
    pub(crate) promtool: Option<PathBuf>,
}

impl Status {
    /// The file's lines as (key, value) pairs, in file order.
    pub(crate) fn entries(&self, layout: &Layout) -> Vec<(&'static str, String)> {
        vec![
            ("EC_PEERS_DIR", text(&layout.root)),
            ("POSTFIX_PID", self.postfix_pid.to_string()),
            ("POSTFIX_HOST", "127.0.0.1".to_owned()),
            (
                "POSTFIX_HOST_V6",
                if self.ipv6 { "::1" } else { "" }.to_owned(),
            ),
            ("POSTFIX_PORT_PLAIN", PORT_PLAIN.to_string()),
            ("POSTFIX_PORT_IMPLICIT_TLS", PORT_IMPLICIT_TLS.to_string()),
            ("POSTFIX_PORT_TLS_REQUIRED", PORT_TLS_REQUIRED.to_string()),
            (
                "POSTFIX_PORT_BARE_LF_REJECT",
                PORT_BARE_LF_REJECT.to_string(),
            ),
            ("POSTFIX_CONFIG_DIR", text(&layout.postfix_config())),
            ("POSTFIX_LOG", text(&layout.postfix_log())),
            ("TLS_CA_FILE", text(&layout.ca_cert())),
            ("TLS_SERVER_NAME", SERVER_NAME.to_owned()),
            ("MAILDIR_ROOT", text(&layout.maildir_root())),
            ("DOMAIN_MAILDIR", DOMAIN_MAILDIR.to_owned()),
            ("DOMAIN_DISCARD", DOMAIN_DISCARD.to_owned()),
            ("DOMAIN_REPLY", DOMAIN_REPLY.to_owned()),
            ("SMTP_SINK", "/usr/sbin/smtp-sink".to_owned()),
            (
                "PROMTOOL",
                self.promtool.as_deref().map(text).unwrap_or_default(),
            ),
        ]
    }

    /// Writes the file atomically, so a reader never sees half of it.
    pub(crate) fn write(&self, layout: &Layout) -> Result<()> {
        let mut contents = String::from(
            "# Test peers started by `cargo xtask peers up`; read by the ec-tests crate.\n",
        );
        for (key, value) in self.entries(layout) {
            let _ = writeln!(contents, "{key}={value}");
        }

        let path = layout.status_file();
        let temporary = path.with_extension("env.tmp");
        fs::write(&temporary, contents)
            .with_context(|| format!("failed to write {}", temporary.display()))?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(0o644))?;
        fs::rename(&temporary, &path)
            .with_context(|| format!("failed to replace {}", path.display()))
    }
}

/// Reads the status file into (key, value) pairs; `None` when it is absent.
pub(crate) fn read(layout: &Layout) -> Result<Option<Vec<(String, String)>>> {
    let path = layout.status_file();
    let contents = match fs::read_to_string(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read {}", path.display()))
        }
    };
    let entries = contents
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Some(entries))
}

/// Removes the status file, so tests report the peers as down.
pub(crate) fn remove(layout: &Layout) -> Result<()> {
    let path = layout.status_file();
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("failed to remove {}", path.display())),
    }
}
