//! Checks that the test peers themselves work, with clients that are not
//! ours: a few lines of std TCP SMTP, `openssl s_client` and `swaks`.
//! A failure here means the peers are broken or down, not the engine.
//! Start them with `cargo xtask peers up`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ec_tests::peers::{Postfix, SmtpSink, DISCARD_DOMAIN, MAILDIR_DOMAIN, REPLY_DOMAIN};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// One SMTP reply: the code and the text of every line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A minimal SMTP client over a plain TCP stream: one command, one reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects and reads the banner, which must be 220.
    fn connect(addr: SocketAddr) -> (Client, Reply) {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"));
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        let writer = stream.try_clone().expect("clone the stream");
        let mut client = Client {
            reader: BufReader::new(stream),
            writer,
        };
        let banner = client.reply();
        assert_eq!(banner.code, 220, "banner from {addr}: {}", banner.text());
        (client, banner)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the server");
    }

    fn command(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads one reply: lines `NNN-text` continue it, `NNN text` (or a
    /// bare `NNN`) ends it.
    fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read a reply line");
            assert!(
                read > 0,
                "server closed the connection mid-reply after {lines:?}"
            );
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            assert!(line.len() >= 3, "reply line too short: {line:?}");
            let code = line[..3].parse().expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// EHLO, then MAIL FROM, each expected to get 250.
    fn start_transaction(&mut self, sender: &str) {
        let ehlo = self.command("EHLO client.ec.test");
        assert_eq!(ehlo.code, 250, "EHLO: {}", ehlo.text());
        let mail = self.command(&format!("MAIL FROM:<{sender}>"));
        assert_eq!(mail.code, 250, "MAIL: {}", mail.text());
    }

    /// DATA, the dot-stuffed message and the final dot; returns the reply to
    /// the final dot.
    fn data(&mut self, message: &str) -> Reply {
        let data = self.command("DATA");
        assert_eq!(data.code, 354, "DATA: {}", data.text());
        let mut wire = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(line);
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        self.send(wire.as_bytes());
        self.reply()
    }

    fn quit(mut self) {
        let quit = self.command("QUIT");
        assert_eq!(quit.code, 221, "QUIT: {}", quit.text());
    }
}

fn run(command: &mut Command) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program} ({e}); `.ci/run` installs it"))
}

fn combined_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn plain_message_lands_in_maildir() {
    let postfix = Postfix::get();
    let mailbox = postfix.unique_local_part("smoke");
    let recipient = format!("{mailbox}@{MAILDIR_DOMAIN}");
    let message = format!(
        "From: <sender@ec.test>\nTo: <{recipient}>\nSubject: smoke {mailbox}\n\n\
         first line\n.a line that starts with a dot\nlast line\n"
    );

    let (mut client, _) = Client::connect(postfix.plain_addr());
    client.start_transaction("sender@ec.test");
    let rcpt = client.command(&format!("RCPT TO:<{recipient}>"));
    assert_eq!(rcpt.code, 250, "RCPT: {}", rcpt.text());
    let queued = client.data(&message);
    assert_eq!(queued.code, 250, "final dot: {}", queued.text());
    client.quit();

    let messages = postfix.wait_for_messages(&mailbox, 1, DELIVERY_TIMEOUT);
    assert_eq!(messages.len(), 1, "exactly one delivery");
    let stored = String::from_utf8_lossy(&messages[0]);
    assert!(
        stored.starts_with("Return-Path: <sender@ec.test>\n"),
        "{stored}"
    );
    assert!(
        stored.contains(&format!("\nDelivered-To: {recipient}\n")),
        "{stored}"
    );
    assert!(
        stored.contains(&format!("\nSubject: smoke {mailbox}\n")),
        "{stored}"
    );
    assert!(
        stored.ends_with("\n\nfirst line\n.a line that starts with a dot\nlast line\n"),
        "body must arrive unstuffed and unchanged: {stored}"
    );
    assert!(
        !stored.contains("Message-Id:"),
        "Postfix must not add headers: {stored}"
    );
}

#[test]
fn listeners_greet_as_mx_ec_test() {
    let postfix = Postfix::get();
    let mut addresses = vec![postfix.plain_addr(), postfix.tls_required_addr()];
    if let Some(host) = postfix.ipv6_host() {
        addresses.push(SocketAddr::new(host, postfix.ports().plain));
        addresses.push(SocketAddr::new(host, postfix.ports().tls_required));
    }
    for addr in addresses {
        let (client, banner) = Client::connect(addr);
        assert!(
            banner
                .text()
                .starts_with(&format!("220 {} ESMTP", postfix.server_name())),
            "banner from {addr}: {}",
            banner.text()
        );
        client.quit();
    }
}

#[test]
fn starttls_chain_verifies_with_ca() {
    let postfix = Postfix::get();
    let output = run(Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-brief",
            "-verify_return_error",
        ])
        .arg("-connect")
        .arg(postfix.plain_addr().to_string())
        .arg("-CAfile")
        .arg(postfix.ca_file())
        .args(["-verify_hostname", postfix.server_name()]));
    let text = combined_output(&output);
    assert!(output.status.success(), "openssl s_client failed:\n{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("Verified peername: mx.ec.test"), "{text}");
}

