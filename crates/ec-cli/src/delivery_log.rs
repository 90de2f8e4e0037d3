//! The delivery log: one JSON line per recipient outcome, and the reader
//! that `--resume` uses to skip what a previous run finished.
//!
//! Each record is one line of JSON, written with a single `write` call as
//! the outcome happens, with no buffering in the process: a crash of `ec`
//! loses no record whose write returned, and leaves at most one partial
//! line at the end of the file. [`DeliveryLogWriter::open`] cuts such a
//! line off before appending, and [`read_resume_set`] ignores it. Records
//! reach the operating system at once but the disk only when the kernel
//! writes them back, or at [`DeliveryLogWriter::sync`].
//!
//! A record looks like this (one line in the file):
//!
//! ```json
//! {"timestamp":"2026-01-05T10:00:00.123Z","file":"mail/1.eml",
//!  "canonical_file":"/srv/mail/1.eml","message_id":"a@example.org",
//!  "sender":"bounce@example.org","recipient":"joe@example.com","result":"delivered",
//!  "reply":{"code":250,"enhanced":"2.0.0","lines":["Ok queued"]},"detail":null,
//!  "attempts":1,"connection":"c3","tls":"TLSv1_3"}
//! ```
//!
//! `reply` is only ever a reply the server sent. Where ec itself decided
//! the outcome, `reply` is null and `detail` explains why, as in this record of
//! mail that the run ended before sending:
//!
//! ```json
//! {"timestamp":"2026-01-05T10:00:09.456Z","file":"mail/2.eml",
//!  "canonical_file":"/srv/mail/2.eml","message_id":"b@example.org",
//!  "sender":"bounce@example.org","recipient":"ann@example.net","result":"deferred","reply":null,
//!  "detail":"not sent in this run: the run was stopped (SIGINT or SIGTERM) before this recipient was done; run again with --resume",
//!  "attempts":0,"connection":null,"tls":null}
//! ```
//!
//! `file` is the message file as the PATH arguments named it, and
//! `canonical_file` its canonical absolute path ([`file_identity`]) as
//! resolved when the run listed the file, or null when that could not be
//! resolved. Every record of a file names the same `canonical_file`, also
//! when the file is moved or deleted during the run. `--resume` matches
//! files by `canonical_file`, so a later run may spell or reach the same
//! file differently. Records without `canonical_file` (from an earlier
//! version, or of a file that could not be resolved) have only `file`,
//! which `--resume` resolves against the current directory.
//!
//! `sender` is the MAIL FROM path without angle brackets, `"<>"` for the
//! null reverse path, and null when ec could not tell the sender, as in an
//! `invalid_input` record for a file whose sender is missing or invalid.
//! An `invalid_input` record for a file with a valid sender but unusable
//! recipients names that sender. Records written before this rule have an
//! empty `sender` in all three cases. An `invalid_input` record has no
//! recipient, and covers the whole file.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ec_types::{Address, ConnectionId, Reply, ReversePath, TlsInfo};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::input::{file_identity, InvalidInput};

/// A recipient's outcome as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogResult {
    /// The server accepted the message for the recipient.
    Delivered,
    /// A transient failure; the recipient was still queued for a retry when
    /// the record was written, or the run ended first.
    Deferred,
    /// A permanent failure.
    Failed,
    /// The final dot was sent and no reply came.
    DeliveryUnknown,
    /// The message file could not be sent at all.
    InvalidInput,
}

impl LogResult {
    /// Whether `--resume` skips a recipient with this result: delivered,
    /// failed and invalid input are final; deferred and delivery unknown are
    /// tried again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed | Self::InvalidInput)
    }

    /// The name written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::DeliveryUnknown => "delivery_unknown",
            Self::InvalidInput => "invalid_input",
        }
    }
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When the outcome was recorded, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The message file, as listed from the PATH arguments.
    pub file: String,
    /// The message file's canonical absolute path, by which `--resume`
    /// matches files. `None` when it could not be resolved, and in records
    /// written before this field existed.
    #[serde(default)]
    pub canonical_file: Option<String>,
    /// The Message-ID header field without angle brackets.
    pub message_id: Option<String>,
    /// The MAIL FROM path without angle brackets; `"<>"` for the null
    /// reverse path, and `None` when the sender of an invalid file is
    /// unknown.
    pub sender: Option<String>,
    /// The RCPT TO path; `None` only in an `invalid_input` record for a
    /// whole file.
    pub recipient: Option<String>,
    /// The outcome.
    pub result: LogResult,
    /// The reply the server sent that decided the outcome; `None` when no
    /// server reply did, and never a reply that ec made up.
    pub reply: Option<Reply>,
    /// ec's own explanation, where ec and not a server reply decided the
    /// outcome: the invalid-input reason, no reply to the message data,
    /// the delivery time expired, or why the recipient was left deferred
    /// (a lost connection, connections that kept failing and their target,
    /// or the run stopped by a signal).
    pub detail: Option<String>,
    /// Delivery attempts spent on the recipient's message.
    pub attempts: u32,
    /// Id of the connection of the last attempt, such as `c12`.
    pub connection: Option<String>,
    /// TLS protocol version of that connection; `None` in clear text.
    pub tls: Option<String>,
}

