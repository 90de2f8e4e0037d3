//! Reading the status file that `cargo xtask peers up` writes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::PeersError;

/// State directory of `cargo xtask peers up` when `EC_PEERS_DIR` is unset.
const DEFAULT_ROOT: &str = "/var/lib/ec-peers";

/// The status file's `KEY=value` lines.
#[derive(Debug)]
pub(crate) struct StatusFile {
    path: PathBuf,
    entries: HashMap<String, String>,
}

impl StatusFile {
    /// Reads `peers.env` from `$EC_PEERS_DIR` or the default directory.
    pub(crate) fn read() -> Result<Self, PeersError> {
        let root = std::env::var_os("EC_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Self::read_from(&root.join("peers.env"))
    }

    pub(crate) fn read_from(path: &Path) -> Result<Self, PeersError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(PeersError::NotStarted {
                    path: path.to_owned(),
                })
            }
            Err(source) => {
                return Err(PeersError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(Self::parse(path, &text))
    }

    fn parse(path: &Path, text: &str) -> Self {
        let entries = text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
        Self {
            path: path.to_owned(),
            entries,
        }
    }

    /// The value of `key`, which may be empty.
    pub(crate) fn text(&self, key: &str) -> Result<&str, PeersError> {
        self.entries
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.invalid(key, "the key is missing".to_owned()))
    }

    /// The value of `key` parsed as `T`.
    pub(crate) fn parse_value<T>(&self, key: &str) -> Result<T, PeersError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let text = self.text(key)?;
        text.parse()
            .map_err(|error| self.invalid(key, format!("{text:?} does not parse: {error}")))
    }

    fn invalid(&self, key: &str, reason: String) -> PeersError {
        PeersError::InvalidStatus {
            path: self.path.clone(),
            key: key.to_owned(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments() {
        let file = StatusFile::parse(
            Path::new("/x/peers.env"),
            "# written by xtask\nPOSTFIX_PORT_PLAIN=10025\nPOSTFIX_HOST_V6=\n",
        );
        assert_eq!(
            file.parse_value::<u16>("POSTFIX_PORT_PLAIN").unwrap(),
            10025
        );
        assert_eq!(file.text("POSTFIX_HOST_V6").unwrap(), "");
    }

    #[test]
    fn missing_key_names_file_and_key() {
        let file = StatusFile::parse(Path::new("/x/peers.env"), "A=1\n");
        let message = file.text("TLS_CA_FILE").unwrap_err().to_string();
        assert!(message.contains("/x/peers.env"), "{message}");
        assert!(message.contains("TLS_CA_FILE"), "{message}");
        assert!(message.contains("cargo xtask peers up"), "{message}");
    }

    #[test]
    fn absent_file_says_how_to_start() {
        let error = StatusFile::read_from(Path::new("/nonexistent/ec-peers/peers.env"))
            .expect_err("no such file");
        assert!(matches!(error, PeersError::NotStarted { .. }));
        assert!(error.to_string().contains("cargo xtask peers up"));
    }
}
