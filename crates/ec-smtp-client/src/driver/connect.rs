//! Opening the TCP connection: name resolution (MX hosts for
//! [`Target::Mx`]), source binding, connect deadline, TCP_NODELAY.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ec_types::{SessionError, Target};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

use super::mx::{MxAnswer, MxResolver};

/// The maximum number of addresses one connect tries across a domain's MX
/// hosts, as Postfix's `smtp_mx_address_limit` (default 5). A domain whose
/// first hosts all fail is tried again later rather than through a long
/// list.
const MX_ADDRESS_LIMIT: usize = 5;

/// An open connection and the host name it reached, when the target named
/// one: the MX host for [`Target::Mx`], which is also the name its TLS
/// certificate must carry.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) host: Option<String>,
}

/// Connects to the first address of `target` that answers, binding
/// `source_ip` when given. A host name or address gets `timeout` for its
/// lookup and every connect together. Under [`Target::Mx`], each lookup and
/// each connect gets its own `timeout`, and the walk stops after
/// [`MX_ADDRESS_LIMIT`] tries.
///
/// TCP_NODELAY is set: a session writes each pipelined command group, and
/// the body with its final dot, in one write, so Nagle's algorithm would
/// only add a delayed-ACK wait (about 40 ms) to every reply.
pub(crate) async fn connect(
    target: &Target,
    source_ip: Option<IpAddr>,
    timeout: Duration,
    resolver: &MxResolver,
) -> Result<Connected, SessionError> {
    if let Target::Mx { domain, port } = target {
        return connect_mx(domain, *port, source_ip, timeout, resolver).await;
    }

    let deadline = Instant::now() + timeout;
    let connect_error = |kind: io::ErrorKind| SessionError::Connect {
        target: target.to_string(),
        kind,
    };

    let addresses: Vec<SocketAddr> = match target {
        Target::Address(address) => vec![*address],
        Target::Host { host, port } => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match timeout_at(deadline, tokio::net::lookup_host((host, *port))).await {
                Ok(Ok(addresses)) => addresses.collect(),
                Ok(Err(error)) => {
                    return Err(SessionError::Resolve {
                        host: host.to_owned(),
                        message: error.to_string(),
                    })
                }
                Err(_) => return Err(connect_error(io::ErrorKind::TimedOut)),
            }
        }
        _ => return Err(connect_error(io::ErrorKind::Unsupported)),
    };

    let mut last_error = io::ErrorKind::NotFound;
    for address in addresses {
        match timeout_at(deadline, connect_one(address, source_ip)).await {
            Ok(Ok(stream)) => return Ok(Connected { stream, host: None }),
            Ok(Err(error)) => {
                tracing::debug!(%address, %error, "connect attempt failed");
                last_error = error.kind();
            }
            Err(_) => return Err(connect_error(io::ErrorKind::TimedOut)),
        }
    }
    Err(connect_error(last_error))
}