/// One recipient's outcome as the engine reports it; the input of
/// [`LogRecord::from_outcome`].
#[derive(Debug, Clone, Copy)]
pub struct RecipientOutcome<'a> {
    /// The message file.
    pub file: &'a Path,
    /// Its canonical path as resolved when the run listed it, or `None`
    /// when that could not be resolved.
    pub canonical_file: Option<&'a Path>,
    /// Its Message-ID.
    pub message_id: Option<&'a str>,
    /// The MAIL FROM path.
    pub sender: &'a ReversePath,
    /// The recipient.
    pub recipient: &'a Address,
    /// The outcome.
    pub result: LogResult,
    /// The server's reply that decided it, if one did.
    pub reply: Option<&'a Reply>,
    /// Delivery attempts spent.
    pub attempts: u32,
    /// The connection of the last attempt.
    pub connection: Option<ConnectionId>,
    /// That connection's TLS session.
    pub tls: Option<&'a TlsInfo>,
    /// ec's explanation, if any.
    pub detail: Option<&'a str>,
}

impl LogRecord {
    /// Builds the record for one recipient's outcome, stamped now.
    pub fn from_outcome(outcome: &RecipientOutcome<'_>) -> Self {
        Self {
            timestamp: now(),
            file: path_text(outcome.file),
            canonical_file: outcome.canonical_file.map(path_text),
            message_id: outcome.message_id.map(str::to_owned),
            sender: Some(sender_text(outcome.sender)),
            recipient: Some(outcome.recipient.as_str().to_owned()),
            result: outcome.result,
            reply: outcome.reply.cloned(),
            detail: outcome.detail.map(str::to_owned),
            attempts: outcome.attempts,
            connection: outcome.connection.map(|id| id.to_string()),
            tls: outcome.tls.map(|tls| tls.version.clone()),
        }
    }

