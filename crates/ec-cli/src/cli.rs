//! The command line of `ec`: `ec deliver`, `ec demo` and `ec sink`, the
//! checks that turn bad values into usage errors (exit status 64), and the
//! [`Config`] that `ec deliver`'s flags and its `--config` file make.
//!
//! Values are parsed by clap through the `FromStr` parsers of this module and
//! of `ec_types`, so a bad value is rejected before anything runs, with a
//! message that names the option, the value and the expected form. Checks
//! that need more than one value or the file system ([`DeliverArgs::config`])
//! return a [`UsageError`].

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ec_types::{Address, Config, Domain, ReversePath, Route, Settings, TlsPolicy, TlsVerify};
use thiserror::Error;

/// Exit status for a usage error: bad options, values or configuration
/// (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// The `ec` command line.
#[derive(Debug, Parser)]
#[command(
    name = "ec",
    version,
    about = "Deliver RFC 5322 message files over SMTP, the way an MTA's outbound engine does.",
    propagate_version = true
)]
pub struct Cli {
    /// How much `ec` reports while it runs.
    #[command(flatten)]
    pub verbosity: Verbosity,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How much the command logs and whether it shows a progress bar.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Verbosity {
    /// Log more: -v for run-level events, -vv for each connection and every
    /// SMTP step, -vvv for everything.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print only errors and the summary table; no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl Verbosity {
    /// The `tracing_subscriber::EnvFilter` directive for these flags:
    /// `error` with `--quiet`, `warn` by default, then `info`, `debug` and
    /// `trace` for each `-v`.
    pub fn filter_directive(&self) -> &'static str {
        if self.quiet {
            return "error";
        }
        match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per run; boxing gains nothing.
pub enum Command {
    /// Send message files over SMTP: through --relay or the routes in --config,
    /// else to each recipient domain's MX hosts.
    Deliver(DeliverArgs),
    /// Deliver bundled sample messages to a built-in SMTP sink over TLS.
    Demo(DemoArgs),
    /// Run the built-in SMTP sink in the foreground until interrupted.
    Sink(SinkArgs),
}

/// Options of `ec deliver`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Exit status: 0 all delivered; 64 usage error; 65 some input invalid; \
69 no connection could be made (unless every recipient failed for good, \
as with a null MX); 75 some deferred or delivery unknown; \
76 some failed permanently. The first that applies, in the order \
64, 69, 75, 76, 65, 0. Apart from those: 74 a delivery log write failed \
(the run stops at once); 70 an internal error ended the run; 130 or 143 \
a second Ctrl-C or SIGTERM cut the open connections.")]
pub struct DeliverArgs {
    /// Message files (RFC 5322, one message each, any name) and directories,
    /// in which every file whose name ends in `.eml` is taken, recursively.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,

    /// Envelope sender (MAIL FROM) for every message, replacing the one taken
    /// from Return-Path, Sender or From. `<>` is the null sender.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_reverse_path)]
    pub from: Option<ReversePath>,

    /// Envelope recipient (RCPT TO) for every message; repeat for more. Any
    /// --to replaces the recipients taken from To, Cc and Bcc.
    #[arg(long, value_name = "ADDRESS")]
    pub to: Vec<Address>,

    /// Send all mail through this SMTP server. Without it, mail goes to each
    /// recipient domain's MX hosts on port 25. IPv6 addresses go in
    /// brackets, as in `[::1]:25`.
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: Option<RelayAddress>,

    /// TLS policy: STARTTLS never, when offered, or always (required), or
    /// implicit TLS from the connect on, as relays on port 465 expect. Under
    /// required and implicit, mail is deferred when TLS cannot be set up.
    /// Default: the config file's, else opportunistic.
    #[arg(long, value_name = "POLICY")]
    pub tls: Option<TlsPolicyArg>,

    /// Server certificate check: none, a chain to a trusted root (ca), or a
    /// chain plus the server's name (host). Default: the config file's, else
    /// host under --tls required or implicit, and none otherwise.
    #[arg(long, value_name = "MODE")]
    pub tls_verify: Option<TlsVerifyArg>,

    /// PEM file of trusted root certificates for --tls-verify ca or host,
    /// instead of the built-in web PKI roots.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// Name sent in TLS SNI and checked against the server's certificate,
    /// instead of the host name connected to: a DNS name or an IP address,
    /// with an IPv6 address optionally in brackets.
    #[arg(long, value_name = "NAME", value_parser = parse_server_name)]
    pub tls_server_name: Option<String>,

    /// Maximum simultaneous connections to one recipient domain (a count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: Option<u32>,

    /// Maximum messages sent on one connection before it is closed and a new
    /// one opened (a count; 0 means no limit).
    #[arg(long, value_name = "N")]
    pub max_deliveries_per_connection: Option<u32>,

    /// Name sent in EHLO (a domain name or an address literal such as
    /// `[192.0.2.1]`). Default: the config file's, else localhost.
    #[arg(long, value_name = "NAME", value_parser = parse_ehlo_name)]
    pub ehlo: Option<String>,

    /// TOML configuration file (sections engine, dns, global, binding and
    /// domain); command-line flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// How long this run retries deferred mail, as a duration such as 30s,
    /// 10m or 2h. Mail a server deferred with a 4xx reply fails when the
    /// time is up, and its log detail reads "delivery time expired" (status
    /// 5.4.7). Mail that never reached a server stays deferred.
    /// Without it the run does not wait for retries: a deferred recipient
    /// is logged as deferred, for a later run with --resume.
    #[arg(long, value_name = "DURATION", value_parser = parse_retry_for)]
    pub retry_for: Option<Duration>,

    /// Serve Prometheus metrics over HTTP on this IP address and port.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Append one JSON line per recipient outcome to this file, written as
    /// each outcome happens.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Read the --log file first and skip recipients whose outcome there is
    /// final (delivered, failed, invalid_input); deferred and
    /// delivery_unknown recipients are tried again. Files match by their
    /// canonical path, so ./mail/1.eml and mail/1.eml are one file. A log
    /// that does not exist yet skips nothing, and this run starts it.
    #[arg(long, requires = "log")]
    pub resume: bool,
}

/// Options of `ec demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Generated messages to send in addition to the bundled samples (a
    /// count).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub messages: u32,

    /// Maximum simultaneous connections to the sink (a count).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Write the delivery log (JSON Lines, one record per recipient) to
    /// this file and keep it. Without it the log goes to a temporary file
    /// that the demo prints one record of and then removes.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// Options of `ec sink`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Exit status: 0 after Ctrl-C or SIGTERM; 64 usage error, including a \
listen address that is not loopback or cannot be bound; 70 any other \
error, such as a CA file that cannot be written.")]
pub struct SinkArgs {
    /// IP address and port to listen on. Only loopback addresses are
    /// accepted unless --allow-non-loopback is given.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:2525",
          value_parser = parse_sink_listen)]
    pub listen: SocketAddr,

