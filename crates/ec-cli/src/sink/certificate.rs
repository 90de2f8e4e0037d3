//! The sink's CA and server certificate, made with rcgen at start-up.
//!
//! rustls rejects a server certificate that is itself a CA
//! (`CaUsedAsEndEntity`), so the sink makes a small CA and a `CA:FALSE` leaf
//! signed by it, and clients trust the CA.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use super::SinkError;

/// The names every sink certificate carries, so a client can connect by
/// the loopback name or either loopback address.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The generated CA and the server configuration that presents the leaf.
pub(crate) struct SinkCertificate {
    pub(crate) ca_pem: String,
    pub(crate) ca_der: CertificateDer<'static>,
    pub(crate) server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for SinkCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkCertificate")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

impl SinkCertificate {
    /// Makes a CA ("ec sink CA") and a leaf for the loopback names and
    /// `hostname`, each with a fresh ECDSA P-256 key.
    pub(crate) fn generate(hostname: &str) -> Result<Self, SinkError> {
        let ca_key = generate_key("CA key")?;
        let ca = ca_params()
            .self_signed(&ca_key)
            .map_err(|source| SinkError::Certificate {
                what: "CA certificate",
                source,
            })?;

        let leaf_key = generate_key("server key")?;
        let leaf = leaf_params(hostname)?
            .signed_by(&leaf_key, &ca, &ca_key)
            .map_err(|source| SinkError::Certificate {
                what: "server certificate",
                source,
            })?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = ec_smtp_client::tls::crypto_provider();
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)?;

        Ok(Self {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_config: Arc::new(server_config),
        })
    }
}

fn generate_key(what: &'static str) -> Result<KeyPair, SinkError> {
    KeyPair::generate().map_err(|source| SinkError::Certificate { what, source })
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "ec sink CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(hostname: &str) -> Result<CertificateParams, SinkError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);

    let extra = (!LOOPBACK_NAMES.contains(&hostname)).then_some(hostname);
    for name in LOOPBACK_NAMES.into_iter().chain(extra) {
        params.subject_alt_names.push(subject_alt_name(name)?);
    }

    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn subject_alt_name(name: &str) -> Result<SanType, SinkError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns = name.try_into().map_err(|source| SinkError::Certificate {
        what: "subject alternative name",
        source,
    })?;
    Ok(SanType::DnsName(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Runs a TLS handshake over an in-memory pipe and reports whether the
    /// client accepted the server's certificate for `name`.
    async fn handshake(certificate: &SinkCertificate, name: &str) -> bool {
        let mut roots = RootCertStore::empty();
        roots.add(certificate.ca_der.clone()).expect("CA parses");
        let provider = ec_smtp_client::tls::crypto_provider();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(client));
        let acceptor = TlsAcceptor::from(certificate.server_config.clone());

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(name.to_owned()).expect("valid name");
        let server = tokio::spawn(async move { acceptor.accept(server_io).await.is_ok() });
        let client_ok = connector.connect(name, client_io).await.is_ok();
        let _ = server.await;
        client_ok
    }

    #[tokio::test]
    async fn leaf_verifies_for_loopback_names() {
        let certificate = SinkCertificate::generate("mx.ec.test").expect("generates");
        assert!(certificate
            .ca_pem
            .starts_with("-----BEGIN CERTIFICATE-----"));
        for name in ["localhost", "127.0.0.1", "::1", "mx.ec.test"] {
            assert!(handshake(&certificate, name).await, "{name}");
        }
        assert!(!handshake(&certificate, "other.ec.test").await);
    }

    #[test]
    fn invalid_hostname_is_an_error() {
        let error = SinkCertificate::generate("m\u{e9}l.ec.test").expect_err("not ASCII");
        assert!(matches!(error, SinkError::Certificate { .. }), "{error}");
    }
}
