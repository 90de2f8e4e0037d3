//! An in-memory test PKI: a CA and server certificates signed by it, valid or broken
//! on purpose, in the PEM and DER forms that `ec --ca-file` and rustls take.
//!
//! rustls (through webpki) checks a server certificate's chain to a trust anchor, its
//! validity period, the name asked for, the `serverAuth` extended key usage and that
//! it is not a CA certificate. It ignores the keyUsage extension of an end-entity
//! certificate, so [`LeafProfile::WrongKeyUsage`] is accepted; each other broken
//! profile fails verification with its own [`rustls::CertificateError`].
//!
//! ```
//! use ec_tests::pki::{LeafProfile, TestCa, DEFAULT_NAMES};
//!
//! let ca = TestCa::new()?;
//! let leaf = ca.leaf(&DEFAULT_NAMES)?;
//! let server_config = leaf.server_config()?;
//! let expired = ca.issue(LeafProfile::Expired, &["mx.ec.test"])?;
//! let ca_file = ca.write_pem_file()?; // deleted when dropped
//! # let _ = (server_config, expired, ca_file);
//! # Ok::<(), ec_tests::pki::PkiError>(())
//! ```

#![warn(missing_docs)]

use std::io::Write as _;
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tempfile::TempPath;

/// The names most tests connect to: the loopback host name, the test MX name and both
/// loopback addresses. Each parses as an IP address or becomes a DNS subjectAltName.
pub const DEFAULT_NAMES: [&str; 4] = ["localhost", "mx.ec.test", "127.0.0.1", "::1"];

/// Why a test certificate or a TLS configuration built from one could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// rcgen failed to build a key or a certificate.
    #[error("generating the test {what} failed: {source}")]
    Generate {
        /// Which item was being generated ("CA certificate", "leaf key", ...).
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },

    /// A name passed for the subjectAltName is neither an IP address nor a DNS name.
    #[error(
        "subject alternative name {name:?} is neither an IP address nor a valid DNS name: {source}"
    )]
    Name {
        /// The rejected name.
        name: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused the certificate or key when building a configuration.
    #[error("building a rustls configuration from the test certificate failed: {0}")]
    Rustls(#[from] rustls::Error),

    /// The CA certificate could not be written to a temporary file.
    #[error("writing the test CA certificate to a temporary file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What is right or wrong with a server certificate made by [`TestCa::issue`].
///
/// A wrong-name test needs no profile of its own: issue a [`LeafProfile::Valid`]
/// certificate for names the client will not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeafProfile {
    /// Signed by the CA; `CA:FALSE`, keyUsage digitalSignature and keyEncipherment,
    /// extendedKeyUsage serverAuth, valid from 1975 to 4096.
    Valid,
    /// Like `Valid` but valid only during the year 2000; rustls: `ExpiredContext`.
    Expired,
    /// Like `Valid` but valid only from 2090 to 2100; rustls: `NotValidYetContext`.
    NotYetValid,
    /// A `CA:FALSE` serverAuth certificate signed by its own key, not by the CA;
    /// rustls: `UnknownIssuer`.
    SelfSigned,
    /// Signed by the CA with keyUsage keyCertSign only. rustls accepts it: webpki
    /// ignores keyUsage on end-entity certificates.
    WrongKeyUsage,
    /// Signed by the CA with extendedKeyUsage clientAuth only; rustls:
    /// `InvalidPurposeContext`.
    ClientAuthOnly,
    /// Signed by the CA but itself marked `CA:TRUE`; rustls: `CaUsedAsEndEntity`
    /// (as `CertificateError::Other`).
    CaAsEndEntity,
}

/// The crypto provider every configuration made here uses: ec's own, so the
/// test crate does not depend on which provider rustls would pick as the
/// process default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    ec_smtp_client::tls::crypto_provider()
}

