//! Configuration with Momentum-like scopes.
//!
//! A setting can be given at four scopes. The most specific one that sets it
//! wins: binding × domain, then domain, then binding, then global, then the
//! built-in default documented on each field of [`EffectiveSettings`].
//!
//! In TOML:
//!
//! ```toml
//! [engine]
//! max_connections = 20000
//!
//! [dns]
//! nameservers = ["192.0.2.53:53"]
//!
//! [global]
//! idle_timeout = "5s"
//!
//! [binding.outbound-a]
//! max_outbound_connections = 16
//!
//! [domain."example.com"]
//! tls = { policy = "required", verify = "host" }
//!
//! [domain."relayed.example"]
//! route = { relay = { host = "smarthost.example.net", port = 465 } }
//! tls = { policy = "implicit" }
//!
//! [binding.outbound-a.domain."example.com"]
//! max_outbound_connections = 4
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::{AddressError, Domain};

mod duration_serde;

/// The whole configuration: engine-wide limits and the four scopes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Limits that span every binding and domain.
    #[serde(default)]
    pub engine: EngineLimits,
    /// Settings for every binding and domain.
    #[serde(default)]
    pub global: Settings,
    /// Per-binding settings, and per binding × domain settings inside them.
    #[serde(default)]
    pub binding: BTreeMap<String, BindingScope>,
    /// Per-domain settings.
    #[serde(default)]
    pub domain: BTreeMap<Domain, Settings>,
    /// The DNS servers for MX and address lookups.
    #[serde(default)]
    pub dns: DnsSettings,
}

/// The DNS servers for MX and address lookups. In TOML:
/// `[dns]` with `nameservers = ["192.0.2.53", "[2001:db8::53]:53"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSettings {
    /// Recursive resolvers to query, in order, over UDP and TCP; an IP
    /// address without a port means port 53. Empty, the default, means the
    /// system's (`/etc/resolv.conf`).
    #[serde(deserialize_with = "deserialize_nameservers")]
    pub nameservers: Vec<SocketAddr>,
}

fn deserialize_nameservers<'de, D>(deserializer: D) -> Result<Vec<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| parse_nameserver(text).map_err(serde::de::Error::custom))
        .collect()
}

/// Parses a DNS server as `IP`, `IP:PORT` or `[IPv6]:PORT`; without a
/// port, the DNS port 53.
///
/// # Errors
///
/// Returns a message that names `text` and shows the accepted forms.
pub fn parse_nameserver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    match bare.unwrap_or(text).parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, 53)),
        Err(_) => Err(format!(
            "invalid nameserver {text:?}: write an IP address with an optional port, such \
             as \"192.0.2.53\", \"192.0.2.53:5353\" or \"[2001:db8::53]:53\""
        )),
    }
}

/// A binding's scope: its own settings and its binding × domain overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingScope {
    /// Settings for this binding.
    #[serde(flatten)]
    pub settings: Settings,
    /// Settings for this binding and one domain.
    #[serde(default)]
    pub domain: BTreeMap<Domain, Settings>,
}

impl Config {
    /// Resolves the settings that apply to one binding and one domain.
    pub fn resolve(&self, binding: &str, domain: &Domain) -> EffectiveSettings {
        let binding_scope = self.binding.get(binding);
        let layers = [
            binding_scope.and_then(|b| b.domain.get(domain)),
            self.domain.get(domain),
            binding_scope.map(|b| &b.settings),
            Some(&self.global),
        ];
        let mut effective = EffectiveSettings::default();
        for layer in layers.into_iter().flatten().rev() {
            layer.apply_to(&mut effective);
        }
        effective
    }

    /// Checks, in every scope, the values that would otherwise fail only
    /// when a connection uses them. Every EHLO name must be sendable as a
    /// domain or an address literal, and every route must lead somewhere.
    /// Every TLS server name must be a DNS name or an IP address, and no
    /// limit, timeout or retry duration may be zero. Files such as
    /// `tls.ca_file` are not opened.
    ///
    /// # Errors
    ///
    /// Returns the first invalid value with the scope that sets it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut scopes: Vec<(String, &Settings)> = vec![("global".to_owned(), &self.global)];
        for (name, scope) in &self.binding {
            scopes.push((format!("binding {name:?}"), &scope.settings));
            for (domain, settings) in &scope.domain {
                scopes.push((format!("binding {name:?}, domain {domain}"), settings));
            }
        }
        for (domain, settings) in &self.domain {
            scopes.push((format!("domain {domain}"), settings));
        }

