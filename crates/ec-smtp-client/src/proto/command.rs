//! The command encoder (RFC 5321 section 4.1) and the MAIL parameters
//! negotiated from the EHLO reply.
//!
//! Every argument is checked before a byte is written. A CR, LF, NUL or any
//! other control character in an address or EHLO name would let the caller's
//! data end the command line and start another (command injection). So it is
//! an error, never escaped or dropped.

use std::fmt;
use std::io::Write as _;

use thiserror::Error;

use super::capabilities::Capabilities;
use super::data::MessageInfo;

/// Maximum length of a command line in octets, CRLF included (RFC 5321
/// section 4.5.3.1.4).
pub const MAX_COMMAND_LINE_LEN: usize = 512;

/// Maximum length of a reverse or forward path in octets, angle brackets
/// included (RFC 5321 section 4.5.3.1.3).
pub const MAX_PATH_LEN: usize = 256;

/// Maximum length of a local part in octets (RFC 5321 section 4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// Maximum length of a domain in octets (RFC 5321 section 4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;

/// The command argument an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The domain or address literal of EHLO or HELO.
    EhloDomain,
    /// The MAIL FROM path.
    ReversePath,
    /// A RCPT TO path.
    ForwardPath,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EhloDomain => "EHLO domain",
            Self::ReversePath => "reverse-path (MAIL FROM)",
            Self::ForwardPath => "forward-path (RCPT TO)",
        })
    }
}

/// A command could not be encoded, or the message cannot be sent to this
/// server. Every variant is the message's or the caller's fault, not the
/// server's: retrying the same message on the same server gives the same
/// error, so the caller fails it permanently.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommandError {
    /// An argument was empty where a value is required.
    #[error("{field} is empty")]
    Empty {
        /// The argument.
        field: Field,
    },
    /// An argument contained a control character (CR, LF, NUL, TAB, DEL or
    /// another below 0x20), which could inject a command.
    #[error("{field} {value:?} contains the control character {byte:#04x}; remove it")]
    ControlCharacter {
        /// The argument.
        field: Field,
        /// The rejected value.
        value: String,
        /// The first control character.
        byte: u8,
    },
    /// An argument contained a character its grammar does not allow there.
    #[error("{field} {value:?} contains {character:?}, which is not allowed there")]
    InvalidCharacter {
        /// The argument.
        field: Field,
        /// The rejected value.
        value: String,
        /// The first character that is not allowed.
        character: char,
    },
    /// A path was not `local-part@domain`.
    #[error("{field} {value:?} is not a mailbox; write it as local-part@domain")]
    InvalidMailbox {
        /// The argument.
        field: Field,
        /// The rejected value.
        value: String,
    },
    /// A path or one of its parts broke an RFC 5321 section 4.5.3.1 limit.
    #[error("{field} {value:?}: the {part} is {len} octets long; the maximum is {max}")]
    TooLong {
        /// The argument.
        field: Field,
        /// The part that was too long: "path", "local part" or "domain".
        part: &'static str,
        /// The rejected value.
        value: String,
        /// The part's length in octets.
        len: usize,
        /// The limit in octets.
        max: usize,
    },
    /// The encoded command line would exceed [`MAX_COMMAND_LINE_LEN`].
    ///
    /// NOTE: the field length checks come first and keep every line of the
    /// current commands under the limit (MAIL at most 317 octets), so this
    /// is a safeguard for commands or parameters added later.
    #[error("the {command} command line would be {len} octets long; the maximum is {max}")]
    LineTooLong {
        /// The command verb.
        command: &'static str,
        /// The line's length in octets, CRLF included.
        len: usize,
        /// The limit in octets.
        max: usize,
    },
    /// An address is not ASCII and the server did not offer SMTPUTF8, so RFC
    /// 6531 section 3.2 forbids sending it.
    #[error(
        "{field} {value:?} is not ASCII and the server does not offer SMTPUTF8; \
         the message cannot be sent to this server"
    )]
    Smtputf8NotOffered {
        /// The argument.
        field: Field,
        /// The address.
        value: String,
    },
    /// The message is larger than the maximum the server stated with SIZE
    /// (RFC 1870 section 6.1: the client must not send it).
    #[error("the message is {size} octets, larger than the server's SIZE maximum of {max} octets")]
    MessageTooLarge {
        /// The message size in octets, as RFC 1870 counts it.
        size: u64,
        /// The server's maximum in octets.
        max: u64,
    },
}

