//! Domains and mailbox addresses as they appear in an SMTP envelope.
//!
//! The checks here are the ones an outbound engine needs before it queues
//! anything: no byte that could end or split an SMTP command line, and the
//! length limits of RFC 5321 section 4.5.3.1. Full RFC 5321 `Mailbox`
//! grammar checking is left to the receiving server, which is the authority
//! on what it accepts.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Maximum length of a domain name in octets (RFC 5321 section 4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;

/// Maximum length of a local part in octets (RFC 5321 section 4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// Maximum length of a reverse or forward path, without the angle brackets
/// (RFC 5321 section 4.5.3.1.3 allows 256 octets including them).
pub const MAX_PATH_LEN: usize = 254;

/// Why a domain or address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The value was empty.
    #[error("{what} is empty; {}", empty_hint(what))]
    Empty {
        /// Which part was empty ("address", "domain", "local part").
        what: &'static str,
    },
    /// The value contained a byte that could end or split an SMTP command.
    #[error("{what} {value:?} contains the control character {byte:#04x}; remove it")]
    ControlCharacter {
        /// Which part contained it.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// The first offending byte.
        byte: u8,
    },
    /// The value contained a character that is not allowed there.
    #[error("{what} {value:?} contains {character:?}, which is not allowed there; remove it")]
    InvalidCharacter {
        /// Which part contained it.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// The offending character.
        character: char,
    },
    /// The value was longer than RFC 5321 allows.
    #[error("{what} {value:?} is {len} octets long; the maximum is {max}")]
    TooLong {
        /// Which part was too long.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// Its length in octets.
        len: usize,
        /// The limit in octets.
        max: usize,
    },
    /// The address had no `@` separating local part and domain.
    #[error("address {value:?} has no '@domain' part; write it as local-part@domain")]
    MissingDomain {
        /// The rejected value.
        value: String,
    },
    /// A domain in brackets that is not an address literal of RFC 5321
    /// section 4.1.3.
    #[error(
        "domain {value:?} is not a valid address literal; write an IP address in \
         brackets, such as [192.0.2.1] or [IPv6:2001:db8::1]"
    )]
    InvalidAddressLiteral {
        /// The domain as given.
        value: String,
    },
    /// A domain name had an empty label: two dots in a row, or a dot at
    /// its start.
    #[error("domain {value:?} has an empty label (two dots in a row or a leading dot); remove the extra dot")]
    EmptyLabel {
        /// The rejected domain.
        value: String,
    },
    /// A label of a domain name was longer than the 63 octets that RFC 1035
    /// section 2.3.4 allows.
    #[error("domain {value:?} has a label of {len} octets; the maximum is {max}")]
    LabelTooLong {
        /// The rejected domain.
        value: String,
        /// The label's length in octets.
        len: usize,
        /// The limit in octets.
        max: usize,
    },
}

/// Returns what to write instead of an empty `what`.
fn empty_hint(what: &str) -> &'static str {
    match what {
        "domain" => "give a domain name such as example.com",
        _ => "write the address as local-part@domain",
    }
}

/// Maximum length of one label of a domain name in octets (RFC 1035
/// section 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Checks the labels of a domain name; an address literal such as
/// `[192.0.2.1]` has none.
fn check_labels(name: &str) -> Result<(), AddressError> {
    if name.starts_with('[') {
        return check_address_literal(name);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(AddressError::EmptyLabel {
                value: name.to_owned(),
            });
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(AddressError::LabelTooLong {
                value: name.to_owned(),
                len: label.len(),
                max: MAX_LABEL_LEN,
            });
        }
    }
    Ok(())
}

