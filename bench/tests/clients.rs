//! The load clients against a minimal SMTP server in this process: each
//! must deliver exactly the messages it reports, and the `TCP_NODELAY`
//! shim must reach lettre's sockets.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// A plain-text SMTP server that accepts every message, one thread per
/// connection, and counts messages and connections.
struct CountingServer {
    address: SocketAddr,
    messages: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl CountingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        let messages = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (counted, accepted) = (Arc::clone(&messages), Arc::clone(&connections));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::Relaxed);
                let counted = Arc::clone(&counted);
                thread::spawn(move || {
                    let _ = serve(stream, &counted);
                });
            }
        });
        Self {
            address,
            messages,
            connections,
        }
    }

    fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Serves one SMTP session. Each reply goes out as its command line
/// arrives, which also answers pipelined command groups in order.
fn serve(stream: TcpStream, messages: &AtomicU64) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"220 test ESMTP\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match command.as_str() {
            "EHLO" => writer.write_all(b"250-test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")?,
            "DATA" => {
                writer.write_all(b"354 go ahead\r\n")?;
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                messages.fetch_add(1, Ordering::Relaxed);
                writer.write_all(b"250 2.0.0 queued\r\n")?;
            }
            "QUIT" => {
                writer.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => writer.write_all(b"250 ok\r\n")?,
        }
    }
}

/// Runs a client and returns the fields of its result line.
fn run(command: &mut Command) -> Vec<(String, String)> {
    let output = command.output().expect("the client starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|line| line.starts_with(ec_bench::RESULT_PREFIX))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

fn ec_load() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ec-load"))
}

fn lettre_load() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lettre-load"))
}

#[test]
fn ec_load_delivers_count() {
    let server = CountingServer::start();
    let fields = run(ec_load().args([
        "--server",
        &server.address.to_string(),
        "--messages",
        "60",
        "--connections",
        "3",
    ]));
    assert_eq!(field(&fields, "delivered"), "60");
    assert_eq!(field(&fields, "failed"), "0");
    assert_eq!(server.messages(), 60);
    assert!(
        server.connections() <= 3,
        "{} connections",
        server.connections()
    );
}

#[test]
fn ec_load_churn_opens_per_message() {
    let server = CountingServer::start();
    let fields = run(ec_load().args([
        "--server",
        &server.address.to_string(),
        "--messages",
        "12",
        "--connections",
        "2",
        "--deliveries-per-connection",
        "1",
    ]));
    assert_eq!(field(&fields, "delivered"), "12");
    assert_eq!(field(&fields, "connections"), "12");
    assert_eq!(server.connections(), 12);
}

#[test]
fn ec_load_holds_idle_connections() {
    let server = CountingServer::start();
    let fields = run(ec_load().args([
        "--mode",
        "hold",
        "--server",
        &server.address.to_string(),
        "--connections",
        "6",
    ]));
    assert_eq!(field(&fields, "open"), "6");
    assert_eq!(field(&fields, "idle"), "6");
    let per_connection: u64 = field(&fields, "bytes_per_connection")
        .parse()
        .expect("a number");
    assert!(per_connection > 0);
    assert_eq!(server.messages(), 6);
}

#[test]
fn ec_load_queues_without_connecting() {
    let server = CountingServer::start();
    let fields = run(ec_load().args([
        "--mode",
        "queue",
        "--server",
        &server.address.to_string(),
        "--messages",
        "1000",
    ]));
    assert_eq!(field(&fields, "queued"), "1000");
    assert_eq!(server.connections(), 0);
}

#[test]
fn lettre_load_pooled_and_churn() {
    let server = CountingServer::start();
    let address = server.address.to_string();
    let pooled = run(lettre_load().args(["--server", &address, "--messages", "20", "--pool", "2"]));
    assert_eq!(field(&pooled, "delivered"), "20");
    assert_eq!(server.messages(), 20);
    let pooled_connections = server.connections();
    assert!(
        pooled_connections <= 4,
        "{pooled_connections} connections for a pool of 2"
    );

    let churn = run(lettre_load().args([
        "--server",
        &address,
        "--messages",
        "5",
        "--pool",
        "2",
        "--churn",
    ]));
    assert_eq!(field(&churn, "delivered"), "5");
    assert_eq!(server.messages(), 25);
    assert_eq!(server.connections(), pooled_connections + 5);
}

#[test]
fn load_clients_reject_remote_servers() {
    for mut command in [ec_load(), lettre_load()] {
        let output = command
            .args(["--server", "192.0.2.1:25", "--messages", "1"])
            .output()
            .expect("the client starts");
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"));
    }
}

/// Builds the shim with gcc into `directory`.
fn build_shim(directory: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("nodelay-shim/nodelay.c");
    let output = directory.join("libnodelay.so");
    let status = Command::new("gcc")
        .args([
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
        ])
        .arg(&output)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("gcc runs (install it with `apt-get install gcc`)");
    assert!(status.success(), "gcc failed on {}", source.display());
    output
}

#[test]
fn nodelay_shim_reaches_lettre() {
    let directory = std::env::temp_dir().join(format!("ec-bench-shim-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temporary directory");
    let shim = build_shim(&directory);
    let report = directory.join("report.txt");
    let server = CountingServer::start();
    let address = server.address.to_string();

    run(lettre_load()
        .args(["--server", &address, "--messages", "3", "--pool", "1"])
        .env("NODELAY_SHIM_REPORT", &report));
    assert!(!report.exists(), "without LD_PRELOAD the shim must not run");

    run(lettre_load()
        .args(["--server", &address, "--messages", "3", "--pool", "1"])
        .env("LD_PRELOAD", &shim)
        .env("NODELAY_SHIM_REPORT", &report));
    let lines = std::fs::read_to_string(&report).expect("the shim wrote its report");
    assert!(lines.lines().count() >= 1, "{lines:?}");
    assert!(
        lines.lines().all(|line| line.starts_with("nodelay fd=")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&directory);
}
