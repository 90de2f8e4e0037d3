//! A mail transaction as the caller hands it in, and its preparation: every
//! command and the message data are encoded before the first byte is sent,
//! so a bad address or an oversized message fails without touching the
//! connection.

use std::collections::VecDeque;
use std::fmt;

use bytes::Bytes;
use thiserror::Error;

use super::state::{ClientState, InFlight};
use super::TransmitParts;
use crate::proto::capabilities::Capabilities;
use ec_types::{EnhancedStatusCode, LongLines};

use super::ClientConfig;
use crate::proto::command::{Command, CommandError, Field, MailParameters};
use crate::proto::data::{self, LongLine, MAX_TEXT_LINE_LEN};

/// One message to send: MAIL FROM, the RCPT TO list and the data.
#[derive(Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reverse path without angle brackets; empty for the null path
    /// `<>`.
    pub reverse_path: String,
    /// The forward paths without angle brackets, in order. Events name
    /// recipients by their index here.
    pub recipients: Vec<String>,
    /// The message (RFC 5322 header and body) with any line endings; it is
    /// normalized to CRLF and dot-stuffed on the way out.
    pub data: Bytes,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("reverse_path", &self.reverse_path)
            .field("recipients", &self.recipients)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Why [`Client::start_transaction`](super::Client::start_transaction)
/// did not start a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The session is not in [`ClientState::Ready`]; the message was not
    /// attempted.
    #[error("the session is {0:?}, not ready for a transaction; wait for the Ready event or a TransactionFinished")]
    NotReady(ClientState),
    /// The transaction has no recipients.
    #[error("the transaction has no recipients")]
    NoRecipients,
    /// A command could not be encoded, or the message cannot go to this
    /// server (SIZE, SMTPUTF8).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A line of the message is longer than RFC 5321 section 4.5.3.1.6
    /// allows, and [`ClientConfig::long_lines`] is set to reject such
    /// messages.
    #[error(
        "line {} of the message is {} octets long, over SMTP's limit of {MAX_TEXT_LINE_LEN} \
         (RFC 5321 section 4.5.3.1.6); encode the body as quoted-printable or base64, \
         or set long_lines = \"send\" for a server that takes long lines",
        .0.number, .0.len
    )]
    LongLine(LongLine),
}

impl TransactionError {
    /// Returns whether the message itself cannot be sent to this server, so
    /// the caller fails it permanently. `false` means the message was not
    /// attempted and goes back to its queue.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::NoRecipients | Self::Command(_) | Self::LongLine(_)
        )
    }

    /// Returns the RFC 3463 status code for the failure of a message that
    /// was not started for this reason.
    pub fn status_code(&self) -> EnhancedStatusCode {
        let (subject, detail) = match self {
            // Other or undefined status.
            Self::NotReady(_) | Self::NoRecipients => (0, 0),
            // Conversion required but not supported.
            Self::LongLine(_) => (6, 3),
            Self::Command(CommandError::MessageTooLarge { .. }) => (3, 4),
            // RFC 6531 section 3.7.4.1: non-ASCII addresses not permitted.
            Self::Command(CommandError::Smtputf8NotOffered { .. }) => (6, 7),
            Self::Command(CommandError::LineTooLong { .. }) => (5, 2),
            // Bad sender's or destination mailbox address syntax.
            Self::Command(error) if error.field() == Some(Field::ReversePath) => (1, 7),
            Self::Command(_) => (1, 3),
        };
        let class = if self.is_permanent() { 5 } else { 4 };
        EnhancedStatusCode::new(class, subject, detail).expect("a valid RFC 3463 code")
    }
}

/// A transaction that was not started, handed back with the reason, so the
/// caller still owns the message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct RejectedTransaction {
    /// The reason it was not started.
    pub error: TransactionError,
    /// The transaction, unchanged.
    pub transaction: Transaction,
}

/// The encoded transaction and the bytes to send first.
pub(super) struct Prepared {
    pub(super) in_flight: InFlight,
    pub(super) first_transmit: TransmitParts,
    /// The first transmit carries the message data (BDAT).
    pub(super) first_is_data: bool,
}

