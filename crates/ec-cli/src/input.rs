//! The messages of a run: which files they are, and the envelope of each.
//!
//! [`collect_paths`] turns the PATH arguments into the list of message
//! files: a file is taken as given, whatever its name, and a directory
//! contributes every file below it whose name ends in `.eml`, sorted so
//! that two runs over the same tree see the same order. Each listed
//! [`MessageFile`] keeps the canonical path resolved at that moment. The
//! loaded message carries it to every delivery log record of the file, so
//! the records keep it when the file is moved or deleted during the run.
//! [`Input`] then reads the files one at a time and yields a [`Loaded`] for
//! each: a [`Submission`] ready for the engine, or an [`InvalidInput`]
//! record that states what is wrong with the file and how to fix it. One
//! bad file never stops the run. A FIFO, socket or device is not read at
//! all, because a read of it could block for ever: it is invalid input.
//!
//! A message is kept as the bytes read ([`Bytes`]), never decoded or
//! re-encoded: the engine sends exactly those bytes, apart from SMTP's
//! line-ending normalization and dot-stuffing, and without the header
//! fields that Postfix's cleanup(8) drops: Bcc, Resent-Bcc, Return-Path and
//! Content-Length. As `sendmail -t` does, every Bcc field of the header
//! section is removed with its folded lines, also when `--to` gives the
//! recipients, so that the blind-copy list reaches no recipient. Every other
//! byte is kept.
//!
//! # The envelope
//!
//! Without `--from`, the reverse path comes from the first of these header
//! fields that carries an address: Return-Path (its first occurrence, the
//! one the last delivery added; `<>` gives the null reverse path), Sender,
//! From (its first mailbox). Without `--to`, the recipients are every
//! mailbox of every To, Cc and Bcc field in that order, group members
//! included, display names dropped, and duplicates removed; the domain is
//! compared without regard to case and the local part exactly, as RFC 5321
//! section 2.4 allows. A recipient mailbox without an address (a display
//! name alone, or `<>`) makes the message invalid. So does an address that
//! is present but not valid in an SMTP envelope. The record names the field
//! and the value. In Sender and From, a mailbox without an address is
//! skipped, so the next field may give the sender.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ec_types::{Address, AddressError, ReversePath, Submission};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use thiserror::Error;

mod dropped_fields;
mod header_section;

/// The `--from` and `--to` flags: each replaces only its own part of the
/// envelope taken from the header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeOverride {
    /// `--from`: the reverse path for every message.
    pub from: Option<ReversePath>,
    /// `--to`: the recipients of every message; empty means "from the header".
    pub to: Vec<Address>,
}

/// An error in the PATH arguments that stops the run before anything is
/// sent (exit status 64).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InputError {
    /// A PATH argument does not exist or cannot be examined.
    #[error("cannot access {path}: {source}; check the PATH argument")]
    Access {
        /// The argument.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory, given or found below one, cannot be listed.
    #[error("cannot list the directory {path}: {source}; check its permissions")]
    ReadDirectory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory argument contains no message file.
    #[error(
        "the directory {0} contains no file whose name ends in .eml; \
         name message files directly or give another directory"
    )]
    NoMessages(PathBuf),
}

/// A message file as [`collect_paths`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFile {
    /// The path as the PATH arguments named it, or as the directory walk
    /// found it.
    pub path: PathBuf,
    /// The canonical absolute path as resolved when the file was listed, or
    /// `None` when it could not be resolved.
    pub canonical_path: Option<PathBuf>,
}

impl MessageFile {
    /// Resolves the canonical path of `path` now, as [`collect_paths`] does
    /// for each file it lists.
    pub fn resolve(path: PathBuf) -> Self {
        let canonical_path = std::fs::canonicalize(&path).ok();
        Self {
            path,
            canonical_path,
        }
    }

    /// Names a message that was not read from a file, such as a bundled
    /// sample: `path` names it in records, and it has no canonical path.
    pub fn in_memory(path: PathBuf) -> Self {
        Self {
            path,
            canonical_path: None,
        }
    }

    /// Returns the file's identity: the canonical path, or the path as
    /// given when that could not be resolved, as [`file_identity`] does.
    pub fn identity(&self) -> &Path {
        identity(&self.path, self.canonical_path.as_deref())
    }
}

fn identity<'a>(path: &'a Path, canonical_path: Option<&'a Path>) -> &'a Path {
    canonical_path.unwrap_or(path)
}

