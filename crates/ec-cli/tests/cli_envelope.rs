//! `ec deliver` against the built-in sink, checking what the envelope and
//! the message data become on the server and in the delivery log.

mod cli_support;

use std::path::Path;
use std::time::Duration;

use cli_support::{arg, read_log, run, temp_dir, Finished};
use ec_cli::sink::{ReceivedMessage, Sink, SinkConfig};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The built-in sink on a free loopback port, keeping every message, with
/// the runtime that serves it.
struct KeepingSink {
    sink: Sink,
    _runtime: tokio::runtime::Runtime,
}

impl KeepingSink {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let config = SinkConfig {
            keep_messages: true,
            ..SinkConfig::default()
        };
        let sink = runtime
            .block_on(Sink::start(config))
            .expect("start the built-in sink");
        Self {
            sink,
            _runtime: runtime,
        }
    }

    fn relay(&self) -> String {
        self.sink.local_addr().to_string()
    }

    fn take_messages(&self) -> Vec<ReceivedMessage> {
        self.sink.take_messages()
    }
}

/// Runs `ec deliver --relay SINK --log LOG` with `extra` arguments after.
fn deliver(sink: &KeepingSink, log: &Path, extra: &[&str]) -> Finished {
    let relay = sink.relay();
    let log = arg(log);
    let mut args = vec!["deliver", "-q", "--relay", &relay, "--log", &log];
    args.extend_from_slice(extra);
    run(args, RUN_TIMEOUT)
}

#[test]
fn bcc_field_not_sent() {
    let sink = KeepingSink::start();
    let temp = temp_dir();
    let message = temp.path().join("bcc.eml");
    let text = "From: sender@ec.test\r\nTo: to@ec.test\r\n\
                bcc: hidden@ec.test,\r\n\tsecret@ec.test\r\n\
                Subject: blind copies\r\n\r\nBcc: a body line, not a field\r\n";
    std::fs::write(&message, text).expect("write the message");
    let log = temp.path().join("log.jsonl");

    let finished = deliver(&sink, &log, &[&arg(&message)]);
    finished.expect_code(0);

    let received = sink.take_messages();
    assert_eq!(received.len(), 1, "one transaction; {finished}");
    assert_eq!(
        received[0].recipients,
        ["to@ec.test", "hidden@ec.test", "secret@ec.test"]
    );
    let data = String::from_utf8_lossy(&received[0].data);
    let expected = "From: sender@ec.test\r\nTo: to@ec.test\r\n\
                    Subject: blind copies\r\n\r\nBcc: a body line, not a field\r\n";
    assert_eq!(data, expected);
    assert_eq!(read_log(&log).len(), 3);
}
