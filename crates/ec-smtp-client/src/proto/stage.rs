//! The Momentum stage codes, which logs and `closeconn` use to say where a
//! connection was when something happened.
//!
//! The type lives in `ec-types`, so the scheduler and the delivery log can
//! name it without depending on this crate. It is re-exported here beside
//! the state machine that tracks it ([`Client::stage`](super::Client::stage)).
//! The codes are: 0 not connected, 1 idle, 2 MAIL, 3 RCPT, 4 DATA, 5 message
//! data and final dot, 6 EHLO or HELO, 7 banner, 8 RSET, 9 STARTTLS, 10 TLS
//! handshake, 11 QUIT.

pub use ec_types::Stage;