/// Lists the message files named by `args`, in argument order: a file as
/// given, a directory as the sorted list of files below it whose names end
/// in `.eml`. Each file's canonical path is resolved once, here.
///
/// A file reached twice (named twice, or named and also inside a named
/// directory) is listed once, at its first place, so that it is not sent
/// twice. Symbolic links to files are followed; symbolic links to
/// directories found while walking are not, so a link loop cannot make the
/// walk endless.
///
/// # Errors
///
/// [`InputError`] when an argument cannot be accessed, a directory cannot
/// be listed, or a directory argument contains no message file.
pub fn collect_paths(args: &[PathBuf]) -> Result<Vec<MessageFile>, InputError> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();

    for arg in args {
        let metadata = std::fs::metadata(arg).map_err(|source| InputError::Access {
            path: arg.clone(),
            source,
        })?;

        let found = if metadata.is_dir() {
            let mut found = Vec::new();
            walk_directory(arg, &mut found)?;
            if found.is_empty() {
                return Err(InputError::NoMessages(arg.clone()));
            }
            found.sort();
            found
        } else {
            vec![arg.clone()]
        };

        for path in found {
            let file = MessageFile::resolve(path);
            if seen.insert(file.identity().to_owned()) {
                files.push(file);
            }
        }
    }
    Ok(files)
}

/// Returns the path by which a run distinguishes message files: the
/// canonical absolute path, with symbolic links, `.` and `..` resolved.
/// When it cannot be resolved (the file no longer exists, or a directory on
/// the way cannot be searched), returns `path` as given.
///
/// [`collect_paths`] lists a file once per identity, and `--resume`
/// matches the files of the delivery log by it, so `mail/1.eml` and
/// `./mail/1.eml` are one file. A file of the run keeps the identity that
/// [`MessageFile::identity`] returned when it was listed. This function
/// resolves the paths that the log names without `canonical_file`.
pub fn file_identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn walk_directory(directory: &Path, found: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let read_error = |source| InputError::ReadDirectory {
        path: directory.to_owned(),
        source,
    };

    for entry in std::fs::read_dir(directory).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(read_error)?;

        if file_type.is_dir() {
            walk_directory(&path, found)?;
        } else if has_eml_extension(&path) && !is_link_to_directory(&path, file_type) {
            found.push(path);
        }
    }
    Ok(())
}

fn has_eml_extension(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b".eml"))
}

fn is_link_to_directory(path: &Path, file_type: std::fs::FileType) -> bool {
    file_type.is_symlink() && std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}

/// A message ready for the engine.
#[derive(Debug, Clone)]
pub struct InputMessage {
    /// The envelope and bytes; its `tag` is the message's index in the
    /// input list.
    pub submission: Submission,
    /// The file it came from, as listed by [`collect_paths`].
    pub path: PathBuf,
    /// The file's canonical path as resolved when it was listed, or `None`
    /// when it could not be resolved or the message was not read from a file.
    pub canonical_path: Option<PathBuf>,
    /// The Message-ID header field's value without angle brackets, if any.
    pub message_id: Option<String>,
}

impl InputMessage {
    /// Returns the file's identity as it was listed ([`MessageFile::identity`]).
    pub fn identity(&self) -> &Path {
        identity(&self.path, self.canonical_path.as_deref())
    }
}

/// A message that cannot be sent, and why.
#[derive(Debug)]
pub struct InvalidInput {
    /// The message's index in the input list.
    pub tag: u64,
    /// The file.
    pub path: PathBuf,
    /// The file's canonical path as resolved when it was listed, or `None`
    /// when it could not be resolved.
    pub canonical_path: Option<PathBuf>,
    /// The Message-ID, when the header could be read.
    pub message_id: Option<String>,
    /// The reverse path the message would have had: from `--from`, or from
    /// the header when that gave a valid one before another part was found
    /// invalid. `None` when it is unknown.
    pub reverse_path: Option<ReversePath>,
    /// The reason it cannot be sent.
    pub reason: InvalidReason,
}

