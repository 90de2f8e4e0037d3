//! Label values that `ec-types` has no enum (or no `as_str`) for, and lists
//! of every value of the `ec-types` enums that label metrics, which the
//! catalog, the reference page and tests enumerate.
//!
//! Each value here is a `&'static str`, so recording a metric never
//! allocates a label string for it.

use std::io;

use ec_types::{
    ConnectionState, MessageFate, RecipientStatus, ReplyClass, SessionError, Stage, TlsPolicy,
};

/// The result of a TCP connect attempt (`result` label of
/// `ec_connect_attempts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectResult {
    /// The TCP handshake completed.
    Success,
    /// The server host replied with a TCP reset (nothing listens on the port).
    Refused,
    /// The connect did not complete within the connect timeout.
    Timeout,
    /// The network or host was unreachable (no route, ICMP unreachable).
    Unreachable,
    /// Any other failure.
    Error,
}

impl ConnectResult {
    /// Every result, for the reference page and tests.
    pub const ALL: [ConnectResult; 5] = [
        Self::Success,
        Self::Refused,
        Self::Timeout,
        Self::Unreachable,
        Self::Error,
    ];

    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Error => "error",
        }
    }

    /// Classifies the operating system's error for a failed connect.
    pub fn from_io_error_kind(kind: io::ErrorKind) -> Self {
        match kind {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Self::Unreachable,
            _ => Self::Error,
        }
    }

    /// Classifies a session error as a connect failure, or returns `None`
    /// when the error happened after the connect completed.
    ///
    /// A timeout at [`Stage::NotConnected`] is a connect timeout.
    pub fn from_session_error(error: &SessionError) -> Option<Self> {
        match error {
            SessionError::Connect { kind, .. } => Some(Self::from_io_error_kind(*kind)),
            SessionError::Resolve { .. } => Some(Self::Error),
            SessionError::Timeout {
                stage: Stage::NotConnected,
                ..
            } => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// A TLS protocol version as a label value (`version` label of
/// `ec_tls_handshakes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
    /// Any other version name.
    Other,
}

impl TlsVersion {
    /// Every version, for the reference page and tests.
    pub const ALL: [TlsVersion; 3] = [Self::Tls12, Self::Tls13, Self::Other];

    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls12 => "tls1.2",
            Self::Tls13 => "tls1.3",
            Self::Other => "other",
        }
    }

    /// Maps a version name as TLS libraries print it (`TLSv1.3`, rustls's
    /// `TLSv1_3`, `TLS1.2`, in any case) to a label value. Unknown names
    /// become [`TlsVersion::Other`], so that a free-form string can never
    /// create a new series.
    pub fn from_name(name: &str) -> Self {
        let digits = name
            .trim()
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .replace('_', ".");
        match digits.as_str() {
            "1.2" => Self::Tls12,
            "1.3" => Self::Tls13,
            _ => Self::Other,
        }
    }
}

/// The result of a TLS handshake after STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsHandshakeResult {
    /// The handshake (and the certificate check the policy requires)
    /// succeeded with this protocol version.
    Established(TlsVersion),
    /// The handshake or the certificate check failed.
    Failed,
}

impl TlsHandshakeResult {
    /// Returns the `result` label value.
    pub fn result_str(self) -> &'static str {
        match self {
            Self::Established(_) => "established",
            Self::Failed => "failed",
        }
    }

    /// Returns the `version` label value, which is `none` for a failed
    /// handshake.
    pub fn version_str(self) -> &'static str {
        match self {
            Self::Established(version) => version.as_str(),
            Self::Failed => "none",
        }
    }
}

/// A recipient's outcome (`result` label of `ec_recipients_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecipientResult {
    /// The server accepted the message for the recipient.
    Delivered,
    /// A transient failure (4xx); the recipient is retried.
    Deferred,
    /// A permanent failure (5xx), or one the engine decided cannot succeed.
    Failed,
    /// The final dot was sent and no reply came; the recipient is retried.
    DeliveryUnknown,
}

impl RecipientResult {
    /// Every result, for the reference page and tests.
    pub const ALL: [RecipientResult; 4] = [
        Self::Delivered,
        Self::Deferred,
        Self::Failed,
        Self::DeliveryUnknown,
    ];

    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::DeliveryUnknown => "delivery_unknown",
        }
    }

    /// Classifies a recipient status, or returns `None` for a recipient
    /// that is still pending.
    pub fn from_status(status: &RecipientStatus) -> Option<Self> {
        match status {
            RecipientStatus::Delivered(_) => Some(Self::Delivered),
            RecipientStatus::Deferred(_) => Some(Self::Deferred),
            RecipientStatus::Failed(_) => Some(Self::Failed),
            RecipientStatus::DeliveryUnknown => Some(Self::DeliveryUnknown),
            _ => None,
        }
    }
}

/// The queue that an `ec_queue_messages` series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueKind {
    /// Messages ready to send.
    Active,
    /// Messages waiting for their retry time.
    Delayed,
}