/// Connects to the MX hosts of `domain` in order (RFC 5321 section 5.1):
/// every address of the first host, then of the next, until one accepts.
/// Each connect and each failed address lookup counts as one of the
/// [`MX_ADDRESS_LIMIT`] tries. A walk therefore takes at most the MX lookup
/// and that many tries of `timeout` each, plus the lookups that found
/// addresses, one per host tried. A domain that is an address literal,
/// such as `[192.0.2.1]`, names its one address itself.
async fn connect_mx(
    domain: &str,
    port: u16,
    source_ip: Option<IpAddr>,
    timeout: Duration,
    resolver: &MxResolver,
) -> Result<Connected, SessionError> {
    if let Some(ip) = address_literal(domain) {
        let address = SocketAddr::new(ip, port);
        return match tokio::time::timeout(timeout, connect_one(address, source_ip)).await {
            Ok(Ok(stream)) => Ok(Connected { stream, host: None }),
            Ok(Err(error)) => Err(SessionError::Connect {
                target: address.to_string(),
                kind: error.kind(),
            }),
            Err(_) => Err(SessionError::Connect {
                target: address.to_string(),
                kind: io::ErrorKind::TimedOut,
            }),
        };
    }

    let lookup_timed_out = |name: &str| SessionError::Resolve {
        host: name.to_owned(),
        message: format!(
            "timed out after {timeout:?} waiting for {}",
            resolver.servers()
        ),
    };
    let hosts = match tokio::time::timeout(timeout, resolver.mx(domain)).await {
        Ok(Ok(MxAnswer::Hosts(hosts))) => hosts,
        Ok(Ok(MxAnswer::NullMx)) => {
            return Err(SessionError::NullMx {
                domain: domain.to_owned(),
            })
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => return Err(lookup_timed_out(domain)),
    };

    let mut tries = 0;
    let mut last_error = None;
    'hosts: for host in hosts {
        if tries == MX_ADDRESS_LIMIT {
            break;
        }
        let addresses = match tokio::time::timeout(timeout, resolver.addresses(&host, port)).await {
            Ok(Ok(addresses)) => addresses,
            Ok(Err(error)) => {
                tracing::debug!(%domain, mx = %host, %error, "MX host has no usable address");
                tries += 1;
                last_error = Some(error);
                continue;
            }
            Err(_) => {
                tries += 1;
                last_error = Some(lookup_timed_out(&host));
                continue;
            }
        };
        for address in addresses {
            if tries == MX_ADDRESS_LIMIT {
                break 'hosts;
            }
            tries += 1;
            let kind = match tokio::time::timeout(timeout, connect_one(address, source_ip)).await {
                Ok(Ok(stream)) => {
                    return Ok(Connected {
                        stream,
                        host: Some(host),
                    })
                }
                Ok(Err(error)) => error.kind(),
                Err(_) => io::ErrorKind::TimedOut,
            };
            tracing::debug!(%domain, mx = %host, %address, ?kind, "connect attempt failed");
            last_error = Some(SessionError::Connect {
                target: format!("{host} ({address})"),
                kind,
            });
        }
    }
    Err(last_error.unwrap_or_else(|| SessionError::Resolve {
        host: domain.to_owned(),
        message: "no MX host has an address".to_owned(),
    }))
}

/// Returns the address of a domain written as an address literal (RFC 5321
/// section 4.1.3): `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

async fn connect_one(address: SocketAddr, source_ip: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> MxResolver {
        MxResolver::new(ec_types::DnsSettings::default())
    }

    #[test]
    fn address_literals_parse() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some(IpAddr::from([192, 0, 2, 1]))
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(address_literal("[ipv6:::1]"), "::1".parse().ok());
        assert_eq!(address_literal("example.com"), None);
        assert_eq!(address_literal("[2001:db8::1]"), None, "IPv6 needs its tag");
        assert_eq!(address_literal("[example.com]"), None);
    }

    #[tokio::test]
    async fn sets_nodelay() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let target = Target::Address(listener.local_addr()?);

        let connected = connect(&target, None, Duration::from_secs(5), &resolver())
            .await
            .map_err(io::Error::other)?;

        assert!(connected.stream.nodelay()?, "Nagle's algorithm is still on");
        Ok(())
    }

    #[tokio::test]
    async fn failed_lookup_keeps_resolver_message() {
        // A NUL byte fails the lookup before any query leaves the host.
        let target = Target::Host {
            host: "bad\0name".to_owned(),
            port: 25,
        };

        let error = connect(&target, None, Duration::from_secs(5), &resolver())
            .await
            .expect_err("no such host");

        let SessionError::Resolve { host, message } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(host, "bad\0name");
        assert!(!message.is_empty());
        assert!(!error.to_string().contains("uncategorized"), "{error}");
    }

    #[tokio::test]
    async fn refused_names_target() {
        // Bind, learn the port, close: nothing listens there any more.
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("local address");
        drop(listener);

        let target = Target::Address(address);
        let error = connect(&target, None, Duration::from_secs(5), &resolver())
            .await
            .expect_err("nothing listens");

        assert!(
            matches!(&error, SessionError::Connect { target, kind: io::ErrorKind::ConnectionRefused } if *target == address.to_string()),
            "{error:?}"
        );
    }
}