impl InvalidInput {
    /// Returns the file's identity as it was listed ([`MessageFile::identity`]).
    pub fn identity(&self) -> &Path {
        identity(&self.path, self.canonical_path.as_deref())
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// The reason a message file cannot be sent. Each message states what to
/// do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The file could not be read.
    #[error("cannot read the file: {0}; check that it exists and is readable")]
    Unreadable(#[source] io::Error),
    /// The path is a FIFO, socket or device: reading it could block for
    /// ever or never end, so it is not read.
    #[error(
        "not a regular file but a {0}; give a file that holds one message, \
         or copy the message into one"
    )]
    NotRegularFile(&'static str),
    /// The file has no bytes.
    #[error("the file is empty; give a complete RFC 5322 message or remove the file")]
    Empty,
    /// No header field could be parsed, and the envelope needs one.
    #[error(
        "no RFC 5322 header fields found; check that the file is a message, \
         or give the envelope with --from and --to"
    )]
    NoHeader,
    /// No Return-Path, Sender or From address.
    #[error("no usable sender: no address in Return-Path, Sender or From; pass --from ADDRESS")]
    NoSender,
    /// No To, Cc or Bcc address.
    #[error("no usable recipient: no address in To, Cc or Bcc; pass --to ADDRESS")]
    NoRecipient,
    /// A header field contains an address that cannot go into an SMTP envelope.
    #[error(
        "the {field} address {value:?} is invalid: {source}; \
         fix the header field or give the envelope with --from and --to"
    )]
    InvalidAddress {
        /// The header field ("Return-Path", "Sender", "From", "To", "Cc", "Bcc").
        field: &'static str,
        /// The address as the header gave it.
        value: String,
        /// The reason for the rejection.
        source: AddressError,
    },
    /// A To, Cc or Bcc mailbox has a display name but no address.
    #[error(
        "the {field} mailbox {name:?} has no address; add one \
         (Name <local@domain>) or remove the mailbox, or give the recipients \
         with --to"
    )]
    NoAddress {
        /// The header field ("To", "Cc", "Bcc").
        field: &'static str,
        /// The display name, empty when the mailbox has none (`<>`).
        name: String,
    },
}

/// The result of reading one message file.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per file, handed on at once.
pub enum Loaded {
    /// A message to send.
    Message(InputMessage),
    /// A message that cannot be sent.
    Invalid(InvalidInput),
}

/// Reads and checks one message file. `tag` becomes the submission's tag.
pub fn load_file(tag: u64, file: &MessageFile, envelope: &EnvelopeOverride) -> Loaded {
    match read_regular_file(&file.path) {
        Ok(data) => load_bytes(tag, file.clone(), Bytes::from(data), envelope),
        Err(reason) => Loaded::Invalid(InvalidInput {
            tag,
            path: file.path.clone(),
            canonical_path: file.canonical_path.clone(),
            message_id: None,
            reverse_path: envelope.from.clone(),
            reason,
        }),
    }
}

/// Reads a regular file whole. The file is opened with `O_NONBLOCK` and
/// checked through the open handle, so a FIFO without a writer cannot stop
/// the run and a file swapped for one after the check is still caught.
fn read_regular_file(path: &Path) -> Result<Vec<u8>, InvalidReason> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        // Opening a socket fails (ENXIO); name what the path is instead.
        Err(error) => {
            return Err(match std::fs::metadata(path) {
                Ok(metadata) if !metadata.is_file() => {
                    InvalidReason::NotRegularFile(file_kind(metadata.file_type()))
                }
                _ => InvalidReason::Unreadable(error),
            })
        }
    };
    let metadata = file.metadata().map_err(InvalidReason::Unreadable)?;
    if !metadata.is_file() {
        return Err(InvalidReason::NotRegularFile(file_kind(
            metadata.file_type(),
        )));
    }

    let mut data = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.read_to_end(&mut data)
        .map_err(InvalidReason::Unreadable)?;
    Ok(data)
}

/// What a path that is not a regular file is, for [`InvalidReason::NotRegularFile`].
fn file_kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;

    if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Checks a message already in memory. `file` names it in records and
