//! The server's EHLO reply as a set of service extensions
//! (RFC 5321 section 4.1.1.1).

use ec_types::Reply;

/// The service extensions a server offered in its EHLO reply.
///
/// Keywords are matched without regard to case. After STARTTLS the client
/// drops these and sends EHLO again, because RFC 3207 section 4.2 warns that
/// the list received in clear text may have been tampered with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The domain the server named itself, the first word of the first
    /// line.
    pub domain: String,
    /// The rest of the first line, often a greeting.
    pub greeting: String,
    /// RFC 2920 PIPELINING: commands may be sent in groups.
    pub pipelining: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 1870 SIZE: the MAIL command takes a `SIZE=` parameter.
    pub size: bool,
    /// The maximum message size in octets that SIZE stated. `None` when SIZE
    /// was not offered, came without a number, or with 0 (RFC 1870 section
    /// 4: no fixed maximum).
    pub max_message_size: Option<u64>,
    /// RFC 6152 8BITMIME: `BODY=8BITMIME` is accepted.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8: UTF-8 addresses and header fields are accepted.
    pub smtputf8: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// RFC 3030 CHUNKING (BDAT). With PIPELINING too, the client sends each
    /// message as one `BDAT LAST` chunk unless its configuration turns
    /// chunking off.
    pub chunking: bool,
    /// RFC 3461 DSN. Recorded only; the client sends no DSN parameters.
    pub dsn: bool,
    /// RFC 4954 AUTH mechanisms, upper case, from `AUTH` and the older
    /// `AUTH=` form.
    pub auth: Vec<String>,
    /// Every other keyword, upper case, with its parameters.
    pub other: Vec<Extension>,
}

/// An EHLO keyword this crate has no field for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The keyword in upper case.
    pub keyword: String,
    /// Its parameters, as sent.
    pub params: Vec<String>,
}

impl Capabilities {
    /// Reads an EHLO reply. Lines that hold no valid keyword (such as the
    /// empty last line that Postfix's smtp-sink sends) are skipped.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut lines = reply.lines.iter();
        let mut capabilities = Self::from_greeting(lines.next().map_or("", String::as_str));
        for line in lines {
            capabilities.add_line(line);
        }
        capabilities
    }

    /// Reads a HELO reply, which offers no extensions.
    pub fn from_helo(reply: &Reply) -> Self {
        Self::from_greeting(reply.lines.first().map_or("", String::as_str))
    }

    /// Returns whether the server offered `keyword` (in any case), whether or
    /// not this type has a field for it.
    pub fn offers(&self, keyword: &str) -> bool {
        let flag = match keyword.to_ascii_uppercase().as_str() {
            "PIPELINING" => self.pipelining,
            "STARTTLS" => self.starttls,
            "SIZE" => self.size,
            "8BITMIME" => self.eight_bit_mime,
            "SMTPUTF8" => self.smtputf8,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes,
            "CHUNKING" => self.chunking,
            "DSN" => self.dsn,
            "AUTH" => !self.auth.is_empty(),
            _ => false,
        };
        flag || self
            .other
            .iter()
            .any(|extension| extension.keyword.eq_ignore_ascii_case(keyword))
    }

    fn from_greeting(line: &str) -> Self {
        let (domain, greeting) = line.split_once(' ').unwrap_or((line, ""));
        Self {
            domain: domain.to_owned(),
            greeting: greeting.to_owned(),
            ..Self::default()
        }
    }

    fn add_line(&mut self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else {
            return;
        };

        // Some servers still send the pre-RFC 4954 form `AUTH=LOGIN PLAIN`.
        if let Some(mechanism) = strip_prefix_ignore_case(first, "AUTH=") {
            self.add_auth(std::iter::once(mechanism).chain(words));
            return;
        }
        if !is_keyword(first) {
            tracing::debug!(line, "skipping EHLO line without a valid keyword");
            return;
        }

        // Matched without an upper-case copy, because this runs for every
        // line of every EHLO reply.
        let known = KNOWN_KEYWORDS
            .iter()
            .find(|keyword| first.eq_ignore_ascii_case(keyword));
        match known.copied() {
            Some("PIPELINING") => self.pipelining = true,
            Some("STARTTLS") => self.starttls = true,
            Some("SIZE") => self.set_size(words.next()),
            Some("8BITMIME") => self.eight_bit_mime = true,
            Some("SMTPUTF8") => self.smtputf8 = true,
            Some("ENHANCEDSTATUSCODES") => self.enhanced_status_codes = true,
            Some("CHUNKING") => self.chunking = true,
            Some("DSN") => self.dsn = true,
            Some("AUTH") => self.add_auth(words),
            _ => self.other.push(Extension {
                keyword: first.to_ascii_uppercase(),
                params: words.map(str::to_owned).collect(),
            }),
        }
    }

    fn set_size(&mut self, param: Option<&str>) {
        self.size = true;
        self.max_message_size = match param.map(str::parse::<u64>) {
            None | Some(Ok(0)) => None,
            Some(Ok(max)) => Some(max),
            Some(Err(_)) => {
                tracing::warn!(
                    param,
                    "EHLO SIZE parameter is not a number; assuming no limit"
                );
                None
            }
        };
    }

    fn add_auth<'a>(&mut self, mechanisms: impl Iterator<Item = &'a str>) {
        for mechanism in mechanisms.filter(|mechanism| !mechanism.is_empty()) {
            let mechanism = mechanism.to_ascii_uppercase();
            if !self.auth.contains(&mechanism) {
                self.auth.push(mechanism);
            }
        }
    }
}

/// The keywords that have a field of their own, in upper case.
pub(crate) const KNOWN_KEYWORDS: [&str; 9] = [
    "PIPELINING",
    "STARTTLS",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
    "AUTH",
];

/// `ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")` (RFC 5321
/// section 4.1.1.1).
fn is_keyword(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}