        for (scope, settings) in scopes {
            if let Some(name) = &settings.ehlo_name {
                validate_ehlo_name(name).map_err(|source| ConfigError::EhloName {
                    scope: scope.clone(),
                    source,
                })?;
            }
            settings.check_nonzero(&scope)?;
            if settings.mx_port == Some(0) {
                return Err(ConfigError::Zero {
                    scope,
                    setting: "mx_port",
                });
            }
            if let Some(route) = &settings.route {
                check_route(route, &scope)?;
            }
            if let Some(name) = settings
                .tls
                .as_ref()
                .and_then(|tls| tls.server_name.as_ref())
            {
                check_server_name(name, &scope)?;
            }
        }
        for nameserver in &self.dns.nameservers {
            if nameserver.port() == 0 {
                return Err(ConfigError::Invalid {
                    scope: "dns".to_owned(),
                    setting: "nameservers",
                    value: nameserver.to_string(),
                    problem: "port 0 cannot be asked; give the server's port, usually 53"
                        .to_owned(),
                });
            }
        }
        self.engine.check_nonzero()
    }

    /// Domains that some scope names, for bounding metric labels.
    pub fn configured_domains(&self) -> impl Iterator<Item = &Domain> {
        self.domain
            .keys()
            .chain(self.binding.values().flat_map(|b| b.domain.keys()))
    }
}

/// An invalid value in a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An EHLO name that cannot be sent.
    #[error("invalid ehlo_name in the {scope} settings: {source}")]
    EhloName {
        /// The scope that sets it, such as `global` or `domain example.com`.
        scope: String,
        /// Why the name is invalid.
        #[source]
        source: AddressError,
    },
    /// A value that parses but cannot work, such as an empty relay host.
    #[error("invalid {setting} {value} in the {scope} settings: {problem}")]
    Invalid {
        /// The scope that sets it.
        scope: String,
        /// The setting's key inside the scope, such as `route.relay.host`.
        setting: &'static str,
        /// The value as the file writes it, such as `""` or `0`.
        value: String,
        /// The fault, and the value to write instead.
        problem: String,
    },
    /// A limit, size or duration that must not be zero.
    #[error("{setting} is 0 in the {scope} settings; give a value above zero")]
    Zero {
        /// The scope that sets it.
        scope: String,
        /// The setting's name.
        setting: &'static str,
    },
}

/// Checks that `name` can follow EHLO or HELO: a domain or an address
/// literal such as `[192.0.2.1]`, with no control character or space, at
/// most 255 octets (RFC 5321 sections 4.1.1.1 and 4.5.3.1.2).
///
/// # Errors
///
/// Returns the reason the name cannot be sent.
pub fn validate_ehlo_name(name: &str) -> Result<(), AddressError> {
    Domain::new(name).map(|_| ())
}

impl Route {
    /// Checks that the route leads somewhere: a relay needs a host without
    /// a port in it and a port above 0, and an address list needs an
    /// address with a port above 0. An empty list would otherwise send the
    /// mail to port 25 of the recipient domain, which no setting named.
    /// `scope` names where the route comes from in the error, such as
    /// `domain example.com`.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError::Invalid`] naming the setting, the value and
    /// what to give instead.
    pub fn validate(&self, scope: &str) -> Result<(), ConfigError> {
        check_route(self, scope)
    }
}