/// logs. For a message not read from a file, such as a bundled sample,
/// pass [`MessageFile::in_memory`].
pub fn load_bytes(tag: u64, file: MessageFile, data: Bytes, envelope: &EnvelopeOverride) -> Loaded {
    let MessageFile {
        path,
        canonical_path,
    } = file;
    let invalid = |message_id, reverse_path, reason| {
        Loaded::Invalid(InvalidInput {
            tag,
            path: path.clone(),
            canonical_path: canonical_path.clone(),
            message_id,
            reverse_path,
            reason,
        })
    };
    if data.is_empty() {
        return invalid(None, envelope.from.clone(), InvalidReason::Empty);
    }

    // The parser does not end a line at a bare CR, but the wire encoding
    // does. Parse what the server will read, so that no Bcc field hides in
    // a line the parser joined to the one before.
    let data = if header_has_bare_cr(&data) {
        let mut normalized = Vec::with_capacity(data.len() + 64);
        ec_smtp_client::proto::data::encode_chunk_into(&data, &mut normalized);
        Bytes::from(normalized)
    } else {
        data
    };

    // Only the header section as a server reads it: a body line that looks
    // like a field neither joins the envelope nor is dropped.
    let header = header_section::parseable(&data);
    let parsed = MessageParser::new().parse_headers(&header[..]);
    let message_id = parsed
        .as_ref()
        .and_then(|message| message.message_id())
        .map(str::to_owned);
    let dropped_fields = parsed
        .as_ref()
        .map(dropped_fields::dropped_field_ranges)
        .unwrap_or_default();
    // A range may end in the line ending that `parseable` added.
    let dropped_fields: Vec<_> = dropped_fields
        .into_iter()
        .map(|range| range.start..range.end.min(data.len()))
        .collect();

    let reverse_path = match &envelope.from {
        Some(from) => from.clone(),
        None => match parsed.as_ref().map(header_sender) {
            Some(Ok(reverse_path)) => reverse_path,
            Some(Err(reason)) => return invalid(message_id, None, reason),
            None => return invalid(message_id, None, InvalidReason::NoHeader),
        },
    };

    let recipients = if envelope.to.is_empty() {
        match parsed.as_ref().map(header_recipients) {
            Some(Ok(recipients)) => recipients,
            Some(Err(reason)) => return invalid(message_id, Some(reverse_path), reason),
            None => return invalid(message_id, Some(reverse_path), InvalidReason::NoHeader),
        }
    } else {
        dedup(envelope.to.iter().cloned())
    };

    Loaded::Message(InputMessage {
        submission: Submission {
            tag,
            reverse_path,
            recipients,
            data: dropped_fields::remove_ranges(data, &dropped_fields),
        },
        path,
        canonical_path,
        message_id,
    })
}

/// Returns whether a CR that is not followed by LF ends a line of the
/// header section, which ends at the first empty line. Lines end as the
/// wire encoding ends them: at CRLF, at a bare LF or at a bare CR.
fn header_has_bare_cr(data: &[u8]) -> bool {
    let mut line_start = 0;
    for end in memchr::memchr2_iter(b'\r', b'\n', data) {
        if end < line_start {
            // The LF of a CRLF whose CR ended the line already.
            continue;
        }
        let crlf = data[end] == b'\r' && data.get(end + 1) == Some(&b'\n');
        if data[end] == b'\r' && !crlf {
            return true;
        }
        if end == line_start {
            return false;
        }
        line_start = end + if crlf { 2 } else { 1 };
    }
    false
}

/// The Message-ID header field's value without angle brackets, if the
/// message has one.
pub fn message_id(data: &[u8]) -> Option<String> {
    let header = header_section::parseable(data);
    let parsed = MessageParser::new().parse_headers(&header[..])?;
    parsed.message_id().map(str::to_owned)
}

/// The reverse path from Return-Path, Sender or From, in that order.
fn header_sender(message: &mail_parser::Message<'_>) -> Result<ReversePath, InvalidReason> {
    if let Some(path) = return_path(message) {
        return path;
    }

    let mailboxes = [("Sender", message.sender()), ("From", message.from())];
    for (field, value) in mailboxes {
        let first = value.and_then(|address| address.iter().find_map(|addr| addr.address()));
        if let Some(text) = first {
            return parse_address(field, text).map(ReversePath::Mailbox);
        }
    }
    Err(InvalidReason::NoSender)
}

/// The first Return-Path field's path, or `None` when there is no such
/// field or it contains nothing that looks like a path.
fn return_path(message: &mail_parser::Message<'_>) -> Option<Result<ReversePath, InvalidReason>> {
    let header = message
        .headers()
        .iter()
        .find(|header| header.name == HeaderName::ReturnPath)?;

    let text = match &header.value {
        HeaderValue::Text(text) => text.as_ref(),
        HeaderValue::TextList(list) => list.first()?.as_ref(),
        _ => {
            // mail-parser returns no value for `<>`, the null path. The raw
            // field distinguishes it from an empty or unparseable one.
            let raw = message
                .raw_message
                .get(header.offset_start as usize..header.offset_end as usize)?;
            let compact: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            return (compact == b"<>").then_some(Ok(ReversePath::Null));
        }
    };
    Some(parse_address("Return-Path", text).map(ReversePath::Mailbox))
}

