//! Raw TLS bytes for faults no TLS library sends on purpose, and what the peer
//! records about a handshake.
//!
//! Record layout (RFC 8446 section 5.1): content type, legacy version 0x0303,
//! 16-bit length, then the fragment.

use rustls::ServerConnection;

use super::record::TlsInfo;

/// The content type byte a TLS handshake record starts with; a ClientHello's first
/// byte.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// Alert description `handshake_failure`.
pub const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// Alert description `protocol_version`.
pub const ALERT_PROTOCOL_VERSION: u8 = 70;

/// Alert description `internal_error`.
pub const ALERT_INTERNAL_ERROR: u8 = 80;

/// A well-formed handshake record holding a ServerHello with an empty body: any TLS
/// client accepts it as a record and then fails to decode the message.
pub const FAKE_SERVER_HELLO: &[u8] = &[
    HANDSHAKE_RECORD,
    0x03,
    0x03,
    0x00,
    0x04,
    0x02, // handshake type server_hello
    0x00,
    0x00,
    0x00, // 24-bit length 0
];

/// A plain-text record holding a fatal alert with `description`.
pub fn alert_record(description: u8) -> [u8; 7] {
    const ALERT_RECORD: u8 = 0x15;
    const FATAL: u8 = 2;
    [ALERT_RECORD, 0x03, 0x03, 0x00, 0x02, FATAL, description]
}

/// What a finished handshake negotiated.
pub(crate) fn tls_info(connection: &ServerConnection) -> TlsInfo {
    TlsInfo {
        sni: connection.server_name().map(str::to_owned),
        version: connection.protocol_version(),
        cipher_suite: connection
            .negotiated_cipher_suite()
            .map(|suite| suite.suite()),
    }
}
