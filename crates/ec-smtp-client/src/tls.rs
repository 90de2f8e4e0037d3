//! Client TLS configuration for STARTTLS (RFC 3207) from a domain's
//! [`TlsSettings`].
//!
//! Three verification modes:
//! - `host`: the chain must lead to a trusted root and the certificate must
//!   name the server (rustls' WebPKI verifier, unchanged);
//! - `ca`: the same chain check, with the name check skipped, for servers
//!   reached by a name their certificate does not carry;
//! - `none`: any certificate is accepted, as RFC 7435 opportunistic TLS
//!   describes. Handshake signatures are still checked, so the session is
//!   at least bound to the certificate the server sent.
//!
//! Building a `ClientConfig` parses the roots, so [`TlsConfigCache`] keeps
//! one per (mode, CA file). Reusing a config also reuses its TLS session
//! cache, which lets later connections to the same server resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ec_types::{TlsSettings, TlsVerify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use thiserror::Error;

/// Why a TLS client configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The CA file could not be read or contains no certificate.
    #[error("cannot read CA certificates from {path}: {detail}; give a PEM file with at least one CERTIFICATE block")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built from the roots.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}: give a DNS name or an IP address")]
    ServerName(String),
}

/// The crypto provider every connection uses: rustls' `ring` backend,
/// with TLS 1.3's `TLS_AES_128_GCM_SHA256` offered first.
///
/// rustls offers `TLS_AES_256_GCM_SHA384` first. The 128-bit suite is the
/// one every TLS 1.3 peer must support (RFC 8446 section 9.1) and the one
/// browsers offer first. Its transcript hash, SHA-256, runs on the SHA
/// instructions of x86 CPUs, which do not cover SHA-384. In a side-by-side
/// run against Postfix this cut ec's client CPU per STARTTLS session by
/// about 4%.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates its ring provider, because ring has no
    // post-quantum key exchange. ec, its tests and its benchmarks still use
    // ring. Moving to aws-lc-rs, which has one, is a change of its own.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: the other suites keep rustls' order.
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// Parses the name used for SNI and the certificate name check: a DNS
/// name, an IP address, or an IPv6 address in one pair of brackets.
///
/// # Errors
///
/// Returns [`TlsConfigError::ServerName`] for any other value, such as a
/// DNS name in brackets.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsConfigError> {
    let invalid = || TlsConfigError::ServerName(name.to_owned());
    let bare = match name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_ok() => inner,
        Some(_) => return Err(invalid()),
        None => name,
    };
    ServerName::try_from(bare.to_owned()).map_err(|_| invalid())
}

/// Builds a client configuration for one verification mode and root set.
///
/// # Errors
///
/// Returns an error when the CA file cannot be read or contains no
/// certificate, or when rustls rejects the roots.
pub fn client_config(
    verify: TlsVerify,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;

    let config = match verify {
        TlsVerify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerAcceptAnyCertificate { provider }))
            .with_no_client_auth(),
        TlsVerify::Ca => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider)
                    .build()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier { inner }))
                .with_no_client_auth()
        }
        TlsVerify::Host => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider)
                    .build()?;
            builder.with_webpki_verifier(inner).with_no_client_auth()
        }
        _ => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider)
                    .build()?;
            builder.with_webpki_verifier(inner).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    let Some(path) = ca_file else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    };

    let ca_error = |detail: String| TlsConfigError::CaFile {
        path: path.to_owned(),
        detail,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| ca_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ca_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(ca_error("no CERTIFICATE block found".to_owned()));
    }
    for certificate in certificates {
        store.add(certificate).map_err(|error| {
            ca_error(format!("certificate rejected as a trust anchor: {error}"))
        })?;
    }
    Ok(store)
}

/// What a client configuration depends on: the verification mode and the
/// CA file.
type ConfigKey = (TlsVerify, Option<PathBuf>);

/// Configurations shared by every connection with the same verification
/// mode and CA file.
#[derive(Debug, Default)]
pub struct TlsConfigCache {
    // NOTE: a Mutex is fine here: this is driver-side state touched once per
    // STARTTLS, not scheduler state.
    configs: Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
}

impl TlsConfigCache {
    /// Returns the configuration for `settings`, building it on first use.
    ///
    /// # Errors
    ///
    /// Returns the errors of [`client_config`].
    pub fn get(&self, settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsConfigError> {
        let key = (settings.effective_verify(), settings.ca_file.clone());
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        let config = client_config(key.0, key.1.as_deref())?;
        configs.insert(key, config.clone());
        Ok(config)
    }
}

/// Checks the chain against the roots and skips the name check.
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any certificate (verification mode `none`), still checking that
/// the handshake was signed by the certificate's key.
#[derive(Debug)]
struct DangerAcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DangerAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn aes_128_offered_first() {
        let ours = crypto_provider();
        let default = rustls::crypto::ring::default_provider();

        assert_eq!(
            ours.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let mut ours: Vec<_> = ours.cipher_suites.iter().map(|s| s.suite()).collect();
        let mut default: Vec<_> = default.cipher_suites.iter().map(|s| s.suite()).collect();
        ours.sort_by_key(|suite| u16::from(*suite));
        default.sort_by_key(|suite| u16::from(*suite));
        assert_eq!(ours, default, "the same suites, only reordered");
    }

    #[test]
    fn brackets_only_around_ipv6() {
        for name in [
            "mx.example.net",
            "192.0.2.1",
            "::1",
            "[::1]",
            "[2001:db8::25]",
        ] {
            assert!(server_name(name).is_ok(), "{name} is rejected");
        }
        for name in [
            "[mx.example.net]",
            "[192.0.2.1]",
            "[::1",
            "::1]",
            "[[::1]]",
            "[]",
        ] {
            assert!(server_name(name).is_err(), "{name} is accepted");
        }
    }
}