/// Every To, Cc and Bcc mailbox, without duplicates.
///
/// A mailbox without an address, such as `moderator` in `To: a@example.com,
/// moderator`, makes the message invalid, as an invalid address does:
/// delivering to the others would drop that recipient without a trace. A
/// group without members (`undisclosed-recipients:;`) adds no recipient and
/// is no error.
fn header_recipients(message: &mail_parser::Message<'_>) -> Result<Vec<Address>, InvalidReason> {
    let mut recipients = Vec::new();
    let fields = [
        ("To", HeaderName::To),
        ("Cc", HeaderName::Cc),
        ("Bcc", HeaderName::Bcc),
    ];
    for (field, name) in fields {
        let values = message
            .header_values(name)
            .filter_map(HeaderValue::as_address);
        for mailbox in values.flat_map(|address| address.iter()) {
            let Some(text) = mailbox.address() else {
                return Err(InvalidReason::NoAddress {
                    field,
                    name: mailbox.name().unwrap_or_default().to_owned(),
                });
            };
            recipients.push(parse_address(field, text)?);
        }
    }

    if recipients.is_empty() {
        return Err(InvalidReason::NoRecipient);
    }
    Ok(dedup(recipients))
}

fn parse_address(field: &'static str, text: &str) -> Result<Address, InvalidReason> {
    Address::new(text).map_err(|source| InvalidReason::InvalidAddress {
        field,
        value: text.to_owned(),
        source,
    })
}

/// Removes repeated addresses, keeping the first. [`Address`] equality
/// compares the lower-cased domain and the local part exactly.
fn dedup(addresses: impl IntoIterator<Item = Address>) -> Vec<Address> {
    let mut seen = HashSet::new();
    addresses
        .into_iter()
        .filter(|address| seen.insert(address.clone()))
        .collect()
}

/// The messages of a run, read one at a time, in the order of
/// [`collect_paths`].
#[derive(Debug)]
pub struct Input {
    files: Vec<MessageFile>,
    next: usize,
    envelope: EnvelopeOverride,
}

impl Input {
    /// Lists the message files named by `args` without reading them yet.
    ///
    /// # Errors
    ///
    /// As [`collect_paths`].
    pub fn open(args: &[PathBuf], envelope: EnvelopeOverride) -> Result<Self, InputError> {
        Ok(Self::from_files(collect_paths(args)?, envelope))
    }

    /// Reads the given files, in the given order, as message files.
    pub fn from_files(files: Vec<MessageFile>, envelope: EnvelopeOverride) -> Self {
        Self {
            files,
            next: 0,
            envelope,
        }
    }

    /// Every message file of the run; a message's tag is its index here.
    pub fn files(&self) -> &[MessageFile] {
        &self.files
    }
}

impl Iterator for Input {
    type Item = Loaded;

    fn next(&mut self) -> Option<Loaded> {
        let file = self.files.get(self.next)?;
        let tag = self.next as u64;
        self.next += 1;
        Some(load_file(tag, file, &self.envelope))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.files.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Input {}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        load_with(text, &EnvelopeOverride::default())
    }

    fn load_with(text: &str, envelope: &EnvelopeOverride) -> Loaded {
        let data = Bytes::copy_from_slice(text.as_bytes());
        load_bytes(7, MessageFile::in_memory("test.eml".into()), data, envelope)
    }

    fn expect_message(loaded: Loaded) -> InputMessage {
        match loaded {
            Loaded::Message(message) => message,
            Loaded::Invalid(invalid) => panic!("expected a message, got {invalid}"),
        }
    }

    fn expect_invalid(loaded: Loaded) -> InvalidInput {
        match loaded {
            Loaded::Invalid(invalid) => invalid,
            Loaded::Message(message) => panic!("expected invalid input, got {message:?}"),
        }
    }

    fn recipients(message: &InputMessage) -> Vec<&str> {
        message
            .submission
            .recipients
            .iter()
            .map(Address::as_str)
            .collect()
    }

    fn address(text: &str) -> Address {
        Address::new(text).expect("valid test address")
    }

    #[test]
    fn from_and_to_with_display_names() {
        let text = "From: \"Doe, Jane\" <jane@Example.ORG>\r\n\
                    To: Joe <joe@example.com>, ann@example.net\r\n\
                    Message-ID: <abc@example.org>\r\n\r\nbody\r\n";
        let message = expect_message(load(text));
        assert_eq!(message.submission.tag, 7);
        assert_eq!(message.submission.reverse_path.as_str(), "jane@example.org");
        assert_eq!(recipients(&message), ["joe@example.com", "ann@example.net"]);
        assert_eq!(message.message_id.as_deref(), Some("abc@example.org"));
        assert_eq!(&message.submission.data[..], text.as_bytes());
    }