/// See [`Route::validate`].
fn check_route(route: &Route, scope: &str) -> Result<(), ConfigError> {
    let invalid = |setting: &'static str, value: String, problem: String| ConfigError::Invalid {
        scope: scope.to_owned(),
        setting,
        value,
        problem,
    };
    match route {
        Route::Relay { host, port } => {
            if let Some(problem) = relay_host_problem(host) {
                return Err(invalid("route.relay.host", format!("{host:?}"), problem));
            }
            if *port == 0 {
                return Err(invalid(
                    "route.relay.port",
                    "0".to_owned(),
                    "give a port from 1 to 65535, such as 25".to_owned(),
                ));
            }
        }
        Route::Addresses(addresses) => {
            if addresses.is_empty() {
                return Err(invalid(
                    "route.addresses",
                    "[]".to_owned(),
                    "the list is empty, so the mail would have nowhere to go; list at least \
                     one IP address and port, such as \"192.0.2.1:25\", or remove the route"
                        .to_owned(),
                ));
            }
            if let Some(address) = addresses.iter().find(|address| address.port() == 0) {
                return Err(invalid(
                    "route.addresses",
                    format!("{:?}", address.to_string()),
                    "port 0 cannot be connected to; give a port from 1 to 65535, such as 25"
                        .to_owned(),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Returns what is wrong with a relay host, or `None` for a host name, an
/// IP address, or an IPv6 address in brackets.
fn relay_host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some(
            "the host is empty; give a host name or an IP address, such as \
                     mail.example.net"
                .to_owned(),
        );
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    if let Some(inner) = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return match inner.parse::<Ipv6Addr>() {
            Ok(_) => None,
            Err(_) => Some("the text in brackets is not an IPv6 address".to_owned()),
        };
    }
    if let Some((name, port)) = host.rsplit_once(':') {
        let problem = match port.parse::<u16>() {
            Ok(port) => format!(
                "the host contains a port; write host = {:?} and port = {port}",
                name.trim_start_matches('[').trim_end_matches(']')
            ),
            Err(_) => "a host name cannot contain ':'; give a host name or an IP address, \
                       and the port in `port`"
                .to_owned(),
        };
        return Some(problem);
    }
    Domain::new(host).err().map(|error| error.to_string())
}

/// Checks a TLS server name by the rules the SMTP client applies to it at
/// connect time: a DNS name, an IP address, or an IPv6 address in one pair
/// of brackets.
fn check_server_name(name: &str, scope: &str) -> Result<(), ConfigError> {
    let bare = match name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(inner) if inner.parse::<Ipv6Addr>().is_ok() => Some(inner),
        Some(_) => None,
        None => Some(name),
    };
    match bare.map(rustls_pki_types::ServerName::try_from) {
        Some(Ok(_)) => Ok(()),
        _ => Err(ConfigError::Invalid {
            scope: scope.to_owned(),
            setting: "tls.server_name",
            value: format!("{name:?}"),
            problem: "give a DNS name such as mx.example.net or an IP address".to_owned(),
        }),
    }
}

impl EngineLimits {
    fn check_nonzero(&self) -> Result<(), ConfigError> {
        let limits = [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_binding",
                self.max_connections_per_binding,
            ),
            ("max_connections_per_host", self.max_connections_per_host),
        ];
        for (setting, value) in limits {
            if value == 0 {
                return Err(ConfigError::Zero {
                    scope: "engine".to_owned(),
                    setting,
                });
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Rejects zero where zero would make the engine open and close
    /// connections in a loop or fail every step: batch size, connection age,
    /// idle time, every timeout, and the retry durations. A zero retry
    /// interval or maximum interval retries at once in a loop, and a zero
    /// maximum age fails deferred mail at its first 4xx reply.
    /// `max_outbound_connections = 0` stays allowed: it keeps a domain's
    /// mail in its queue.
    fn check_nonzero(&self, scope: &str) -> Result<(), ConfigError> {
        let zero = |setting: &'static str| ConfigError::Zero {
            scope: scope.to_owned(),
            setting,
        };
        if self.batch_size == Some(0) {
            return Err(zero("batch_size"));
        }

        let t = &self.timeouts;
        let durations = [
            ("max_connection_age", self.max_connection_age),
            ("idle_timeout", self.idle_timeout),
            ("timeouts.connect", t.connect),
            ("timeouts.banner", t.banner),
            ("timeouts.ehlo", t.ehlo),
            ("timeouts.starttls", t.starttls),
            ("timeouts.tls_handshake", t.tls_handshake),
            ("timeouts.mail", t.mail),
            ("timeouts.rcpt", t.rcpt),
            ("timeouts.data", t.data),
            ("timeouts.data_block", t.data_block),
            ("timeouts.data_termination", t.data_termination),
            ("timeouts.rset", t.rset),
            ("timeouts.quit", t.quit),
            ("timeouts.close", t.close),
            ("retry.interval", self.retry.interval),
            ("retry.max_interval", self.retry.max_interval),
            ("retry.max_age", self.retry.max_age),
        ];
        for (setting, value) in durations {
            if value == Some(Duration::ZERO) {
                return Err(zero(setting));
            }
        }
        Ok(())
    }
}

/// Limits that span the whole engine. A connection counts against each of
/// them from the start of its connect until its socket is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineLimits {
    /// Connections across all bindings and domains. Default 20,000, below
    /// the usual 65,536 open-file limit that a server process is given.
    pub max_connections: u32,
    /// Connections from one binding across all domains. Default 5,000.
    pub max_connections_per_binding: u32,
    /// Connections to one remote host (IP address and port) from one
    /// binding, across domains that share it. Default 64.
    pub max_connections_per_host: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_connections_per_binding: 5_000,
            max_connections_per_host: 64,
        }
    }
}