impl QueueKind {
    /// Every queue, for the reference page and tests.
    pub const ALL: [QueueKind; 2] = [Self::Active, Self::Delayed];

    /// Returns the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Delayed => "delayed",
        }
    }
}

/// Returns the `class` label value of a reply class: its first digit
/// followed by `xx`, the way operators name reply classes.
pub fn reply_class_str(class: ReplyClass) -> &'static str {
    match class {
        ReplyClass::PositiveCompletion => "2xx",
        ReplyClass::PositiveIntermediate => "3xx",
        ReplyClass::TransientNegative => "4xx",
        ReplyClass::PermanentNegative => "5xx",
    }
}

/// Returns the `policy` label value of a TLS policy, spelled as in the
/// configuration.
pub fn tls_policy_str(policy: TlsPolicy) -> &'static str {
    match policy {
        TlsPolicy::Disabled => "disabled",
        TlsPolicy::Opportunistic => "opportunistic",
        TlsPolicy::Required => "required",
        TlsPolicy::Implicit => "implicit",
        // NOTE: `TlsPolicy` is non-exhaustive and has no `as_str`; a policy
        // added to ec-types shows up here as `other` until it is named.
        _ => "other",
    }
}

// NOTE: the lists below repeat the variants of `ec-types` enums that have
// no `ALL` constant. A variant added there is recorded correctly (through
// its `as_str`) but missing from the reference page until it is added here.

/// Every reply class.
pub const REPLY_CLASSES: [ReplyClass; 4] = [
    ReplyClass::PositiveCompletion,
    ReplyClass::PositiveIntermediate,
    ReplyClass::TransientNegative,
    ReplyClass::PermanentNegative,
];

/// Every TLS policy.
pub const TLS_POLICIES: [TlsPolicy; 4] = [
    TlsPolicy::Disabled,
    TlsPolicy::Opportunistic,
    TlsPolicy::Required,
    TlsPolicy::Implicit,
];

/// Every message fate.
pub const MESSAGE_FATES: [MessageFate; 5] = [
    MessageFate::Delivered,
    MessageFate::Requeued,
    MessageFate::Deferred,
    MessageFate::Failed,
    MessageFate::DeliveryUnknown,
];

/// Every connection state.
pub const CONNECTION_STATES: [ConnectionState; 4] = [
    ConnectionState::Connecting,
    ConnectionState::Idle,
    ConnectionState::Busy,
    ConnectionState::Closing,
];

/// Every session stage, in the order of their numeric codes.
pub const STAGES: [Stage; 12] = [
    Stage::NotConnected,
    Stage::Idle,
    Stage::Mail,
    Stage::Rcpt,
    Stage::Data,
    Stage::Body,
    Stage::Ehlo,
    Stage::Banner,
    Stage::Rset,
    Stage::StartTls,
    Stage::TlsHandshake,
    Stage::Quit,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_version_names() {
        assert_eq!(TlsVersion::from_name("TLSv1.3"), TlsVersion::Tls13);
        assert_eq!(TlsVersion::from_name("TLSv1_2"), TlsVersion::Tls12);
        assert_eq!(TlsVersion::from_name("tls1.2"), TlsVersion::Tls12);
        assert_eq!(TlsVersion::from_name("TLSv1.1"), TlsVersion::Other);
        assert_eq!(TlsVersion::from_name("SSLv3"), TlsVersion::Other);
        assert_eq!(TlsVersion::from_name(""), TlsVersion::Other);
    }

    #[test]
    fn connect_result_from_errors() {
        let refused = SessionError::Connect {
            target: "127.0.0.1:25".to_owned(),
            kind: io::ErrorKind::ConnectionRefused,
        };
        assert_eq!(
            ConnectResult::from_session_error(&refused),
            Some(ConnectResult::Refused)
        );

        let connect_timeout = SessionError::Timeout {
            stage: Stage::NotConnected,
            after: std::time::Duration::from_secs(30),
        };
        assert_eq!(
            ConnectResult::from_session_error(&connect_timeout),
            Some(ConnectResult::Timeout)
        );

        let banner_timeout = SessionError::Timeout {
            stage: Stage::Banner,
            after: std::time::Duration::from_secs(300),
        };
        assert_eq!(ConnectResult::from_session_error(&banner_timeout), None);

        assert_eq!(
            ConnectResult::from_io_error_kind(io::ErrorKind::NetworkUnreachable),
            ConnectResult::Unreachable
        );
        assert_eq!(
            ConnectResult::from_io_error_kind(io::ErrorKind::PermissionDenied),
            ConnectResult::Error
        );
    }

    #[test]
    fn failed_handshake_has_no_version() {
        assert_eq!(TlsHandshakeResult::Failed.version_str(), "none");
        assert_eq!(TlsHandshakeResult::Failed.result_str(), "failed");
        let established = TlsHandshakeResult::Established(TlsVersion::Tls13);
        assert_eq!(established.version_str(), "tls1.3");
        assert_eq!(established.result_str(), "established");
    }
}
