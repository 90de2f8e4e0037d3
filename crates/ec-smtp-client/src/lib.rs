//! The SMTP client of `ec`, an outbound SMTP delivery engine.
//!
//! [`proto`] is the protocol core without I/O: the reply parser, the EHLO
//! capability parser, the command and message data encoders, and the
//! session state machine [`proto::Client`]. It takes bytes and the current
//! time and returns bytes to write, events and deadlines, so it runs the
//! same against a socket or a scripted test peer.
//!
//! # Example
//!
//! A whole session in virtual time, with the server's replies written out:
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use ec_smtp_client::proto::{Client, ClientConfig, ClientEvent, Transaction, TransactionEnd};
//!
//! let now = Instant::now();
//! let mut client = Client::new(ClientConfig::new("client.example.org"), now)?;
//!
//! client.handle_input(b"220 mx.example.com ESMTP\r\n", now);
//! assert_eq!(client.poll_transmit().unwrap(), "EHLO client.example.org\r\n");
//! client.handle_input(b"250-mx.example.com\r\n250 PIPELINING\r\n", now);
//! assert!(matches!(client.poll_event(), Some(ClientEvent::Ready { .. })));
//!
//! let transaction = Transaction {
//!     reverse_path: "sender@example.org".into(),
//!     recipients: vec!["rcpt@example.com".into()],
//!     data: Bytes::from_static(b"Subject: hi\n\nHello.\n"),
//! };
//! client.start_transaction(transaction, now)?;
//! assert_eq!(
//!     client.poll_transmit().unwrap(),
//!     "MAIL FROM:<sender@example.org>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n"
//! );
//! client.handle_input(b"250 ok\r\n250 ok\r\n354 go ahead\r\n", now);
//! assert_eq!(client.poll_transmit().unwrap(), "Subject: hi\r\n\r\nHello.\r\n.\r\n");
//! client.handle_transmitted(now);
//!
//! client.handle_input(b"250 2.0.0 queued\r\n", now);
//! let _recipient = client.poll_event();
//! assert!(matches!(
//!     client.poll_event(),
//!     Some(ClientEvent::TransactionFinished(TransactionEnd::Delivered { .. }))
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod closeconn;
mod driver;
mod engine;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod proto;
pub mod tls;

pub use closeconn::closeconn;
pub use driver::{EventSink, SmtpDriver};
pub use engine::{Engine, EngineOptions};

/// Compiles the examples of `docs/library.md` as doc tests, so the guide
/// stays in step with the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/library.md")]
struct LibraryGuide;
