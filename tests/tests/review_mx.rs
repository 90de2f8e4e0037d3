//! Review tests for direct delivery through MX records: how far the walk
//! over a domain's MX hosts goes, which addresses of an MX host it tries,
//! which TLS server name it uses, and how DNS failures defer mail.
//!
//! Most tests use [`ScriptedDns`], a DNS server in this file that builds
//! each response from a script that the test passes, drops the queries the
//! script marks, and records every query it receives. NSD cannot leave a
//! query unanswered.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ec_sched::RecipientOutcome;
use ec_tests::delivery::{self, submission, Run, RunResult};
use ec_tests::fault_peer::{FaultPeer, Scenario};
use ec_tests::peers::DnsServer;
use ec_tests::pki::TestCa;
use ec_types::{Config, TlsPolicy, TlsSettings, TlsVerify};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// What [`ScriptedDns`] does with one query.
#[derive(Debug, Clone)]
enum Answer {
    /// NOERROR with these records (none: NODATA).
    Records(Vec<RData>),
    /// This response code and no records.
    Code(ResponseCode),
    /// No response at all, as from a server that is down.
    Drop,
}

type Script = dyn Fn(&str, RecordType) -> Answer + Send + Sync;

/// A DNS server on 127.0.0.1, UDP and TCP on one port, that responds from
/// a script and counts the queries by name and type.
struct ScriptedDns {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedDns {
    fn start(script: impl Fn(&str, RecordType) -> Answer + Send + Sync + 'static) -> Self {
        let script: Arc<Script> = Arc::new(script);
        let (udp, tcp) = bind_udp_and_tcp();
        let addr = udp.local_addr().expect("UDP address");
        let queries = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("UDP read timeout");
        tcp.set_nonblocking(true)
            .expect("non-blocking TCP listener");

        let (udp_script, udp_queries, udp_stop) =
            (Arc::clone(&script), Arc::clone(&queries), Arc::clone(&stop));
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while !udp_stop.load(Ordering::SeqCst) {
                let Ok((length, from)) = udp.recv_from(&mut buffer) else {
                    continue;
                };
                let answer = respond(&buffer[..length], &*udp_script, &udp_queries);
                if let Some(bytes) = answer {
                    // A UDP response over 512 octets goes out truncated,
                    // because hickory sends no EDNS. hickory then repeats
                    // the query over TCP.
                    let bytes = if bytes.len() > 512 {
                        truncated(&buffer[..length])
                    } else {
                        bytes
                    };
                    let _ = udp.send_to(&bytes, from);
                }
            }
        });

        let (tcp_script, tcp_queries, tcp_stop) =
            (Arc::clone(&script), Arc::clone(&queries), Arc::clone(&stop));
        thread::spawn(move || {
            while !tcp_stop.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = tcp.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let script = Arc::clone(&tcp_script);
                let queries = Arc::clone(&tcp_queries);
                thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut length = [0u8; 2];
                    while stream.read_exact(&mut length).is_ok() {
                        let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
                        if stream.read_exact(&mut query).is_err() {
                            return;
                        }
                        let Some(bytes) = respond(&query, &*script, &queries) else {
                            continue;
                        };
                        let prefix = u16::try_from(bytes.len()).expect("answer fits TCP");
                        let _ = stream.write_all(&prefix.to_be_bytes());
                        let _ = stream.write_all(&bytes);
                    }
                });
            }
        });

        Self {
            addr,
            queries,
            stop,
        }
    }

    /// Returns the names queried for `record_type`, in order, without the
    /// final dot.
    fn names_queried(&self, record_type: RecordType) -> Vec<String> {
        let queries = self.queries.lock().unwrap_or_else(PoisonError::into_inner);
        queries
            .iter()
            .filter(|(_, queried_type)| *queried_type == record_type)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Drop for ScriptedDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Binds a UDP socket on 127.0.0.1 and a TCP listener on the same port.
fn bind_udp_and_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("no port on 127.0.0.1 was free for both UDP and TCP in 100 tries");
}

/// Builds the response to `query` from the script, or `None` to drop it.
fn respond(
    query: &[u8],
    script: &Script,
    queries: &Mutex<Vec<(String, RecordType)>>,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries().first()?.clone();
    let name = question.name().to_ascii();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    queries
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((name.clone(), question.query_type()));

    let mut response = response_to(&request);
    response.set_recursion_available(true);
    response.add_query(question.clone());
    match script(&name, question.query_type()) {
        Answer::Drop => return None,
        Answer::Code(code) => {
            response.set_response_code(code);
        }
        Answer::Records(records) => {
            response.set_response_code(ResponseCode::NoError);
            for rdata in records {
                response.add_answer(Record::from_rdata(question.name().clone(), 60, rdata));
            }
        }
    }
    response.to_vec().ok()
}

