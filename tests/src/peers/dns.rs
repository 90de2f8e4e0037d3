//! A private authoritative DNS server (NSD) per test.
//!
//! [`DnsServer::start`] serves one zone from `/usr/sbin/nsd` (Debian
//! package `nsd`, tested with 4.6.1) on 127.0.0.1, UDP and TCP on the same
//! free port. [`TEST_ZONE`] is a zone for MX tests that product tests can
//! share.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::PeersError;

const NSD: &str = "/usr/sbin/nsd";
const NSD_CHECKZONE: &str = "/usr/sbin/nsd-checkzone";

/// How long a started nsd may take to respond to its first SOA query over UDP
/// and TCP. NSD 4.6.1 needed about 70 ms on an idle 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nsd's processes may take to exit after SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `nsd-checkzone` may take for one zone file.
const CHECKZONE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect, send and receive timeout of one readiness query.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Attempts to find a port that is still free when nsd binds it.
const PORT_ATTEMPTS: usize = 5;

/// Attempts to find a UDP port whose TCP port is free too.
const RESERVE_ATTEMPTS: usize = 100;

/// What nsd 4.6.1 logs when its port was taken after it was chosen.
const PORT_TAKEN_MESSAGE: &str = "Address already in use";

/// Ports held by live DNS servers of this process, so two servers started
/// at the same moment never get the same port.
static PORTS_IN_USE: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Origin of [`TEST_ZONE`].
pub const TEST_ORIGIN: &str = "dns.test.";

/// A zone for MX tests, origin [`TEST_ORIGIN`]. Every record has a TTL of
/// 60 s, and so do negative responses (the SOA minimum).
///
/// | name | records | what it is for |
/// |---|---|---|
/// | `dns.test` | SOA, NS `ns.dns.test` | the zone apex |
/// | `ns.dns.test` | A 127.0.0.1 | the name server |
/// | `good.dns.test` | A 127.0.0.1 | an SMTP host that a test can listen on |
/// | `down.dns.test` | A 127.0.0.2 | an SMTP host where nothing listens |
/// | `mx.dns.test` | MX 10 `good.dns.test` | one MX |
/// | `walk.dns.test` | MX 10 `down.dns.test`, MX 20 `good.dns.test` | falling back to the next MX |
/// | `implicit.dns.test` | A 127.0.0.1, no MX | the implicit MX (RFC 5321 section 5.1) |
/// | `nullmx.dns.test` | MX 0 `.` | the null MX: the domain accepts no mail (RFC 7505) |
/// | `noaddr.dns.test` | MX 10 `missing-host.dns.test` | an MX whose host has no address |
/// | `v6.dns.test` | MX 10 `good6.dns.test` | an MX reached over IPv6 |
/// | `good6.dns.test` | AAAA ::1 | the IPv6 SMTP host |
///
/// Answers for other names, as NSD 4.6.1 gives them:
///
/// - A name under `dns.test` that is not listed, `missing-host.dns.test`
///   among them, gets NXDOMAIN.
/// - A listed name asked for a type it lacks (MX of `implicit.dns.test` or
///   `good.dns.test`, AAAA of `good.dns.test`) gets NOERROR with no answer
///   (NODATA).
/// - A name outside `dns.test` gets REFUSED, because NSD only serves its
///   own zones. The product treats REFUSED as a temporary DNS failure.
///   hickory-resolver 0.25 reports it as `ProtoErrorKind::NoRecordsFound`
///   with `response_code: Refused`, so `ResolveError::is_no_records_found()`
///   is true for REFUSED too. Tell it from NODATA by the response code.
///
/// NOTE: nothing listens on 127.0.0.2 unless a test binds a wildcard
/// address (0.0.0.0) or 127.0.0.2 itself. Connections to `down.dns.test`
/// are refused at once, without waiting for a timeout.
pub const TEST_ZONE: &str = "\
$ORIGIN dns.test.
$TTL 60
@         IN SOA  ns.dns.test. hostmaster.dns.test. ( 1 3600 600 86400 60 )
@         IN NS   ns.dns.test.
ns        IN A    127.0.0.1
good      IN A    127.0.0.1
down      IN A    127.0.0.2
mx        IN MX   10 good.dns.test.
walk      IN MX   10 down.dns.test.
walk      IN MX   20 good.dns.test.
implicit  IN A    127.0.0.1
nullmx    IN MX   0 .
noaddr    IN MX   10 missing-host.dns.test.
v6        IN MX   10 good6.dns.test.
good6     IN AAAA ::1
";

