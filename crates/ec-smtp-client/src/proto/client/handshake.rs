//! From the banner to the ready session: EHLO or HELO, and STARTTLS as the
//! TLS policy decides.

use ec_types::{Reply, ReplyClass, TlsPolicy};

use super::event::{ClientError, TlsUnavailable};
use super::state::State;
use super::Client;
use crate::proto::capabilities::Capabilities;
use crate::proto::command::Command;

impl Client {
    pub(super) fn on_banner(&mut self, reply: Reply) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                self.send_greeting(false);
                Ok(State::ExpectEhlo)
            }
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            _ => Err(ClientError::BannerRejected(reply)),
        }
    }

    pub(super) fn on_ehlo(&mut self, reply: Reply) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                let capabilities = Capabilities::from_ehlo(&reply);
                self.after_greeting(capabilities)
            }
            // RFC 5321 section 4.1.4: a server that does not implement EHLO
            // replies 5xx, and the client may fall back to HELO.
            ReplyClass::PermanentNegative => {
                tracing::debug!(%reply, "EHLO rejected; trying HELO");
                self.send_greeting(true);
                Ok(State::ExpectHelo)
            }
            ReplyClass::TransientNegative => Err(ClientError::EhloRejected(reply)),
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
        }
    }

    pub(super) fn on_helo(&mut self, reply: Reply) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                let capabilities = Capabilities::from_helo(&reply);
                self.after_greeting(capabilities)
            }
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            _ => Err(ClientError::HeloRejected(reply)),
        }
    }

    /// Decides on STARTTLS after the first EHLO or HELO reply.
    fn after_greeting(&mut self, capabilities: Capabilities) -> Result<State, ClientError> {
        if self.tls {
            // Implicit TLS: a second handshake inside the first is never
            // wanted, whatever the server offers.
            return Ok(self.ready(capabilities));
        }
        let offered = capabilities.starttls;
        self.capabilities = Some(capabilities.clone());

        if offered && self.config.tls_policy != TlsPolicy::Disabled {
            self.send_command(Command::StartTls);
            return Ok(State::ExpectStartTls);
        }
        if self.tls_required() {
            return Err(ClientError::TlsUnavailable(TlsUnavailable::NotOffered));
        }
        Ok(self.ready(capabilities))
    }

    /// Returns whether the policy forbids mail in clear text. A policy this
    /// crate does not handle yet counts as required, the safe side.
    fn tls_required(&self) -> bool {
        !matches!(
            self.config.tls_policy,
            TlsPolicy::Disabled | TlsPolicy::Opportunistic
        )
    }

    pub(super) fn on_starttls(&mut self, reply: Reply) -> Result<State, ClientError> {
        match reply.class() {
            // The driver hears of it only after `drain_replies` has checked
            // that nothing followed the 220.
            ReplyClass::PositiveCompletion => Ok(State::ExpectTlsHandshake),
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            _ if self.tls_required() => {
                Err(ClientError::TlsUnavailable(TlsUnavailable::Rejected(reply)))
            }
            // Opportunistic: nothing was negotiated and the session is in
            // step, so RFC 3207 section 4 lets the client carry on in clear
            // text with what the first EHLO offered.
            _ => {
                tracing::warn!(%reply, "STARTTLS rejected; continuing without TLS");
                let capabilities = self.capabilities.take().unwrap_or_default();
                Ok(self.ready(capabilities))
            }
        }
    }

    pub(super) fn on_ehlo_after_tls(&mut self, reply: Reply) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                let capabilities = Capabilities::from_ehlo(&reply);
                Ok(self.ready(capabilities))
            }
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            // A server that offered STARTTLS implements EHLO, so HELO is not
            // tried.
            _ => Err(ClientError::EhloRejected(reply)),
        }
    }
}