/// Starts a response to `request`: its id, operation and RD flag.
fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired());
    response
}

/// Builds an empty response to `query` with the TC bit set.
fn truncated(query: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(query).expect("a query that was answered");
    let mut response = response_to(&request);
    response.set_truncated(true);
    response.add_queries(request.queries().to_vec());
    response.to_vec().expect("encode a truncated response")
}

fn mx(preference: u16, host: &str) -> RData {
    RData::MX(MX::new(
        preference,
        Name::from_ascii(format!("{host}.")).expect("valid MX host"),
    ))
}

fn a(address: Ipv4Addr) -> RData {
    RData::A(A(address))
}

fn aaaa(address: Ipv6Addr) -> RData {
    RData::AAAA(AAAA(address))
}

/// Routes `domain` to its MX hosts on `port`, asking `nameserver`, with a
/// 1 s connect timeout.
fn mx_config(nameserver: SocketAddr, domain: &str, port: u16) -> Config {
    delivery::mx_config(domain, nameserver, port, Duration::from_secs(1))
}

/// Sends one message to `rcpt@domain` and waits at most `limit` for a
/// record of its recipient.
fn send(config: Config, domain: &str, limit: Duration) -> RunResult {
    let to = [format!("rcpt@{domain}")];
    Run::new(config)
        .submit(submission(
            1,
            "sender@ec.test",
            &to,
            b"Subject: mx\r\n\r\nx\r\n",
        ))
        .domain_backoff(Duration::from_millis(200))
        .limit(limit)
        .run()
}

/// Returns a port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address").port()
}

/// The connect walk stops at the address limit (five addresses): it does
/// not go on to look up the addresses of the MX hosts it will never try.
/// Ten MX hosts of rising preference each have one address where nothing
/// listens.
#[test]
fn walk_stops_looking_up_at_limit() {
    let dns = ScriptedDns::start(|name, record_type| match (name, record_type) {
        ("many.review.test", RecordType::MX) => Answer::Records(
            (0..10)
                .map(|i| mx(i, &format!("h{i}.review.test")))
                .collect(),
        ),
        (_, RecordType::A) => Answer::Records(vec![a(Ipv4Addr::LOCALHOST)]),
        _ => Answer::Records(Vec::new()),
    });
    let config = mx_config(dns.addr, "many.review.test", closed_port());

    let result = send(config, "many.review.test", Duration::from_millis(1500));

    let first = result.closes.first().expect("one connection closed");
    assert!(first.peer.is_none(), "{first:?}");
    // Every walk queries the same hosts in the same order, and later
    // walks find the responses cached, so the distinct names are those of
    // the longest walk.
    let queried = dns.names_queried(RecordType::A);
    let distinct: BTreeSet<&String> = queried.iter().collect();
    assert!(
        distinct.len() <= 5,
        "the walk looked up {} MX hosts, but it tries at most five addresses: {distinct:?}",
        distinct.len()
    );
}

/// One connect over a domain's MX hosts ends within a bounded time, even
/// when the DNS never answers the address lookups of its hosts. Here 12 MX
/// hosts and a 1 s connect timeout: the walk should give up after the MX
/// lookup and at most five more steps, not after one second per host.
#[test]
fn walk_has_overall_deadline() {
    let dns = ScriptedDns::start(|name, record_type| match (name, record_type) {
        ("slow.review.test", RecordType::MX) => Answer::Records(
            (0..12)
                .map(|i| mx(10, &format!("s{i}.review.test")))
                .collect(),
        ),
        _ => Answer::Drop,
    });
    let config = mx_config(dns.addr, "slow.review.test", closed_port());

    let started = Instant::now();
    let result = send(config, "slow.review.test", Duration::from_secs(10));

    let first = result.closes.first().unwrap_or_else(|| {
        panic!(
            "no connection closed within {:?}: the walk is still looking up hosts",
            started.elapsed()
        )
    });
    assert!(
        first.duration <= Duration::from_secs(8),
        "one connect took {:?} over {} address lookups",
        first.duration,
        dns.names_queried(RecordType::A).len()
    );
}