/// The settings one scope may set; `None` leaves the value to a wider scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// See [`EffectiveSettings::max_outbound_connections`].
    pub max_outbound_connections: Option<u32>,
    /// See [`EffectiveSettings::max_deliveries_per_connection`].
    pub max_deliveries_per_connection: Option<u32>,
    /// See [`EffectiveSettings::max_connection_age`].
    #[serde(with = "duration_serde::option")]
    pub max_connection_age: Option<Duration>,
    /// See [`EffectiveSettings::idle_timeout`].
    #[serde(with = "duration_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// See [`EffectiveSettings::batch_size`].
    pub batch_size: Option<u32>,
    /// See [`EffectiveSettings::ehlo_name`].
    pub ehlo_name: Option<String>,
    /// See [`EffectiveSettings::route`].
    pub route: Option<Route>,
    /// See [`EffectiveSettings::mx_port`].
    pub mx_port: Option<u16>,
    /// See [`EffectiveSettings::tls`].
    pub tls: Option<TlsSettings>,
    /// See [`EffectiveSettings::chunking`].
    pub chunking: Option<bool>,
    /// See [`EffectiveSettings::long_lines`].
    pub long_lines: Option<LongLines>,
    /// Per-phase timeouts; each field overrides one timeout.
    pub timeouts: TimeoutSettings,
    /// Retry policy; each field overrides one value.
    pub retry: RetrySettings,
}

impl Settings {
    fn apply_to(&self, effective: &mut EffectiveSettings) {
        if let Some(value) = self.max_outbound_connections {
            effective.max_outbound_connections = value;
        }
        if let Some(value) = self.max_deliveries_per_connection {
            effective.max_deliveries_per_connection = value;
        }
        if let Some(value) = self.max_connection_age {
            effective.max_connection_age = value;
        }
        if let Some(value) = self.idle_timeout {
            effective.idle_timeout = value;
        }
        if let Some(value) = self.batch_size {
            effective.batch_size = value.max(1);
        }
        if let Some(value) = &self.ehlo_name {
            effective.ehlo_name.clone_from(value);
        }
        if let Some(value) = &self.route {
            effective.route = value.clone();
        }
        if let Some(value) = self.mx_port {
            effective.mx_port = value;
        }
        if let Some(value) = &self.tls {
            effective.tls = value.clone();
        }
        if let Some(value) = self.chunking {
            effective.chunking = value;
        }
        if let Some(value) = self.long_lines {
            effective.long_lines = value;
        }
        self.timeouts.apply_to(&mut effective.timeouts);
        self.retry.apply_to(&mut effective.retry);
    }
}

/// The settings in force for one binding × domain, every value resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveSettings {
    /// Connections from one binding to one domain. Default 32, Momentum's
    /// default for `max_outbound_connections`. 0 keeps the domain's mail in
    /// its queue.
    pub max_outbound_connections: u32,
    /// Transactions on one connection before it is closed and a fresh one is
    /// opened; 0 means no limit. Default 1,000.
    pub max_deliveries_per_connection: u32,
    /// Age after which a connection takes no new batch and is closed when
    /// idle. Default 10 minutes.
    #[serde(with = "duration_serde")]
    pub max_connection_age: Duration,
    /// How long an idle connection is kept open for more mail. Default 5 s.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Messages handed to a connection at once; each is its own transaction.
    /// Default 1, so that mail spreads across connections.
    pub batch_size: u32,
    /// The name sent in EHLO when the binding sets none. Default `localhost`.
    pub ehlo_name: String,
    /// Where mail for the domain goes. Default: [`Route::Mx`].
    pub route: Route,
    /// TCP port on the MX hosts under [`Route::Mx`]. Default 25, the SMTP
    /// port; another is for private networks and tests.
    pub mx_port: u16,
    /// TLS policy and certificate checks.
    pub tls: TlsSettings,
    /// Send each message as one `BDAT LAST` chunk (RFC 3030 CHUNKING) in
    /// the pipelined group with MAIL and RCPT, when the server offers
    /// CHUNKING and PIPELINING. This saves the round trip of DATA's 354
    /// reply. Default `true`; `false` always uses DATA, for a server whose
    /// CHUNKING is broken.
    pub chunking: bool,
    /// The handling of a message with a line longer than SMTP allows.
    /// Default [`LongLines::Reject`].
    pub long_lines: LongLines,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
    /// Retry policy for deferred mail.
    pub retry: RetryPolicy,
}

