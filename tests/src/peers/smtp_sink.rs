//! A private `smtp-sink` (Postfix's benchmark SMTP server) per test.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::PeersError;

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// Listen backlog passed as smtp-sink's required last argument. Linux caps
/// it at `net.core.somaxconn` (4096 by default).
const BACKLOG: &str = "1024";

/// How long a started smtp-sink may take to send its first 220 banner.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts to get a port that no other listener shares.
const PORT_ATTEMPTS: usize = 5;

/// Ports held by live sinks of this process, so two sinks started at the
/// same moment never get the same port.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A private `smtp-sink` on 127.0.0.1, killed when dropped.
///
/// smtp-sink binds with `SO_REUSEPORT`, so a second copy on a taken port
/// starts without error and takes half the connections. [`start`] picks a
/// port the kernel reports free, and after the start checks that this sink
/// is the only listener on it.
///
/// [`start`]: SmtpSink::start
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    command_line: String,
}

impl SmtpSink {
    /// Starts `smtp-sink <args> 127.0.0.1:<free port> 1024` and waits for
    /// its 220 banner. `args` are smtp-sink options, for example faults:
    /// `-q CMD` disconnects without a reply, `-Q CMD` replies 421 and
    /// disconnects, `-r CMD`/`-f CMD` reject with 4xx/5xx, `-W CMD:delay`
    /// replies late, `-A N` aborts mid-DATA, `-p` turns PIPELINING off, `-c`
    /// prints counters (see [`output`](Self::output)). Running as root adds
    /// `-u nobody`, which smtp-sink then requires.
    ///
    /// # Panics
    ///
    /// Panics when smtp-sink is missing, exits, or sends no 220 banner
    /// within five seconds. The message contains its output.
    pub fn start<I, S>(args: I) -> SmtpSink
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::try_start(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`start`](Self::start) returning the failure instead of panicking.
    ///
    /// # Errors
    ///
    /// [`PeersError::SmtpSinkMissing`] when `/usr/sbin/smtp-sink` does not
    /// exist, [`PeersError::SmtpSinkStart`] when it exits, does not answer,
    /// or shares its port with another listener on every attempt.
    pub fn try_start<I, S>(args: I) -> Result<SmtpSink, PeersError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        if !Path::new(SMTP_SINK).exists() {
            return Err(PeersError::SmtpSinkMissing {
                path: PathBuf::from(SMTP_SINK),
            });
        }
        let args: Vec<_> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = reserve_free_port()?;
            match Self::spawn(&args, port) {
                Ok(sink) if listeners_on_port(port) == 1 => return Ok(sink),
                Ok(sink) => {
                    last_error = Some(PeersError::SmtpSinkStart {
                        args: sink.command_line.clone(),
                        reason: format!("another program also listens on port {port}"),
                        output: String::new(),
                    });
                }
                Err(error) => {
                    release_port(port);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("PORT_ATTEMPTS is not zero"))
    }

    fn spawn(args: &[std::ffi::OsString], port: u16) -> Result<SmtpSink, PeersError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = log_path(port);
        let log = File::create(&log_path).map_err(|source| PeersError::Io {
            path: log_path.clone(),
            source,
        })?;
        let log_for_stderr = log.try_clone().map_err(|source| PeersError::Io {
            path: log_path.clone(),
            source,
        })?;

        let mut command = Command::new(SMTP_SINK);
        if running_as_root() {
            command.args(["-u", "nobody"]);
        }
        command
            .args(args)
            .arg(addr.to_string())
            .arg(BACKLOG)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        let command_line = describe(&command);

        let child = command.spawn().map_err(|error| PeersError::SmtpSinkStart {
            args: command_line.clone(),
            reason: error.to_string(),
            output: String::new(),
        })?;
        let mut sink = SmtpSink {
            child,
            addr,
            log_path,
            command_line,
        };
        sink.wait_for_banner()?;
        Ok(sink)
    }

    /// Waits until the sink sends `220`. The probe connection counts as one
    /// session in smtp-sink's `-c` counters.
    fn wait_for_banner(&mut self) -> Result<(), PeersError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("it exited ({status})")));
            }
            if let Ok(mut stream) =
                TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
            {
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut banner = [0u8; 3];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"220" {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "no 220 banner on {} within {:?}",
                    self.addr, START_TIMEOUT
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_error(&self, reason: String) -> PeersError {
        PeersError::SmtpSinkStart {
            args: self.command_line.clone(),
            reason,
            output: self.output(),
        }
    }

    /// Where the sink listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What smtp-sink wrote to stdout and stderr so far (the `-c` counters
    /// and any error).
    pub fn output(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Killing an exited child fails harmlessly; wait() reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log_path);
        release_port(self.addr.port());
    }
}

/// Asks the kernel for a free port by binding port 0, then records it as
/// taken by this process before the listener is dropped.
fn reserve_free_port() -> Result<u16, PeersError> {
    let mut guard = PORTS_IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    let in_use = guard.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| PeersError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| PeersError::Io {
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?
            .port();
        if in_use.insert(port) {
            return Ok(port);
        }
    }
}

fn release_port(port: u16) {
    let mut guard = PORTS_IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(in_use) = guard.as_mut() {
        in_use.remove(&port);
    }
}

/// Counts sockets in LISTEN state on `port`, any address, IPv4 and IPv6,
/// from `/proc/net/tcp*` (columns: `sl local_address rem_address st ...`,
/// addresses as `HEXIP:HEXPORT`, state `0A` is LISTEN).
fn listeners_on_port(port: u16) -> usize {
    let wanted = format!(":{port:04X}");
    let mut count = 0;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            if columns.len() > 3 && columns[1].ends_with(&wanted) && columns[3] == "0A" {
                count += 1;
            }
        }
    }
    count
}

fn log_path(port: u16) -> PathBuf {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "ec-smtp-sink-{}-{port}-{sequence}.log",
        std::process::id()
    ))
}

/// The owner of `/proc/self` is this process's effective user.
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_count_sees_std_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        assert_eq!(listeners_on_port(port), 1);
        drop(listener);
        assert_eq!(listeners_on_port(port), 0);
    }

    #[test]
    fn reserved_ports_differ() {
        let first = reserve_free_port().expect("port");
        let second = reserve_free_port().expect("port");
        assert_ne!(first, second);
        release_port(first);
        release_port(second);
    }
}
