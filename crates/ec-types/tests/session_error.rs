//! The text of session errors that reach logs and the delivery log.

use std::time::Duration;

use ec_types::{SessionError, Stage};

#[test]
fn banner_timeout_names_implicit_tls() {
    let error = SessionError::Timeout {
        stage: Stage::Banner,
        after: Duration::from_secs(300),
    };

    let text = error.to_string();
    assert!(
        text.starts_with("timed out at stage 7 (banner) after 300s"),
        "{text}"
    );
    assert!(text.contains("no 220 greeting"), "{text}");
    assert!(text.contains("465"), "{text}");
}

#[test]
fn other_timeouts_have_no_hint() {
    let error = SessionError::Timeout {
        stage: Stage::Body,
        after: Duration::from_secs(600),
    };

    assert_eq!(error.to_string(), "timed out at stage 5 (body) after 600s");
}

#[test]
fn refused_connect_says_what_to_check() {
    let error = SessionError::Connect {
        target: "127.0.0.1:2525".to_owned(),
        kind: std::io::ErrorKind::ConnectionRefused,
    };

    let text = error.to_string();
    assert!(
        text.starts_with("connect to 127.0.0.1:2525 failed: connection refused; "),
        "{text}"
    );
    assert!(text.contains("check that the server runs"), "{text}");
}

#[test]
fn other_connect_errors_have_no_hint() {
    let error = SessionError::Connect {
        target: "127.0.0.1:2525".to_owned(),
        kind: std::io::ErrorKind::AddrNotAvailable,
    };

    assert_eq!(
        error.to_string(),
        "connect to 127.0.0.1:2525 failed: address not available"
    );
}

#[test]
fn null_mx_fails_with_556() {
    let error = SessionError::NullMx {
        domain: "example.com".to_owned(),
    };

    assert!(error.to_string().contains("null MX"), "{error}");
    assert_eq!(error.close_reason(), ec_types::CloseReason::ConnectFailed);
    let reply = error.permanent_reply().expect("a null MX is permanent");
    assert_eq!(reply.code.as_u16(), 556);
    assert_eq!(
        reply.enhanced.map(|code| code.to_string()).as_deref(),
        Some("5.1.10")
    );
    assert!(reply.local);
    assert!(reply.to_string().contains("example.com"), "{reply}");
}

#[test]
fn missing_domain_fails_with_550() {
    let error = SessionError::DomainNotFound {
        domain: "no-such.example".to_owned(),
    };

    let reply = error.permanent_reply().expect("NXDOMAIN is permanent");
    assert_eq!(reply.code.as_u16(), 550);
    assert_eq!(
        reply.enhanced.map(|code| code.to_string()).as_deref(),
        Some("5.1.2")
    );
}

#[test]
fn other_errors_defer() {
    let resolve = SessionError::Resolve {
        host: "example.com".to_owned(),
        message: "SERVFAIL".to_owned(),
    };
    assert!(resolve.permanent_reply().is_none());
    let refused = SessionError::Connect {
        target: "mx.example.com (192.0.2.1:25)".to_owned(),
        kind: std::io::ErrorKind::ConnectionRefused,
    };
    assert!(refused.permanent_reply().is_none());
}

#[test]
fn close_at_banner_names_implicit_tls() {
    let error = SessionError::PeerClosed {
        stage: Stage::Banner,
    };
    let text = error.to_string();
    assert!(text.contains("465"), "{text}");
    assert!(text.contains("implicit"), "{text}");

    let later = SessionError::PeerClosed { stage: Stage::Body };
    assert!(!later.to_string().contains("465"), "{later}");
}