#[test]
fn starttls_rejects_wrong_name() {
    let postfix = Postfix::get();
    let output = run(Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-brief",
            "-verify_return_error",
        ])
        .arg("-connect")
        .arg(postfix.plain_addr().to_string())
        .arg("-CAfile")
        .arg(postfix.ca_file())
        .args(["-verify_hostname", "other.example"]));
    let text = combined_output(&output);
    assert!(!output.status.success(), "a wrong name must fail:\n{text}");
    assert!(text.contains("hostname mismatch"), "{text}");
}

#[test]
fn tls_required_port_rejects_plain_mail() {
    let postfix = Postfix::get();
    let (mut client, _) = Client::connect(postfix.tls_required_addr());
    let ehlo = client.command("EHLO client.ec.test");
    assert_eq!(ehlo.code, 250, "EHLO: {}", ehlo.text());
    assert!(ehlo.text().contains("STARTTLS"), "EHLO: {}", ehlo.text());

    let mail = client.command("MAIL FROM:<sender@ec.test>");
    assert_eq!(mail.code, 530, "MAIL before STARTTLS: {}", mail.text());
    assert!(mail.text().contains("5.7.0"), "MAIL: {}", mail.text());
    client.quit();
}

/// swaks delivers through the STARTTLS-required port and the implicit-TLS
/// port, verifying the certificate against the test CA each time.
#[test]
fn swaks_delivers_over_both_tls_ports() {
    let postfix = Postfix::get();
    let cases = [
        (postfix.tls_required_addr(), "--tls", "starttls"),
        (postfix.implicit_tls_addr(), "--tlsc", "implicit"),
    ];
    for (addr, mode, prefix) in cases {
        let mailbox = postfix.unique_local_part(prefix);
        let output = run(Command::new("swaks")
            .args(["--server", &addr.to_string(), mode, "--tls-verify"])
            .arg("--tls-ca-path")
            .arg(postfix.ca_file())
            .args(["--from", "sender@ec.test"])
            .args(["--to", &format!("{mailbox}@{MAILDIR_DOMAIN}")])
            .args(["--header", &format!("Subject: swaks {mailbox}")]));
        let text = combined_output(&output);
        assert!(
            output.status.success(),
            "swaks {mode} to {addr} failed:\n{text}"
        );

        let messages = postfix.wait_for_messages(&mailbox, 1, DELIVERY_TIMEOUT);
        let stored = String::from_utf8_lossy(&messages[0]);
        assert!(
            stored.contains(&format!("Subject: swaks {mailbox}")),
            "{stored}"
        );
    }
}

#[test]
fn reply_domain_scripts_rcpt_replies() {
    let postfix = Postfix::get();
    let (mut client, _) = Client::connect(postfix.plain_addr());
    client.start_transaction("sender@ec.test");

    let cases = [
        (format!("defer-later@{REPLY_DOMAIN}"), 451, "4.7.1"),
        (format!("reject-now@{REPLY_DOMAIN}"), 550, "5.1.1"),
        ("someone@example.com".to_owned(), 550, "5.1.2"),
        (format!("accepted@{REPLY_DOMAIN}"), 250, "2.1.5"),
        (format!("anyone@{DISCARD_DOMAIN}"), 250, "2.1.5"),
    ];
    for (recipient, code, enhanced) in cases {
        let reply = client.command(&format!("RCPT TO:<{recipient}>"));
        assert_eq!(reply.code, code, "RCPT {recipient}: {}", reply.text());
        assert!(
            reply.text().contains(enhanced),
            "RCPT {recipient}: {}",
            reply.text()
        );
    }
    let reset = client.command("RSET");
    assert_eq!(reset.code, 250, "RSET: {}", reset.text());
    client.quit();
}

#[test]
fn discard_domain_accepts_message() {
    let postfix = Postfix::get();
    let (mut client, _) = Client::connect(postfix.plain_addr());
    client.start_transaction("sender@ec.test");
    let rcpt = client.command(&format!("RCPT TO:<load@{DISCARD_DOMAIN}>"));
    assert_eq!(rcpt.code, 250, "RCPT: {}", rcpt.text());
    let queued = client.data("Subject: dropped\n\nbody\n");
    assert_eq!(queued.code, 250, "final dot: {}", queued.text());
    client.quit();
}

#[test]
fn smtp_sink_accepts_message() {
    let sink = SmtpSink::start(["-c"]);
    let (mut client, _) = Client::connect(sink.addr());
    client.start_transaction("sender@ec.test");
    let rcpt = client.command("RCPT TO:<anyone@sink.test>");
    assert_eq!(rcpt.code, 250, "RCPT: {}", rcpt.text());
    let accepted = client.data("Subject: sink\n\nbody\n");
    assert_eq!(accepted.code, 250, "final dot: {}", accepted.text());
    client.quit();
}

#[test]
fn smtp_sink_fault_option_applies() {
    let sink = SmtpSink::start(["-Q", "mail"]);
    let (mut client, _) = Client::connect(sink.addr());
    let ehlo = client.command("EHLO client.ec.test");
    assert_eq!(ehlo.code, 250, "EHLO: {}", ehlo.text());
    let mail = client.command("MAIL FROM:<sender@ec.test>");
    assert_eq!(mail.code, 421, "MAIL with -Q mail: {}", mail.text());
}

#[test]
fn smtp_sinks_get_separate_ports() {
    let first = SmtpSink::start(["-c"]);
    let second = SmtpSink::start(["-c"]);
    assert_ne!(first.addr(), second.addr());
    let (client, _) = Client::connect(second.addr());
    client.quit();
    drop(second);
    let (client, _) = Client::connect(first.addr());
    client.quit();
}