/// A private NSD on 127.0.0.1 serving one zone, killed when dropped.
///
/// nsd runs in its own process group without chroot and without dropping
/// privileges, from a temporary directory that contains its configuration,
/// the zone file, its state files and its log. Drop kills the whole group
/// (nsd forks a main and a server process) and removes the directory.
/// Because of the separate group, Ctrl-C on a test run does not reach nsd.
/// A test that ends normally or panics still stops it through Drop.
#[derive(Debug)]
pub struct DnsServer {
    process: NsdProcess,
    addr: SocketAddr,
    origin: String,
    log_path: PathBuf,
    // Dropped after `process`, so nsd never runs without its directory.
    _dir: TempDir,
}

impl DnsServer {
    /// Starts nsd serving `zone` (zone file text) as `origin`, on 127.0.0.1
    /// at a free port for both UDP and TCP, and waits until it responds to a
    /// SOA query for `origin` over both. `origin` may omit the final dot.
    ///
    /// # Errors
    ///
    /// - [`PeersError::NsdMissing`] when `/usr/sbin/nsd` or
    ///   `/usr/sbin/nsd-checkzone` does not exist. This happens on every
    ///   machine, CI included: a test that needs the DNS server fails
    ///   instead of skipping.
    /// - [`PeersError::DnsOriginInvalid`] when `origin` is not a domain name.
    /// - [`PeersError::DnsZoneInvalid`] when `nsd-checkzone` rejects the
    ///   zone. The message contains its output.
    /// - [`PeersError::NsdStart`] when nsd exits, does not answer within
    ///   10 s, or finds its port taken on every attempt. The message
    ///   contains its output.
    /// - [`PeersError::Io`] when the temporary directory or its files cannot
    ///   be written.
    pub fn start(zone: &str, origin: &str) -> Result<DnsServer, PeersError> {
        Self::start_with(Path::new(NSD), Path::new(NSD_CHECKZONE), zone, origin)
    }

    fn start_with(
        nsd: &Path,
        checkzone: &Path,
        zone: &str,
        origin: &str,
    ) -> Result<DnsServer, PeersError> {
        for program in [nsd, checkzone] {
            if !program.exists() {
                return Err(PeersError::NsdMissing {
                    path: program.to_path_buf(),
                });
            }
        }
        let origin = normalize_origin(origin)?;

        let dir = tempfile::Builder::new()
            .prefix("ec-nsd-")
            .tempdir()
            .map_err(|source| PeersError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let zone_path = dir.path().join("zone");
        write_file(&zone_path, zone)?;
        check_zone(checkzone, &origin, &zone_path, dir.path())?;

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = reserve_free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match NsdProcess::start(nsd, dir.path(), &origin, addr) {
                Ok(process) => {
                    return Ok(DnsServer {
                        process,
                        addr,
                        origin,
                        log_path: log_path(dir.path()),
                        _dir: dir,
                    });
                }
                Err(failure) => {
                    release_port(port);
                    if !failure.port_taken {
                        return Err(failure.error);
                    }
                    last_error = Some(failure.error);
                }
            }
        }
        Err(last_error.expect("PORT_ATTEMPTS is not zero"))
    }

    /// Returns the address the server listens on, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the zone's origin, with the final dot.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Reads what nsd wrote to stderr and its log file so far: start, zone
    /// load and errors. It logs no queries.
    pub fn output(&self) -> String {
        read_output(&self.log_path)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Stop nsd before the port is released, so no other server of this
        // process is handed a port that nsd still holds.
        self.process.stop();
        release_port(self.addr.port());
    }
}