    /// Listen on a non-loopback address, reachable from other hosts.
    #[arg(long)]
    pub allow_non_loopback: bool,

    /// Reject every command but EHLO, HELO, STARTTLS and QUIT until TLS is
    /// set up (530 5.7.0).
    #[arg(long)]
    pub require_tls: bool,

    /// Run the TLS handshake right after the connect, before the greeting
    /// (implicit TLS, as on port 465), instead of offering STARTTLS. Clients
    /// then need --tls implicit.
    #[arg(long)]
    pub implicit_tls: bool,

    /// Do not offer CHUNKING (RFC 3030), so that clients send with DATA.
    /// BDAT then gets 502.
    #[arg(long)]
    pub no_chunking: bool,

    /// Largest message accepted, in octets; it is also announced in the EHLO
    /// SIZE keyword.
    #[arg(long, value_name = "OCTETS", default_value_t = crate::sink::DEFAULT_MAX_MESSAGE_SIZE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_message_size: u64,

    /// Host name in the greeting and the EHLO reply.
    #[arg(long, value_name = "NAME", default_value = "localhost", value_parser = parse_ehlo_name)]
    pub hostname: String,

    /// Write the generated CA certificate (PEM) to this file, for clients'
    /// --ca-file. Without it, it is written to a temporary file whose path
    /// is printed.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
}

impl SinkArgs {
    /// Checks the values that clap cannot check alone.
    ///
    /// # Errors
    ///
    /// [`UsageError::NotLoopback`] when `--listen` is not a loopback address
    /// and `--allow-non-loopback` was not given.
    pub fn validate(&self) -> Result<(), UsageError> {
        if !self.allow_non_loopback && !self.listen.ip().is_loopback() {
            return Err(UsageError::NotLoopback {
                address: self.listen,
            });
        }
        Ok(())
    }
}

/// `--tls` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsPolicyArg {
    /// Never send STARTTLS.
    Disabled,
    /// Use STARTTLS when the server offers it.
    Opportunistic,
    /// Never send mail in clear text.
    Required,
    /// TLS from connect, before the greeting, as on port 465 (RFC 8314).
    Implicit,
}

impl From<TlsPolicyArg> for TlsPolicy {
    fn from(value: TlsPolicyArg) -> Self {
        match value {
            TlsPolicyArg::Disabled => Self::Disabled,
            TlsPolicyArg::Opportunistic => Self::Opportunistic,
            TlsPolicyArg::Required => Self::Required,
            TlsPolicyArg::Implicit => Self::Implicit,
        }
    }
}

/// `--tls-verify` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVerifyArg {
    /// Accept any certificate.
    None,
    /// The chain must lead to a trusted root.
    Ca,
    /// The chain must lead to a trusted root and name the server.
    Host,
}

impl From<TlsVerifyArg> for TlsVerify {
    fn from(value: TlsVerifyArg) -> Self {
        match value {
            TlsVerifyArg::None => Self::None,
            TlsVerifyArg::Ca => Self::Ca,
            TlsVerifyArg::Host => Self::Host,
        }
    }
}

/// A `--relay` value: a host name or IP address and a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddress {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl RelayAddress {
    /// The route that sends every domain's mail to this relay.
    pub fn route(&self) -> Route {
        Route::Relay {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// An invalid `--relay` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RelayAddressError {
    /// No `:PORT` at the end.
    #[error("relay {0:?} has no port; write it as HOST:PORT, such as mail.example.net:25")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("relay port {port:?} in {value:?} is invalid; use a number from 1 to 65535")]
    InvalidPort {
        /// The whole value.
        value: String,
        /// The port text.
        port: String,
    },
    /// An IPv6 address without brackets, so the port cannot be separated from the address.
    #[error("relay {0:?} looks like an IPv6 address; write it in brackets, such as [::1]:25")]
    UnbracketedIpv6(String),
    /// The text in brackets is not an IPv6 address.
    #[error("relay host {0:?} is in brackets but is not an IPv6 address")]
    InvalidIpv6(String),
    /// The host part is not a valid host name.
    #[error("relay host in {value:?} is invalid: {source}")]
    InvalidHost {
        /// The whole value.
        value: String,
        /// The reason for the rejection.
        source: ec_types::AddressError,
    },
}

impl FromStr for RelayAddress {
    type Err = RelayAddressError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| RelayAddressError::MissingPort(value.to_owned()))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| RelayAddressError::InvalidIpv6(host.to_owned()))?;
            (host, port)
        } else {
            let (host, port) = value
                .rsplit_once(':')
                .ok_or_else(|| RelayAddressError::MissingPort(value.to_owned()))?;
            if host.contains(':') {
                return Err(RelayAddressError::UnbracketedIpv6(value.to_owned()));
            }
            Domain::new(host).map_err(|source| RelayAddressError::InvalidHost {
                value: value.to_owned(),
                source,
            })?;
            (host, port)
        };

        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&port| port != 0)
            .ok_or_else(|| RelayAddressError::InvalidPort {
                value: value.to_owned(),
                port: port.to_owned(),
            })?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// An invalid duration, EHLO name or TLS server name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a duration humantime can read.
    #[error("invalid duration {value:?}: {reason}; write it like 30s, 10m or 2h")]
    Duration {
        /// The rejected text.
        value: String,
        /// humantime's reason.
        reason: String,
    },
    /// A zero `--retry-for`.
    #[error(
        "--retry-for 0s would fail every deferred recipient at its first 4xx reply; give a \
         duration above zero, or leave --retry-for out to record deferred mail for --resume"
    )]
    ZeroRetry,
    /// Not usable as an EHLO argument.
    #[error("invalid host name {value:?}: {source}")]
    HostName {
        /// The rejected text.
        value: String,
        /// The reason for the rejection.
        source: ec_types::AddressError,
    },
    /// Not an IP address and port.
    #[error(
        "invalid listen address {value:?}: write an IP address and a port, such as {example} \
         or [::1]:{port}; host names such as localhost are not accepted",
        port = example.rsplit(':').next().unwrap_or_default()
    )]
    ListenAddress {
        /// The rejected text.
        value: String,
        /// A valid value for the option, such as `127.0.0.1:2525`.
        example: &'static str,
    },
    /// An IP address whose port number is out of range.
    #[error("invalid listen address {value:?}: port {port} is out of range; give 1 to 65535")]
    ListenPort {
        /// The rejected text.
        value: String,
        /// The port as written.
        port: String,
    },
    /// Not a DNS name or IP address that TLS can check a certificate against.
    #[error(
        "invalid TLS server name {0:?}: give a DNS name such as mx.example.net or an IP \
         address such as 192.0.2.1, ::1 or [::1]"
    )]
    ServerName(String),
}

