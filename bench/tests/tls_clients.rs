//! The clients' STARTTLS paths against ec's built-in sink, which offers
//! STARTTLS with a certificate for `localhost` signed by a CA it makes.

use std::process::Command;

use ec_cli::sink::{Sink, SinkConfig};

/// A running sink, its CA file, and the runtime that serves it (the
/// clients run in other processes while the test thread waits on them).
struct TlsSink {
    runtime: tokio::runtime::Runtime,
    sink: Sink,
    ca_file: std::path::PathBuf,
}

impl TlsSink {
    fn start(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sink = runtime
            .block_on(Sink::start(SinkConfig::default()))
            .expect("the sink starts");
        let ca_file =
            std::env::temp_dir().join(format!("ec-bench-{name}-{}.pem", std::process::id()));
        sink.write_ca_file(&ca_file).expect("CA file written");
        Self {
            runtime,
            sink,
            ca_file,
        }
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--server".to_owned(),
            self.sink.local_addr().to_string(),
            "--ca-file".to_owned(),
            self.ca_file.display().to_string(),
            "--server-name".to_owned(),
            "localhost".to_owned(),
        ]
    }

    /// Stops the sink and returns its counts.
    fn finish(self) -> ec_cli::sink::SinkStats {
        let _ = std::fs::remove_file(&self.ca_file);
        self.runtime.block_on(self.sink.shutdown())
    }
}

fn succeeds(command: &mut Command) -> String {
    let output = command.output().expect("the client starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn tls_floor_completes_handshakes() {
    let sink = TlsSink::start("floor");
    let stdout = succeeds(
        Command::new(env!("CARGO_BIN_EXE_tls-floor"))
            .args(sink.tls_args())
            .args(["--sessions", "12", "--concurrency", "3"]),
    );
    assert!(stdout.contains("client=tls-floor messages=12"), "{stdout}");
    let stats = sink.finish();
    assert_eq!(stats.tls_handshakes, 12);
    assert_eq!(stats.messages, 0);
}

#[test]
fn ec_load_churns_over_starttls() {
    let sink = TlsSink::start("ec");
    let stdout = succeeds(
        Command::new(env!("CARGO_BIN_EXE_ec-load"))
            .args(sink.tls_args())
            .args(["--starttls", "--messages", "6", "--connections", "2"])
            .args(["--deliveries-per-connection", "1"]),
    );
    assert!(stdout.contains("delivered=6 failed=0"), "{stdout}");
    let stats = sink.finish();
    assert_eq!(stats.messages, 6);
    assert_eq!(stats.tls_handshakes, 6);
}

#[test]
fn lettre_load_churns_over_starttls() {
    let sink = TlsSink::start("lettre");
    let stdout = succeeds(
        Command::new(env!("CARGO_BIN_EXE_lettre-load"))
            .args(sink.tls_args())
            .args(["--starttls", "--messages", "4", "--pool", "2", "--churn"]),
    );
    assert!(stdout.contains("delivered=4 failed=0"), "{stdout}");
    let stats = sink.finish();
    assert_eq!(stats.messages, 4);
    assert_eq!(stats.tls_handshakes, 4);
}

#[test]
fn tls_floor_rejects_wrong_name() {
    let sink = TlsSink::start("wrong-name");
    let mut args = sink.tls_args();
    let last = args.len() - 1;
    args[last] = "not-the-sink.example".to_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_tls-floor"))
        .args(args)
        .args(["--sessions", "1"])
        .output()
        .expect("tls-floor starts");
    assert!(
        !output.status.success(),
        "a wrong server name must fail verification"
    );
    let _ = sink.finish();
}
