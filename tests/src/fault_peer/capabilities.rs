//! The ESMTP extensions the peer advertises in its `EHLO` reply.

/// The ESMTP extensions an `EHLO` reply advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pipelining: bool,
    chunking: bool,
    starttls: bool,
    size: Option<u64>,
    extra: Vec<String>,
}

impl Capabilities {
    /// PIPELINING, 8BITMIME and ENHANCEDSTATUSCODES; no CHUNKING, no STARTTLS, no
    /// SIZE.
    pub fn new() -> Self {
        Self {
            pipelining: true,
            chunking: false,
            starttls: false,
            size: None,
            extra: vec!["8BITMIME".into(), "ENHANCEDSTATUSCODES".into()],
        }
    }

    /// Whether to advertise PIPELINING (RFC 2920).
    #[must_use]
    pub fn pipelining(mut self, on: bool) -> Self {
        self.pipelining = on;
        self
    }

    /// Sets whether to advertise CHUNKING (RFC 3030). While the capabilities in force
    /// advertise it, the peer reads the octets that follow a `BDAT` line as chunk
    /// data. Otherwise it replies to `BDAT` as to an unknown command and reads what
    /// follows as commands, as a server without CHUNKING would.
    #[must_use]
    pub fn chunking(mut self, on: bool) -> Self {
        self.chunking = on;
        self
    }

    /// Returns whether CHUNKING is advertised.
    pub fn offers_chunking(&self) -> bool {
        self.chunking
    }

    /// Whether to advertise STARTTLS (RFC 3207), whether or not the peer can do TLS.
    #[must_use]
    pub fn starttls(mut self, on: bool) -> Self {
        self.starttls = on;
        self
    }

    /// The SIZE (RFC 1870) to advertise in bytes, or none.
    #[must_use]
    pub fn size(mut self, limit: Option<u64>) -> Self {
        self.size = limit;
        self
    }

    /// Advertises one more EHLO keyword line, e.g. `SMTPUTF8` or `AUTH PLAIN`.
    #[must_use]
    pub fn extension(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Drops every extension added with [`Capabilities::extension`] or by default.
    #[must_use]
    pub fn without_extras(mut self) -> Self {
        self.extra.clear();
        self
    }

    /// The keyword lines, in the order the `EHLO` reply lists them.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.pipelining {
            lines.push("PIPELINING".to_owned());
        }
        if let Some(size) = self.size {
            lines.push(format!("SIZE {size}"));
        }
        lines.extend(self.extra.iter().cloned());
        if self.chunking {
            lines.push("CHUNKING".to_owned());
        }
        if self.starttls {
            lines.push("STARTTLS".to_owned());
        }
        lines
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::new()
    }
}
