//! A whole client session driven by arbitrary server bytes, EOFs, timeouts
//! and driver calls, in virtual time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ec_types::TlsPolicy;

use super::script::Script;
use crate::proto::{Client, ClientConfig, ClientEvent, ClientState, ReplyLimits, Transaction};

/// Repeats per unit of a repeat step's count byte: up to 255 × 64 copies of
/// a chunk of up to 255 octets, about 4 MiB, well past the default limits.
const REPEAT_UNIT: usize = 64;

/// Events one step may report beyond one per recipient: a Ready or StartTls
/// or TransactionFinished, and up to two Failed (a session that fails in step
/// with the server fails again on its next reply). A MailRejected takes the
/// place of the RecipientReply events that a rejected MAIL suppresses.
const EXTRA_EVENTS_PER_STEP: usize = 4;

/// Runs a [`Client`] through a script of server input and driver calls.
/// Whenever the session is [`ClientState::Ready`] and idle, the harness
/// starts a transaction, until it has started as many as the script sets.
///
/// The input is a script:
///
/// 1. a flag byte: TLS policy (`% 3`: disabled, opportunistic, required;
///    required becomes implicit when `/ 27` is odd), recipients per
///    transaction (`/ 3 % 3 + 1`) and transactions per session
///    (`/ 9 % 3 + 1`; each one after the first starts with RSET);
/// 2. the reply limits, read as by [`check_reply_parser`](super::check_reply_parser);
/// 3. a length byte and that many octets of message data;
/// 4. steps until the input ends, each an opcode byte `% 9`:
///    0 input chunk (length byte, then the chunk), 1 repeated input (length
///    byte, chunk, then a count byte; the chunk is sent `count × 64` times),
///    2 EOF, 3 the running timer expires, 4 the clock moves on by a byte's
///    worth of seconds, 5 the driver writes every buffer, 6 the driver
///    reports the TLS handshake done, 7 QUIT, 8 abort.
///
/// At the end the server closes the connection.
///
/// # Panics
///
/// Panics when the session buffers more than `max_buffered` octets of input,
/// reports a transaction end without a transaction or a transaction without
/// exactly one end, reports Ready twice or a recipient out of order, reports
/// a MAIL rejection twice or alongside a RCPT reply in one transaction, is in a
/// transaction state without an open transaction (or the reverse), keeps a
/// timer or bytes to write after it closed, reports more events in one step
/// than one per recipient plus four, reports STARTTLS or a clear-text Ready
/// under implicit TLS, or when an API call succeeds or fails in a state
/// where its documentation says otherwise.
pub fn check_client_session(input: &[u8]) {
    let mut script = Script::new(input);
    let mut harness = Harness::new(&mut script);
    while !script.is_empty() {
        harness.step(&mut script);
        harness.check_after_step();
    }
    harness.finish();
}

/// The driver side of the session and what it has seen.
struct Harness {
    client: Client,
    now: Instant,
    limits: ReplyLimits,
    transaction: Transaction,
    transactions_left: u8,
    /// The RecipientReply events of the open transaction so far; `None`
    /// when no transaction is open.
    open: Option<usize>,
    /// The open transaction reported MailRejected.
    mail_rejected: bool,
    ready_events: usize,
    /// `quit_after_transaction` succeeded: the session must never be
    /// ready again.
    quit_after: bool,
    /// The session runs under implicit TLS: it must never ask for STARTTLS
    /// and must report Ready over TLS.
    implicit_tls: bool,
}

impl Harness {
    fn new(script: &mut Script<'_>) -> Self {
        let flags = script.byte();
        let limits = script.reply_limits();
        let data_len = usize::from(script.byte());
        let data = Bytes::copy_from_slice(script.bytes(data_len));

        let mut config = ClientConfig::new("client.example.org");
        config.tls_policy = match flags % 3 {
            0 => TlsPolicy::Disabled,
            1 => TlsPolicy::Opportunistic,
            _ if flags / 27 % 2 == 1 => TlsPolicy::Implicit,
            _ => TlsPolicy::Required,
        };
        let implicit_tls = config.tls_policy == TlsPolicy::Implicit;
        config.reply_limits = limits;
        let now = Instant::now();
        let client = Client::new(config, now).expect("client.example.org is a valid EHLO domain");

        let recipients = usize::from(flags / 3 % 3) + 1;
        let transactions = flags / 9 % 3 + 1;
        let transaction = Transaction {
            reverse_path: "sender@example.org".into(),
            recipients: (0..recipients)
                .map(|index| format!("rcpt{index}@example.com"))
                .collect(),
            data,
        };

        Self {
            client,
            now,
            limits,
            transaction,
            transactions_left: transactions,
            open: None,
            mail_rejected: false,
            ready_events: 0,
            quit_after: false,
            implicit_tls,
        }
    }

    fn step(&mut self, script: &mut Script<'_>) {
        match script.byte() % 10 {
            0 => {
                let len = usize::from(script.byte());
                self.client.handle_input(script.bytes(len), self.now);
            }
            1 => {
                let len = usize::from(script.byte());
                let chunk = script.bytes(len);
                let count = usize::from(script.byte()) * REPEAT_UNIT;
                self.repeat_input(chunk, count);
            }
            2 => self.client.handle_eof(self.now),
            3 => {
                if let Some(deadline) = self.client.next_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.client.handle_timeout(self.now);
            }
            4 => {
                self.now += Duration::from_secs(script.byte().into());
                self.client.handle_timeout(self.now);
            }
            5 => self.write_all(),
            6 => self.establish_tls(),
            7 => self.quit(),
            8 => self.quit_after_transaction(),
            _ => self.client.abort(),
        }
    }

