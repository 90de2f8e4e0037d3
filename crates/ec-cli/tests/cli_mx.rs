//! `ec deliver` without a relay: mail goes to each recipient domain's MX
//! hosts, looked up in a real DNS server (NSD) that `[dns] nameservers`
//! names, on the port that `mx_port` sets. A null MX fails its recipient
//! at once with 556 5.1.10, and the run exits 76.

mod cli_support;

use std::time::Duration;

use cli_support::{arg, mx_config_file, read_log, run, temp_dir, TestSink};
use ec_cli::delivery_log::LogResult;
use ec_tests::peers::{DnsServer, TEST_ORIGIN, TEST_ZONE};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn delivers_to_mx_and_fails_null_mx() {
    let dns = DnsServer::start(TEST_ZONE, TEST_ORIGIN).expect("NSD serves the test zone");
    let sink = TestSink::keeping();
    let temp = temp_dir();
    let config = mx_config_file(temp.path(), dns.addr(), sink.sink().local_addr().port());
    let message = temp.path().join("mx.eml");
    std::fs::write(
        &message,
        "From: sender@ec.test\r\nTo: to@mx.dns.test, other@nullmx.dns.test\r\n\
         Subject: mx\r\n\r\nbody\r\n",
    )
    .expect("write the message");
    let log = temp.path().join("log.jsonl");

    let finished = run(
        [
            "deliver",
            "--config",
            &arg(&config),
            "--log",
            &arg(&log),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );

    finished.expect_code(76);
    assert!(
        finished
            .stderr
            .contains("delivers their mail to their MX hosts"),
        "the warning about direct delivery; {finished}"
    );
    let received = sink.take_messages();
    assert_eq!(received.len(), 1, "{finished}");
    assert_eq!(received[0].recipients, ["to@mx.dns.test"]);

    let records = read_log(&log);
    assert_eq!(records.len(), 2, "{records:#?}");
    for record in &records {
        match record.recipient.as_deref() {
            Some("to@mx.dns.test") => assert_eq!(record.result, LogResult::Delivered),
            Some("other@nullmx.dns.test") => {
                assert_eq!(record.result, LogResult::Failed, "{record:?}");
                assert!(
                    record
                        .detail
                        .as_deref()
                        .unwrap_or_default()
                        .contains("null MX"),
                    "{record:?}"
                );
            }
            other => panic!("unexpected recipient {other:?}"),
        }
    }
}