/// The nsd process group. Stopped when dropped.
#[derive(Debug)]
struct NsdProcess {
    child: Child,
    /// Set once the child is reaped. Its pid may then belong to another
    /// process, so it must not be signalled again.
    reaped: bool,
}

/// Why one start attempt failed, and whether another port may succeed.
struct StartFailure {
    error: PeersError,
    port_taken: bool,
}

impl NsdProcess {
    /// Writes the configuration for `addr`, runs `nsd -d -c CONF` and waits
    /// until it answers.
    fn start(
        nsd: &Path,
        dir: &Path,
        origin: &str,
        addr: SocketAddr,
    ) -> Result<NsdProcess, StartFailure> {
        let fail = |error| StartFailure {
            error,
            port_taken: false,
        };
        let config_path = dir.join("nsd.conf");
        write_file(&config_path, &nsd_config(dir, origin, addr.port())).map_err(fail)?;

        // nsd appends to its log file, so stderr must append as well or the
        // two would overwrite each other. A fresh file per attempt keeps
        // the messages of an attempt on a taken port out of the output.
        let log_path = log_path(dir);
        let _ = fs::remove_file(&log_path);
        let log = open_log(&log_path).map_err(fail)?;
        let log_for_stderr = log.try_clone().map_err(|source| {
            fail(PeersError::Io {
                path: log_path.clone(),
                source,
            })
        })?;

        let mut command = Command::new(nsd);
        command
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            // A group of its own, so Drop can kill the processes nsd forks.
            .process_group(0);
        let child = command.spawn().map_err(|error| {
            fail(PeersError::NsdStart {
                origin: origin.to_owned(),
                reason: format!("{} could not be run: {error}", nsd.display()),
                output: String::new(),
            })
        })?;

        let mut process = NsdProcess {
            child,
            reaped: false,
        };
        process.wait_until_answering(origin, addr, &log_path)?;
        Ok(process)
    }