/// Parses a duration such as `30s`, `10m` or `1h 30m`.
///
/// # Errors
///
/// [`ValueError::Duration`] naming the text.
pub fn parse_duration(value: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(value).map_err(|error| ValueError::Duration {
        value: value.to_owned(),
        reason: error.to_string(),
    })
}

/// Parses `--retry-for`: a duration above zero.
///
/// # Errors
///
/// [`ValueError::Duration`] naming the text, or [`ValueError::ZeroRetry`].
pub fn parse_retry_for(value: &str) -> Result<Duration, ValueError> {
    match parse_duration(value)? {
        Duration::ZERO => Err(ValueError::ZeroRetry),
        window => Ok(window),
    }
}

/// Parses `ec sink --listen`: an IP address and a port.
///
/// # Errors
///
/// [`ValueError::ListenAddress`] naming the text, with an example.
pub fn parse_sink_listen(value: &str) -> Result<SocketAddr, ValueError> {
    parse_listen(value, "127.0.0.1:2525")
}

/// Parses `ec deliver --metrics-listen`: an IP address and a port.
///
/// # Errors
///
/// [`ValueError::ListenAddress`] naming the text, with an example.
pub fn parse_metrics_listen(value: &str) -> Result<SocketAddr, ValueError> {
    parse_listen(value, "127.0.0.1:9464")
}

fn parse_listen(value: &str, example: &'static str) -> Result<SocketAddr, ValueError> {
    if let Ok(address) = value.parse() {
        return Ok(address);
    }
    // An IP address with a port number past 65535 gets its own message:
    // the general one would blame the host.
    if let Some((host, port)) = value.rsplit_once(':') {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        if digits && host.parse::<std::net::IpAddr>().is_ok() {
            return Err(ValueError::ListenPort {
                value: value.to_owned(),
                port: port.to_owned(),
            });
        }
    }
    Err(ValueError::ListenAddress {
        value: value.to_owned(),
        example,
    })
}

fn parse_reverse_path(value: &str) -> Result<ReversePath, ec_types::AddressError> {
    ReversePath::new(value)
}

/// Checks an EHLO argument (a domain name or an address literal in
/// brackets) and returns it as given.
///
/// # Errors
///
/// [`ValueError::HostName`] when it is empty or contains a space, a control
/// character or a character that cannot appear in a host name.
pub fn parse_ehlo_name(value: &str) -> Result<String, ValueError> {
    Domain::new(value).map_err(|source| ValueError::HostName {
        value: value.to_owned(),
        source,
    })?;
    Ok(value.to_owned())
}

/// Checks a TLS server name (a DNS name or an IP address, optionally in
/// brackets) and returns it as given.
///
/// It calls the parser that the SMTP client applies at connect time, which
/// is also the rule of the config file's `tls.server_name` in
/// [`Config::validate`]. A test checks that the two agree.
///
/// # Errors
///
/// [`ValueError::ServerName`] when rustls would not accept it for SNI and
/// the certificate check.
pub fn parse_server_name(value: &str) -> Result<String, ValueError> {
    ec_smtp_client::tls::server_name(value)
        .map_err(|_| ValueError::ServerName(value.to_owned()))?;
    Ok(value.to_owned())
}

/// A usage error found after parsing: the command does not start, and `ec`
/// exits with [`EXIT_USAGE`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The configuration cannot work for a command-line run.
    #[error("{0}")]
    Config(String),
    /// The `--config` file could not be read.
    #[error("cannot read the config file {path}: {source}; check the --config path")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for [`Config`].
    #[error(
        "invalid config file {path}{}: {source}",
        key.as_ref().map(|key| format!(", key {key}")).unwrap_or_default()
    )]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The dotted key the error points at, when it points at one.
        key: Option<String>,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value of the `--config` file that parses but cannot be used.
    #[error("invalid value in the config file {path}: {source}")]
    ConfigValue {
        /// The file.
        path: PathBuf,
        /// The error, which names the setting and its scope.
        source: ec_types::ConfigError,
    },
    /// The `--ca-file` could not be read.
    #[error("cannot read the CA file {path}: {source}; check the --ca-file path")]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `tls.ca_file` of the `--config` file that cannot be used.
    #[error(
        "invalid tls.ca_file {ca_file:?} in the {scope} settings of the config file {path}: \
         {problem}"
    )]
    ConfigCaFile {
        /// The config file.
        path: PathBuf,
        /// The scope that sets it, such as `global` or `domain example.com`.
        scope: String,
        /// The CA file it names.
        ca_file: PathBuf,
        /// The fault, and what to do about it.
        problem: String,
    },
    /// The `--ca-file` contains no PEM certificate.
    #[error(
        "the CA file {0} contains no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line); \
         give a file of PEM root certificates"
    )]
    CaFileEmpty(PathBuf),
    /// Options that contradict each other.
    #[error(
        "{option} has no effect with --tls disabled; remove it or choose another --tls policy"
    )]
    UnusedWithTlsDisabled {
        /// The option that would be ignored.
        option: &'static str,
    },
    /// A listen address that is not loopback, without consent.
    #[error(
        "listen address {address} is not a loopback address; use 127.0.0.1 or [::1], \
         or pass --allow-non-loopback to accept connections from other hosts"
    )]
    NotLoopback {
        /// The address given.
        address: SocketAddr,
    },
}

