//! Opening the TCP connection: name resolution, source binding, connect
//! deadline, TCP_NODELAY.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ec_types::{SessionError, Target};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

/// Connects to the first address of `target` that answers, binding
/// `source_ip` when given, all within `timeout`.
///
/// TCP_NODELAY is set: a session writes each pipelined command group, and
/// the body with its final dot, in one write, so Nagle's algorithm would
/// only add a delayed-ACK wait (about 40 ms) to every reply.
pub(crate) async fn connect(
    target: &Target,
    source_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, SessionError> {
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
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => {
                tracing::debug!(%address, %error, "connect attempt failed");
                last_error = error.kind();
            }
            Err(_) => return Err(connect_error(io::ErrorKind::TimedOut)),
        }
    }
    Err(connect_error(last_error))
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

    #[tokio::test]
    async fn sets_nodelay() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let target = Target::Address(listener.local_addr()?);

        let stream = connect(&target, None, Duration::from_secs(5))
            .await
            .map_err(io::Error::other)?;

        assert!(stream.nodelay()?, "Nagle's algorithm is still on");
        Ok(())
    }

    #[tokio::test]
    async fn failed_lookup_keeps_resolver_message() {
        // A NUL byte fails the lookup before any query leaves the host.
        let target = Target::Host {
            host: "bad\0name".to_owned(),
            port: 25,
        };

        let error = connect(&target, None, Duration::from_secs(5))
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

        let error = connect(&Target::Address(address), None, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");

        assert!(
            matches!(&error, SessionError::Connect { target, kind: io::ErrorKind::ConnectionRefused } if *target == address.to_string()),
            "{error:?}"
        );
    }
}
