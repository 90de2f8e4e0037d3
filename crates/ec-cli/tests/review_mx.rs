//! Review tests for `ec deliver` without a relay: the accounting of a run
//! in which several domains fail at once through a null MX or NXDOMAIN
//! while another domain takes its mail.

mod cli_support;

use std::collections::BTreeMap;
use std::time::Duration;

use cli_support::{arg, count_results, mx_config_file, read_log, run, temp_dir, TestSink};
use ec_cli::sink::SinkConfig;
use ec_tests::peers::DnsServer;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Three domains with a null MX and one MX host that the sink stands for.
/// `nx1` and `nx2` are not in the zone, so NSD returns NXDOMAIN for them.
const ZONE: &str = "\
$ORIGIN review.test.
$TTL 60
@      IN SOA ns.review.test. hostmaster.review.test. ( 1 3600 600 86400 60 )
@      IN NS  ns.review.test.
ns     IN A   127.0.0.1
null1  IN MX  0 .
null2  IN MX  0 .
null3  IN MX  0 .
good   IN MX  10 host.review.test.
host   IN A   127.0.0.1
";

const FAILING: [&str; 5] = ["null1", "null2", "null3", "nx1", "nx2"];

/// 3,000 messages, each to one of five failing domains and every third
/// also to a domain that accepts mail, over up to 20 connections per
/// domain: every recipient gets exactly one record, the failing ones
/// `failed` with the right status, the others `delivered`, and the run
/// exits 76.
#[test]
fn null_mx_and_nxdomain_accounting() {
    const MESSAGES: usize = 3000;
    let dns = DnsServer::start(ZONE, "review.test.").expect("NSD serves the zone");
    let sink = TestSink::start(SinkConfig::default());
    let temp = temp_dir();
    let config = mx_config_file(temp.path(), dns.addr(), sink.sink().local_addr().port());
    let mail = temp.path().join("mail");
    std::fs::create_dir(&mail).expect("create the message directory");
    let mut expected = BTreeMap::new();
    for index in 0..MESSAGES {
        let failing = format!("r{index}@{}.review.test", FAILING[index % FAILING.len()]);
        let mut to = vec![failing.clone()];
        expected.insert(failing, "failed");
        if index % 3 == 0 {
            let good = format!("r{index}@good.review.test");
            to.push(good.clone());
            expected.insert(good, "delivered");
        }
        std::fs::write(
            mail.join(format!("m{index:05}.eml")),
            format!(
                "From: s@ec.test\r\nTo: {}\r\nSubject: {index}\r\n\r\nbody {index}\r\n",
                to.join(", ")
            ),
        )
        .expect("write a message");
    }
    let log = temp.path().join("log.jsonl");

    let finished = run(
        [
            "deliver",
            "-q",
            "--connections",
            "20",
            "--config",
            &arg(&config),
            "--log",
            &arg(&log),
            &arg(&mail),
        ],
        RUN_TIMEOUT,
    );

    finished.expect_code(76);
    let records = read_log(&log);
    let mut seen: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for record in &records {
        let recipient = record.recipient.clone().expect("a recipient record");
        seen.entry(recipient)
            .or_default()
            .push(record.result.as_str());
    }
    let repeated: Vec<(&String, &Vec<&str>)> = seen
        .iter()
        .filter(|(_, results)| results.len() != 1)
        .collect();
    assert!(repeated.is_empty(), "more than one record: {repeated:?}");
    assert_eq!(seen.len(), expected.len(), "{:?}", count_results(&records));
    for (recipient, result) in &expected {
        assert_eq!(
            seen.get(recipient).map(|results| results[0]),
            Some(*result),
            "{recipient}"
        );
    }
    for record in &records {
        let recipient = record.recipient.as_deref().unwrap_or_default();
        let detail = record.detail.as_deref().unwrap_or_default();
        if recipient.contains("@null") {
            assert!(detail.contains("status 5.1.10"), "{record:?}");
        } else if recipient.contains("@nx") {
            assert!(detail.contains("status 5.1.2"), "{record:?}");
        }
    }
}