impl DeliverArgs {
    /// Builds the engine configuration: the `--config` file if given (else
    /// the defaults), with the flags' values applied over it as
    /// [`SettingsOverrides::apply`] describes.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when the config file or the CA file cannot be read or
    /// is invalid (the error names the file, and the key or setting when it
    /// is known), or when a TLS option is given with `--tls disabled`.
    pub fn config(&self) -> Result<Config, UsageError> {
        self.check_tls_options()?;
        if let Some(path) = &self.ca_file {
            check_ca_file(path)?;
        }

        let mut config = match &self.config {
            Some(path) => read_config_file(path)?,
            None => Config::default(),
        };
        self.overrides().apply(&mut config);
        // Flag values are checked when they are parsed, so a value that
        // fails here comes from the file.
        if let Some(path) = &self.config {
            config
                .validate()
                .map_err(|source| UsageError::ConfigValue {
                    path: path.clone(),
                    source,
                })?;
        }
        if let Some(path) = &self.config {
            check_config_ca_files(&config, path, self.ca_file.as_deref())?;
        }
        let default = ec_types::Binding::DEFAULT_NAME;
        for name in unused_bindings(&config) {
            tracing::warn!(
                binding = %name,
                "the settings under [binding.{name}] are unused, because ec deliver sends \
                 through the binding \"{default}\" only; put them under [binding.{default}] \
                 or [global]"
            );
        }
        if let Some(path) = &self.ca_file {
            if !verifies_anywhere(&config) {
                tracing::warn!(
                    ca_file = %path.display(),
                    "--ca-file is unused: certificates are not verified under --tls opportunistic \
                     unless --tls-verify ca or host is given; add one of those, or drop --ca-file"
                );
            }
        }
        Ok(config)
    }

    /// Collects the settings these flags set.
    pub fn overrides(&self) -> SettingsOverrides {
        SettingsOverrides {
            route: self.relay.as_ref().map(RelayAddress::route),
            tls_policy: self.tls.map(TlsPolicy::from),
            tls_verify: self.tls_verify.map(TlsVerify::from),
            ca_file: self.ca_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            max_outbound_connections: self.connections,
            max_deliveries_per_connection: self.max_deliveries_per_connection,
            ehlo_name: self.ehlo.clone(),
            retry_for: self.retry_for,
        }
    }

    fn check_tls_options(&self) -> Result<(), UsageError> {
        if self.tls != Some(TlsPolicyArg::Disabled) {
            return Ok(());
        }
        let unused = [
            ("--tls-verify", self.tls_verify.is_some()),
            ("--ca-file", self.ca_file.is_some()),
            ("--tls-server-name", self.tls_server_name.is_some()),
        ];
        match unused.into_iter().find(|(_, given)| *given) {
            Some((option, _)) => Err(UsageError::UnusedWithTlsDisabled { option }),
            None => Ok(()),
        }
    }
}

/// Returns the binding scopes of `config` that `ec deliver` never uses: it
/// sends through the default binding only.
fn unused_bindings(config: &Config) -> impl Iterator<Item = &str> {
    config
        .binding
        .keys()
        .map(String::as_str)
        .filter(|name| *name != ec_types::Binding::DEFAULT_NAME)
}

/// Returns whether any scope of `config` verifies server certificates, so
/// that a CA file is of use.
fn verifies_anywhere(config: &Config) -> bool {
    let bindings = config.binding.values();
    let scopes = std::iter::once(&config.global)
        .chain(config.domain.values())
        .chain(bindings.clone().map(|binding| &binding.settings))
        .chain(bindings.flat_map(|binding| binding.domain.values()));
    scopes
        .filter_map(|settings| settings.tls.as_ref())
        .any(|tls| tls.effective_verify() != TlsVerify::None)
}

/// Reads and parses a TOML configuration file.
///
/// # Errors
///
/// [`UsageError::ConfigRead`] or [`UsageError::ConfigParse`], naming the
/// file and, for a parse error, the key when the error points at one.
pub fn read_config_file(path: &Path) -> Result<Config, UsageError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsageError::ConfigRead {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source: toml::de::Error| {
        let key = source
            .span()
            .and_then(|span| crate::config_file::key_path_at(&text, span.start));
        UsageError::ConfigParse {
            path: path.to_owned(),
            key,
            source: Box::new(source),
        }
    })
}