    /// Polls with SOA queries over UDP, then TCP, until both are answered
    /// or [`START_TIMEOUT`] passes.
    fn wait_until_answering(
        &mut self,
        origin: &str,
        addr: SocketAddr,
        log_path: &Path,
    ) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = true;
                let output = read_output(log_path);
                return Err(StartFailure {
                    port_taken: output.contains(PORT_TAKEN_MESSAGE),
                    error: PeersError::NsdStart {
                        origin: origin.to_owned(),
                        reason: format!("it exited ({status}) while starting on {addr}"),
                        output,
                    },
                });
            }

            let problem =
                match query_soa_udp(addr, origin).and_then(|()| query_soa_tcp(addr, origin)) {
                    Ok(()) => return Ok(()),
                    Err(problem) => problem,
                };

            if Instant::now() >= deadline {
                return Err(StartFailure {
                    port_taken: false,
                    error: PeersError::NsdStart {
                        origin: origin.to_owned(),
                        reason: format!(
                            "no valid answer to a SOA query on {addr} within \
                             {START_TIMEOUT:?}; the last query failed with: {problem}"
                        ),
                        output: read_output(log_path),
                    },
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process group and reaps the child. Does nothing the second
    /// time.
    fn stop(&mut self) {
        if self.reaped {
            return;
        }
        // The child leads the group, so its pid is the group id. The group
        // is gone already when nsd exited by itself, and killpg then fails
        // harmlessly.
        let group = i32::try_from(self.child.id()).ok();
        if let Some(group) = group {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;

        // The other processes are not children of this one, so wait() does
        // not cover them. The server process keeps the sockets open until
        // it has exited.
        let Some(group) = group else {
            return;
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while group_has_live_process(group) {
            if Instant::now() >= deadline {
                eprintln!(
                    "nsd's process group {group} still has processes {STOP_TIMEOUT:?} \
                     after SIGKILL; its port may stay taken"
                );
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NsdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns whether process group `group` has a process that has not exited
/// yet, from `/proc/PID/stat`. Its fields after the command name, which is
/// in parentheses and may contain spaces, start with the state and then
/// the parent pid and the group. Zombies (`Z`) and dead processes (`X`)
/// have released their sockets already.
fn group_has_live_process(group: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    let group = group.to_string();
    entries.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some((_, after_command)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = after_command.split_whitespace().collect();
        fields.len() > 2 && fields[2] == group && !matches!(fields[0], "Z" | "X")
    })
}

/// Returns `origin` with a final dot, or an error when it is not a domain
/// name made of letters, digits, `-` and `_` in labels of 1 to 63
/// characters. The check also keeps it safe to quote in nsd.conf.
fn normalize_origin(origin: &str) -> Result<String, PeersError> {
    let invalid = |reason| PeersError::DnsOriginInvalid {
        origin: origin.to_owned(),
        reason,
    };
    if origin.is_empty() {
        return Err(invalid("it is empty"));
    }
    if origin == "." {
        return Ok(origin.to_owned());
    }
    let name = origin.strip_suffix('.').unwrap_or(origin);
    if name.len() > 253 {
        return Err(invalid("it is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid("it has an empty label"));
        }
        if label.len() > 63 {
            return Err(invalid("it has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "it has a character other than a letter, digit, '-', '_' or '.'",
            ));
        }
    }
    Ok(format!("{name}."))
}

/// Configuration for one zone on 127.0.0.1 at `port`, with every file nsd
/// writes inside `dir`. `username: ""` keeps nsd from changing user, so the
/// same file works for root and for other users.
fn nsd_config(dir: &Path, origin: &str, port: u16) -> String {
    let dir = dir.display();
    format!(
        "\
server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    reuseport: no
    server-count: 1
    username: \"\"
    chroot: \"\"
    zonesdir: \"{dir}\"
    database: \"\"
    pidfile: \"{dir}/nsd.pid\"
    zonelistfile: \"{dir}/zone.list\"
    xfrdfile: \"{dir}/xfrd.state\"
    xfrdir: \"{dir}\"
    logfile: \"{dir}/nsd.log\"
    verbosity: 1

remote-control:
    control-enable: no

zone:
    name: \"{origin}\"
    zonefile: \"{dir}/zone\"
"
    )
}

/// Runs `nsd-checkzone ORIGIN ZONEFILE` and returns its output as the error
/// when it rejects the zone.
fn check_zone(
    checkzone: &Path,
    origin: &str,
    zone_path: &Path,
    dir: &Path,
) -> Result<(), PeersError> {
    let output_path = dir.join("checkzone.log");
    let output = File::create(&output_path).map_err(|source| PeersError::Io {
        path: output_path.clone(),
        source,
    })?;
    let output_for_stderr = output.try_clone().map_err(|source| PeersError::Io {
        path: output_path.clone(),
        source,
    })?;
    let invalid = |output| PeersError::DnsZoneInvalid {
        origin: origin.to_owned(),
        output,
    };

    let mut child = Command::new(checkzone)
        .arg(origin)
        .arg(zone_path)
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(output_for_stderr)
        .spawn()
        .map_err(|error| invalid(format!("{} could not be run: {error}", checkzone.display())))?;

    let deadline = Instant::now() + CHECKZONE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(invalid(format!(
                    "{} timed out after {CHECKZONE_TIMEOUT:?}",
                    checkzone.display()
                )));
            }
            Err(error) => return Err(invalid(format!("waiting for it failed: {error}"))),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(invalid(read_output(&output_path)))
    }
}

/// Sends a SOA query for `origin` over UDP and checks the answer.
fn query_soa_udp(addr: SocketAddr, origin: &str) -> Result<(), String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("UDP bind: {e}"))?;
    socket
        .connect(addr)
        .map_err(|e| format!("UDP connect: {e}"))?;
    socket
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| format!("UDP timeout: {e}"))?;

    let id = next_query_id();
    socket
        .send(&soa_query(id, origin))
        .map_err(|e| format!("UDP send: {e}"))?;
    let mut response = [0u8; 4096];
    let length = socket
        .recv(&mut response)
        .map_err(|e| format!("UDP receive: {e}"))?;
    check_soa_answer(id, &response[..length])
}

/// Sends a SOA query for `origin` over TCP (RFC 1035 section 4.2.2: each
/// message has a two-byte length prefix) and checks the answer.
fn query_soa_tcp(addr: SocketAddr, origin: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|e| format!("TCP connect: {e}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| format!("TCP timeout: {e}"))?;
    stream
        .set_write_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| format!("TCP timeout: {e}"))?;

    let id = next_query_id();
    let query = soa_query(id, origin);
    let length = u16::try_from(query.len()).expect("a query for a name of at most 255 bytes");
    let mut message = length.to_be_bytes().to_vec();
    message.extend_from_slice(&query);
    stream
        .write_all(&message)
        .map_err(|e| format!("TCP send: {e}"))?;

    let mut length = [0u8; 2];
    stream
        .read_exact(&mut length)
        .map_err(|e| format!("TCP receive: {e}"))?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream
        .read_exact(&mut response)
        .map_err(|e| format!("TCP receive: {e}"))?;
    check_soa_answer(id, &response)
}

fn next_query_id() -> u16 {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Builds a DNS query message (RFC 1035 section 4.1) for the SOA record of
/// `origin`, class IN, recursion not desired. `origin` is a name that
/// [`normalize_origin`] accepted.
fn soa_query(id: u16, origin: &str) -> Vec<u8> {
    const QTYPE_SOA: u16 = 6;
    const QCLASS_IN: u16 = 1;

    let mut message = Vec::with_capacity(12 + origin.len() + 6);
    message.extend_from_slice(&id.to_be_bytes());
    // Flags 0: a standard query without RD. One question, no other records.
    message.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in origin.split('.').filter(|label| !label.is_empty()) {
        let length = u8::try_from(label.len()).expect("labels are at most 63 bytes");
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&QTYPE_SOA.to_be_bytes());
    message.extend_from_slice(&QCLASS_IN.to_be_bytes());
    message
}

/// Checks that `response` answers query `id` authoritatively with NOERROR
/// and at least one answer record, which shows the zone is loaded. NSD
/// answers SERVFAIL for a zone that failed to load.
fn check_soa_answer(id: u16, response: &[u8]) -> Result<(), String> {
    const FLAG_QR: u8 = 0x80;
    const FLAG_AA: u8 = 0x04;

    if response.len() < 12 {
        return Err(format!(
            "the response has {} bytes, less than a DNS header",
            response.len()
        ));
    }
    let response_id = u16::from_be_bytes([response[0], response[1]]);
    if response_id != id {
        return Err(format!("the response has id {response_id}, expected {id}"));
    }
    if response[2] & FLAG_QR == 0 {
        return Err("the response is not marked as a response (QR is 0)".to_owned());
    }
    let rcode = response[3] & 0x0f;
    if rcode != 0 {
        return Err(format!(
            "the response code is {rcode} (2 is SERVFAIL: the zone did not load)"
        ));
    }
    if response[2] & FLAG_AA == 0 {
        return Err("the answer is not authoritative (AA is 0)".to_owned());
    }
    let answers = u16::from_be_bytes([response[6], response[7]]);
    if answers == 0 {
        return Err("the answer has no SOA record".to_owned());
    }
    Ok(())
}

/// Asks the kernel for a UDP port and checks that TCP can bind it too, then
/// records it as taken by this process before both sockets are dropped.
fn reserve_free_port() -> Result<u16, PeersError> {
    let io_error = |source| PeersError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let mut in_use = PORTS_IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..RESERVE_ATTEMPTS {
        let udp = UdpSocket::bind("127.0.0.1:0").map_err(io_error)?;
        let port = udp.local_addr().map_err(io_error)?.port();
        if in_use.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            in_use.insert(port);
            return Ok(port);
        }
    }
    Err(io_error(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "none of {RESERVE_ATTEMPTS} UDP ports that the kernel offered on 127.0.0.1 \
             was free for TCP as well; stop programs that hold many loopback ports"
        ),
    )))
}

fn release_port(port: u16) {
    PORTS_IN_USE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&port);
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("nsd.log")
}