    /// The record for a message file that cannot be sent, stamped now. It
    /// has no recipient and covers the whole file.
    pub fn from_invalid_input(invalid: &InvalidInput) -> Self {
        Self {
            timestamp: now(),
            file: path_text(&invalid.path),
            canonical_file: invalid.canonical_path.as_deref().map(path_text),
            message_id: invalid.message_id.clone(),
            sender: invalid.reverse_path.as_ref().map(sender_text),
            recipient: None,
            result: LogResult::InvalidInput,
            reply: None,
            detail: Some(invalid.reason.to_string()),
            attempts: 0,
            connection: None,
            tls: None,
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Formats a record's `sender`: the address, or `<>` for the null reverse
/// path, whose address is an empty string.
fn sender_text(reverse_path: &ReversePath) -> String {
    if *reverse_path == ReversePath::Null {
        "<>".to_owned()
    } else {
        reverse_path.as_str().to_owned()
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Returns the key of a file that a record names without
/// `canonical_file`: the file resolved now.
fn file_key(path: &Path) -> String {
    path_text(&file_identity(path))
}

/// An error writing or reading the delivery log.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// Opening the log failed.
    #[error("cannot open the delivery log {path}: {source}; check the --log path")]
    Open {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing a record failed; the run cannot keep its log complete.
    #[error("cannot write to the delivery log {path}: {source}")]
    Write {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line before the last is not a valid record.
    #[error(
        "line {line} of the delivery log {path} is not a valid record: {source}; \
         fix or remove that line"
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Appends records to the delivery log.
#[derive(Debug)]
pub struct DeliveryLogWriter {
    file: File,
    path: PathBuf,
    line: Vec<u8>,
}

impl DeliveryLogWriter {
    /// Opens the log for appending, creating it if needed. Records of
    /// earlier runs are kept, so a run never destroys the history that
    /// `--resume` depends on. A partial last line, left by a crash, is cut
    /// off first so the next record starts on a line of its own.
    ///
    /// # Errors
    ///
    /// [`LogError::Open`] when the file cannot be opened, read or truncated.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let open_error = |source| LogError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(open_error)?;

        let complete = complete_length(&mut file).map_err(open_error)?;
        let length = file.metadata().map_err(open_error)?.len();
        if complete < length {
            tracing::warn!(
                path = %path.display(),
                cut = length - complete,
                "delivery log ends with a partial record from an interrupted run; removing it"
            );
            file.set_len(complete).map_err(open_error)?;
        }

        Ok(Self {
            file,
            path: path.to_owned(),
            line: Vec::with_capacity(512),
        })
    }

    /// Writes one record as one line, with a single write to the file.
    ///
    /// # Errors
    ///
    /// [`LogError::Write`] when the write fails.
    pub fn write(&mut self, record: &LogRecord) -> Result<(), LogError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)
            .map_err(|error| self.write_error(io::Error::other(error)))?;
        self.line.push(b'\n');

        self.file
            .write_all(&self.line)
            .map_err(|source| self.write_error(source))
    }

    /// Forces the records written so far to the disk (`fsync`).
    ///
    /// # Errors
    ///
    /// [`LogError::Write`] when the sync fails.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(|source| self.write_error(source))
    }

    fn write_error(&self, source: io::Error) -> LogError {
        LogError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// The length of the file up to and including its last newline.
fn complete_length(file: &mut File) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut buffer = vec![0; CHUNK as usize];

    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buffer[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(index) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + index as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The recipients and files that a previous run finished, read from its
/// delivery log.
///
/// The methods take a file's identity:
/// [`MessageFile::identity`](crate::input::MessageFile::identity) for a
/// file of this run, which keeps the identity resolved when the file was
/// listed, or [`file_identity`] for any other path.
#[derive(Debug, Default)]
pub struct ResumeSet {
    recipients: HashSet<(String, String)>,
    files: HashSet<String>,
    /// Every file any record names, final or not.
    mentioned: HashSet<String>,
    records: usize,
    truncated_tail: bool,
}

impl ResumeSet {
    /// Whether the recipient of this file has a final outcome in the log.
    pub fn is_final(&self, identity: &Path, recipient: &Address) -> bool {
        let key = (path_text(identity), recipient.as_str().to_owned());
        self.is_file_final(identity) || self.recipients.contains(&key)
    }

    /// Returns whether any record of the log names the file, however either
    /// run spelled it.
    pub fn mentions(&self, identity: &Path) -> bool {
        self.mentioned.contains(&path_text(identity))
    }

    /// Whether the whole file is done: the log has an `invalid_input` record
    /// for it without a recipient.
    pub fn is_file_final(&self, identity: &Path) -> bool {
        self.files.contains(&path_text(identity))
    }

    /// The recipients of the file that still need an attempt, in order.
    pub fn remaining<'a>(
        &self,
        identity: &Path,
        recipients: &'a [Address],
    ) -> impl Iterator<Item = &'a Address> + use<'a, '_> {
        let file_done = self.is_file_final(identity);
        let key = path_text(identity);
        recipients.iter().filter(move |recipient| {
            !file_done
                && !self
                    .recipients
                    .contains(&(key.clone(), recipient.as_str().to_owned()))
        })
    }

    /// How many (file, recipient) pairs and whole files are final.
    pub fn len(&self) -> usize {
        self.recipients.len() + self.files.len()
    }

    /// Whether nothing is final.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many records were read.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Whether the log ended with a partial record, as a crash leaves it.
    pub fn truncated_tail(&self) -> bool {
        self.truncated_tail
    }
}

/// The fields of a record that `--resume` needs; unknown fields are
/// ignored so that later versions may add some.
#[derive(Deserialize)]
struct ResumeFields {
    file: String,
    #[serde(default)]
    canonical_file: Option<String>,
    recipient: Option<String>,
    result: LogResult,
}

/// Reads a delivery log for `--resume`. A log that does not exist yet
/// means that nothing is done yet, so a job that always passes `--resume`
/// can start the log with its first run.
///
/// Files are keyed by their canonical path: the record's `canonical_file`,
/// or for a record without one, its `file` resolved against the current
/// directory, as the run that wrote it resolved it if that run started in
/// the same directory.
///
/// A partial last line (one without a newline that does not parse) is
/// ignored, because a crash in the middle of a write leaves one. A recipient
/// counts as final when any record for it is final, since a later record
/// cannot undo a delivery or a permanent failure.
///
/// # Errors
///
/// [`LogError::Open`] when the log exists but cannot be read,
/// [`LogError::Corrupt`] for an invalid line anywhere but at the end.
pub fn read_resume_set(path: &Path) -> Result<ResumeSet, LogError> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(
                path = %path.display(),
                "the delivery log does not exist yet, so --resume skips nothing; \
                 this run starts it"
            );
            return Ok(ResumeSet::default());
        }
        Err(source) => {
            return Err(LogError::Open {
                path: path.to_owned(),
                source,
            })
        }
    };

    let mut set = ResumeSet::default();
    // Old records resolve `file` with a file-system call, once per file.
    let mut resolved: HashMap<String, String> = HashMap::new();
    let mut lines = data.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let is_tail = lines.peek().is_none();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }

        let fields: ResumeFields = match serde_json::from_slice(line) {
            Ok(fields) => fields,
            Err(_) if is_tail => {
                set.truncated_tail = true;
                break;
            }
            Err(source) => {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    line: index + 1,
                    source,
                })
            }
        };

        set.records += 1;
        let key = match fields.canonical_file {
            Some(canonical) => canonical,
            None => resolved
                .entry(fields.file)
                .or_insert_with_key(|file| file_key(Path::new(file)))
                .clone(),
        };
        set.mentioned.insert(key.clone());
        if !fields.result.is_final() {
            continue;
        }
        match fields.recipient {
            Some(recipient) => set.recipients.insert((key, recipient)),
            None => set.files.insert(key),
        };
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InvalidReason, MessageFile};
    use ec_types::ReplyCode;

    fn address(text: &str) -> Address {
        Address::new(text).expect("valid test address")
    }

    fn reply(code: u16, text: &str) -> Reply {
        Reply::new(ReplyCode::new(code).expect("valid code"), None, text)
    }

    fn record(file: &str, recipient: &str, result: LogResult, reply: Option<Reply>) -> LogRecord {
        let sender = ReversePath::new("s@example.org").expect("valid");
        let recipient = address(recipient);
        let tls = TlsInfo {
            version: "TLSv1_3".into(),
            cipher_suite: "TLS13_AES_128_GCM_SHA256".into(),
            verified: true,
        };
        let listed = MessageFile::resolve(PathBuf::from(file));
        LogRecord::from_outcome(&RecipientOutcome {
            file: &listed.path,
            canonical_file: listed.canonical_path.as_deref(),
            message_id: Some("id@example.org"),
            sender: &sender,
            recipient: &recipient,
            result,
            reply: reply.as_ref(),
            attempts: 2,
            connection: Some(ConnectionId(12)),
            tls: Some(&tls),
            detail: None,
        })
    }

    fn write_all(path: &Path, records: &[LogRecord]) {
        let mut writer = DeliveryLogWriter::open(path).expect("open log");
        for record in records {
            writer.write(record).expect("write record");
        }
    }

    #[test]
    fn record_fields_as_json() {
        let record = record(
            "m/1.eml",
            "a@example.com",
            LogResult::Failed,
            Some(reply(550, "no")),
        );
        let json: serde_json::Value = serde_json::to_value(&record).expect("serializes");
        assert_eq!(json["file"], "m/1.eml");
        assert_eq!(json["message_id"], "id@example.org");
        assert_eq!(json["sender"], "s@example.org");
        assert_eq!(json["recipient"], "a@example.com");
        assert_eq!(json["result"], "failed");
        assert_eq!(json["reply"]["code"], 550);
        assert_eq!(json["attempts"], 2);
        assert_eq!(json["connection"], "c12");
        assert_eq!(json["tls"], "TLSv1_3");
        let timestamp = json["timestamp"].as_str().expect("timestamp is a string");
        humantime::parse_rfc3339(timestamp).expect("timestamp is RFC 3339");
    }

    #[test]
    fn sender_null_path_and_unknown() {
        let recipient = address("a@example.com");
        let outcome = RecipientOutcome {
            file: Path::new("m.eml"),
            canonical_file: None,
            message_id: None,
            sender: &ReversePath::Null,
            recipient: &recipient,
            result: LogResult::Delivered,
            reply: None,
            attempts: 1,
            connection: None,
            tls: None,
            detail: None,
        };
        let json = serde_json::to_value(LogRecord::from_outcome(&outcome)).expect("serializes");
        assert_eq!(json["sender"], "<>");

        let mut invalid = InvalidInput {
            tag: 0,
            path: PathBuf::from("bad.eml"),
            canonical_path: None,
            message_id: None,
            reverse_path: None,
            reason: InvalidReason::NoSender,
        };
        let json =
            serde_json::to_value(LogRecord::from_invalid_input(&invalid)).expect("serializes");
        assert!(json["sender"].is_null(), "{json}");

        invalid.reverse_path = Some(ReversePath::new("s@example.org").expect("valid"));
        invalid.reason = InvalidReason::NoRecipient;
        let json =
            serde_json::to_value(LogRecord::from_invalid_input(&invalid)).expect("serializes");
        assert_eq!(json["sender"], "s@example.org");
    }

    #[test]
    fn missing_reply_is_null() {
        let record = record("x", "a@example.com", LogResult::DeliveryUnknown, None);
        let json: serde_json::Value = serde_json::to_value(&record).expect("serializes");
        assert_eq!(json["result"], "delivery_unknown");
        assert!(json["reply"].is_null(), "{json}");
    }

    #[test]
    fn one_line_per_record_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        let records = [
            record(
                "a.eml",
                "x@example.com",
                LogResult::Delivered,
                Some(reply(250, "ok")),
            ),
            record(
                "a.eml",
                "y@example.com",
                LogResult::Deferred,
                Some(reply(451, "later")),
            ),
        ];
        write_all(&path, &records);

        let text = std::fs::read_to_string(&path).expect("read log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, record) in lines.iter().zip(&records) {
            let parsed: LogRecord = serde_json::from_str(line).expect("each line parses");
            assert_eq!(&parsed, record);
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn resume_set_keeps_final_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        let invalid = InvalidInput {
            tag: 3,
            path: PathBuf::from("bad.eml"),
            canonical_path: None,
            message_id: None,
            reverse_path: None,
            reason: InvalidReason::NoSender,
        };
        write_all(
            &path,
            &[
                record(
                    "a.eml",
                    "done@example.com",
                    LogResult::Delivered,
                    Some(reply(250, "ok")),
                ),
                record(
                    "a.eml",
                    "gone@example.com",
                    LogResult::Failed,
                    Some(reply(550, "no")),
                ),
                record(
                    "a.eml",
                    "later@example.com",
                    LogResult::Deferred,
                    Some(reply(451, "x")),
                ),
                record(
                    "a.eml",
                    "maybe@example.com",
                    LogResult::DeliveryUnknown,
                    None,
                ),
                record(
                    "b.eml",
                    "later@example.com",
                    LogResult::Deferred,
                    Some(reply(421, "x")),
                ),
                record(
                    "b.eml",
                    "later@example.com",
                    LogResult::Delivered,
                    Some(reply(250, "ok")),
                ),
                LogRecord::from_invalid_input(&invalid),
            ],
        );

        let set = read_resume_set(&path).expect("read log");
        assert_eq!(set.records(), 7);
        assert!(!set.truncated_tail());
        let a = Path::new("a.eml");
        assert!(set.is_final(a, &address("done@example.com")));
        assert!(set.is_final(a, &address("gone@example.com")));
        assert!(!set.is_final(a, &address("later@example.com")));
        assert!(!set.is_final(a, &address("maybe@example.com")));
        assert!(set.is_final(Path::new("b.eml"), &address("later@example.com")));
        assert!(set.is_file_final(Path::new("bad.eml")));
        assert!(set.is_final(Path::new("bad.eml"), &address("any@example.com")));
        assert!(!set.is_file_final(a));
        assert_eq!(set.len(), 4);

        let recipients = [
            address("done@example.com"),
            address("later@example.com"),
            address("maybe@example.com"),
        ];
        let remaining: Vec<&str> = set.remaining(a, &recipients).map(Address::as_str).collect();
        assert_eq!(remaining, ["later@example.com", "maybe@example.com"]);
    }

    #[test]
    fn truncated_last_line_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        write_all(
            &path,
            &[record(
                "a.eml",
                "x@example.com",
                LogResult::Delivered,
                Some(reply(250, "ok")),
            )],
        );
        let full = serde_json::to_string(&record(
            "a.eml",
            "y@example.com",
            LogResult::Delivered,
            Some(reply(250, "ok")),
        ))
        .expect("serializes");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&full.as_bytes()[..full.len() / 2])
            .expect("write partial");
        drop(file);

        let set = read_resume_set(&path).expect("a truncated tail is tolerated");
        assert!(set.truncated_tail());
        assert_eq!(set.records(), 1);
        assert!(set.is_final(Path::new("a.eml"), &address("x@example.com")));
        assert!(!set.is_final(Path::new("a.eml"), &address("y@example.com")));
    }

    #[test]
    fn reopen_cuts_partial_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        let first = record(
            "a.eml",
            "x@example.com",
            LogResult::Delivered,
            Some(reply(250, "ok")),
        );
        write_all(&path, std::slice::from_ref(&first));
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"{\"timestamp\":\"2026-")
            .expect("write partial");
        drop(file);

        let second = record(
            "b.eml",
            "y@example.com",
            LogResult::Failed,
            Some(reply(554, "no")),
        );
        write_all(&path, std::slice::from_ref(&second));

        let text = std::fs::read_to_string(&path).expect("read log");
        let parsed: Vec<LogRecord> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is whole"))
            .collect();
        assert_eq!(parsed, [first, second]);
        let set = read_resume_set(&path).expect("read log");
        assert!(!set.truncated_tail());
        assert_eq!(set.records(), 2);
    }

    #[test]
    fn corrupt_middle_line_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        let good = serde_json::to_string(&record(
            "a.eml",
            "x@example.com",
            LogResult::Delivered,
            Some(reply(250, "ok")),
        ))
        .expect("serializes");
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).expect("write");

        let error = read_resume_set(&path).expect_err("corrupt line");
        assert!(
            matches!(error, LogError::Corrupt { line: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("line 2"), "{error}");
    }

    #[test]
    fn missing_log_resumes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let set = read_resume_set(&dir.path().join("none.jsonl")).expect("missing log");
        assert!(set.is_empty());
        assert_eq!(set.records(), 0);
    }

    #[test]
    fn resume_matches_canonical_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let big = dir.path().join("big");
        std::fs::create_dir(&big).expect("mkdir");
        for name in ["m1.eml", "m2.eml"] {
            std::fs::write(big.join(name), "x").expect("write");
        }
        let path = dir.path().join("log.jsonl");
        let record = |file: &Path| {
            record(
                &path_text(file),
                "a@example.com",
                LogResult::Delivered,
                None,
            )
        };
        write_all(&path, &[record(&big.join("m1.eml"))]);
        // A record of an earlier version: `file` only, as it was given.
        let mut old = serde_json::to_value(record(&big.join("./m2.eml"))).expect("serializes");
        old.as_object_mut()
            .expect("a record is an object")
            .remove("canonical_file");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        writeln!(file, "{old}").expect("write old record");
        drop(file);

        let set = read_resume_set(&path).expect("read log");
        let recipient = address("a@example.com");
        let m1 = file_identity(&dir.path().join("big/../big/./m1.eml"));
        assert!(set.is_final(&m1, &recipient), "new record, other spelling");
        assert!(set.mentions(&m1));
        let m2 = file_identity(&big.join("m2.eml"));
        assert!(set.is_final(&m2, &recipient), "old record, other spelling");
        assert!(set.mentions(&m2));
        assert!(!set.mentions(&file_identity(&dir.path().join("m2.eml"))));
    }

    #[test]
    fn record_names_canonical_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("m.eml");
        std::fs::write(&file, "x").expect("write");
        let spelled = dir.path().join("./m.eml");

        let found = record(
            &path_text(&spelled),
            "a@example.com",
            LogResult::Failed,
            None,
        );
        assert_eq!(found.file, path_text(&spelled));
        let canonical = std::fs::canonicalize(&file).expect("canonicalize");
        assert_eq!(found.canonical_file, Some(path_text(&canonical)));

        let missing = record("no/such/file.eml", "a@example.com", LogResult::Failed, None);
        assert_eq!(missing.canonical_file, None);
    }

    #[test]
    fn empty_log_resumes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.jsonl");
        DeliveryLogWriter::open(&path).expect("creates the file");
        let set = read_resume_set(&path).expect("empty log");
        assert!(set.is_empty());
        assert!(!set.truncated_tail());
    }
}
