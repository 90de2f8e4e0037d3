//! SMTP replies: the three-digit reply code of RFC 5321 section 4.2, the
//! enhanced status code of RFC 3463, and the reply text.
//!
//! Parsing replies off the wire is the SMTP client's job. This module only
//! defines the values and their rules, so every crate can store, compare,
//! log and serialize a reply the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A reply code was outside 200..=599.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("reply code {0} is invalid: SMTP reply codes are 200 to 599")]
pub struct InvalidReplyCode(pub u16);

/// A string was not an RFC 3463 enhanced status code (`class.subject.detail`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "enhanced status code {0:?} is invalid: expected class.subject.detail \
     with class 2, 4 or 5 and one to three digits each for subject and detail"
)]
pub struct InvalidEnhancedStatusCode(pub String);

/// The class of a reply, from its first digit (RFC 5321 section 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    /// 2yz: the requested action was completed.
    PositiveCompletion,
    /// 3yz: the command was accepted and the server waits for more (354
    /// after DATA).
    PositiveIntermediate,
    /// 4yz: the action was not taken, but the same command may succeed
    /// later.
    TransientNegative,
    /// 5yz: the action was not taken and repeating the command will not
    /// help.
    PermanentNegative,
}

/// A three-digit SMTP reply code, 200 to 599.
///
/// RFC 5321 defines no 1yz replies for SMTP, so codes below 200 are invalid
/// here as codes of 600 and above are.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// 220: service ready (the banner, and the reply to STARTTLS).
    pub const SERVICE_READY: Self = Self(220);
    /// 221: service closing the transmission channel (the reply to QUIT).
    pub const CLOSING: Self = Self(221);
    /// 250: requested mail action okay, completed.
    pub const OK: Self = Self(250);
    /// 354: start mail input (the reply to DATA).
    pub const START_MAIL_INPUT: Self = Self(354);
    /// 421: service not available, closing the transmission channel. The
    /// server may send it in reply to any command, and then closes.
    pub const SERVICE_NOT_AVAILABLE: Self = Self(421);
    /// 454: TLS not available due to a temporary reason (RFC 3207).
    pub const TLS_NOT_AVAILABLE: Self = Self(454);
    /// 500: syntax error, command unrecognized.
    pub const SYNTAX_ERROR: Self = Self(500);
    /// 502: command not implemented.
    pub const COMMAND_NOT_IMPLEMENTED: Self = Self(502);
    /// 503: bad sequence of commands.
    pub const BAD_SEQUENCE: Self = Self(503);
    /// 550: mailbox unavailable; ec also uses it for a recipient domain
    /// that does not exist.
    pub const MAILBOX_UNAVAILABLE: Self = Self(550);
    /// 554: transaction failed (or, as a banner, no SMTP service here).
    pub const TRANSACTION_FAILED: Self = Self(554);
    /// 556: domain does not accept mail (RFC 7504), the reply for a
    /// domain with a null MX (RFC 7505).
    pub const DOMAIN_ACCEPTS_NO_MAIL: Self = Self(556);

    /// Checks that `code` is a valid SMTP reply code.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidReplyCode`] when `code` is outside 200..=599.
    pub const fn new(code: u16) -> Result<Self, InvalidReplyCode> {
        if code >= 200 && code <= 599 {
            Ok(Self(code))
        } else {
            Err(InvalidReplyCode(code))
        }
    }

    /// Returns the code as a number.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Returns the class given by the first digit.
    pub const fn class(self) -> ReplyClass {
        match self.0 / 100 {
            2 => ReplyClass::PositiveCompletion,
            3 => ReplyClass::PositiveIntermediate,
            4 => ReplyClass::TransientNegative,
            _ => ReplyClass::PermanentNegative,
        }
    }

    /// Returns whether this is a 2yz reply.
    pub const fn is_positive_completion(self) -> bool {
        matches!(self.class(), ReplyClass::PositiveCompletion)
    }

    /// Returns whether this is a 3yz reply.
    pub const fn is_positive_intermediate(self) -> bool {
        matches!(self.class(), ReplyClass::PositiveIntermediate)
    }

    /// Returns whether this is a 4yz reply: a transient failure, worth
    /// retrying.
    pub const fn is_transient(self) -> bool {
        matches!(self.class(), ReplyClass::TransientNegative)
    }

    /// Returns whether this is a 5yz reply: a permanent failure.
    pub const fn is_permanent(self) -> bool {
        matches!(self.class(), ReplyClass::PermanentNegative)
    }
}

impl TryFrom<u16> for ReplyCode {
    type Error = InvalidReplyCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        Self::new(code)
    }
}

impl From<ReplyCode> for u16 {
    fn from(code: ReplyCode) -> Self {
        code.0
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplyCode({})", self.0)
    }
}

