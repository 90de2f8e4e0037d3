//! MX resolution for direct delivery (RFC 5321 section 5.1, RFC 7505):
//! which hosts serve a domain, in which order, and their addresses.
//!
//! The response to a domain's MX query decides:
//!
//! - MX records: their hosts, by preference, the lowest first. Hosts of
//!   equal preference come in random order, so that their load spreads.
//! - No MX record (the name exists): the domain itself, the implicit MX.
//! - A null MX, one record with preference 0 and the root as its host: the
//!   domain accepts no mail, a permanent failure.
//! - NXDOMAIN: the domain does not exist, a permanent failure.
//! - Anything else (a timeout, SERVFAIL, REFUSED): a temporary failure.
//!
//! Names are looked up as fully qualified, so the resolver's search list
//! never turns `example.com` into `example.com.corp.example`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use ec_types::{DnsSettings, SessionError};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::MX;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

/// The hosts for a domain's mail, from its MX records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MxAnswer {
    /// The hosts to try, in order; the domain itself when it has no MX.
    Hosts(Vec<String>),
    /// The domain publishes a null MX: it accepts no mail.
    NullMx,
}

/// The resolver of one driver, shared by its sessions so that they share
/// its cache. It is built at the first lookup, so that a machine without
/// `/etc/resolv.conf` can still deliver through relays.
pub(crate) struct MxResolver {
    settings: DnsSettings,
    resolver: OnceLock<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MxResolver")
            .field("nameservers", &self.settings.nameservers)
            .field("built", &self.resolver.get().is_some())
            .finish()
    }
}

impl MxResolver {
    /// Creates a resolver that queries `settings.nameservers`, or the
    /// system's resolvers when the list is empty.
    pub(crate) fn new(settings: DnsSettings) -> Self {
        Self {
            settings,
            resolver: OnceLock::new(),
        }
    }

    fn resolver(&self, domain: &str) -> Result<&TokioResolver, SessionError> {
        let built = self.resolver.get_or_init(|| build(&self.settings));
        built.as_ref().map_err(|message| SessionError::Resolve {
            host: domain.to_owned(),
            message: message.clone(),
        })
    }

    /// Looks up the MX records of `domain`.
    ///
    /// # Errors
    ///
    /// [`SessionError::DomainNotFound`] on NXDOMAIN, and
    /// [`SessionError::Resolve`] when the lookup fails for another reason.
    pub(crate) async fn mx(&self, domain: &str) -> Result<MxAnswer, SessionError> {
        let resolver = self.resolver(domain)?;
        match resolver.mx_lookup(fully_qualified(domain)).await {
            Ok(lookup) => Ok(order(domain, lookup.iter())),
            Err(error) if error.is_nx_domain() => Err(SessionError::DomainNotFound {
                domain: domain.to_owned(),
            }),
            Err(error) if is_no_data(&error) => Ok(MxAnswer::Hosts(vec![domain.to_owned()])),
            Err(error) => Err(self.resolve_error(domain, &error)),
        }
    }

    /// Looks up the IPv4 and IPv6 addresses of `host`, each with `port`.
    ///
    /// # Errors
    ///
    /// [`SessionError::Resolve`] when the lookup fails or finds no address.
    pub(crate) async fn addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, SessionError> {
        let resolver = self.resolver(host)?;
        match resolver.lookup_ip(fully_qualified(host)).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|ip: IpAddr| SocketAddr::new(ip, port))
                .collect()),
            Err(error) => Err(self.resolve_error(host, &error)),
        }
    }

    /// Turns a failed lookup of `name` into a deferral. A negative response
    /// is named by its response code (REFUSED, SERVFAIL), which hickory's
    /// own text leaves out, and a timeout names the servers queried.
    fn resolve_error(&self, name: &str, error: &ResolveError) -> SessionError {
        let timed_out = error
            .proto()
            .is_some_and(|proto| matches!(proto.kind(), ProtoErrorKind::Timeout));
        let message = if timed_out {
            format!("timed out waiting for {}", self.servers())
        } else {
            describe(error)
        };
        SessionError::Resolve {
            host: name.to_owned(),
            message,
        }
    }

    /// Names the DNS servers that lookups go to.
    pub(crate) fn servers(&self) -> String {
        if self.settings.nameservers.is_empty() {
            return "the system's DNS servers (/etc/resolv.conf)".to_owned();
        }
        let list: Vec<String> = self
            .settings
            .nameservers
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("the DNS servers {} ([dns] nameservers)", list.join(", "))
    }
}