    #[test]
    fn sender_precedence() {
        let text = "From: from@example.org\nSender: sender@example.org\n\
                    Return-Path: <bounce@example.org>\nTo: a@example.com\n\nx\n";
        let sender = expect_message(load(text)).submission.reverse_path;
        assert_eq!(sender.as_str(), "bounce@example.org");

        let text = "From: from@example.org\nSender: sender@example.org\nTo: a@example.com\n\nx\n";
        let sender = expect_message(load(text)).submission.reverse_path;
        assert_eq!(sender.as_str(), "sender@example.org");
    }

    #[test]
    fn first_return_path_wins() {
        let text = "Return-Path: <newest@example.org>\nReturn-Path: <older@example.org>\n\
                    From: f@example.org\nTo: a@example.com\n\nx\n";
        let sender = expect_message(load(text)).submission.reverse_path;
        assert_eq!(sender.as_str(), "newest@example.org");
    }

    #[test]
    fn null_return_path() {
        let text = "Return-Path: < >\nFrom: MAILER-DAEMON@example.org\nTo: a@example.com\n\nx\n";
        let sender = expect_message(load(text)).submission.reverse_path;
        assert_eq!(sender, ReversePath::Null);
    }

    #[test]
    fn groups_cc_bcc_and_duplicates() {
        let text = "From: f@example.org\n\
                    To: Team: a@example.com, B <b@example.com>;, undisclosed-recipients:;\n\
                    Cc: A@EXAMPLE.COM, c@example.com\n\
                    Cc: d@example.com\n\
                    Bcc: a@example.com, \"Other A\" <a@Example.com>\n\nx\n";
        let message = expect_message(load(text));
        assert_eq!(
            recipients(&message),
            [
                "a@example.com",
                "b@example.com",
                "A@example.com",
                "c@example.com",
                "d@example.com"
            ]
        );
    }

    #[test]
    fn last_line_without_ending_gives_recipients() {
        for field in ["To", "Cc", "Bcc"] {
            let text = format!("From: f@example.org\nTo: a@example.com\n{field}: b@example.com");
            let message = expect_message(load(&text));
            let recipients = recipients(&message);
            assert!(
                recipients.contains(&"b@example.com"),
                "{field}: {recipients:?}"
            );
        }
    }

    #[test]
    fn bcc_fields_are_not_sent() {
        let text = "From: f@example.org\r\nTo: a@example.com\r\n\
                    Bcc: hidden@example.com,\r\n secret@example.com\r\n\
                    Subject: s\r\n\r\nBcc: in the body\r\n";
        let message = expect_message(load(text));
        assert_eq!(
            recipients(&message),
            ["a@example.com", "hidden@example.com", "secret@example.com"]
        );
        let sent = "From: f@example.org\r\nTo: a@example.com\r\n\
                    Subject: s\r\n\r\nBcc: in the body\r\n";
        assert_eq!(&message.submission.data[..], sent.as_bytes());

        let envelope = EnvelopeOverride {
            from: None,
            to: vec![address("x@example.net")],
        };
        let message = expect_message(load_with(text, &envelope));
        assert_eq!(&message.submission.data[..], sent.as_bytes(), "with --to");
    }

    #[test]
    fn bcc_after_bare_cr_is_not_sent() {
        // A bare CR ends a line on the wire, so this Bcc is a field there.
        let text =
            "From: f@example.org\r\nTo: a@example.com\r\nX: y\rBcc: s@example.com\r\n\r\nbody\r\n";
        let message = expect_message(load(text));
        assert_eq!(recipients(&message), ["a@example.com", "s@example.com"]);
        let sent = "From: f@example.org\r\nTo: a@example.com\r\nX: y\r\n\r\nbody\r\n";
        assert_eq!(&message.submission.data[..], sent.as_bytes());

        // A field after a Bcc ended by a bare CR stays.
        let text =
            "From: f@example.org\r\nTo: a@example.com\r\nBcc: s@example.com\rX: y\r\n\r\nbody\r\n";
        let message = expect_message(load(text));
        let sent = "From: f@example.org\r\nTo: a@example.com\r\nX: y\r\n\r\nbody\r\n";
        assert_eq!(&message.submission.data[..], sent.as_bytes());
    }

