//! The test peers' certificates: a small CA and one server certificate it
//! signs, made with the `openssl` command.
//!
//! The server certificate is a leaf (`CA:FALSE`) because rustls rejects a
//! CA certificate used as an end entity (`CaUsedAsEndEntity`), even when
//! that same certificate is the trust anchor.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::layout::{text, Layout, SERVER_NAME};
use crate::process;

/// Names in the server certificate's subjectAltName: every name and
/// address a test may connect to.
const SUBJECT_ALT_NAMES: &str = "DNS:localhost, DNS:mx.ec.test, IP:127.0.0.1, IP:::1";

const CA_DAYS: &str = "3650";
const SERVER_DAYS: &str = "825";

/// A server certificate that expires within this many seconds is replaced.
const RENEW_BEFORE_SECONDS: &str = "2592000";

/// Makes the CA and server certificate unless valid ones exist already.
/// Keeping existing ones lets a running test trust the same CA across
/// `peers up` runs.
pub(crate) fn ensure_certificates(layout: &Layout) -> Result<()> {
    if certificates_usable(layout)? {
        return Ok(());
    }

    let dir = layout.tls_dir();
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;

    make_ca(layout)?;
    make_server_certificate(layout)?;

    for key in [layout.ca_key(), layout.server_key()] {
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", key.display()))?;
    }
    for cert in [layout.ca_cert(), layout.server_cert()] {
        fs::set_permissions(&cert, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("failed to set mode of {}", cert.display()))?;
    }
    println!(
        "peers: made a test CA and server certificate in {}",
        dir.display()
    );
    Ok(())
}

/// True when all four files exist, the server certificate chains to the CA
/// for the purpose `sslserver`, and it is valid for at least another month.
fn certificates_usable(layout: &Layout) -> Result<bool> {
    let files = [
        layout.ca_cert(),
        layout.ca_key(),
        layout.server_cert(),
        layout.server_key(),
    ];
    if !files.iter().all(|f| f.is_file()) {
        return Ok(false);
    }

    let verify = process::capture(
        Command::new("openssl")
            .arg("verify")
            .arg("-purpose")
            .arg("sslserver")
            .arg("-CAfile")
            .arg(layout.ca_cert())
            .arg(layout.server_cert()),
    )?;
    let fresh = process::capture(
        Command::new("openssl")
            .args(["x509", "-noout", "-checkend", RENEW_BEFORE_SECONDS, "-in"])
            .arg(layout.server_cert()),
    )?;
    Ok(verify.status.success() && fresh.status.success())
}

fn make_ca(layout: &Layout) -> Result<()> {
    process::output(
        Command::new("openssl")
            .args([
                "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
            ])
            .args([
                "-days",
                CA_DAYS,
                "-subj",
                "/O=ec test peers/CN=ec test peers CA",
            ])
            .args(["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(layout.ca_key())
            .arg("-out")
            .arg(layout.ca_cert()),
    )
    .context("failed to make the test CA with openssl")?;
    Ok(())
}

fn make_server_certificate(layout: &Layout) -> Result<()> {
    let dir = layout.tls_dir();
    let request = dir.join("server.csr");
    let extensions = dir.join("server.ext");
    fs::write(
        &extensions,
        format!(
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = {SUBJECT_ALT_NAMES}\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid, issuer\n"
        ),
    )
    .with_context(|| format!("failed to write {}", extensions.display()))?;

    process::output(
        Command::new("openssl")
            .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256"])
            .args(["-subj", &format!("/O=ec test peers/CN={SERVER_NAME}")])
            .arg("-keyout")
            .arg(layout.server_key())
            .arg("-out")
            .arg(&request),
    )
    .context("failed to make the server key and request with openssl")?;

    process::output(
        Command::new("openssl")
            .args(["x509", "-req", "-sha256", "-days", SERVER_DAYS])
            .args(["-set_serial", &serial_number()])
            .arg("-in")
            .arg(&request)
            .arg("-CA")
            .arg(layout.ca_cert())
            .arg("-CAkey")
            .arg(layout.ca_key())
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(layout.server_cert()),
    )
    .with_context(|| format!("failed to sign {} with the test CA", text(&request)))?;

    fs::remove_file(&request).ok();
    fs::remove_file(&extensions).ok();
    Ok(())
}

/// A serial number that differs between runs, so a client that cached an
/// old certificate does not see two different ones with the same serial.
fn serial_number() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("0x{nanos:x}")
}