/// Encodes every command and the data of `transaction`.
///
/// With `rset`, the group starts with RSET. With PIPELINING the first
/// transmit is the whole group up to DATA, because RFC 2920 section 3.1
/// allows RSET, MAIL and RCPT anywhere in a group and DATA as its last
/// command. Without PIPELINING it is the first command alone, and the rest
/// wait in `unsent`.
///
/// With `chunking` and a server that offers both PIPELINING and CHUNKING,
/// the message goes as one `BDAT <size> LAST` chunk instead of DATA. The
/// first transmit is then the whole transaction: the commands, the BDAT
/// line and the data (RFC 3030 section 4.2 allows BDAT in a pipelined
/// group). That saves the round trip that DATA's 354 costs.
pub(super) fn prepare(
    transaction: &Transaction,
    capabilities: &Capabilities,
    rset: bool,
    config: &ClientConfig,
) -> Result<Prepared, TransactionError> {
    if transaction.recipients.is_empty() {
        return Err(TransactionError::NoRecipients);
    }

    let info = data::measure(&transaction.data);
    if let (Some(line), LongLines::Reject) = (info.long_line, config.long_lines) {
        return Err(TransactionError::LongLine(line));
    }
    let params = MailParameters::negotiate(
        capabilities,
        &transaction.reverse_path,
        &transaction.recipients,
        &info,
    )?;

    let mut commands = Vec::with_capacity(transaction.recipients.len() + 3);
    if rset {
        commands.push(Command::Rset.to_bytes()?);
    }
    let mail = Command::Mail {
        reverse_path: &transaction.reverse_path,
        params,
    };
    commands.push(mail.to_bytes()?);
    for recipient in &transaction.recipients {
        let rcpt = Command::Rcpt {
            forward_path: recipient,
            smtputf8: params.smtputf8,
        };
        commands.push(rcpt.to_bytes()?);
    }

    if config.chunking && capabilities.chunking && capabilities.pipelining {
        let chunk = if info.chunk_unchanged {
            transaction.data.clone()
        } else {
            let mut chunk = Vec::with_capacity(info.size as usize);
            data::encode_chunk_into(&transaction.data, &mut chunk);
            Bytes::from(chunk)
        };
        let bdat = Command::Bdat {
            size: chunk.len() as u64,
            last: true,
        };
        commands.push(bdat.to_bytes()?);
        let in_flight = InFlight {
            pipelined: true,
            chunked: true,
            unsent: VecDeque::new(),
            recipients: transaction.recipients.len(),
            next_rcpt: 0,
            accepted: 0,
            mail_rejected: None,
            data: None,
            lone_dot: false,
        };
        return Ok(Prepared {
            in_flight,
            first_transmit: TransmitParts {
                head: Bytes::from(commands.concat()),
                tail: chunk,
            },
            first_is_data: true,
        });
    }
    commands.push(Command::Data.to_bytes()?);

    let data = if info.unchanged {
        TransmitParts {
            head: transaction.data.clone(),
            tail: Bytes::from_static(data::END_OF_DATA),
        }
    } else {
        let mut wire = Vec::with_capacity(info.encoded_len);
        data::encode_into(&transaction.data, &mut wire);
        TransmitParts::whole(Bytes::from(wire))
    };

    let pipelined = capabilities.pipelining;
    let (first_transmit, unsent) = if pipelined {
        (Bytes::from(commands.concat()), VecDeque::new())
    } else {
        let mut unsent: VecDeque<Bytes> = commands.into_iter().map(Bytes::from).collect();
        let first = unsent.pop_front().unwrap_or_default();
        (first, unsent)
    };

    let in_flight = InFlight {
        pipelined,
        chunked: false,
        unsent,
        recipients: transaction.recipients.len(),
        next_rcpt: 0,
        accepted: 0,
        mail_rejected: None,
        data: Some(data),
        lone_dot: false,
    };
    Ok(Prepared {
        in_flight,
        first_transmit: TransmitParts::whole(first_transmit),
        first_is_data: false,
    })
}