fn open_log(path: &Path) -> Result<File, PeersError> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| PeersError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn write_file(path: &Path, contents: &str) -> Result<(), PeersError> {
    fs::write(path, contents).map_err(|source| PeersError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_output(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_gets_final_dot() {
        assert_eq!(normalize_origin("dns.test").unwrap(), "dns.test.");
        assert_eq!(normalize_origin("dns.test.").unwrap(), "dns.test.");
        assert_eq!(normalize_origin(".").unwrap(), ".");
    }

    #[test]
    fn origin_rejects_bad_names() {
        let long_label = "a".repeat(64);
        for origin in ["", "dns..test", "dns test.", "dns\"test.", &long_label] {
            let error = normalize_origin(origin).unwrap_err();
            assert!(
                matches!(error, PeersError::DnsOriginInvalid { .. }),
                "{origin:?}: {error}"
            );
        }
    }

    #[test]
    fn missing_nsd_names_install_command() {
        let missing = Path::new("/nonexistent/nsd");
        let error =
            DnsServer::start_with(missing, Path::new(NSD_CHECKZONE), TEST_ZONE, TEST_ORIGIN)
                .unwrap_err();
        assert!(matches!(error, PeersError::NsdMissing { .. }), "{error}");
        assert!(
            error.to_string().contains("apt-get install -y nsd"),
            "{error}"
        );
        assert!(error.to_string().contains("/nonexistent/nsd"), "{error}");
    }

    #[test]
    fn soa_query_encodes_labels() {
        let query = soa_query(0x1234, "dns.test.");
        let mut expected = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(b"\x03dns\x04test\x00\x00\x06\x00\x01");
        assert_eq!(query, expected);
    }

    #[test]
    fn soa_check_rejects_bad_answers() {
        // id 7, QR and AA set, NOERROR, one question, one answer.
        let good = [0, 7, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        assert_eq!(check_soa_answer(7, &good), Ok(()));

        assert!(check_soa_answer(8, &good).unwrap_err().contains("id 7"));
        assert!(check_soa_answer(7, &good[..11])
            .unwrap_err()
            .contains("11 bytes"));

        let mut servfail = good;
        servfail[3] = 2;
        assert!(check_soa_answer(7, &servfail)
            .unwrap_err()
            .contains("SERVFAIL"));

        let mut not_authoritative = good;
        not_authoritative[2] = 0x80;
        assert!(check_soa_answer(7, &not_authoritative)
            .unwrap_err()
            .contains("AA is 0"));

        let mut query = good;
        query[2] = 0x04;
        assert!(check_soa_answer(7, &query).unwrap_err().contains("QR is 0"));

        let mut empty = good;
        empty[7] = 0;
        assert!(check_soa_answer(7, &empty)
            .unwrap_err()
            .contains("no SOA record"));
    }

    #[test]
    fn live_group_is_seen() {
        let own_group = nix::unistd::getpgrp().as_raw();
        assert!(group_has_live_process(own_group));
        // Group ids are process ids, and Linux keeps them below 2^22.
        assert!(!group_has_live_process(i32::MAX));
    }

    #[test]
    fn taken_port_allows_retry() {
        let holder = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = holder.local_addr().expect("address");
        let dir = TempDir::new().expect("temporary directory");
        write_file(&dir.path().join("zone"), TEST_ZONE).expect("zone file");

        let failure = NsdProcess::start(Path::new(NSD), dir.path(), TEST_ORIGIN, addr)
            .expect_err("nsd cannot bind a taken UDP port");

        assert!(failure.port_taken, "{}", failure.error);
        assert!(
            failure.error.to_string().contains(PORT_TAKEN_MESSAGE),
            "{}",
            failure.error
        );
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
