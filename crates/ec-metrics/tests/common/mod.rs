//! Helpers shared by the integration tests: recording every metric, parsing
//! the exposition text, free loopback ports and a minimal HTTP client.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ec_metrics::values::{CONNECTION_STATES, MESSAGE_FATES, REPLY_CLASSES, STAGES, TLS_POLICIES};
use ec_metrics::{
    BindingLabel, ConnectResult, DomainLabel, RecipientResult, TlsHandshakeResult, TlsVersion,
};
use ec_types::{CloseOutcome, CloseReason};

/// Calls every recording function with every value of every enum label, so
/// each metric and each fixed label value appears in the output.
pub(crate) fn record_every_metric(binding: &BindingLabel, domain: &DomainLabel) {
    for reason in CloseReason::ALL {
        for outcome in CloseOutcome::ALL {
            ec_metrics::connection_opened(binding, domain);
            ec_metrics::connection_closed(
                binding,
                domain,
                reason,
                outcome,
                Duration::from_millis(1500),
            );
        }
    }
    ec_metrics::connection_opened(binding, domain);

    for result in ConnectResult::ALL {
        ec_metrics::connect_result(binding, domain, result);
    }
    for state in CONNECTION_STATES {
        ec_metrics::connections_in_state(state, 1);
    }

    for policy in TLS_POLICIES {
        for version in TlsVersion::ALL {
            ec_metrics::tls_handshake(policy, TlsHandshakeResult::Established(version));
        }
        ec_metrics::tls_handshake(policy, TlsHandshakeResult::Failed);
    }
    ec_metrics::close_notify_sent();
    ec_metrics::close_notify_received();

    for stage in STAGES {
        for class in REPLY_CLASSES {
            ec_metrics::reply(stage, class);
        }
        ec_metrics::timeout(stage);
    }

    for fate in MESSAGE_FATES {
        ec_metrics::message_fate(binding, domain, fate);
    }
    for result in RecipientResult::ALL {
        ec_metrics::recipients(binding, domain, result, 2);
    }
    ec_metrics::bytes_sent(binding, 1024);
    ec_metrics::queue_sizes(3, 4);

    ec_metrics::duplicate_closeconn();
    ec_metrics::audit_failure();
    ec_metrics::scheduler_loop_lag(Duration::from_micros(40));
}

/// One sample line of the exposition text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// The parsed exposition text: samples, and the `# HELP` and `# TYPE`
/// lines by metric name.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) samples: Vec<Sample>,
    pub(crate) help: BTreeMap<String, String>,
    pub(crate) types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses Prometheus text format 0.0.4 as the exporter writes it.
    pub(crate) fn parse(text: &str) -> Self {
        let mut exposition = Self::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                exposition.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                exposition.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                exposition.samples.push(parse_sample(line));
            }
        }
        exposition
    }

    /// Returns the samples of the series named exactly `name`.
    pub(crate) fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |sample| sample.name == name)
    }

    /// Returns the value of the one sample named `name` whose labels include
    /// all of `labels`, and panics when there is not exactly one.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .named(name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "expected one sample of {name} with {labels:?}, found {matching:?}"
        );
        matching[0].value
    }
}

fn parse_sample(line: &str) -> Sample {
    // Values never contain spaces and the exporter writes no timestamps, so
    // the value is everything after the last space.
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("sample line without a value: {line}"));

    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let inner = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed label set in {line}"));
            (name, parse_labels(inner, line))
        }
        None => (series, BTreeMap::new()),
    };

    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("invalid sample value {other:?} in {line}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label {key} has no opening quote in {line}"
        );

        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {line}"),
                },
                Some('"') => break,
                Some(other) => value.push(other),
                None => panic!("unterminated value of {key} in {line}"),
            }
        }
        labels.insert(key, value);

        match chars.next() {
            Some(',') | None => {}
            Some(other) => panic!("unexpected {other:?} after a label value in {line}"),
        }
    }
}

/// Returns a loopback port that was free a moment ago. Another process may take it
/// before the caller binds it, so callers retry with a new port when the
/// bind fails.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("binding 127.0.0.1:0 works on every test machine")
}

/// Sends `GET path` over HTTP/1.1 with `Connection: close` and returns the
/// status code and body, decoding a chunked body.
pub(crate) fn http_get(address: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    )?;

    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;

    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status code"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });

    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn decode_chunked(mut body: &str) -> io::Result<String> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut decoded = String::new();
    loop {
        let (size_line, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| invalid("chunk size line"))?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("chunk size"))?;
        if size == 0 {
            return Ok(decoded);
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("short chunk"))?;
        decoded.push_str(chunk);
        body = rest
            .get(size..)
            .and_then(|after| after.strip_prefix("\r\n"))
            .ok_or_else(|| invalid("chunk terminator"))?;
    }
}

/// Percent-encodes `value` for a URL query string (RFC 3986 unreserved
/// characters stay as they are).
pub(crate) fn url_encode(value: &str) -> String {
    let mut encoded = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