/// Checks an address literal (RFC 5321 section 4.1.3): `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`, or a general literal `[tag:content]` whose tag is
/// a letter-digit-hyphen string and whose content has no `[`, `\` or `]`.
fn check_address_literal(name: &str) -> Result<(), AddressError> {
    let invalid = || AddressError::InvalidAddressLiteral {
        value: name.to_owned(),
    };
    let inner = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(invalid)?;
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let (tag, content) = inner.split_once(':').ok_or_else(invalid)?;
    if tag.eq_ignore_ascii_case("IPv6") {
        return content
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| invalid());
    }
    let tag_valid = !tag.is_empty()
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !tag.ends_with('-');
    let content_valid = !content.is_empty()
        && content
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'[' | b'\\' | b']'));
    if tag_valid && content_valid {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn check_characters(what: &'static str, value: &str) -> Result<(), AddressError> {
    if let Some(byte) = value.bytes().find(|b| b.is_ascii_control()) {
        return Err(AddressError::ControlCharacter {
            what,
            value: value.to_owned(),
            byte,
        });
    }
    if let Some(character) = value.chars().find(|c| matches!(c, ' ' | '<' | '>')) {
        return Err(AddressError::InvalidCharacter {
            what,
            value: value.to_owned(),
            character,
        });
    }
    Ok(())
}

fn check_length(what: &'static str, value: &str, max: usize) -> Result<(), AddressError> {
    if value.len() > max {
        return Err(AddressError::TooLong {
            what,
            value: value.to_owned(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// A destination domain name, stored in lower case so that
/// `Example.COM` and `example.com` share one queue.
///
/// A trailing dot is removed. Internationalized names are kept as given
/// (U-labels or A-labels); they are compared after lower-casing only.
/// Clones share the name, so a message, its recipients and the scheduler's
/// tables can each hold the domain without a copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(Arc<str>);

impl Domain {
    /// Parses and normalizes a domain name.
    ///
    /// # Errors
    ///
    /// Returns an error when the name is empty, longer than 255 octets, has
    /// an empty label or one over 63 octets, or contains a control
    /// character, a space or an angle bracket.
    pub fn new(name: &str) -> Result<Self, AddressError> {
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.is_empty() {
            return Err(AddressError::Empty { what: "domain" });
        }
        check_characters("domain", trimmed)?;
        if let Some(character) = trimmed.chars().find(|c| matches!(c, '@' | ',' | ';')) {
            return Err(AddressError::InvalidCharacter {
                what: "domain",
                value: trimmed.to_owned(),
                character,
            });
        }
        check_length("domain", trimmed, MAX_DOMAIN_LEN)?;
        check_labels(trimmed)?;
        Ok(Self(trimmed.to_lowercase().into()))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = AddressError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Domain> for String {
    fn from(domain: Domain) -> Self {
        domain.0.as_ref().to_owned()
    }
}

impl std::str::FromStr for Domain {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A mailbox address (`local-part@domain`) for an RCPT TO forward path or a
/// non-null MAIL FROM reverse path.
///
/// The local part keeps its case, because RFC 5321 section 2.4 lets the
/// receiving server treat it as case-sensitive; the domain is normalized.
/// Clones share the text, so one address can sit in a message and in its
/// outcome without a copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    text: Arc<str>,
    at: usize,
    domain: Domain,
}

impl Address {
    /// Parses an address written as `local-part@domain`, with or without
    /// surrounding angle brackets.
    ///
    /// # Errors
    ///
    /// Returns an error when the address is empty or has no domain. It also
    /// does when the address has a second `@` outside a quoted local part,
    /// contains a control character, space or bracket, or breaks an RFC 5321
    /// length limit, and when its domain is not a valid name (see
    /// [`Domain::new`]).
    pub fn new(text: &str) -> Result<Self, AddressError> {
        let text = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(AddressError::Empty { what: "address" });
        }
        check_characters("address", text)?;
        check_length("address", text, MAX_PATH_LEN)?;
        let at = text.rfind('@').ok_or_else(|| AddressError::MissingDomain {
            value: text.to_owned(),
        })?;
        let local = &text[..at];
        if local.is_empty() {
            return Err(AddressError::Empty { what: "local part" });
        }
        // RFC 5321 section 4.1.2: an `@` in the local part needs a quoted
        // string, as in `"a@b"@example.com`.
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        if !quoted && local.contains('@') {
            return Err(AddressError::InvalidCharacter {
                what: "local part",
                value: local.to_owned(),
                character: '@',
            });
        }
        check_length("local part", local, MAX_LOCAL_PART_LEN)?;
        let domain = Domain::new(&text[at + 1..])?;
        let text = format!("{local}@{domain}").into();
        Ok(Self { text, at, domain })
    }

    /// The local part, as given.
    pub fn local_part(&self) -> &str {
        &self.text[..self.at]
    }

    /// The normalized domain.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The whole address, without angle brackets.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the address needs the SMTPUTF8 extension (RFC 6531).
    pub fn is_ascii(&self) -> bool {
        self.text.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.text)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<Address> for String {
    fn from(address: Address) -> Self {
        address.text.as_ref().to_owned()
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The MAIL FROM reverse path: a mailbox, or the null path `<>` that
/// bounces and other delivery status notifications use (RFC 5321 section 4.5.5).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ReversePath {
    /// The null reverse path, sent as `MAIL FROM:<>`.
    Null,
    /// A mailbox.
    Mailbox(Address),
}

impl ReversePath {
    /// Parses a reverse path; an empty string or `<>` is the null path.
    ///
    /// # Errors
    ///
    /// Returns the same errors as [`Address::new`] for a non-empty path.
    pub fn new(text: &str) -> Result<Self, AddressError> {
        match text {
            "" | "<>" => Ok(Self::Null),
            _ => Address::new(text).map(Self::Mailbox),
        }
    }

    /// The path without angle brackets; empty for the null path.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Null => "",
            Self::Mailbox(address) => address.as_str(),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.as_str())
    }
}

impl fmt::Debug for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReversePath(<{}>)", self.as_str())
    }
}

impl TryFrom<String> for ReversePath {
    type Error = AddressError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<ReversePath> for String {
    fn from(path: ReversePath) -> Self {
        path.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_lowercased_and_trimmed() {
        let domain = Domain::new("Example.COM.").expect("valid domain");
        assert_eq!(domain.as_str(), "example.com");
    }

    #[test]
    fn domain_rejects_crlf() {
        let error = Domain::new("example.com\r\nRSET").expect_err("CR must be rejected");
        assert!(matches!(
            error,
            AddressError::ControlCharacter { byte: b'\r', .. }
        ));
    }

    #[test]
    fn domain_rejects_overlong() {
        let long = "a".repeat(256);
        assert!(matches!(
            Domain::new(&long),
            Err(AddressError::TooLong { max: 255, .. })
        ));
    }

    #[test]
    fn address_keeps_local_case() {
        let address = Address::new("<John.Doe@Example.org>").expect("valid address");
        assert_eq!(address.local_part(), "John.Doe");
        assert_eq!(address.domain().as_str(), "example.org");
        assert_eq!(address.as_str(), "John.Doe@example.org");
    }

    #[test]
    fn address_rejects_nul_and_missing_domain() {
        assert!(matches!(
            Address::new("a\0b@example.org"),
            Err(AddressError::ControlCharacter { byte: 0, .. })
        ));
        assert!(matches!(
            Address::new("nobody"),
            Err(AddressError::MissingDomain { .. })
        ));
        assert!(matches!(
            Address::new("@example.org"),
            Err(AddressError::Empty { .. })
        ));
    }

    #[test]
    fn domain_rejects_empty_and_long_labels() {
        for name in ["a..b", ".a.b", "a.b.."] {
            assert!(
                matches!(Domain::new(name), Err(AddressError::EmptyLabel { .. })),
                "{name}"
            );
        }
        let long_label = format!("{}.example", "l".repeat(64));
        assert!(matches!(
            Domain::new(&long_label),
            Err(AddressError::LabelTooLong {
                len: 64,
                max: 63,
                ..
            })
        ));
        assert!(Domain::new(&format!("{}.example", "l".repeat(63))).is_ok());
        assert!(Domain::new("[192.0.2.1]").is_ok());
        assert!(Domain::new("[IPv6:2001:db8::1]").is_ok());
    }

    #[test]
    fn address_rejects_second_at_unless_quoted() {
        let error = Address::new("a@b@example.org").expect_err("two @");
        assert!(matches!(
            &error,
            AddressError::InvalidCharacter { character: '@', value, .. } if value == "a@b"
        ));
        let quoted = Address::new("\"a@b\"@example.org").expect("quoted local part");
        assert_eq!(quoted.local_part(), "\"a@b\"");
        assert!(matches!(
            Address::new("x@a..b"),
            Err(AddressError::EmptyLabel { .. })
        ));
    }

    #[test]
    fn address_rejects_long_local_part() {
        let text = format!("{}@example.org", "x".repeat(65));
        assert!(matches!(
            Address::new(&text),
            Err(AddressError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn reverse_path_null() {
        assert_eq!(
            ReversePath::new("<>").expect("null path"),
            ReversePath::Null
        );
        assert_eq!(ReversePath::Null.to_string(), "<>");
    }

    #[test]
    fn address_serde_round_trip() {
        let address = Address::new("a@b.example").expect("valid address");
        let json = String::from(address.clone());
        assert_eq!(Address::try_from(json).expect("parses back"), address);
    }
}