impl Default for EffectiveSettings {
    fn default() -> Self {
        Self {
            max_outbound_connections: 32,
            max_deliveries_per_connection: 1_000,
            max_connection_age: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(5),
            batch_size: 1,
            ehlo_name: "localhost".to_owned(),
            route: Route::Mx,
            mx_port: 25,
            tls: TlsSettings::default(),
            chunking: true,
            long_lines: LongLines::Reject,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
        }
    }
}

/// Where a domain's mail goes.
///
/// In TOML the route is written as `route = "mx"`,
/// `route = { relay = { host = "mail.example.net", port = 25 } }` or
/// `route = { addresses = ["192.0.2.1:25", "[2001:db8::1]:25"] }`.
/// A `"host:port"` string is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Route {
    /// The domain's MX hosts (RFC 5321 section 5.1), tried in order of
    /// preference on [`EffectiveSettings::mx_port`]. A domain without MX
    /// records gets its own addresses. A null MX (RFC 7505) or a domain that
    /// does not exist fails its mail at once.
    Mx,
    /// One SMTP server for all mail of the scope, given as a host name or IP
    /// address and a separate port.
    Relay {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// Fixed socket addresses, tried in order (for tests and private relays).
    Addresses(Vec<SocketAddr>),
}

/// The handling of a message with a line longer than 998 octets plus CRLF,
/// the limit of RFC 5321 section 4.5.3.1.6 (and RFC 5322 section 2.1.1).
///
/// No choice changes the message: breaking a long line, as some MTAs do,
/// would break a DKIM signature over the body and alter MIME content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LongLines {
    /// Fail every recipient with `554 5.6.3` and a reason that names the
    /// line, without sending the message. The sender can then encode the
    /// body (quoted-printable or base64), which keeps lines short.
    #[default]
    Reject,
    /// Send the message as it is, for a server known to accept long lines.
    Send,
}

/// When to use TLS: STARTTLS (RFC 3207, RFC 7435), or TLS from the first
/// octet (RFC 8314).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TlsPolicy {
    /// Never send STARTTLS.
    Disabled,
    /// Use STARTTLS when the server offers it; otherwise send in clear text.
    Opportunistic,
    /// Never send mail in clear text: no STARTTLS or a failed handshake or
    /// verification defers the mail.
    Required,
    /// Implicit TLS (RFC 8314 section 3), as relays on port 465 expect: the
    /// TLS handshake starts right after the TCP connect, before the
    /// server's greeting, and STARTTLS is never sent. A failed handshake or
    /// verification defers the mail, as under `Required`.
    Implicit,
}

/// How a server certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TlsVerify {
    /// Accept any certificate. Opportunistic TLS uses this by default, as
    /// RFC 7435 describes: encryption without authentication.
    None,
    /// The chain must lead to a trusted root; the name is not checked.
    Ca,
    /// The chain must lead to a trusted root and the certificate must name
    /// the server.
    Host,
}

/// TLS policy, certificate checks and the name to check against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// When to use TLS. Default opportunistic.
    pub policy: TlsPolicy,
    /// How to check the certificate. Default: `host` under `required` and
    /// `implicit`, `none` otherwise.
    pub verify: Option<TlsVerify>,
    /// PEM file of trusted roots; without one, the web PKI roots are used.
    pub ca_file: Option<PathBuf>,
    /// The name for SNI and the certificate name check; default: the host
    /// name connected to (the relay's, or the MX host's).
    pub server_name: Option<String>,
}

impl TlsSettings {
    /// The verification mode in force, after the policy's default.
    pub fn effective_verify(&self) -> TlsVerify {
        match (self.verify, self.policy) {
            (Some(verify), _) => verify,
            (None, TlsPolicy::Required | TlsPolicy::Implicit) => TlsVerify::Host,
            (None, _) => TlsVerify::None,
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            policy: TlsPolicy::Opportunistic,
            verify: None,
            ca_file: None,
            server_name: None,
        }
    }
}