impl CommandError {
    /// Returns the argument the error is about, if it is about one.
    pub fn field(&self) -> Option<Field> {
        match self {
            Self::Empty { field }
            | Self::ControlCharacter { field, .. }
            | Self::InvalidCharacter { field, .. }
            | Self::InvalidMailbox { field, .. }
            | Self::TooLong { field, .. }
            | Self::Smtputf8NotOffered { field, .. } => Some(*field),
            Self::LineTooLong { .. } | Self::MessageTooLarge { .. } => None,
        }
    }
}

/// The optional MAIL parameters (ESMTP keywords) for one transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParameters {
    /// `SIZE=n` (RFC 1870), the message size in octets.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152).
    pub body_8bitmime: bool,
    /// `SMTPUTF8` (RFC 6531), which also allows UTF-8 in the paths.
    pub smtputf8: bool,
}

impl MailParameters {
    /// Chooses the parameters for a message: each only when the server
    /// offered its extension and the message needs it.
    ///
    /// - `SIZE=n` whenever SIZE is offered, so the server can refuse a large
    ///   message before it is sent.
    /// - `BODY=8BITMIME` when the data has a byte above 127 and 8BITMIME is
    ///   offered.
    /// - `SMTPUTF8` when an address is not ASCII, or the header section has a
    ///   byte above 127, and SMTPUTF8 is offered.
    ///
    /// 8-bit data for a server without 8BITMIME is sent as it is, because
    /// this crate does not convert messages to 7 bits.
    ///
    /// # Errors
    ///
    /// - [`CommandError::MessageTooLarge`] when the server stated a maximum
    ///   below `message.size`.
    /// - [`CommandError::Smtputf8NotOffered`] when an address is not ASCII and
    ///   SMTPUTF8 was not offered.
    pub fn negotiate<S: AsRef<str>>(
        capabilities: &Capabilities,
        reverse_path: &str,
        recipients: &[S],
        message: &MessageInfo,
    ) -> Result<Self, CommandError> {
        // NOTE: RFC 6152 section 3 requires a 7-bit conversion or a bounce
        // when 8-bit data meets a server without 8BITMIME; this sends the
        // data unchanged, which most such servers accept.
        if let Some(max) = capabilities.max_message_size {
            if message.size > max {
                return Err(CommandError::MessageTooLarge {
                    size: message.size,
                    max,
                });
            }
        }

        let paths = std::iter::once((Field::ReversePath, reverse_path)).chain(
            recipients
                .iter()
                .map(|recipient| (Field::ForwardPath, recipient.as_ref())),
        );
        let mut utf8_address = false;
        for (field, path) in paths {
            if path.is_ascii() {
                continue;
            }
            if !capabilities.smtputf8 {
                return Err(CommandError::Smtputf8NotOffered {
                    field,
                    value: path.to_owned(),
                });
            }
            utf8_address = true;
        }

        Ok(Self {
            size: capabilities.size.then_some(message.size),
            body_8bitmime: message.has_8bit && capabilities.eight_bit_mime,
            smtputf8: capabilities.smtputf8 && (utf8_address || message.has_8bit_headers),
        })
    }
}

/// One SMTP command with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// `EHLO domain`.
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `MAIL FROM:<reverse-path>` with parameters; an empty path is the null
    /// path `<>`.
    Mail {
        /// The address, without angle brackets.
        reverse_path: &'a str,
        /// ESMTP parameters.
        params: MailParameters,
    },
    /// `RCPT TO:<forward-path>`.
    Rcpt {
        /// The address, without angle brackets.
        forward_path: &'a str,
        /// Whether the transaction's MAIL carried SMTPUTF8, which allows a
        /// UTF-8 address.
        smtputf8: bool,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030 CHUNKING): the next `size` octets are
    /// message data, sent right after the command line.
    Bdat {
        /// The chunk's size in octets.
        size: u64,
        /// Whether this chunk ends the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `NOOP`.
    Noop,
}