/// A test certificate authority, generated in memory with an ECDSA P-256 key.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates a new CA: `CA:TRUE`, keyUsage keyCertSign, cRLSign and
    /// digitalSignature, common name "ec test CA".
    ///
    /// # Errors
    ///
    /// [`PkiError::Generate`] when rcgen cannot make the key or the certificate.
    pub fn new() -> Result<Self, PkiError> {
        let key = generate_key("CA key")?;

        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "ec test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];

        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        let cert_pem = cert.pem();
        Ok(Self {
            cert,
            key,
            cert_pem,
        })
    }

    /// The CA certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER form.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A root store holding only this CA.
    pub fn root_store(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A certificate rcgen has just produced always parses as a trust anchor.
        let (added, _ignored) = roots.add_parsable_certificates([self.cert_der()]);
        debug_assert_eq!(added, 1, "the test CA must parse as a trust anchor");
        roots
    }

    /// A client configuration that trusts only this CA and uses the ring provider.
    ///
    /// # Errors
    ///
    /// [`PkiError::Rustls`] when the provider supports no safe protocol version.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        let config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.root_store())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Writes the CA certificate as PEM to a new temporary file, for `--ca-file`.
    /// The file is deleted when the returned path is dropped.
    ///
    /// # Errors
    ///
    /// [`PkiError::Io`] when the file cannot be created or written.
    pub fn write_pem_file(&self) -> Result<TempPath, PkiError> {
        let mut file = tempfile::Builder::new()
            .prefix("ec-test-ca-")
            .suffix(".pem")
            .tempfile()?;
        file.write_all(self.cert_pem.as_bytes())?;
        file.flush()?;
        Ok(file.into_temp_path())
    }

    /// Issues a [`LeafProfile::Valid`] server certificate for `names`.
    ///
    /// # Errors
    ///
    /// As [`TestCa::issue`].
    pub fn leaf(&self, names: &[&str]) -> Result<TestCert, PkiError> {
        self.issue(LeafProfile::Valid, names)
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses, the first
    /// one also the common name) shaped by `profile`, with a fresh key.
    ///
    /// # Errors
    ///
    /// [`PkiError::Name`] for a name that is neither an IP address nor a DNS name,
    /// [`PkiError::Generate`] when rcgen cannot make the key or the certificate.
    pub fn issue(&self, profile: LeafProfile, names: &[&str]) -> Result<TestCert, PkiError> {
        let key = generate_key("leaf key")?;
        let params = leaf_params(profile, names)?;

        let signed = if profile == LeafProfile::SelfSigned {
            params.self_signed(&key)
        } else {
            params.signed_by(&key, &self.cert, &self.key)
        };
        let cert = signed.map_err(|source| PkiError::Generate {
            what: "leaf certificate",
            source,
        })?;

        Ok(TestCert {
            profile,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

/// A server certificate and its private key.
#[derive(Debug)]
pub struct TestCert {
    profile: LeafProfile,
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl TestCert {
    /// The profile this certificate was issued with.
    pub fn profile(&self) -> LeafProfile {
        self.profile
    }

    /// The certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key in PKCS#8 PEM form.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate in DER form.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The private key in PKCS#8 DER form.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// The chain a server presents: the leaf alone, since the CA is the trust anchor.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der()]
    }

    /// A server configuration presenting this certificate, with the ring provider,
    /// TLS 1.2 and 1.3, and no client authentication.
    ///
    /// # Errors
    ///
    /// [`PkiError::Rustls`] when rustls rejects the key (it does not check the
    /// certificate itself, so every profile works here).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain(), self.key_der())?;
        Ok(Arc::new(config))
    }
}

fn generate_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(|source| PkiError::Generate { what, source })
}

fn leaf_params(profile: LeafProfile, names: &[&str]) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    for name in names {
        params.subject_alt_names.push(san(name)?);
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("ec test leaf"),
    );

    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = profile != LeafProfile::SelfSigned;

    match profile {
        LeafProfile::Valid | LeafProfile::SelfSigned => {}
        LeafProfile::Expired => {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        LeafProfile::NotYetValid => {
            params.not_before = date_time_ymd(2090, 1, 1);
            params.not_after = date_time_ymd(2100, 1, 1);
        }
        LeafProfile::WrongKeyUsage => params.key_usages = vec![KeyUsagePurpose::KeyCertSign],
        LeafProfile::ClientAuthOnly => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        LeafProfile::CaAsEndEntity => {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages.push(KeyUsagePurpose::KeyCertSign);
        }
    }
    Ok(params)
}

fn san(name: &str) -> Result<rcgen::SanType, PkiError> {
    if let Ok(ip) = name.parse() {
        return Ok(rcgen::SanType::IpAddress(ip));
    }
    let dns = name.try_into().map_err(|source| PkiError::Name {
        name: name.to_owned(),
        source,
    })?;
    Ok(rcgen::SanType::DnsName(dns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{CertificateError, Error, OtherError};

    fn verify(ca: &TestCa, cert: &TestCert, name: &str) -> Result<(), Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(ca.root_store()),
            crypto_provider(),
        )
        .build()
        .expect("a verifier over one root builds");
        let name = ServerName::try_from(name.to_owned()).expect("test names are valid");
        verifier
            .verify_server_cert(&cert.cert_der(), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn certificate_error(result: Result<(), Error>) -> CertificateError {
        match result {
            Err(Error::InvalidCertificate(error)) => error,
            other => panic!("expected a certificate error, got {other:?}"),
        }
    }

    #[test]
    fn valid_leaf_verifies_for_every_name() {
        let ca = TestCa::new().unwrap();
        let leaf = ca.leaf(&DEFAULT_NAMES).unwrap();
        for name in DEFAULT_NAMES {
            verify(&ca, &leaf, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn wrong_name_is_rejected() {
        let ca = TestCa::new().unwrap();
        let leaf = ca.leaf(&["other.ec.test"]).unwrap();
        let error = certificate_error(verify(&ca, &leaf, "mx.ec.test"));
        assert!(
            matches!(error, CertificateError::NotValidForNameContext { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn broken_profiles_fail_as_documented() {
        let ca = TestCa::new().unwrap();
        let issue = |profile| ca.issue(profile, &["mx.ec.test"]).unwrap();

        let error = certificate_error(verify(&ca, &issue(LeafProfile::Expired), "mx.ec.test"));
        assert!(
            matches!(error, CertificateError::ExpiredContext { .. }),
            "{error:?}"
        );

        let error = certificate_error(verify(&ca, &issue(LeafProfile::NotYetValid), "mx.ec.test"));
        assert!(
            matches!(error, CertificateError::NotValidYetContext { .. }),
            "{error:?}"
        );

        let error = certificate_error(verify(&ca, &issue(LeafProfile::SelfSigned), "mx.ec.test"));
        assert_eq!(error, CertificateError::UnknownIssuer);

        let error = certificate_error(verify(
            &ca,
            &issue(LeafProfile::ClientAuthOnly),
            "mx.ec.test",
        ));
        assert!(
            matches!(error, CertificateError::InvalidPurposeContext { .. }),
            "{error:?}"
        );

        let error = certificate_error(verify(
            &ca,
            &issue(LeafProfile::CaAsEndEntity),
            "mx.ec.test",
        ));
        assert!(
            matches!(&error, CertificateError::Other(OtherError(inner))
                if format!("{inner:?}") == "CaUsedAsEndEntity"),
            "{error:?}"
        );
    }

    #[test]
    fn wrong_key_usage_is_accepted_by_rustls() {
        let ca = TestCa::new().unwrap();
        let leaf = ca
            .issue(LeafProfile::WrongKeyUsage, &["mx.ec.test"])
            .unwrap();
        verify(&ca, &leaf, "mx.ec.test").unwrap();
    }

    #[test]
    fn every_profile_builds_a_server_config() {
        let ca = TestCa::new().unwrap();
        for profile in [
            LeafProfile::Valid,
            LeafProfile::Expired,
            LeafProfile::NotYetValid,
            LeafProfile::SelfSigned,
            LeafProfile::WrongKeyUsage,
            LeafProfile::ClientAuthOnly,
            LeafProfile::CaAsEndEntity,
        ] {
            let cert = ca.issue(profile, &DEFAULT_NAMES).unwrap();
            cert.server_config()
                .unwrap_or_else(|e| panic!("{profile:?}: {e}"));
            assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        }
    }

    #[test]
    fn ca_pem_file_holds_the_ca() {
        let ca = TestCa::new().unwrap();
        let path = ca.write_pem_file().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.cert_pem());

        let kept = path.to_path_buf();
        drop(path);
        assert!(!kept.exists(), "the CA file outlived its TempPath");
    }

    #[test]
    fn names_must_be_dns_names_or_addresses() {
        let ca = TestCa::new().unwrap();
        let error = ca.leaf(&["m\u{e9}l.ec.test"]).unwrap_err();
        assert!(matches!(error, PkiError::Name { .. }), "{error:?}");
    }
}