/// Checks that a CA file is readable and contains a PEM certificate, so that
/// a wrong path is a usage error at start-up and not a TLS failure on every
/// connection. The engine parses the certificates themselves.
fn check_ca_file(path: &Path) -> Result<(), UsageError> {
    let text = std::fs::read(path).map_err(|source| UsageError::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !text.windows(marker.len()).any(|window| window == marker) {
        return Err(UsageError::CaFileEmpty(path.to_owned()));
    }
    Ok(())
}

/// Checks each `tls.ca_file` that the config file sets, as `--ca-file` is
/// checked, so that a wrong path is a usage error at start-up and not a
/// TLS failure on every connection. `flag_ca_file` was checked already.
fn check_config_ca_files(
    config: &Config,
    config_file: &Path,
    flag_ca_file: Option<&Path>,
) -> Result<(), UsageError> {
    for (scope, settings) in scopes(config) {
        let Some(ca_file) = settings.tls.as_ref().and_then(|tls| tls.ca_file.as_deref()) else {
            continue;
        };
        if Some(ca_file) == flag_ca_file {
            continue;
        }
        let problem = match check_ca_file(ca_file) {
            Ok(()) => continue,
            Err(UsageError::CaFileRead { source, .. }) => format!(
                "cannot read it: {source}; fix the path, or remove the key to trust the \
                 built-in web PKI roots"
            ),
            Err(_) => "it contains no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" \
                       line); give a file of PEM root certificates"
                .to_owned(),
        };
        return Err(UsageError::ConfigCaFile {
            path: config_file.to_owned(),
            scope,
            ca_file: ca_file.to_owned(),
            problem,
        });
    }
    Ok(())
}

/// Returns every scope of `config` with its name as [`Config::validate`]
/// writes it, such as `binding "a", domain example.com`.
fn scopes(config: &Config) -> Vec<(String, &Settings)> {
    let mut scopes = vec![("global".to_owned(), &config.global)];
    for (name, scope) in &config.binding {
        scopes.push((format!("binding {name:?}"), &scope.settings));
        for (domain, settings) in &scope.domain {
            scopes.push((format!("binding {name:?}, domain {domain}"), settings));
        }
    }
    for (domain, settings) in &config.domain {
        scopes.push((format!("domain {domain}"), settings));
    }
    scopes
}