/// An enhanced status code, `class.subject.detail` (RFC 3463 section 2),
/// such as `4.7.1`.
///
/// The class is 2 (success), 4 (persistent transient failure) or 5
/// (permanent failure); subject and detail have one to three digits each.
/// Leading zeros are accepted and dropped, so `5.01.1` is stored and shown
/// as `5.1.1`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnhancedStatusCode {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatusCode {
    /// Builds a code from its three numbers.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidEnhancedStatusCode`] when `class` is not 2, 4 or 5,
    /// or `subject` or `detail` is above 999.
    pub fn new(class: u8, subject: u16, detail: u16) -> Result<Self, InvalidEnhancedStatusCode> {
        if matches!(class, 2 | 4 | 5) && subject <= 999 && detail <= 999 {
            Ok(Self {
                class,
                subject,
                detail,
            })
        } else {
            Err(InvalidEnhancedStatusCode(format!(
                "{class}.{subject}.{detail}"
            )))
        }
    }

    /// Returns the class digit: 2, 4 or 5.
    pub const fn class(self) -> u8 {
        self.class
    }

    /// Returns the subject number (for example 7 for security or policy
    /// status).
    pub const fn subject(self) -> u16 {
        self.subject
    }

    /// Returns the detail number.
    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// Returns whether this code's class agrees with the class of `code`: 2 with
    /// 2yz, 4 with 4yz, 5 with 5yz. A 3yz reply matches no enhanced code.
    pub const fn matches(self, code: ReplyCode) -> bool {
        self.class as u16 == code.as_u16() / 100
    }

    /// Parses `class.subject.detail`, or returns `None`. Unlike `FromStr`
    /// it allocates no error, because many reply lines (EHLO keywords, the
    /// 354 to DATA) start with no code.
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };

        let number = |part: &str| -> Option<u16> {
            let valid = (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
            valid.then(|| part.parse().ok()).flatten()
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(Self {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }

    /// Splits a leading enhanced status code off a reply text line.
    ///
    /// The code must be followed by a space or end the line; the returned
    /// rest starts after that space. Returns `None` when `text` does not
    /// start with a valid code, so `4.7.1x` or `2.0` stay part of the text.
    pub fn split_prefix(text: &str) -> Option<(Self, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let code = Self::parse(&text[..end])?;
        let rest = text.get(end + 1..).unwrap_or("");
        Some((code, rest))
    }
}

impl FromStr for EnhancedStatusCode {
    type Err = InvalidEnhancedStatusCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or_else(|| InvalidEnhancedStatusCode(text.to_owned()))
    }
}

impl TryFrom<String> for EnhancedStatusCode {
    type Error = InvalidEnhancedStatusCode;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<EnhancedStatusCode> for String {
    fn from(code: EnhancedStatusCode) -> Self {
        code.to_string()
    }
}

impl fmt::Display for EnhancedStatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl fmt::Debug for EnhancedStatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnhancedStatusCode({self})")
    }
}

/// One complete SMTP reply, possibly of several lines.
///
/// `lines` contains the text of each line without the reply code, the
/// separator and the line ending. When the server sent an enhanced status
/// code, it is in `enhanced` and removed from the start of every line that
/// repeated it (RFC 2034 puts it on each line of a multi-line reply). Text
/// that was not valid UTF-8 was decoded lossily.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// The reply code, the same on every line.
    pub code: ReplyCode,
    /// The RFC 3463 enhanced status code, when the first line carried a
    /// valid one whose class matches the reply code.
    pub enhanced: Option<EnhancedStatusCode>,
    /// The text of each line, in order; a reply has at least one line, which
    /// may be empty.
    pub lines: Vec<String>,
    /// The reply was made by ec to record an outcome no server gave (for
    /// example a message that could not be sent, or that expired in the
    /// queue), not received from a server. Logs show such text as ec's
    /// explanation, never as the server's words.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl Reply {
    /// Builds a one-line reply.
    pub fn new(code: ReplyCode, enhanced: Option<EnhancedStatusCode>, text: &str) -> Self {
        Self {
            code,
            enhanced,
            lines: vec![text.to_owned()],
            local: false,
        }
    }

    /// Builds a one-line reply made by ec itself (see [`Reply::local`]).
    pub fn made_locally(code: ReplyCode, enhanced: Option<EnhancedStatusCode>, text: &str) -> Self {
        Self {
            local: true,
            ..Self::new(code, enhanced, text)
        }
    }

    /// Returns the class of the reply code.
    pub fn class(&self) -> ReplyClass {
        self.code.class()
    }

    /// Returns whether the reply is 2yz.
    pub fn is_positive_completion(&self) -> bool {
        self.code.is_positive_completion()
    }

    /// Returns whether the reply is 4yz: a transient failure.
    pub fn is_transient(&self) -> bool {
        self.code.is_transient()
    }

    /// Returns whether the reply is 5yz: a permanent failure.
    pub fn is_permanent(&self) -> bool {
        self.code.is_permanent()
    }

    /// Returns the text of all lines joined with single spaces, skipping
    /// empty lines.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in self.lines.iter().filter(|line| !line.is_empty()) {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(line);
        }
        text
    }
}