    #[test]
    fn display_name_recipient_is_invalid() {
        let text = "From: f@example.org\nTo: good@example.com, moderator\n\nx\n";
        let invalid = expect_invalid(load(text));
        match &invalid.reason {
            InvalidReason::NoAddress { field, name } => {
                assert_eq!(*field, "To");
                assert_eq!(name, "moderator");
            }
            other => panic!("expected a mailbox without address, got {other}"),
        }
        assert!(invalid.to_string().contains("\"moderator\""), "{invalid}");

        let text = "From: f@example.org\nTo: good@example.com\nBcc: \"Joe\" <>\n\nx\n";
        let invalid = expect_invalid(load(text));
        assert!(
            matches!(&invalid.reason, InvalidReason::NoAddress { field: "Bcc", name } if name == "Joe"),
            "{invalid}"
        );
    }

    #[test]
    fn invalid_input_keeps_known_sender() {
        let invalid = expect_invalid(load("From: f@example.org\nSubject: x\n\nx\n"));
        assert!(matches!(invalid.reason, InvalidReason::NoRecipient));
        let sender = invalid.reverse_path.expect("the sender is known");
        assert_eq!(sender.as_str(), "f@example.org");

        let invalid = expect_invalid(load("To: a@example.com\n\nx\n"));
        assert!(matches!(invalid.reason, InvalidReason::NoSender));
        assert_eq!(invalid.reverse_path, None);

        let envelope = EnvelopeOverride {
            from: Some(ReversePath::Null),
            to: Vec::new(),
        };
        let invalid = expect_invalid(load_with("", &envelope));
        assert_eq!(invalid.reverse_path, Some(ReversePath::Null));
    }

    #[test]
    fn empty_group_is_no_recipient() {
        let text = "From: f@example.org\nTo: undisclosed-recipients:;\n\
                    Bcc: b@example.com\n\nx\n";
        let message = expect_message(load(text));
        assert_eq!(recipients(&message), ["b@example.com"]);
    }

    #[test]
    fn display_name_only_is_skipped() {
        let text = "From: Whomever\nTo: Someone\n\nx\n";
        let invalid = expect_invalid(load(text));
        assert!(
            matches!(invalid.reason, InvalidReason::NoSender),
            "{invalid}"
        );
    }

    #[test]
    fn missing_recipient_is_reported() {
        let text = "From: f@example.org\nSubject: no one\n\nx\n";
        let invalid = expect_invalid(load(text));
        assert!(
            matches!(invalid.reason, InvalidReason::NoRecipient),
            "{invalid}"
        );
        let text = invalid.to_string();
        assert!(text.starts_with("test.eml: "), "{text}");
        assert!(text.contains("--to"), "{text}");
    }

    #[test]
    fn invalid_address_names_value() {
        let text = "From: f@example.org\nTo: <bad\u{1}user@example.com>\n\nx\n";
        let invalid = expect_invalid(load(text));
        match &invalid.reason {
            InvalidReason::InvalidAddress { field, value, .. } => {
                assert_eq!(*field, "To");
                assert_eq!(value, "bad\u{1}user@example.com");
            }
            other => panic!("expected an invalid address, got {other}"),
        }
        let text = "From: <no-domain>\nTo: a@example.com\n\nx\n";
        let invalid = expect_invalid(load(text));
        assert!(
            matches!(
                &invalid.reason,
                InvalidReason::InvalidAddress { field: "From", .. }
            ),
            "{invalid}"
        );
    }

    #[test]
    fn empty_file_is_invalid() {
        let invalid = expect_invalid(load(""));
        assert!(matches!(invalid.reason, InvalidReason::Empty));
    }

    #[test]
    fn overrides_replace_own_part_only() {
        let text = "From: f@example.org\nTo: a@example.com\n\nx\n";
        let envelope = EnvelopeOverride {
            from: Some(ReversePath::new("flag@example.org").expect("valid")),
            to: Vec::new(),
        };
        let message = expect_message(load_with(text, &envelope));
        assert_eq!(message.submission.reverse_path.as_str(), "flag@example.org");
        assert_eq!(recipients(&message), ["a@example.com"]);

        let envelope = EnvelopeOverride {
            from: None,
            to: vec![address("x@example.net"), address("x@EXAMPLE.net")],
        };
        let message = expect_message(load_with(text, &envelope));
        assert_eq!(message.submission.reverse_path.as_str(), "f@example.org");
        assert_eq!(recipients(&message), ["x@example.net"]);
    }

    #[test]
    fn full_override_needs_no_header() {
        let envelope = EnvelopeOverride {
            from: Some(ReversePath::Null),
            to: vec![address("x@example.net")],
        };
        let message = expect_message(load_with("just a body line\n", &envelope));
        assert_eq!(message.submission.reverse_path, ReversePath::Null);
        assert_eq!(message.message_id, None);

        let invalid = expect_invalid(load_with("", &envelope));
        assert!(matches!(invalid.reason, InvalidReason::Empty));
    }