/// The settings that `ec deliver`'s flags set; `None` leaves the value to
/// the config file or the default.
///
/// # Where the flags go
///
/// Every flag here is a statement about the whole run ("use this relay",
/// "at most N connections per domain"), and flags override the file. The
/// value therefore goes into the global scope, and the same setting is also
/// written into every narrower scope (binding, domain and binding × domain)
/// that the file sets it in. Writing it only into the global scope would let
/// a `[domain."example.com"]` table of the file beat the flag, because the
/// most specific scope wins in [`Config::resolve`]. Writing it into a domain
/// scope of the relay would not work either: scopes are chosen by recipient
/// domain, and a relay's host name is not one.
///
/// The TLS flags override field by field: `--ca-file` alone keeps a scope's
/// `policy = "required"`, and `--tls required` alone keeps its `verify`.
///
/// `--connections` stays a per-domain limit even with `--relay`. The total
/// number of connections to the relay is also bounded by the engine-wide
/// per-host limit, `[engine] max_connections_per_host` (default 64).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsOverrides {
    /// `--relay`.
    pub route: Option<Route>,
    /// `--tls`.
    pub tls_policy: Option<TlsPolicy>,
    /// `--tls-verify`.
    pub tls_verify: Option<TlsVerify>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--tls-server-name`.
    pub tls_server_name: Option<String>,
    /// `--connections`.
    pub max_outbound_connections: Option<u32>,
    /// `--max-deliveries-per-connection`.
    pub max_deliveries_per_connection: Option<u32>,
    /// `--ehlo`.
    pub ehlo_name: Option<String>,
    /// `--retry-for`: the retry policy's maximum age.
    pub retry_for: Option<Duration>,
}

impl SettingsOverrides {
    /// Applies the flags to every scope of `config`, as the type's
    /// documentation describes.
    pub fn apply(&self, config: &mut Config) {
        self.apply_to_scope(&mut config.global, true);
        for binding in config.binding.values_mut() {
            self.apply_to_scope(&mut binding.settings, false);
            for settings in binding.domain.values_mut() {
                self.apply_to_scope(settings, false);
            }
        }
        for settings in config.domain.values_mut() {
            self.apply_to_scope(settings, false);
        }
    }

    /// Sets each given value in `settings`: always in the global scope, and
    /// in a narrower scope only where that scope sets the value itself.
    fn apply_to_scope(&self, settings: &mut Settings, global: bool) {
        fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>, global: bool) {
            if let Some(value) = value {
                if global || slot.is_some() {
                    *slot = Some(value.clone());
                }
            }
        }

        set(&mut settings.route, &self.route, global);
        set(
            &mut settings.max_outbound_connections,
            &self.max_outbound_connections,
            global,
        );
        set(
            &mut settings.max_deliveries_per_connection,
            &self.max_deliveries_per_connection,
            global,
        );
        set(&mut settings.ehlo_name, &self.ehlo_name, global);
        set(&mut settings.retry.max_age, &self.retry_for, global);

        if !self.sets_tls() || (!global && settings.tls.is_none()) {
            return;
        }
        let tls = settings.tls.get_or_insert_with(Default::default);
        if let Some(policy) = self.tls_policy {
            tls.policy = policy;
        }
        if let Some(verify) = self.tls_verify {
            tls.verify = Some(verify);
        }
        if let Some(path) = &self.ca_file {
            tls.ca_file = Some(path.clone());
        }
        if let Some(name) = &self.tls_server_name {
            tls.server_name = Some(name.clone());
        }
    }

    fn sets_tls(&self) -> bool {
        self.tls_policy.is_some()
            || self.tls_verify.is_some()
            || self.ca_file.is_some()
            || self.tls_server_name.is_some()
    }
}

/// Maps a clap parse error to an exit status: 0 for `--help` and `--version`
/// (which clap reports as errors), [`EXIT_USAGE`] for everything else,
/// including `ec` without a subcommand, which prints the help as the error.
/// clap's own default would be 2, which sysexits does not define.
pub fn clap_exit_status(error: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => EXIT_USAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use ec_types::config::BindingScope;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ec").chain(args.iter().copied()))
    }

    fn deliver(args: &[&str]) -> DeliverArgs {
        match parse(args).expect("arguments parse").command {
            Command::Deliver(args) => args,
            other => panic!("expected deliver, got {other:?}"),
        }
    }

    fn parse_error(args: &[&str]) -> clap::Error {
        parse(args).expect_err("arguments must be rejected")
    }

    fn domain(name: &str) -> Domain {
        Domain::new(name).expect("valid test domain")
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn deliver_parses_every_option() {
        let args = deliver(&[
            "deliver",
            "--from",
            "bounce@example.org",
            "--to",
            "a@example.com",
            "--to",
            "b@Example.NET",
            "--relay",
            "[::1]:2525",
            "--tls",
            "required",
            "--tls-verify",
            "ca",
            "--tls-server-name",
            "mx.example.net",
            "--connections",
            "8",
            "--max-deliveries-per-connection",
            "0",
            "--ehlo",
            "client.example.org",
            "--retry-for",
            "10m",
            "--metrics-listen",
            "127.0.0.1:9090",
            "--log",
            "out.jsonl",
            "--resume",
            "-vv",
            "mail/",
            "one.msg",
        ]);
        assert_eq!(
            args.paths,
            [PathBuf::from("mail/"), PathBuf::from("one.msg")]
        );
        assert_eq!(args.from.expect("from").as_str(), "bounce@example.org");
        assert_eq!(args.to.len(), 2);
        assert_eq!(args.to[1].as_str(), "b@example.net");
        let relay = args.relay.expect("relay");
        assert_eq!(relay.host, "::1");
        assert_eq!(relay.port, 2525);
        assert_eq!(args.tls, Some(TlsPolicyArg::Required));
        assert_eq!(args.tls_verify, Some(TlsVerifyArg::Ca));
        assert_eq!(args.connections, Some(8));
        assert_eq!(args.max_deliveries_per_connection, Some(0));
        assert_eq!(args.retry_for, Some(Duration::from_secs(600)));
        assert!(args.resume);
    }

    #[test]
    fn null_sender_is_accepted() {
        let args = deliver(&["deliver", "--from", "<>", "x.eml"]);
        assert_eq!(args.from, Some(ReversePath::Null));
    }

    #[test]
    fn verbosity_flags_choose_filter() {
        let cli = parse(&["deliver", "-vv", "x.eml"]).expect("parses");
        assert_eq!(cli.verbosity.filter_directive(), "debug");
        let cli = parse(&["-q", "deliver", "x.eml"]).expect("parses");
        assert_eq!(cli.verbosity.filter_directive(), "error");
        let cli = parse(&["deliver", "x.eml"]).expect("parses");
        assert_eq!(cli.verbosity.filter_directive(), "warn");
        assert_eq!(
            parse_error(&["deliver", "-q", "-v", "x.eml"]).kind(),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn bad_values_name_the_value() {
        let cases: [&[&str]; 9] = [
            &["--to", "nobody"],
            &["--from", "a b@example.org"],
            &["--relay", "mail.example.net"],
            &["--relay", "::1:25"],
            &["--relay", "host:99999"],
            &["--retry-for", "soon"],
            &["--retry-for", "0s"],
            &["--connections", "0"],
            &["--tls", "sometimes"],
        ];
        for case in cases {
            let args = ["deliver", case[0], case[1], "x.eml"];
            let error = parse_error(&args);
            assert_eq!(clap_exit_status(&error), EXIT_USAGE, "{case:?}");
            let text = error.to_string();
            let quoted = format!("'{}'", case[1]);
            assert!(text.contains(&quoted), "{case:?}: {text}");
            assert!(text.contains(case[0]), "{case:?}: {text}");
        }
    }

    #[test]
    fn missing_paths_is_usage_error() {
        let error = parse_error(&["deliver"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(clap_exit_status(&error), EXIT_USAGE);
    }

    #[test]
    fn resume_requires_log() {
        let error = parse_error(&["deliver", "--resume", "x.eml"]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn help_exits_zero() {
        let error = parse_error(&["deliver", "--help"]);
        assert_eq!(clap_exit_status(&error), 0);
        let help = error.to_string();
        assert!(help.contains("--max-deliveries-per-connection"), "{help}");
        assert!(help.contains("Exit status"), "{help}");
    }

    #[test]
    fn missing_subcommand_is_usage_error() {
        let error = parse_error(&[]);
        assert_eq!(
            error.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(clap_exit_status(&error), EXIT_USAGE);
        assert!(error.to_string().contains("Usage: ec"), "{error}");
    }

    #[test]
    fn relay_forms() {
        let relay: RelayAddress = "127.0.0.1:25".parse().expect("IPv4 relay");
        assert_eq!((relay.host.as_str(), relay.port), ("127.0.0.1", 25));
        let relay: RelayAddress = "Mail.Example.net:587".parse().expect("named relay");
        assert_eq!((relay.host.as_str(), relay.port), ("Mail.Example.net", 587));
        assert_eq!(
            "[::1]25".parse::<RelayAddress>(),
            Err(RelayAddressError::MissingPort("[::1]25".into()))
        );
        assert_eq!(
            "[mail]:25".parse::<RelayAddress>(),
            Err(RelayAddressError::InvalidIpv6("mail".into()))
        );
        assert!(matches!(
            "host:0".parse::<RelayAddress>(),
            Err(RelayAddressError::InvalidPort { .. })
        ));
        assert!(matches!(
            "bad host:25".parse::<RelayAddress>(),
            Err(RelayAddressError::InvalidHost { .. })
        ));
    }

    #[test]
    fn flags_without_file_go_global() {
        let config = deliver(&[
            "deliver",
            "--relay",
            "127.0.0.1:2525",
            "--connections",
            "3",
            "--tls",
            "required",
            "--retry-for",
            "1m",
            "x.eml",
        ])
        .config()
        .expect("valid flags");

        let settings = config.resolve("default", &domain("any.example"));
        assert_eq!(
            settings.route,
            Route::Relay {
                host: "127.0.0.1".into(),
                port: 2525
            }
        );
        assert_eq!(settings.max_outbound_connections, 3);
        assert_eq!(settings.tls.policy, TlsPolicy::Required);
        assert_eq!(settings.tls.effective_verify(), TlsVerify::Host);
        assert_eq!(settings.retry.max_age, Duration::from_secs(60));
        assert_eq!(settings.max_deliveries_per_connection, 1_000);
    }

    #[test]
    fn flags_override_every_file_scope() {
        let mut config: Config = toml::from_str(
            r#"
            [global]
            max_outbound_connections = 10
            idle_timeout = "7s"

            [domain."example.com"]
            max_outbound_connections = 30
            tls = { policy = "required", verify = "ca" }

            [binding.a]
            ehlo_name = "a.example.org"

            [binding.a.domain."example.com"]
            max_outbound_connections = 40
            "#,
        )
        .expect("valid TOML");
        let overrides = SettingsOverrides {
            max_outbound_connections: Some(5),
            ehlo_name: Some("flag.example.org".into()),
            tls_verify: Some(TlsVerify::Host),
            ..SettingsOverrides::default()
        };
        overrides.apply(&mut config);

        let example = domain("example.com");
        let other = domain("other.example");
        for (binding, domain) in [("a", &example), ("b", &example), ("a", &other)] {
            let settings = config.resolve(binding, domain);
            assert_eq!(settings.max_outbound_connections, 5, "{binding} {domain}");
            assert_eq!(settings.ehlo_name, "flag.example.org", "{binding} {domain}");
            assert_eq!(settings.tls.effective_verify(), TlsVerify::Host);
        }
        let settings = config.resolve("a", &example);
        assert_eq!(settings.tls.policy, TlsPolicy::Required, "file policy kept");
        assert_eq!(
            settings.idle_timeout,
            Duration::from_secs(7),
            "file value kept"
        );
        assert_eq!(
            config.resolve("b", &other).tls.policy,
            TlsPolicy::Opportunistic
        );
    }

    #[test]
    fn flags_do_not_create_empty_scopes() {
        let mut config = Config::default();
        config.binding.insert("a".into(), BindingScope::default());
        SettingsOverrides {
            tls_policy: Some(TlsPolicy::Disabled),
            ..SettingsOverrides::default()
        }
        .apply(&mut config);
        assert_eq!(config.binding["a"].settings.tls, None);
        assert_eq!(
            config.global.tls.as_ref().map(|tls| tls.policy),
            Some(TlsPolicy::Disabled)
        );
    }

    #[test]
    fn config_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.toml");
        let error = read_config_file(&missing).expect_err("missing file");
        assert!(matches!(error, UsageError::ConfigRead { .. }));
        assert!(error.to_string().contains("missing.toml"), "{error}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[global]\nmax_connectionz = 3\n").expect("write");
        let error = read_config_file(&bad).expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains("bad.toml"), "{text}");
        assert!(text.contains("max_connectionz"), "{text}");
    }

    #[test]
    fn config_value_error_names_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[domain.\"example.com\"]\nmax_outbound_connections = \"ten\"\n",
        )
        .expect("write");
        let text = read_config_file(&bad)
            .expect_err("a string for a count")
            .to_string();
        assert!(text.contains("bad.toml"), "{text}");
        assert!(
            text.contains(", key domain.\"example.com\".max_outbound_connections:"),
            "{text}"
        );
    }

    #[test]
    fn zero_in_config_file_names_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("zero.toml");
        std::fs::write(
            &path,
            "[domain.\"example.com\".timeouts]\nconnect = \"0s\"\n",
        )
        .expect("write");
        let path_text = path.to_str().expect("UTF-8 temp path");
        let error = deliver(&["deliver", "--config", path_text, "x"])
            .config()
            .expect_err("a zero timeout");
        assert!(matches!(error, UsageError::ConfigValue { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("zero.toml"), "{text}");
        assert!(text.contains("timeouts.connect"), "{text}");
        assert!(text.contains("domain example.com"), "{text}");
    }

    #[test]
    fn config_file_then_flags() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ec.toml");
        std::fs::write(
            &path,
            "[global]\nmax_outbound_connections = 9\nehlo_name = \"file.example\"\n",
        )
        .expect("write");
        let path_text = path.to_str().expect("UTF-8 temp path");
        let config = deliver(&["deliver", "--config", path_text, "--connections", "2", "x"])
            .config()
            .expect("valid configuration");
        let settings = config.resolve("default", &domain("example.com"));
        assert_eq!(settings.max_outbound_connections, 2);
        assert_eq!(settings.ehlo_name, "file.example");
    }

    #[test]
    fn other_bindings_are_unused() {
        let config: Config = toml::from_str(
            "[binding.default]\nchunking = false\n[binding.outbound-a]\nchunking = false\n",
        )
        .expect("valid TOML");
        assert_eq!(unused_bindings(&config).collect::<Vec<_>>(), ["outbound-a"]);
    }

    #[test]
    fn ca_file_use_depends_on_verify() {
        let overrides = |args: &[&str]| {
            let mut config = Config::default();
            deliver(args).overrides().apply(&mut config);
            config
        };
        let opportunistic = overrides(&["deliver", "x"]);
        assert!(!verifies_anywhere(&opportunistic));
        let checked = overrides(&["deliver", "--tls-verify", "ca", "x"]);
        assert!(verifies_anywhere(&checked));
        let required = overrides(&["deliver", "--tls", "required", "x"]);
        assert!(verifies_anywhere(&required), "required verifies the host");
        let implicit = overrides(&["deliver", "--tls", "implicit", "x"]);
        let tls = implicit.global.tls.as_ref().expect("--tls sets global TLS");
        assert_eq!(tls.policy, TlsPolicy::Implicit);
        assert_eq!(tls.effective_verify(), TlsVerify::Host);

        let mut one_domain = opportunistic;
        let settings = one_domain.domain.entry(domain("example.com")).or_default();
        settings.tls = Some(ec_types::TlsSettings {
            verify: Some(TlsVerify::Host),
            ..ec_types::TlsSettings::default()
        });
        assert!(verifies_anywhere(&one_domain));
    }

    #[test]
    fn ca_file_is_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let empty_text = empty.to_str().expect("UTF-8 temp path");
        let error = deliver(&["deliver", "--ca-file", empty_text, "x"])
            .config()
            .expect_err("no certificate in the file");
        assert!(matches!(error, UsageError::CaFileEmpty(_)), "{error}");

        let missing = dir.path().join("missing.pem");
        let missing_text = missing.to_str().expect("UTF-8 temp path");
        let error = deliver(&["deliver", "--ca-file", missing_text, "x"])
            .config()
            .expect_err("missing file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
    }

    #[test]
    fn config_ca_file_is_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("ec.toml");
        std::fs::write(
            &config,
            "[domain.\"example.com\"]\ntls = { verify = \"ca\", ca_file = \"/no/such/ca.pem\" }\n",
        )
        .expect("write");
        let config_text = config.to_str().expect("UTF-8 temp path");
        let error = deliver(&["deliver", "--config", config_text, "x"])
            .config()
            .expect_err("missing CA file");
        assert!(matches!(error, UsageError::ConfigCaFile { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("ec.toml"), "{text}");
        assert!(text.contains("tls.ca_file \"/no/such/ca.pem\""), "{text}");
        assert!(text.contains("domain example.com"), "{text}");

        // --ca-file replaces the file's value in every scope that sets TLS.
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let pem_text = pem.to_str().expect("UTF-8 temp path");
        deliver(&[
            "deliver",
            "--config",
            config_text,
            "--ca-file",
            pem_text,
            "x",
        ])
        .config()
        .expect("the flag's CA file is used");
    }

    #[test]
    fn config_route_error_names_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("ec.toml");
        std::fs::write(&config, "[global]\nroute = { addresses = [] }\n").expect("write");
        let config_text = config.to_str().expect("UTF-8 temp path");
        let error = deliver(&["deliver", "--config", config_text, "x"])
            .config()
            .expect_err("an empty address list");
        assert!(matches!(error, UsageError::ConfigValue { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("ec.toml"), "{text}");
        assert!(text.contains("route.addresses []"), "{text}");
    }

    #[test]
    fn tls_options_conflict_with_disabled() {
        let error = deliver(&["deliver", "--tls", "disabled", "--tls-verify", "host", "x"])
            .config()
            .expect_err("contradiction");
        assert!(error.to_string().contains("--tls-verify"), "{error}");
    }

    #[test]
    fn demo_and_sink_defaults() {
        let cli = parse(&["demo"]).expect("parses");
        let Command::Demo(demo) = cli.command else {
            panic!("expected demo");
        };
        assert_eq!((demo.messages, demo.connections), (0, 4));

        let cli = parse(&["sink", "--require-tls"]).expect("parses");
        let Command::Sink(sink) = cli.command else {
            panic!("expected sink");
        };
        assert!(sink.require_tls);
        assert_eq!(sink.listen, "127.0.0.1:2525".parse().expect("address"));
        sink.validate().expect("loopback is accepted");
    }

    #[test]
    fn sink_rejects_non_loopback() {
        let cli = parse(&["sink", "--listen", "0.0.0.0:25"]).expect("parses");
        let Command::Sink(sink) = cli.command else {
            panic!("expected sink");
        };
        let error = sink.validate().expect_err("not loopback");
        assert!(error.to_string().contains("0.0.0.0:25"), "{error}");

        let cli =
            parse(&["sink", "--listen", "0.0.0.0:25", "--allow-non-loopback"]).expect("parses");
        let Command::Sink(sink) = cli.command else {
            panic!("expected sink");
        };
        sink.validate().expect("consent given");
    }

    #[test]
    fn listen_port_out_of_range_named() {
        let error = parse_sink_listen("127.0.0.1:99999").expect_err("port too large");
        assert!(
            error.to_string().contains("port 99999 is out of range"),
            "{error}"
        );
        let error = parse_sink_listen("[::1]:70000").expect_err("port too large");
        assert!(error.to_string().contains("port 70000"), "{error}");
        let error = parse_sink_listen("localhost:2525").expect_err("a host name");
        assert!(error.to_string().contains("host names"), "{error}");
    }

    /// Returns whether the config file's `tls.server_name` accepts `name`.
    fn config_accepts_server_name(name: &str) -> bool {
        let mut config = Config::default();
        config.global.tls = Some(ec_types::TlsSettings {
            server_name: Some(name.to_owned()),
            ..ec_types::TlsSettings::default()
        });
        config.validate().is_ok()
    }

    #[test]
    fn server_name_accepts_address_forms() {
        for name in ["mx.example.net", "localhost", "192.0.2.1", "::1", "[::1]"] {
            let args = deliver(&["deliver", "--tls-server-name", name, "x.eml"]);
            assert_eq!(args.tls_server_name.as_deref(), Some(name), "{name}");

            let config = args.config().expect("valid flags");
            let settings = config.resolve("default", &domain("any.example"));
            assert_eq!(settings.tls.server_name.as_deref(), Some(name), "{name}");
        }
    }

    #[test]
    fn server_name_agrees_with_config() {
        let names = [
            "mx.example.net",
            "192.0.2.1",
            "::1",
            "[::1]",
            "[2001:db8::25]",
            "[192.0.2.1]",
            "mx example",
            "",
            "[]",
            "[::1]:25",
            "mx.example.net.",
            "under_score.example",
            "-leading-hyphen.example",
        ];
        for name in names {
            assert_eq!(
                parse_server_name(name).is_ok(),
                config_accepts_server_name(name),
                "--tls-server-name and tls.server_name disagree on {name:?}"
            );
        }
    }

    #[test]
    fn server_name_error_names_value() {
        let error = parse_error(&["deliver", "--tls-server-name", "mx example", "x.eml"]);
        assert_eq!(clap_exit_status(&error), EXIT_USAGE);
        let text = error.to_string();
        assert!(text.contains("--tls-server-name"), "{text}");
        assert!(text.contains("\"mx example\""), "{text}");
        assert!(
            text.contains("give a DNS name such as mx.example.net"),
            "{text}"
        );
        assert!(text.contains("[::1]"), "{text}");
    }
}
