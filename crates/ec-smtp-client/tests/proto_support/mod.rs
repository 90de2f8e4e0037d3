//! A scripted server for the session tests: the test writes the server's
//! replies, steps virtual time, and checks what the client wrote and
//! reported. No sockets, no sleeps.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ec_smtp_client::proto::{
    Client, ClientConfig, ClientEvent, ClientState, Transaction, TransactionEnd,
};
use ec_types::{Reply, TlsPolicy};

/// The EHLO domain every test client uses.
pub const EHLO_DOMAIN: &str = "client.example.org";

/// A session under test and its virtual clock.
pub struct Session {
    pub client: Client,
    pub now: Instant,
}

impl Session {
    /// A fresh session with `policy`, waiting for the banner.
    pub fn new(policy: TlsPolicy) -> Self {
        let mut config = ClientConfig::new(EHLO_DOMAIN);
        config.tls_policy = policy;
        Self::with_config(config)
    }

    pub fn with_config(config: ClientConfig) -> Self {
        let now = Instant::now();
        let client = Client::new(config, now).expect("valid EHLO domain");
        Self { client, now }
    }

    /// A session past banner and EHLO, in clear text, with the given EHLO
    /// keywords; the Ready event is consumed.
    pub fn ready(keywords: &[&str]) -> Self {
        let mut config = ClientConfig::new(EHLO_DOMAIN);
        config.tls_policy = TlsPolicy::Disabled;
        Self::ready_with(config, keywords)
    }

    /// [`ready`](Self::ready) with `config`, whose TLS policy must not
    /// start TLS.
    pub fn ready_with(config: ClientConfig, keywords: &[&str]) -> Self {
        let mut session = Self::with_config(config);
        session.server("220 mx.example.com ESMTP\r\n");
        session.expect_sent("EHLO client.example.org\r\n");
        session.server(&ehlo_reply("mx.example.com", keywords));
        assert!(matches!(session.next_event(), ClientEvent::Ready { .. }));
        session.no_events();
        assert_eq!(session.client.state(), ClientState::Ready);
        session
    }

    /// The server sends `text`.
    pub fn server(&mut self, text: &str) {
        self.client.handle_input(text.as_bytes(), self.now);
    }

    /// The server sends raw bytes.
    pub fn server_bytes(&mut self, bytes: &[u8]) {
        self.client.handle_input(bytes, self.now);
    }

    /// Checks that the client wrote exactly `expected` in one buffer, and
    /// reports the write done.
    #[track_caller]
    pub fn expect_sent(&mut self, expected: &str) {
        let sent = self
            .client
            .poll_transmit()
            .expect("the client sent nothing");
        assert_eq!(
            String::from_utf8_lossy(&sent),
            expected,
            "unexpected bytes from the client"
        );
        assert_eq!(
            self.client.poll_transmit(),
            None,
            "the client sent more than one buffer"
        );
        self.client.handle_transmitted(self.now);
    }

    /// Checks that the client queued exactly `expected`, one buffer each,
    /// in order, and reports the writes done.
    #[track_caller]
    pub fn expect_writes(&mut self, expected: &[&str]) {
        let mut sent = Vec::new();
        while let Some(buffer) = self.client.poll_transmit() {
            sent.push(String::from_utf8_lossy(&buffer).into_owned());
        }
        assert_eq!(sent, expected, "unexpected writes from the client");
        self.client.handle_transmitted(self.now);
    }

    /// Checks that the client wrote nothing.
    #[track_caller]
    pub fn nothing_sent(&mut self) {
        if let Some(sent) = self.client.poll_transmit() {
            panic!("the client sent {:?}", String::from_utf8_lossy(&sent));
        }
    }

    /// The next event, which must exist.
    #[track_caller]
    pub fn next_event(&mut self) -> ClientEvent {
        self.client.poll_event().expect("no event")
    }

    /// Checks that no event is waiting.
    #[track_caller]
    pub fn no_events(&mut self) {
        if let Some(event) = self.client.poll_event() {
            panic!("unexpected event {event:?}");
        }
    }

    /// Every waiting event.
    pub fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// Moves the clock on by `step` and lets timers fire.
    pub fn advance(&mut self, step: Duration) {
        self.now += step;
        self.client.handle_timeout(self.now);
    }

    /// The time left on the running timer.
    #[track_caller]
    pub fn time_left(&self) -> Duration {
        let deadline = self.client.next_timeout().expect("no timer runs");
        deadline - self.now
    }

    /// Starts `transaction`, which must be accepted.
    #[track_caller]
    pub fn start(&mut self, transaction: Transaction) {
        if let Err(rejected) = self.client.start_transaction(transaction, self.now) {
            panic!("transaction not started: {rejected}");
        }
    }

    /// The next event, which must be a transaction end.
    #[track_caller]
    pub fn transaction_end(&mut self) -> TransactionEnd {
        match self.next_event() {
            ClientEvent::TransactionFinished(end) => end,
            other => panic!("expected TransactionFinished, got {other:?}"),
        }
    }

    /// The next event, which must be a MAIL rejection; returns its reply.
    #[track_caller]
    pub fn mail_rejected(&mut self) -> Reply {
        match self.next_event() {
            ClientEvent::MailRejected { reply } => reply,
            other => panic!("expected MailRejected, got {other:?}"),
        }
    }

    /// The next event, which must be a RCPT reply for recipient `index`.
    #[track_caller]
    pub fn recipient_reply(&mut self, index: usize) -> Reply {
        match self.next_event() {
            ClientEvent::RecipientReply { index: got, reply } => {
                assert_eq!(got, index, "RCPT reply for another recipient");
                reply
            }
            other => panic!("expected RecipientReply, got {other:?}"),
        }
    }
}

/// A multi-line EHLO reply.
pub fn ehlo_reply(domain: &str, keywords: &[&str]) -> String {
    let mut lines = vec![domain.to_owned()];
    lines.extend(keywords.iter().map(|keyword| (*keyword).to_owned()));
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// A transaction from `sender@example.org` with `body`.
pub fn transaction(recipients: &[&str], body: &str) -> Transaction {
    Transaction {
        reverse_path: "sender@example.org".into(),
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        data: Bytes::from(body.to_owned()),
    }
}
