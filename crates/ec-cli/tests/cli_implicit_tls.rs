//! `ec deliver --tls implicit` against the built-in sink with implicit TLS:
//! the message arrives over TLS with the sink's certificate verified, and
//! the delivery log records which TLS version carried it.

mod cli_support;

use std::time::Duration;

use cli_support::{arg, read_log, run, temp_dir, TestSink};
use ec_cli::delivery_log::LogResult;
use ec_cli::sink::SinkConfig;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn delivers_over_implicit_tls_verified() {
    let sink = TestSink::start(SinkConfig {
        implicit_tls: true,
        keep_messages: true,
        ..SinkConfig::default()
    });
    let temp = temp_dir();
    let ca_file = temp.path().join("sink-ca.pem");
    std::fs::write(&ca_file, sink.sink().ca_pem()).expect("write the sink's CA");
    let message = temp.path().join("implicit.eml");
    std::fs::write(
        &message,
        "From: sender@ec.test\r\nTo: to@ec.test\r\nSubject: implicit\r\n\r\nbody\r\n",
    )
    .expect("write the message");
    let log = temp.path().join("log.jsonl");
    let relay = sink.relay();

    let finished = run(
        [
            "deliver",
            "--relay",
            &relay,
            "--tls",
            "implicit",
            "--ca-file",
            &arg(&ca_file),
            "--tls-server-name",
            "localhost",
            "--log",
            &arg(&log),
            &arg(&message),
        ],
        RUN_TIMEOUT,
    );

    finished.expect_code(0);
    let received = sink.take_messages();
    assert_eq!(received.len(), 1, "{finished}");
    assert!(received[0].tls, "the message came over TLS");
    let records = read_log(&log);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].result, LogResult::Delivered, "{records:?}");
    let tls = records[0].tls.as_deref().unwrap_or_default();
    assert!(tls.starts_with("TLS"), "{records:?}");
    let stats = sink.sink().stats();
    assert_eq!(stats.tls_handshakes, 1);
    assert_eq!(stats.tls_failures, 0);
}