/// Writes the reply on one line for logs: code, enhanced code and text,
/// such as `451 4.7.1 try again later`.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(value: u16) -> ReplyCode {
        ReplyCode::new(value).unwrap()
    }

    #[test]
    fn reply_code_range() {
        assert_eq!(ReplyCode::new(199), Err(InvalidReplyCode(199)));
        assert_eq!(ReplyCode::new(600), Err(InvalidReplyCode(600)));
        assert_eq!(code(200).as_u16(), 200);
        assert_eq!(code(599).as_u16(), 599);
    }

    #[test]
    fn reply_code_classes() {
        assert_eq!(code(250).class(), ReplyClass::PositiveCompletion);
        assert_eq!(code(354).class(), ReplyClass::PositiveIntermediate);
        assert_eq!(code(421).class(), ReplyClass::TransientNegative);
        assert_eq!(code(550).class(), ReplyClass::PermanentNegative);
        assert!(code(451).is_transient());
        assert!(!code(451).is_permanent());
        assert!(code(554).is_permanent());
        assert!(code(221).is_positive_completion());
        assert!(code(354).is_positive_intermediate());
    }

    #[test]
    fn enhanced_code_parses() {
        let parsed: EnhancedStatusCode = "4.7.1".parse().unwrap();
        assert_eq!(parsed.class(), 4);
        assert_eq!(parsed.subject(), 7);
        assert_eq!(parsed.detail(), 1);
        assert_eq!(parsed.to_string(), "4.7.1");
        assert_eq!(
            "5.999.999".parse::<EnhancedStatusCode>().unwrap().detail(),
            999
        );
        assert_eq!(
            "5.01.1".parse::<EnhancedStatusCode>().unwrap().to_string(),
            "5.1.1"
        );
    }

    #[test]
    fn enhanced_code_rejects_invalid() {
        for text in [
            "", "4", "4.7", "4.7.", "3.0.0", "6.0.0", "4.7.1.2", "4.1000.1", "4.7.1x", "4..1",
            "+4.7.1", "4.-7.1", " 4.7.1",
        ] {
            assert!(
                text.parse::<EnhancedStatusCode>().is_err(),
                "{text:?} parsed"
            );
        }
    }

    #[test]
    fn enhanced_code_prefix() {
        let (parsed, rest) = EnhancedStatusCode::split_prefix("5.1.1 user unknown").unwrap();
        assert_eq!(parsed.to_string(), "5.1.1");
        assert_eq!(rest, "user unknown");
        assert_eq!(EnhancedStatusCode::split_prefix("2.0.0").unwrap().1, "");
        assert!(EnhancedStatusCode::split_prefix("2.0.0x ok").is_none());
        assert!(EnhancedStatusCode::split_prefix("mx.example.com ESMTP").is_none());
    }

    #[test]
    fn enhanced_code_class_match() {
        let transient: EnhancedStatusCode = "4.2.0".parse().unwrap();
        assert!(transient.matches(code(451)));
        assert!(!transient.matches(code(550)));
        assert!(!transient.matches(code(354)));
    }

    #[test]
    fn reply_display_one_line() {
        let reply = Reply {
            code: code(451),
            enhanced: Some("4.7.1".parse().unwrap()),
            lines: vec!["try again".into(), "".into(), "later".into()],
            local: false,
        };
        assert_eq!(reply.to_string(), "451 4.7.1 try again later");
        assert_eq!(Reply::new(code(250), None, "").to_string(), "250");
    }

    #[test]
    fn reply_serde_round_trip() {
        let reply = Reply::new(code(550), Some("5.1.1".parse().unwrap()), "no such user");
        let text = toml::to_string(&reply).unwrap();
        assert!(text.contains("enhanced = \"5.1.1\""), "{text}");
        assert!(text.contains("code = 550"), "{text}");

        let back: Reply = toml::from_str(&text).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn reply_code_serde_rejects_invalid() {
        #[derive(Debug, Deserialize)]
        struct Holder {
            #[allow(dead_code)]
            code: ReplyCode,
        }
        assert!(toml::from_str::<Holder>("code = 250").is_ok());
        assert!(toml::from_str::<Holder>("code = 150").is_err());
    }
}
