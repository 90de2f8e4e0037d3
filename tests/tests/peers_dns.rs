//! Checks that the DNS test peer serves [`TEST_ZONE`] as its documentation
//! describes, queried with hickory-resolver, the resolver the product uses.
//! A failure here means the peer is broken, not the engine. The peer needs
//! NSD (`apt-get install -y nsd`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use ec_tests::peers::{DnsServer, PeersError, TEST_ORIGIN, TEST_ZONE};
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};

fn start_test_zone() -> DnsServer {
    DnsServer::start(TEST_ZONE, TEST_ORIGIN).unwrap_or_else(|error| panic!("{error}"))
}

/// Builds a resolver that queries only `name_servers`, without caching,
/// the hosts file or the system configuration.
fn resolver(name_servers: NameServerConfigGroup) -> TokioResolver {
    let config = ResolverConfig::from_parts(None, vec![], name_servers);
    let mut options = ResolverOpts::default();
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(options)
        .build()
}

/// A resolver for `server` over UDP, with TCP when an answer is truncated.
fn resolver_for(server: &DnsServer) -> TokioResolver {
    let addr = server.addr();
    resolver(NameServerConfigGroup::from_ips_clear(
        &[addr.ip()],
        addr.port(),
        true,
    ))
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

/// The MX records of `domain` as (preference, exchange), in answer order.
async fn mx_records(resolver: &TokioResolver, domain: &str) -> Vec<(u16, Name)> {
    let lookup = resolver
        .mx_lookup(domain)
        .await
        .unwrap_or_else(|error| panic!("MX lookup of {domain} failed: {error}"));
    lookup
        .iter()
        .map(|mx| (mx.preference(), mx.exchange().clone()))
        .collect()
}

async fn ipv4_addresses(resolver: &TokioResolver, host: &str) -> Vec<Ipv4Addr> {
    let lookup = resolver
        .ipv4_lookup(host)
        .await
        .unwrap_or_else(|error| panic!("A lookup of {host} failed: {error}"));
    lookup.iter().map(|a| a.0).collect()
}

/// Returns the response code of a lookup that found no records.
fn response_code(error: &ResolveError) -> ResponseCode {
    let proto = error
        .proto()
        .unwrap_or_else(|| panic!("not a DNS protocol error: {error}"));
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => *response_code,
        other => panic!("expected NoRecordsFound, got {other:?}"),
    }
}

#[tokio::test]
async fn mx_answers_with_preferences() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    assert_eq!(
        mx_records(&resolver, "mx.dns.test.").await,
        vec![(10, name("good.dns.test."))]
    );

    let mut walk = mx_records(&resolver, "walk.dns.test.").await;
    walk.sort();
    assert_eq!(
        walk,
        vec![(10, name("down.dns.test.")), (20, name("good.dns.test."))]
    );

    assert_eq!(
        mx_records(&resolver, "noaddr.dns.test.").await,
        vec![(10, name("missing-host.dns.test."))]
    );
}

#[tokio::test]
async fn hosts_have_documented_addresses() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    let expected = [
        ("ns.dns.test.", Ipv4Addr::new(127, 0, 0, 1)),
        ("good.dns.test.", Ipv4Addr::new(127, 0, 0, 1)),
        ("down.dns.test.", Ipv4Addr::new(127, 0, 0, 2)),
        ("implicit.dns.test.", Ipv4Addr::new(127, 0, 0, 1)),
    ];
    for (host, address) in expected {
        assert_eq!(
            ipv4_addresses(&resolver, host).await,
            vec![address],
            "{host}"
        );
    }
}

#[tokio::test]
async fn null_mx_exchange_is_root() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    let records = mx_records(&resolver, "nullmx.dns.test.").await;

    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].0, 0);
    assert!(records[0].1.is_root(), "exchange is {}", records[0].1);
}

#[tokio::test]
async fn unknown_name_is_nxdomain() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    for domain in ["nothing.dns.test.", "missing-host.dns.test."] {
        let error = resolver
            .mx_lookup(domain)
            .await
            .expect_err("a name that is not in the zone");
        assert!(error.is_nx_domain(), "{domain}: {error}");
        assert_eq!(response_code(&error), ResponseCode::NXDomain, "{domain}");
    }

    let error = resolver
        .ipv4_lookup("missing-host.dns.test.")
        .await
        .expect_err("the MX host of noaddr.dns.test has no address");
    assert!(error.is_nx_domain(), "{error}");
}