/// Per-phase timeouts. The defaults of the command phases are the minimums
/// of RFC 5321 section 4.5.3.2; the others are ours, with reasons given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP connect. Default 30 s: an unreachable host must not hold a slot
    /// for the kernel's two minutes of SYN retries.
    #[serde(with = "duration_serde")]
    pub connect: Duration,
    /// The 220 banner. Default 5 min (RFC 5321 "Initial 220 Message").
    #[serde(with = "duration_serde")]
    pub banner: Duration,
    /// The EHLO or HELO reply. Default 5 min, as for MAIL; RFC 5321 names no
    /// EHLO timeout.
    #[serde(with = "duration_serde")]
    pub ehlo: Duration,
    /// The reply to STARTTLS. Default 2 min, as for DATA initiation.
    #[serde(with = "duration_serde")]
    pub starttls: Duration,
    /// The whole TLS handshake. Default 60 s.
    #[serde(with = "duration_serde")]
    pub tls_handshake: Duration,
    /// The MAIL reply. Default 5 min (RFC 5321 "MAIL Command").
    #[serde(with = "duration_serde")]
    pub mail: Duration,
    /// Each RCPT reply. Default 5 min (RFC 5321 "RCPT Command").
    #[serde(with = "duration_serde")]
    pub rcpt: Duration,
    /// The 354 reply to DATA. Default 2 min (RFC 5321 "DATA Initiation").
    #[serde(with = "duration_serde")]
    pub data: Duration,
    /// Each write of the message body. Default 3 min (RFC 5321 "Data Block").
    #[serde(with = "duration_serde")]
    pub data_block: Duration,
    /// The reply to the final dot. Default 10 min (RFC 5321 "DATA
    /// Termination"); a shorter one risks duplicates, because the server may
    /// still be accepting the message.
    #[serde(with = "duration_serde")]
    pub data_termination: Duration,
    /// The RSET reply. Default 2 min.
    #[serde(with = "duration_serde")]
    pub rset: Duration,
    /// The 221 reply to QUIT. Default 10 s: a missing 221 is normal and
    /// only delays the close.
    #[serde(with = "duration_serde")]
    pub quit: Duration,
    /// The whole transport shutdown after `closeconn` (QUIT, close_notify,
    /// FIN, read to EOF). Default 15 s.
    #[serde(with = "duration_serde")]
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            banner: Duration::from_secs(300),
            ehlo: Duration::from_secs(300),
            starttls: Duration::from_secs(120),
            tls_handshake: Duration::from_secs(60),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_termination: Duration::from_secs(600),
            rset: Duration::from_secs(120),
            quit: Duration::from_secs(10),
            close: Duration::from_secs(15),
        }
    }
}

/// Overrides for [`Timeouts`]; each `None` keeps the wider scope's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TimeoutSettings {
    #[serde(with = "duration_serde::option")]
    pub connect: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub banner: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub ehlo: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub starttls: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub tls_handshake: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub mail: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub rcpt: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub data: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub data_block: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub data_termination: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub rset: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub quit: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub close: Option<Duration>,
}

impl TimeoutSettings {
    fn apply_to(&self, timeouts: &mut Timeouts) {
        let pairs = [
            (self.connect, &mut timeouts.connect),
            (self.banner, &mut timeouts.banner),
            (self.ehlo, &mut timeouts.ehlo),
            (self.starttls, &mut timeouts.starttls),
            (self.tls_handshake, &mut timeouts.tls_handshake),
            (self.mail, &mut timeouts.mail),
            (self.rcpt, &mut timeouts.rcpt),
            (self.data, &mut timeouts.data),
            (self.data_block, &mut timeouts.data_block),
            (self.data_termination, &mut timeouts.data_termination),
            (self.rset, &mut timeouts.rset),
            (self.quit, &mut timeouts.quit),
            (self.close, &mut timeouts.close),
        ];
        for (value, slot) in pairs {
            if let Some(value) = value {
                *slot = value;
            }
        }
    }
}

/// When deferred mail is tried again: the interval doubles after each
/// failed attempt, up to a cap, until the message is older than the
/// maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt. Default 20 min, Momentum's
    /// default `retry_interval` of 1,200 s.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// The maximum wait between attempts. Default 4 h.
    #[serde(with = "duration_serde")]
    pub max_interval: Duration,
    /// Age after which a deferred message fails for good. Default 5 days,
    /// within the 4 to 5 days that RFC 5321 section 4.5.4.1 suggests.
    #[serde(with = "duration_serde")]
    pub max_age: Duration,
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (1 for the first).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.interval
            .checked_mul(1 << doublings)
            .map_or(self.max_interval, |wait| wait.min(self.max_interval))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1_200),
            max_interval: Duration::from_secs(4 * 3_600),
            max_age: Duration::from_secs(5 * 86_400),
        }
    }
}

/// Overrides for [`RetryPolicy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RetrySettings {
    #[serde(with = "duration_serde::option")]
    pub interval: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub max_interval: Option<Duration>,
    #[serde(with = "duration_serde::option")]
    pub max_age: Option<Duration>,
}