    #[test]
    fn bytes_are_kept_exactly() {
        let text =
            b"From: f@example.org\nTo: a@example.com\nSubject: =?iso-8859-1?Q?M=FCller?=\r\n\
                     \r\n\xfc\x00bare\rCR\n.\n";
        let data = Bytes::from_static(text);
        let file = MessageFile::in_memory("x".into());
        let loaded = load_bytes(0, file, data.clone(), &EnvelopeOverride::default());
        let message = expect_message(loaded);
        assert_eq!(message.submission.data, data);
        assert_eq!(message.submission.data.as_ptr(), data.as_ptr(), "no copy");
    }

    #[test]
    fn special_files_are_not_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("socket.eml");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind socket");
        let cases = [
            (socket.as_path(), "socket"),
            (Path::new("/dev/null"), "character device"),
        ];
        for (path, kind) in cases {
            let file = MessageFile::resolve(path.to_owned());
            let invalid = expect_invalid(load_file(0, &file, &EnvelopeOverride::default()));
            assert!(
                matches!(invalid.reason, InvalidReason::NotRegularFile(k) if k == kind),
                "{invalid}"
            );
            assert!(invalid.to_string().contains(kind), "{invalid}");
        }
    }

    #[test]
    fn collect_sorts_and_deduplicates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/nested")).expect("mkdir");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        for name in [
            "b/2.eml",
            "b/nested/1.eml",
            "a/z.eml",
            "a/skip.txt",
            "a/UPPER.EML",
        ] {
            std::fs::write(root.join(name), "x").expect("write");
        }
        let single = root.join("single.msg");
        std::fs::write(&single, "x").expect("write");

        let args = [single.clone(), root.to_owned(), root.join("a/z.eml")];
        let files = collect_paths(&args).expect("paths");
        let paths: Vec<&Path> = files.iter().map(|file| file.path.as_path()).collect();
        let expected = [
            single,
            root.join("a/z.eml"),
            root.join("b/2.eml"),
            root.join("b/nested/1.eml"),
        ];
        assert_eq!(paths, expected);
        for file in &files {
            let canonical = std::fs::canonicalize(&file.path).expect("canonicalize");
            assert_eq!(file.canonical_path.as_ref(), Some(&canonical), "{file:?}");
            assert_eq!(file.identity(), canonical, "{file:?}");
        }
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        let error = collect_paths(&[dir.path().to_owned()]).expect_err("no messages");
        assert!(matches!(error, InputError::NoMessages(_)), "{error}");
        assert!(error
            .to_string()
            .contains(&dir.path().display().to_string()));
    }

    #[test]
    fn missing_path_is_an_error() {
        let error = collect_paths(&[PathBuf::from("/nonexistent/ec-input")]).expect_err("missing");
        assert!(matches!(error, InputError::Access { .. }), "{error}");
        assert!(
            error.to_string().contains("/nonexistent/ec-input"),
            "{error}"
        );
    }

    #[test]
    fn input_yields_tags_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let good = dir.path().join("1.eml");
        std::fs::write(&good, "From: f@example.org\nTo: a@example.com\n\nx\n").expect("write");
        let empty = dir.path().join("2.eml");
        std::fs::write(&empty, "").expect("write");
        let gone = dir.path().join("3.eml");

        let files = [&good, &empty, &gone].map(|path| MessageFile::resolve(path.clone()));
        let input = Input::from_files(files.to_vec(), EnvelopeOverride::default());
        assert_eq!(input.len(), 3);
        let loaded: Vec<Loaded> = input.collect();

        let Loaded::Message(message) = &loaded[0] else {
            panic!("the first file is a message")
        };
        assert_eq!(message.submission.tag, 0);
        assert_eq!(message.canonical_path, files[0].canonical_path);
        assert!(matches!(
            &loaded[1],
            Loaded::Invalid(InvalidInput {
                tag: 1,
                reason: InvalidReason::Empty,
                ..
            })
        ));
        assert!(matches!(
            &loaded[2],
            Loaded::Invalid(InvalidInput {
                tag: 2,
                reason: InvalidReason::Unreadable(_),
                ..
            })
        ));
        let Loaded::Invalid(missing) = &loaded[2] else {
            panic!("a missing file is invalid input")
        };
        assert_eq!(missing.canonical_path, None, "not resolvable when listed");
        assert_eq!(missing.identity(), gone, "the path as given");
    }
}