impl Command<'_> {
    /// Returns the command verb.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Ehlo(_) => "EHLO",
            Self::Helo(_) => "HELO",
            Self::Mail { .. } => "MAIL",
            Self::Rcpt { .. } => "RCPT",
            Self::Data => "DATA",
            Self::Bdat { .. } => "BDAT",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
            Self::StartTls => "STARTTLS",
            Self::Noop => "NOOP",
        }
    }

    /// Appends the command line, CRLF included, to `out`.
    ///
    /// # Errors
    ///
    /// Returns a [`CommandError`] naming the argument when it is invalid or
    /// the line too long; `out` is then unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CommandError> {
        self.check()?;

        let start = out.len();
        out.reserve(self.len_estimate());
        self.write(out);

        let len = out.len() - start;
        if len > MAX_COMMAND_LINE_LEN {
            out.truncate(start);
            return Err(CommandError::LineTooLong {
                command: self.verb(),
                len,
                max: MAX_COMMAND_LINE_LEN,
            });
        }
        Ok(())
    }

    /// Encodes the command into a new buffer.
    ///
    /// # Errors
    ///
    /// As [`Command::encode`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, CommandError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    fn check(&self) -> Result<(), CommandError> {
        match *self {
            Self::Ehlo(domain) | Self::Helo(domain) => check_ehlo_domain(domain),
            Self::Mail {
                reverse_path,
                params,
            } => {
                if reverse_path.is_empty() {
                    return Ok(());
                }
                check_mailbox(Field::ReversePath, reverse_path, params.smtputf8)
            }
            Self::Rcpt {
                forward_path,
                smtputf8,
            } => {
                // RFC 5321 section 4.1.1.3: "RCPT TO:<Postmaster>" needs no
                // domain.
                if forward_path.eq_ignore_ascii_case("postmaster") {
                    return Ok(());
                }
                check_mailbox(Field::ForwardPath, forward_path, smtputf8)
            }
            Self::Data
            | Self::Bdat { .. }
            | Self::Rset
            | Self::Quit
            | Self::StartTls
            | Self::Noop => Ok(()),
        }
    }

    /// Returns an upper estimate of the encoded line's length, so that
    /// [`encode`](Self::encode) grows its buffer once.
    fn len_estimate(&self) -> usize {
        // The longest fixed part is `MAIL FROM:<> SIZE=<20 digits>
        // BODY=8BITMIME SMTPUTF8` with its CRLF, 63 octets.
        const FIXED: usize = 64;
        match *self {
            Self::Ehlo(domain) | Self::Helo(domain) => FIXED + domain.len(),
            Self::Mail { reverse_path, .. } => FIXED + reverse_path.len(),
            Self::Rcpt { forward_path, .. } => FIXED + forward_path.len(),
            Self::Data
            | Self::Bdat { .. }
            | Self::Rset
            | Self::Quit
            | Self::StartTls
            | Self::Noop => FIXED,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Ehlo(domain) | Self::Helo(domain) => {
                out.extend_from_slice(self.verb().as_bytes());
                out.push(b' ');
                out.extend_from_slice(domain.as_bytes());
            }
            Self::Mail {
                reverse_path,
                params,
            } => {
                out.extend_from_slice(b"MAIL FROM:<");
                out.extend_from_slice(reverse_path.as_bytes());
                out.push(b'>');
                if let Some(size) = params.size {
                    write_number(out, b" SIZE=", size);
                }
                if params.body_8bitmime {
                    out.extend_from_slice(b" BODY=8BITMIME");
                }
                if params.smtputf8 {
                    out.extend_from_slice(b" SMTPUTF8");
                }
            }
            Self::Rcpt { forward_path, .. } => {
                out.extend_from_slice(b"RCPT TO:<");
                out.extend_from_slice(forward_path.as_bytes());
                out.push(b'>');
            }
            Self::Bdat { size, last } => {
                write_number(out, b"BDAT ", size);
                if last {
                    out.extend_from_slice(b" LAST");
                }
            }
            Self::Data | Self::Rset | Self::Quit | Self::StartTls | Self::Noop => {
                out.extend_from_slice(self.verb().as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `prefix` and then `number` in decimal, without a temporary
/// string.
fn write_number(out: &mut Vec<u8>, prefix: &[u8], number: u64) {
    out.extend_from_slice(prefix);
    // `io::Write` for `Vec<u8>` never returns an error.
    let _ = write!(out, "{number}");
}

fn check_ehlo_domain(domain: &str) -> Result<(), CommandError> {
    let field = Field::EhloDomain;
    if domain.is_empty() {
        return Err(CommandError::Empty { field });
    }
    check_controls(field, domain)?;
    check_len(field, "domain", domain, domain.len(), MAX_DOMAIN_LEN)?;
    if let Some(character) = domain.chars().find(|c| !c.is_ascii()) {
        return Err(invalid_character(field, domain, character));
    }
    check_domain(field, domain, domain)
}

/// Checks `local-part@domain` against RFC 5321's limits and grammar, loosely:
/// the local part may be a dot-atom of `atext` or a quoted string, and the
/// domain a name or an address literal. UTF-8 is allowed only with
/// SMTPUTF8.
fn check_mailbox(field: Field, path: &str, smtputf8: bool) -> Result<(), CommandError> {
    check_controls(field, path)?;
    // The path limit counts the angle brackets, which `path` lacks.
    check_len(field, "path", path, path.len() + 2, MAX_PATH_LEN)?;

    let Some((local, domain)) = path.rsplit_once('@') else {
        return Err(CommandError::InvalidMailbox {
            field,
            value: path.to_owned(),
        });
    };
    if local.is_empty() || domain.is_empty() {
        return Err(CommandError::InvalidMailbox {
            field,
            value: path.to_owned(),
        });
    }
    check_len(field, "local part", path, local.len(), MAX_LOCAL_PART_LEN)?;
    check_len(field, "domain", path, domain.len(), MAX_DOMAIN_LEN)?;

    check_local_part(field, path, local)?;
    check_domain(field, path, domain)?;

    if !smtputf8 && !path.is_ascii() {
        return Err(CommandError::Smtputf8NotOffered {
            field,
            value: path.to_owned(),
        });
    }
    Ok(())
}

fn check_controls(field: Field, value: &str) -> Result<(), CommandError> {
    match value.bytes().find(|byte| byte.is_ascii_control()) {
        Some(byte) => Err(CommandError::ControlCharacter {
            field,
            value: value.to_owned(),
            byte,
        }),
        None => Ok(()),
    }
}

fn check_len(
    field: Field,
    part: &'static str,
    value: &str,
    len: usize,
    max: usize,
) -> Result<(), CommandError> {
    if len > max {
        return Err(CommandError::TooLong {
            field,
            part,
            value: value.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

fn check_local_part(field: Field, path: &str, local: &str) -> Result<(), CommandError> {
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if quoted {
        // Inside a quoted string any printable character may appear; the
        // control characters were rejected already.
        return Ok(());
    }
    match local.chars().find(|&c| !(c == '.' || is_atext(c))) {
        Some(character) => Err(invalid_character(field, path, character)),
        None => Ok(()),
    }
}

fn check_domain(field: Field, value: &str, domain: &str) -> Result<(), CommandError> {
    if let Some(literal) = domain.strip_prefix('[') {
        let Some(inner) = literal.strip_suffix(']') else {
            return Err(invalid_character(field, value, '['));
        };
        // RFC 5321 section 4.1.3: dcontent is printable ASCII except
        // '[', '\' and ']'.
        return match inner
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '[' | ']' | '\\'))
        {
            Some(character) => Err(invalid_character(field, value, character)),
            None => Ok(()),
        };
    }

    match domain
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii()))
    {
        Some(character) => Err(invalid_character(field, value, character)),
        None => Ok(()),
    }
}

/// RFC 5322 `atext`, extended to UTF-8 by RFC 6531 section 3.3.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn invalid_character(field: Field, value: &str, character: char) -> CommandError {
    CommandError::InvalidCharacter {
        field,
        value: value.to_owned(),
        character,
    }
}