/// An MX host with both an A and an AAAA record is tried on both: when
/// nothing listens on its IPv4 address, the IPv6 one gets the connection.
#[test]
fn mx_host_ipv6_after_ipv4() {
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind [::1]");
    let port = listener.local_addr().expect("address").port();
    // Replies 421 to the first connection, so the session ends at once.
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let answering = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = stream.write_all(b"421 4.3.2 review peer closing\r\n");
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    });
    let dns = ScriptedDns::start(|name, record_type| match (name, record_type) {
        ("dual.review.test", RecordType::MX) => Answer::Records(vec![mx(10, "both.review.test")]),
        ("both.review.test", RecordType::A) => {
            // 127.0.0.2: nothing listens there on the chosen port.
            Answer::Records(vec![a(Ipv4Addr::new(127, 0, 0, 2))])
        }
        ("both.review.test", RecordType::AAAA) => Answer::Records(vec![aaaa(Ipv6Addr::LOCALHOST)]),
        _ => Answer::Records(Vec::new()),
    });
    let config = mx_config(dns.addr, "dual.review.test", port);

    let result = send(config, "dual.review.test", Duration::from_secs(3));

    let peers: Vec<Option<SocketAddr>> = result.closes.iter().map(|c| c.peer).collect();
    assert!(
        peers.iter().flatten().any(SocketAddr::is_ipv6),
        "no connection reached [::1]:{port}; AAAA queries: {:?}; closes: {:#?}",
        dns.names_queried(RecordType::AAAA),
        result.closes
    );
    answering.join().expect("the listener thread ends");
}

/// SERVFAIL to the MX query defers the mail and retries it, because a
/// SERVFAIL response says nothing about whether the domain exists.
#[test]
fn servfail_defers_and_retries() {
    let dns = ScriptedDns::start(|_, _| Answer::Code(ResponseCode::ServFail));
    let config = mx_config(dns.addr, "servfail.review.test", closed_port());

    let result = send(config, "servfail.review.test", Duration::from_secs(2));

    assert_eq!(result.count("failed"), 0, "{:#?}", result.records);
    assert!(result.opens.len() >= 2, "retried: {:#?}", result.opens);
    assert!(
        result.check_accounting().is_ok(),
        "{:?}",
        result.check_accounting()
    );
}

/// A DNS server that never answers defers the mail; each attempt ends
/// within the connect timeout, and the domain is tried again.
#[test]
fn silent_dns_defers_within_timeout() {
    let dns = ScriptedDns::start(|_, _| Answer::Drop);
    let config = mx_config(dns.addr, "silent.review.test", closed_port());

    let result = send(config, "silent.review.test", Duration::from_secs(4));

    assert_eq!(result.count("failed"), 0, "{:#?}", result.records);
    assert!(result.closes.len() >= 2, "retried: {:#?}", result.closes);
    for close in &result.closes {
        assert!(
            close.duration < Duration::from_millis(1500),
            "{:?} for one MX lookup with a 1 s connect timeout",
            close.duration
        );
        let failure = close.failure.as_deref().unwrap_or_default();
        assert!(
            failure.contains(&format!("waiting for the DNS servers {}", dns.addr)),
            "the failure names the silent server: {failure}"
        );
    }
}

/// The TLS server name for an MX host whose name is an IDNA A-label is that
/// A-label, as its certificate lists it, and the certificate verifies.
#[test]
fn tls_name_of_idn_mx_host() {
    let zone = "\
$ORIGIN review.test.
$TTL 60
@                IN SOA ns.review.test. hostmaster.review.test. ( 1 3600 600 86400 60 )
@                IN NS  ns.review.test.
ns               IN A   127.0.0.1
idn              IN MX  10 xn--bcher-kva.review.test.
xn--bcher-kva    IN A   127.0.0.1
";
    let dns = DnsServer::start(zone, "review.test.").expect("NSD serves the zone");
    let ca = TestCa::new().expect("test CA");
    let leaf = ca
        .leaf(&["xn--bcher-kva.review.test"])
        .expect("test certificate");
    let scenario = Scenario::builder()
        .tls(leaf.server_config().expect("server TLS configuration"))
        .build();
    let peer = FaultPeer::start_on_thread(scenario).expect("peer starts");
    let ca_file = ca.write_pem_file().expect("write the CA");
    let mut config = mx_config(dns.addr(), "idn.review.test", peer.addr().port());
    config.global.tls = Some(TlsSettings {
        policy: TlsPolicy::Required,
        verify: Some(TlsVerify::Host),
        ca_file: Some(ca_file.to_path_buf()),
        server_name: None,
    });

    let result = send(config, "idn.review.test", Duration::from_secs(3));

    let outcomes: Vec<&RecipientOutcome> = result.records.iter().map(|r| &r.outcome).collect();
    assert_eq!(
        result.outcomes_of(1).first().copied(),
        Some("delivered"),
        "{outcomes:#?}; closes: {:#?}",
        result.closes
    );
}