#[tokio::test]
async fn implicit_has_no_mx() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    for domain in ["implicit.dns.test.", "good.dns.test."] {
        let error = resolver
            .mx_lookup(domain)
            .await
            .expect_err("a name with an A record and no MX");
        assert!(error.is_no_records_found(), "{domain}: {error}");
        assert!(!error.is_nx_domain(), "{domain}: {error}");
        assert_eq!(response_code(&error), ResponseCode::NoError, "{domain}");
    }
}

#[tokio::test]
async fn v6_mx_host_has_aaaa() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    assert_eq!(
        mx_records(&resolver, "v6.dns.test.").await,
        vec![(10, name("good6.dns.test."))]
    );

    let lookup = resolver
        .ipv6_lookup("good6.dns.test.")
        .await
        .expect("AAAA lookup of good6.dns.test");
    let addresses: Vec<Ipv6Addr> = lookup.iter().map(|aaaa| aaaa.0).collect();
    assert_eq!(addresses, vec![Ipv6Addr::LOCALHOST]);

    let error = resolver
        .ipv4_lookup("good6.dns.test.")
        .await
        .expect_err("good6.dns.test has no A record");
    assert_eq!(response_code(&error), ResponseCode::NoError);
}

#[tokio::test]
async fn outside_zone_is_refused() {
    let server = start_test_zone();
    let resolver = resolver_for(&server);

    let error = resolver
        .mx_lookup("outside.example.")
        .await
        .expect_err("NSD serves only dns.test");

    assert_eq!(response_code(&error), ResponseCode::Refused, "{error}");
    assert!(!error.is_nx_domain(), "{error}");
    // As the TEST_ZONE documentation warns: this is no NODATA answer,
    // although hickory-resolver 0.25 reports it through the same check.
    assert!(error.is_no_records_found(), "{error}");
}

#[tokio::test]
async fn answers_over_tcp() {
    let server = start_test_zone();
    let tcp_only = NameServerConfig::new(server.addr(), Protocol::Tcp);
    let resolver = resolver(NameServerConfigGroup::from(vec![tcp_only]));

    let mut walk = mx_records(&resolver, "walk.dns.test.").await;
    walk.sort();

    assert_eq!(
        walk,
        vec![(10, name("down.dns.test.")), (20, name("good.dns.test."))]
    );
}

#[tokio::test]
async fn two_servers_get_different_ports() {
    let starts: Vec<_> = (0..2).map(|_| thread::spawn(start_test_zone)).collect();
    let servers: Vec<DnsServer> = starts
        .into_iter()
        .map(|start| start.join().expect("start thread"))
        .collect();

    assert_ne!(servers[0].addr().port(), servers[1].addr().port());
    for server in &servers {
        assert_eq!(server.addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let resolver = resolver_for(server);
        assert_eq!(
            mx_records(&resolver, "mx.dns.test.").await,
            vec![(10, name("good.dns.test."))],
            "server on {}",
            server.addr()
        );
    }
}

#[test]
fn drop_frees_port() {
    let server = start_test_zone();
    let addr = server.addr();
    assert!(
        UdpSocket::bind(addr).is_err(),
        "nsd does not hold UDP {addr}"
    );

    drop(server);

    // Every nsd process must be gone, the server process with the sockets
    // among them, so both ports can be bound again at once.
    UdpSocket::bind(addr).unwrap_or_else(|error| panic!("UDP {addr} still taken: {error}"));
    TcpListener::bind(addr).unwrap_or_else(|error| panic!("TCP {addr} still taken: {error}"));
}

#[test]
fn origin_without_final_dot() {
    let server = DnsServer::start(TEST_ZONE, "dns.test").expect("start");

    assert_eq!(server.origin(), "dns.test.");
    assert!(
        server.output().contains("zone dns.test. read with success"),
        "{}",
        server.output()
    );
}

#[test]
fn invalid_zone_shows_checkzone_output() {
    let zone = format!("{TEST_ZONE}broken IN MX 10\n");

    let error = DnsServer::start(&zone, TEST_ORIGIN).expect_err("a zone with a syntax error");

    assert!(
        matches!(error, PeersError::DnsZoneInvalid { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("syntax error"), "{message}");
    assert!(message.contains("dns.test."), "{message}");
}

#[test]
fn invalid_origin_is_rejected() {
    let error = DnsServer::start(TEST_ZONE, "dns test").expect_err("an origin with a space");

    assert!(
        matches!(error, PeersError::DnsOriginInvalid { .. }),
        "{error:?}"
    );
}
