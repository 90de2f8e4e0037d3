//! One mail transaction: RSET, MAIL, RCPT, DATA, the message data and the
//! final reply (RFC 5321 section 3.3), pipelined or not (RFC 2920), or with
//! the data as one BDAT LAST chunk in the pipelined group (RFC 3030).

use bytes::Bytes;
use ec_types::{Reply, ReplyClass};

use super::event::{ClientError, ClientEvent, TransactionEnd};
use super::state::{InFlight, State};
use super::{Client, TransmitParts};
use crate::proto::data::END_OF_DATA;

impl Client {
    pub(super) fn on_rset(
        &mut self,
        mut in_flight: Box<InFlight>,
        reply: Reply,
    ) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                self.send_next(&mut in_flight);
                Ok(State::ExpectMail(in_flight))
            }
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            _ => Err(ClientError::RsetRejected(reply)),
        }
    }

    pub(super) fn on_mail(
        &mut self,
        mut in_flight: Box<InFlight>,
        reply: Reply,
    ) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveCompletion => {
                self.send_next(&mut in_flight);
                Ok(State::ExpectRcpt(in_flight))
            }
            ReplyClass::PositiveIntermediate => Err(self.unexpected(reply)),
            _ => {
                let event = ClientEvent::MailRejected {
                    reply: reply.clone(),
                };
                self.events.push_back(event);
                if !in_flight.pipelined {
                    return Ok(self.finish(TransactionEnd::MailRejected { reply }));
                }
                // The RCPT and DATA replies of the group are still coming;
                // read them before the session is idle again.
                in_flight.mail_rejected = Some(reply);
                self.undeliverable = true;
                Ok(State::ExpectRcpt(in_flight))
            }
        }
    }

    pub(super) fn on_rcpt(
        &mut self,
        mut in_flight: Box<InFlight>,
        reply: Reply,
    ) -> Result<State, ClientError> {
        if reply.class() == ReplyClass::PositiveIntermediate {
            return Err(self.unexpected(reply));
        }

        if in_flight.mail_rejected.is_none() {
            if reply.is_positive_completion() {
                in_flight.accepted += 1;
            }
            let index = in_flight.next_rcpt;
            self.events
                .push_back(ClientEvent::RecipientReply { index, reply });
        }
        in_flight.next_rcpt += 1;

        if in_flight.next_rcpt < in_flight.recipients {
            self.send_next(&mut in_flight);
            return Ok(State::ExpectRcpt(in_flight));
        }
        if in_flight.accepted == 0 {
            self.undeliverable = true;
        }
        if in_flight.chunked {
            return Ok(State::ExpectDataReply(in_flight));
        }
        if in_flight.pipelined {
            return Ok(State::ExpectData(in_flight));
        }

        // Without PIPELINING, DATA waits for an accepted recipient.
        if in_flight.accepted == 0 {
            return Ok(self.finish(TransactionEnd::NoValidRecipients));
        }
        self.send_next(&mut in_flight);
        Ok(State::ExpectData(in_flight))
    }

    pub(super) fn on_data(
        &mut self,
        mut in_flight: Box<InFlight>,
        reply: Reply,
    ) -> Result<State, ClientError> {
        match reply.class() {
            ReplyClass::PositiveIntermediate if in_flight.accepted == 0 => {
                // RFC 2920 section 3.1: when no RCPT succeeded but DATA got
                // 354 anyway, the client sends a lone dot, an empty message
                // that the server must reject for lack of recipients. The
                // message data is never sent.
                tracing::debug!(%reply, "354 without accepted recipients; sending only the final dot");
                in_flight.lone_dot = true;
                in_flight.data = None;
                super::log_commands(END_OF_DATA);
                self.queue(Bytes::from_static(END_OF_DATA), false);
                self.pipeline_quit();
                Ok(State::ExpectDataReply(in_flight))
            }
            ReplyClass::PositiveIntermediate => {
                let data = in_flight
                    .data
                    .take()
                    .unwrap_or_else(|| TransmitParts::whole(Bytes::new()));
                tracing::debug!(octets = data.len(), "message data and final dot");
                self.queue_parts(data, true);
                self.pipeline_quit();
                Ok(State::ExpectDataReply(in_flight))
            }
            ReplyClass::PositiveCompletion => Err(self.unexpected(reply)),
            _ => Ok(self.finish_unsent(&mut in_flight, reply)),
        }
    }

    pub(super) fn on_data_reply(
        &mut self,
        mut in_flight: Box<InFlight>,
        reply: Reply,
    ) -> Result<State, ClientError> {
        if reply.class() == ReplyClass::PositiveIntermediate {
            return Err(self.unexpected(reply));
        }

        if in_flight.lone_dot {
            if reply.is_positive_completion() {
                tracing::warn!(%reply, "server accepted an empty message without recipients");
            }
            return Ok(self.finish_without_recipients(&mut in_flight));
        }
        if in_flight.chunked && in_flight.accepted == 0 {
            // The chunk went with the commands, before any RCPT reply; a
            // server that accepted it anyway had no recipient to give it to.
            if reply.is_positive_completion() {
                tracing::warn!(%reply, "server accepted a BDAT chunk without recipients");
            }
            return Ok(self.finish_without_recipients(&mut in_flight));
        }

        let end = if reply.is_positive_completion() {
            TransactionEnd::Delivered { reply }
        } else {
            TransactionEnd::MessageRejected { reply }
        };
        Ok(self.finish(end))
    }

    /// Sends the next waiting command; a pipelined transaction has none.
    fn send_next(&mut self, in_flight: &mut InFlight) {
        if let Some(command) = in_flight.unsent.pop_front() {
            super::log_commands(&command);
            self.queue(command, false);
        }
    }

    /// Ends a transaction whose DATA was rejected.
    fn finish_unsent(&mut self, in_flight: &mut InFlight, reply: Reply) -> State {
        if in_flight.accepted == 0 {
            return self.finish_without_recipients(in_flight);
        }
        self.finish(TransactionEnd::DataRejected { reply })
    }

    /// Ends a transaction in which no recipient was accepted, because MAIL
    /// or every RCPT was rejected.
    fn finish_without_recipients(&mut self, in_flight: &mut InFlight) -> State {
        match in_flight.mail_rejected.take() {
            Some(reply) => self.finish(TransactionEnd::MailRejected { reply }),
            None => self.finish(TransactionEnd::NoValidRecipients),
        }
    }

    /// Ends the transaction. The session is then ready for the next one,
    /// or waits for the reply to QUIT when QUIT was due after this one
    /// (queued now if it did not go with the message data).
    fn finish(&mut self, end: TransactionEnd) -> State {
        tracing::debug!(?end, "transaction finished");
        self.events.push_back(ClientEvent::TransactionFinished(end));
        self.data_handed_out = false;
        self.undeliverable = false;
        if std::mem::take(&mut self.quit_after) {
            self.queue_quit();
            return State::ExpectQuit;
        }
        State::Ready
    }
}