/// Builds a resolver from the settings, or returns why it cannot be built.
fn build(settings: &DnsSettings) -> Result<TokioResolver, String> {
    // Both address families: hickory's default queries AAAA only when a
    // name has no A record, so an IPv6 address would never be tried.
    let ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    if settings.nameservers.is_empty() {
        return TokioResolver::builder_tokio()
            .map(|mut builder| {
                builder.options_mut().ip_strategy = ip_strategy;
                builder.build()
            })
            .map_err(|error| {
                format!(
                    "cannot read the system's DNS configuration ({error}); set [dns] \
                     nameservers in the configuration file"
                )
            });
    }
    let servers: Vec<NameServerConfig> = settings
        .nameservers
        .iter()
        .flat_map(|&address| {
            [Protocol::Udp, Protocol::Tcp].map(|protocol| NameServerConfig::new(address, protocol))
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    builder.options_mut().ip_strategy = ip_strategy;
    Ok(builder.build())
}

/// Returns whether the name exists without records of the type queried
/// (NOERROR with an empty answer section). hickory reports REFUSED and SERVFAIL as "no
/// records found" too, so the response code must be NOERROR.
fn is_no_data(error: &ResolveError) -> bool {
    error.proto().is_some_and(|proto| {
        matches!(
            proto.kind(),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError,
                ..
            }
        )
    })
}

/// Describes a failed lookup: a server's negative answer by its response
/// code (REFUSED, SERVFAIL), which hickory's own text leaves out.
fn describe(error: &ResolveError) -> String {
    let answered = error.proto().and_then(|proto| match proto.kind() {
        ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NoError,
            query,
            ..
        } => Some(format!("the name has no {} record", query.query_type())),
        ProtoErrorKind::NoRecordsFound {
            response_code,
            query,
            ..
        } => Some(format!(
            "the DNS server answered {response_code} to the {} query",
            query.query_type()
        )),
        _ => None,
    });
    answered.unwrap_or_else(|| error.to_string())
}

/// Returns `name` with the trailing dot of a fully qualified name.
fn fully_qualified(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// Orders the MX records of `domain` (RFC 5321 section 5.1): by
/// preference, the lowest first, and at random among equal preferences.
/// One record whose host is the root is a null MX (RFC 7505 section 3).
/// A root host among other records names no host, so it is skipped.
pub(crate) fn order<'a>(domain: &str, records: impl Iterator<Item = &'a MX>) -> MxAnswer {
    let records: Vec<&MX> = records.collect();
    if let [only] = records.as_slice() {
        if only.exchange().is_root() {
            return MxAnswer::NullMx;
        }
    }

    let shuffle = RandomState::new();
    let mut hosts: Vec<(u16, u64, String)> = records
        .iter()
        .filter(|record| !record.exchange().is_root())
        .map(|record| {
            // The ASCII (A-label) form: rustls takes only that as a TLS
            // server name.
            let host = record.exchange().to_ascii();
            let host = host.trim_end_matches('.').to_owned();
            (record.preference(), shuffle.hash_one(&host), host)
        })
        .collect();
    hosts.sort();
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|(_, _, host)| seen.insert(host.to_ascii_lowercase()));
    if hosts.is_empty() {
        // Only root hosts, and more than one: no usable MX.
        return MxAnswer::Hosts(vec![domain.to_owned()]);
    }
    MxAnswer::Hosts(hosts.into_iter().map(|(_, _, host)| host).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::Name;

    fn mx(preference: u16, host: &str) -> MX {
        MX::new(preference, Name::from_ascii(host).expect("valid name"))
    }

    fn hosts(answer: MxAnswer) -> Vec<String> {
        match answer {
            MxAnswer::Hosts(hosts) => hosts,
            MxAnswer::NullMx => panic!("null MX"),
        }
    }

    #[test]
    fn lowest_preference_first() {
        let records = [
            mx(20, "b.example."),
            mx(10, "a.example."),
            mx(30, "c.example."),
        ];
        let answer = order("example.com", records.iter());
        assert_eq!(hosts(answer), ["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn equal_preferences_shuffled() {
        let records: Vec<MX> = (0..8).map(|i| mx(10, &format!("h{i}.example."))).collect();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            orders.insert(hosts(order("example.com", records.iter())));
        }
        assert!(
            orders.len() > 1,
            "20 orderings of 8 hosts were all the same"
        );
        for order in &orders {
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted.len(), 8);
        }
    }

    #[test]
    fn single_root_is_null_mx() {
        let records = [mx(0, ".")];
        assert_eq!(order("example.com", records.iter()), MxAnswer::NullMx);
    }

    #[test]
    fn root_beside_hosts_is_skipped() {
        let records = [mx(0, "."), mx(10, "a.example.")];
        assert_eq!(hosts(order("example.com", records.iter())), ["a.example"]);
    }

    #[test]
    fn duplicate_hosts_tried_once() {
        let records = [mx(10, "a.example."), mx(20, "A.example.")];
        assert_eq!(hosts(order("example.com", records.iter())), ["a.example"]);
    }

    #[test]
    fn names_made_fully_qualified() {
        assert_eq!(fully_qualified("example.com"), "example.com.");
        assert_eq!(fully_qualified("example.com."), "example.com.");
    }
}