    /// Sends `chunk` `count` times, checking the buffer bound after each.
    fn repeat_input(&mut self, chunk: &[u8], count: usize) {
        for _ in 0..count {
            if self.client.state() == ClientState::Closed {
                break;
            }
            self.client.handle_input(chunk, self.now);
            self.check_buffer();
        }
    }

    fn write_all(&mut self) {
        while let Some(bytes) = self.client.poll_transmit() {
            assert!(!bytes.is_empty(), "poll_transmit returned an empty buffer");
            assert!(
                !(self.implicit_tls && bytes.starts_with(b"STARTTLS")),
                "STARTTLS sent under implicit TLS"
            );
        }
        self.client.handle_transmitted(self.now);
    }

    fn establish_tls(&mut self) {
        let allowed = self.client.state() == ClientState::ExpectTlsHandshake;
        let result = self.client.tls_established(self.now);
        assert_eq!(
            result.is_ok(),
            allowed,
            "tls_established returned {result:?}"
        );
    }

    fn quit(&mut self) {
        let state = self.client.state();
        let idle = matches!(state, ClientState::Ready | ClientState::Unusable);
        assert_eq!(
            self.client.quit(self.now),
            idle,
            "quit() in state {state:?}"
        );
    }

    fn quit_after_transaction(&mut self) {
        let state = self.client.state();
        let result = self.client.quit_after_transaction();
        assert_eq!(
            result.is_ok(),
            state.in_transaction(),
            "quit_after_transaction() in state {state:?}"
        );
        self.quit_after |= result.is_ok();
    }

    fn check_after_step(&mut self) {
        self.check_buffer();
        self.drain_events();
        self.check_state();
        self.start_transaction();
        self.check_state();
    }

    fn check_buffer(&self) {
        let buffered = self.client.buffered_len();
        assert!(
            buffered <= self.limits.max_buffered,
            "the session holds {buffered} octets of input, more than max_buffered {}",
            self.limits.max_buffered
        );
    }

    fn drain_events(&mut self) {
        let recipients = self.transaction.recipients.len();
        let mut count = 0;
        while let Some(event) = self.client.poll_event() {
            count += 1;
            match event {
                ClientEvent::Ready { tls, .. } => {
                    self.ready_events += 1;
                    assert_eq!(self.ready_events, 1, "Ready reported twice");
                    assert!(
                        tls || !self.implicit_tls,
                        "Ready in clear text under implicit TLS"
                    );
                }
                ClientEvent::StartTls => {
                    assert!(!self.implicit_tls, "STARTTLS under implicit TLS");
                }
                ClientEvent::RecipientReply { index, .. } => {
                    let reported = self
                        .open
                        .as_mut()
                        .expect("RecipientReply without an open transaction");
                    assert!(!self.mail_rejected, "RecipientReply after MailRejected");
                    assert_eq!(index, *reported, "RecipientReply out of order");
                    assert!(index < recipients, "RecipientReply for recipient {index}");
                    *reported += 1;
                }
                ClientEvent::MailRejected { .. } => {
                    let reported = self.open.expect("MailRejected without an open transaction");
                    assert_eq!(reported, 0, "MailRejected after a RecipientReply");
                    assert!(!self.mail_rejected, "MailRejected twice in one transaction");
                    self.mail_rejected = true;
                }
                ClientEvent::TransactionFinished(end) => {
                    assert!(
                        self.open.take().is_some(),
                        "TransactionFinished({end:?}) without an open transaction"
                    );
                }
                _ => {}
            }
        }
        assert!(
            count <= recipients + EXTRA_EVENTS_PER_STEP,
            "{count} events in one step with {recipients} recipients"
        );
    }

    fn check_state(&mut self) {
        let state = self.client.state();
        assert_eq!(
            self.open.is_some(),
            state.in_transaction(),
            "open transaction {:?} in state {state:?}",
            self.open
        );
        if self.quit_after {
            assert_ne!(
                state,
                ClientState::Ready,
                "ready again after quit_after_transaction()"
            );
        }
        if state == ClientState::Closed {
            assert_eq!(self.client.next_timeout(), None, "a timer runs after close");
            assert!(
                self.client.poll_transmit().is_none(),
                "bytes to write after close"
            );
        }
    }

    fn start_transaction(&mut self) {
        if self.client.state() != ClientState::Ready || self.transactions_left == 0 {
            return;
        }

        match self
            .client
            .start_transaction(self.transaction.clone(), self.now)
        {
            Ok(()) => {
                self.transactions_left -= 1;
                self.open = Some(0);
                self.mail_rejected = false;
            }
            Err(rejected) => {
                // SIZE may rule the message out; only that may fail here.
                assert!(
                    rejected.error.is_permanent(),
                    "a ready session rejected a transaction: {}",
                    rejected.error
                );
                assert_eq!(
                    rejected.transaction, self.transaction,
                    "transaction not handed back unchanged"
                );
                self.transactions_left = 0;
            }
        }
    }

    /// The server closes the connection; then the driver aborts, which must
    /// find nothing left to end.
    fn finish(mut self) {
        self.client.handle_eof(self.now);
        self.drain_events();
        assert_eq!(self.client.state(), ClientState::Closed, "state after EOF");
        assert_eq!(self.open, None, "a transaction never finished");
        self.check_state();

        self.client.abort();
        assert_eq!(
            self.client.poll_event(),
            None,
            "abort after close reported an event"
        );
    }
}
