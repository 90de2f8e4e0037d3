//! Clear-text fallback for the opportunistic TLS policy.
//!
//! Under `opportunistic` a server that offers STARTTLS but whose TLS
//! handshake fails would fail the same way on every new connection, and
//! its mail would never leave. RFC 7435 section 3 lets opportunistic
//! security fall back to clear text, and Postfix's `may` level does so by
//! retrying without TLS. Here the fallback happens only on a new
//! connection, never inside the failed one: the driver remembers the
//! target for [`REMEMBER`], and the next connections to it skip STARTTLS.
//! `required` never falls back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ec_types::{OpenRequest, SessionError, SessionFailure, Stage, Target, TlsPolicy, TlsVerify};

/// How long a failed handshake keeps a target in clear text: long enough
/// that a queue of mail does not retry the broken handshake for each
/// connection, short enough that a repaired server gets TLS again soon.
pub(crate) const REMEMBER: Duration = Duration::from_secs(3600);

/// Targets whose STARTTLS handshake failed under `opportunistic`, each with
/// the time of its failure. Used only on the scheduler thread, in the
/// driver's `open` and `close`.
#[derive(Debug, Default)]
pub(crate) struct TlsFallback {
    failed: HashMap<Target, Instant>,
}

impl TlsFallback {
    /// Notes a session failure: a failed or stalled TLS handshake under
    /// `opportunistic` sends the target's next connections in clear text.
    pub(crate) fn note(
        &mut self,
        target: &Target,
        policy: TlsPolicy,
        verify: TlsVerify,
        failure: &SessionFailure,
        now: Instant,
    ) {
        let handshake_failed = matches!(
            failure.error,
            SessionError::TlsHandshake(_)
                | SessionError::Timeout {
                    stage: Stage::TlsHandshake,
                    ..
                }
        );
        // A failed verification under `ca` or `host` is the check the
        // operator asked for; falling back to clear text would give less
        // protection than not checking at all, so only an unverified
        // opportunistic session falls back.
        let unverified = verify == TlsVerify::None;
        if policy != TlsPolicy::Opportunistic || !handshake_failed || !unverified {
            return;
        }
        self.failed
            .retain(|_, at| now.duration_since(*at) < REMEMBER);
        self.failed.insert(target.clone(), now);
    }

    /// Turns STARTTLS off for `request` when its target's handshake failed
    /// within [`REMEMBER`] and the policy is `opportunistic`.
    pub(crate) fn apply(&mut self, request: &mut OpenRequest, now: Instant) {
        if request.settings.tls.policy != TlsPolicy::Opportunistic {
            return;
        }
        let Some(&failed_at) = self.failed.get(&request.target) else {
            return;
        };
        if now.duration_since(failed_at) >= REMEMBER {
            self.failed.remove(&request.target);
            return;
        }
        tracing::warn!(
            target = %request.target,
            domain = %request.domain,
            "STARTTLS handshake failed on an earlier connection; sending in clear text, as the opportunistic TLS policy allows"
        );
        Arc::make_mut(&mut request.settings).tls.policy = TlsPolicy::Disabled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: SessionError) -> SessionFailure {
        SessionFailure {
            error,
            stage: Stage::TlsHandshake,
            in_transaction: None,
            final_dot_sent: false,
        }
    }

    fn target() -> Target {
        Target::Host {
            host: "mx.example.com".to_owned(),
            port: 25,
        }
    }

    #[test]
    fn handshake_failure_is_remembered() {
        let mut fallback = TlsFallback::default();
        let now = Instant::now();
        let error = SessionError::TlsHandshake("received fatal alert".to_owned());

        fallback.note(
            &target(),
            TlsPolicy::Opportunistic,
            TlsVerify::None,
            &failure(error),
            now,
        );

        assert!(fallback.failed.contains_key(&target()));
    }

    #[test]
    fn required_never_falls_back() {
        let mut fallback = TlsFallback::default();
        let error = SessionError::TlsHandshake("received fatal alert".to_owned());

        fallback.note(
            &target(),
            TlsPolicy::Required,
            TlsVerify::None,
            &failure(error),
            Instant::now(),
        );

        assert!(fallback.failed.is_empty());
    }

    #[test]
    fn other_failures_are_ignored() {
        let mut fallback = TlsFallback::default();
        let error = SessionError::StartTlsInjection { len: 10 };

        fallback.note(
            &target(),
            TlsPolicy::Opportunistic,
            TlsVerify::None,
            &failure(error),
            Instant::now(),
        );

        assert!(fallback.failed.is_empty());
    }

    #[test]
    fn failed_verification_never_falls_back() {
        let mut fallback = TlsFallback::default();
        for verify in [TlsVerify::Ca, TlsVerify::Host] {
            let error =
                SessionError::TlsHandshake("invalid peer certificate: UnknownIssuer".to_owned());

            fallback.note(
                &target(),
                TlsPolicy::Opportunistic,
                verify,
                &failure(error),
                Instant::now(),
            );

            assert!(fallback.failed.is_empty(), "{verify:?}");
        }
    }
}