impl RetrySettings {
    fn apply_to(&self, retry: &mut RetryPolicy) {
        if let Some(value) = self.interval {
            retry.interval = value;
        }
        if let Some(value) = self.max_interval {
            retry.max_interval = value;
        }
        if let Some(value) = self.max_age {
            retry.max_age = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str) -> Domain {
        Domain::new(name).expect("valid test domain")
    }

    #[test]
    fn defaults_without_configuration() {
        let settings = Config::default().resolve("default", &domain("example.com"));
        assert_eq!(settings.max_outbound_connections, 32);
        assert_eq!(settings.idle_timeout, Duration::from_secs(5));
        assert_eq!(settings.timeouts.data_termination, Duration::from_secs(600));
        assert_eq!(settings.tls.effective_verify(), TlsVerify::None);
    }

    #[test]
    fn module_doc_example_parses() {
        let source = include_str!("config.rs");
        let start = source.find("//! ```toml\n").expect("the example starts") + 12;
        let end = start + source[start..].find("//! ```").expect("the example ends");
        let text: String = source[start..end]
            .lines()
            .map(|line| line.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let config: Config = toml::from_str(&text).expect("the example is valid TOML");
        config
            .validate()
            .expect("the example is a valid configuration");
        assert_eq!(config.dns.nameservers.len(), 1);
        let relayed = config.resolve("default", &domain("relayed.example"));
        assert_eq!(relayed.tls.policy, TlsPolicy::Implicit);
    }

    #[test]
    fn most_specific_scope_wins() {
        let config: Config = toml::from_str(
            r#"
            [global]
            max_outbound_connections = 10
            idle_timeout = "7s"

            [binding.a]
            max_outbound_connections = 20

            [domain."example.com"]
            max_outbound_connections = 30
            timeouts = { rcpt = "1m" }

            [binding.a.domain."example.com"]
            max_outbound_connections = 40
            "#,
        )
        .expect("valid TOML");

        let example = domain("Example.com");
        let other = domain("other.example");
        assert_eq!(config.resolve("a", &example).max_outbound_connections, 40);
        assert_eq!(config.resolve("b", &example).max_outbound_connections, 30);
        assert_eq!(config.resolve("a", &other).max_outbound_connections, 20);
        assert_eq!(config.resolve("b", &other).max_outbound_connections, 10);
        assert_eq!(
            config.resolve("a", &example).timeouts.rcpt,
            Duration::from_secs(60)
        );
        assert_eq!(
            config.resolve("a", &example).idle_timeout,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn required_tls_verifies_host_by_default() {
        let tls = TlsSettings {
            policy: TlsPolicy::Required,
            ..TlsSettings::default()
        };
        assert_eq!(tls.effective_verify(), TlsVerify::Host);
    }

    #[test]
    fn validate_rejects_bad_ehlo_names() {
        let mut config = Config::default();
        assert_eq!(config.validate(), Ok(()));

        config.global.ehlo_name = Some("[192.0.2.1]".to_owned());
        assert_eq!(config.validate(), Ok(()));

        let mut scope = BindingScope::default();
        scope.settings.ehlo_name = Some("mx.example\r\nRSET".to_owned());
        config.binding.insert("outbound".to_owned(), scope);
        let error = config.validate().expect_err("CR LF in an EHLO name");
        assert!(
            error.to_string().contains("binding \"outbound\""),
            "{error}"
        );
    }

    #[test]
    fn validate_rejects_zero_values() {
        let cases = [
            "[global]\nidle_timeout = \"0s\"\n",
            "[global]\nmax_connection_age = \"0s\"\n",
            "[engine]\nmax_connections = 0\n",
            "[domain.\"example.com\"]\ntimeouts = { rcpt = \"0s\" }\n",
            "[global]\nretry = { max_interval = \"0s\" }\n",
            "[global]\nretry = { max_age = \"0s\" }\n",
        ];
        for text in cases {
            let config: Config = toml::from_str(text).expect("valid TOML");
            let error = config.validate().expect_err(text);
            assert!(error.to_string().contains("is 0"), "{error}");
        }
    }

    #[test]
    fn validate_rejects_dead_routes() {
        let cases = [
            (
                "[global]\nroute = { relay = { host = \"\", port = 25 } }\n",
                "route.relay.host \"\"",
            ),
            (
                "[global]\nroute = { relay = { host = \"127.0.0.1:10025\", port = 25 } }\n",
                "write host = \"127.0.0.1\" and port = 10025",
            ),
            (
                "[global]\nroute = { relay = { host = \"mail.example.net\", port = 0 } }\n",
                "route.relay.port 0",
            ),
            (
                "[domain.\"example.com\"]\nroute = { addresses = [] }\n",
                "route.addresses [] in the domain example.com settings",
            ),
            (
                "[global]\nroute = { addresses = [\"127.0.0.1:0\"] }\n",
                "route.addresses \"127.0.0.1:0\"",
            ),
            (
                "[global]\nroute = { relay = { host = \"[mail]\", port = 25 } }\n",
                "not an IPv6 address",
            ),
            (
                "[global]\nroute = { relay = { host = \"bad host\", port = 25 } }\n",
                "route.relay.host \"bad host\"",
            ),
        ];
        for (text, expected) in cases {
            let config: Config = toml::from_str(text).expect("valid TOML");
            let error = config.validate().expect_err(text);
            assert!(matches!(error, ConfigError::Invalid { .. }), "{error}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn validate_accepts_relay_hosts() {
        for host in ["mail.example.net", "127.0.0.1", "::1", "[::1]", "localhost"] {
            let mut config = Config::default();
            config.global.route = Some(Route::Relay {
                host: host.to_owned(),
                port: 25,
            });
            assert_eq!(config.validate(), Ok(()), "{host}");
        }
    }

    #[test]
    fn validate_checks_server_name() {
        let mut config = Config::default();
        for name in ["mx.example.net", "192.0.2.1", "[::1]"] {
            config.global.tls = Some(TlsSettings {
                server_name: Some(name.to_owned()),
                ..TlsSettings::default()
            });
            assert_eq!(config.validate(), Ok(()), "{name}");
        }
        config.global.tls = Some(TlsSettings {
            server_name: Some("mx example".to_owned()),
            ..TlsSettings::default()
        });
        let error = config.validate().expect_err("a space in a server name");
        assert!(
            error.to_string().contains("tls.server_name \"mx example\""),
            "{error}"
        );
        for name in ["[mx.example.net]", "[192.0.2.1]", "[::1", "::1]", "[[::1]]"] {
            config.global.tls = Some(TlsSettings {
                server_name: Some(name.to_owned()),
                ..TlsSettings::default()
            });
            assert!(config.validate().is_err(), "{name} is accepted");
        }
    }

    #[test]
    fn mx_port_and_nameservers_parse_and_validate() {
        let text = "[dns]\nnameservers = [\"127.0.0.1:10053\", \"::1\"]\n\
                    [global]\nmx_port = 2525\n\
                    [domain.\"example.com\"]\nmx_port = 10025\n";
        let config: Config = toml::from_str(text).expect("valid TOML");
        assert_eq!(
            config.dns.nameservers,
            [
                "127.0.0.1:10053".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        let error = toml::from_str::<Config>("[dns]\nnameservers = [\"ns.example\"]\n")
            .expect_err("a name is not an address");
        assert!(error.to_string().contains("\"ns.example\""), "{error}");
        assert!(error.to_string().contains("192.0.2.53:5353"), "{error}");
        config.validate().expect("valid settings");
        let domain = Domain::new("example.com").expect("valid domain");
        assert_eq!(config.resolve("default", &domain).mx_port, 10_025);
        let other = Domain::new("example.net").expect("valid domain");
        assert_eq!(config.resolve("default", &other).mx_port, 2_525);
        assert_eq!(Config::default().resolve("default", &other).mx_port, 25);

        let zero: Config = toml::from_str("[global]\nmx_port = 0\n").expect("valid TOML");
        let error = zero.validate().expect_err("port 0");
        assert!(error.to_string().contains("mx_port"), "{error}");
        let zero: Config =
            toml::from_str("[dns]\nnameservers = [\"127.0.0.1:0\"]\n").expect("valid TOML");
        let error = zero.validate().expect_err("port 0");
        assert!(error.to_string().contains("127.0.0.1:0"), "{error}");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let error = toml::from_str::<Config>("[global]\nmax_connectionz = 3\n")
            .expect_err("unknown key must be rejected");
        assert!(error.to_string().contains("max_connectionz"), "{error}");
    }

    #[test]
    fn backoff_doubles_up_to_cap() {
        let retry = RetryPolicy {
            interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(300),
            max_age: Duration::from_secs(3_600),
        };
        assert_eq!(retry.backoff(1), Duration::from_secs(60));
        assert_eq!(retry.backoff(2), Duration::from_secs(120));
        assert_eq!(retry.backoff(3), Duration::from_secs(240));
        assert_eq!(retry.backoff(4), Duration::from_secs(300));
        assert_eq!(retry.backoff(200), Duration::from_secs(300));
    }
}
