//! Real messages bundled into the binary for `ec demo`, and generated ones
//! for `ec demo --messages N`.
//!
//! The samples are RFC 5322 messages from the mail-parser crate's test
//! resources (MIT or Apache-2.0; see `README.md` and the license files in
//! this module's folder): MIME multipart messages, forwarded messages,
//! 8-bit legacy charsets, and malformed ones. Many of them lack a usable
//! sender or recipient, or name real domains, so the demo gives every
//! message a fixed envelope instead of reading it from the header: from
//! [`DEMO_SENDER`] to each of [`DEMO_RECIPIENTS`], all in the reserved
//! `.test` top-level domain (RFC 2606).

use std::path::PathBuf;

use bytes::Bytes;
use ec_types::{Address, ReversePath, Submission};

use crate::input::{message_id, EnvelopeOverride, InputMessage};

/// One bundled message.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// File name, such as `rfc-000.eml`.
    pub name: &'static str,
    /// The message, unchanged from the source.
    pub data: &'static [u8],
}

macro_rules! samples {
    ($($name:literal),* $(,)?) => {
        [$(Sample { name: $name, data: include_bytes!($name) }),*]
    };
}

/// The bundled messages.
pub const SAMPLES: [Sample; 12] = samples![
    "rfc-000.eml",
    "rfc-002.eml",
    "rfc-009.eml",
    "thirdparty-011.eml",
    "thirdparty-014.eml",
    "thirdparty-015.eml",
    "legacy-008.eml",
    "legacy-015.eml",
    "legacy-053.eml",
    "malformed-016.eml",
    "malformed-020.eml",
    "malformed-022.eml",
];

/// The demo's envelope sender.
pub const DEMO_SENDER: &str = "demo@ec.test";

/// The demo's envelope recipients; every message goes to each of them.
pub const DEMO_RECIPIENTS: [&str; 3] = ["alice@demo.test", "bob@demo.test", "carol@demo.test"];

/// The fixed demo envelope, as `--from` and `--to` would give it.
pub fn demo_envelope() -> EnvelopeOverride {
    // The constants above are valid addresses; the tests parse them.
    EnvelopeOverride {
        from: ReversePath::new(DEMO_SENDER).ok(),
        to: DEMO_RECIPIENTS
            .iter()
            .filter_map(|text| Address::new(text).ok())
            .collect(),
    }
}

/// The demo's messages: every sample, then `generated` generated messages,
/// each with the demo envelope. Tags count from 0 in that order; the paths
/// are `samples/NAME` and `generated/NNNNNN.eml`, for the delivery log. They
/// name no file, so they have no canonical path.
pub fn demo_messages(generated: u32) -> Vec<InputMessage> {
    let envelope = demo_envelope();
    let reverse_path = envelope.from.unwrap_or(ReversePath::Null);

    let samples = SAMPLES.iter().map(|sample| {
        (
            format!("samples/{}", sample.name),
            Bytes::from_static(sample.data),
        )
    });
    let generated = (0..generated).map(|index| {
        let path = format!("generated/{:06}.eml", index + 1);
        (path, generated_message(index + 1))
    });

    samples
        .chain(generated)
        .enumerate()
        .map(|(tag, (path, data))| InputMessage {
            message_id: message_id(&data),
            submission: Submission {
                tag: tag as u64,
                reverse_path: reverse_path.clone(),
                recipients: envelope.to.clone(),
                data,
            },
            path: PathBuf::from(path),
            canonical_path: None,
        })
        .collect()
}

/// A generated plain-text message of about 1 KB, numbered `number`. Its
/// body has a line that starts with a dot, so each one also exercises
/// dot-stuffing.
pub fn generated_message(number: u32) -> Bytes {
    let recipients = DEMO_RECIPIENTS.join(", ");
    let mut text = format!(
        "From: ec demo <{DEMO_SENDER}>\r\n\
         To: {recipients}\r\n\
         Subject: ec demo message {number}\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
         Message-ID: <demo-{number}@ec.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         This is generated message {number} of the ec demo.\r\n\
         .A line that starts with a dot is sent as two dots.\r\n\
         \r\n"
    );
    for line in 1..=12 {
        text.push_str(&format!(
            "Line {line:02}: the quick brown fox jumps over the lazy dog, sixty-odd bytes.\r\n"
        ));
    }
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_nonempty_messages() {
        for sample in SAMPLES {
            assert!(sample.data.len() > 40, "{}", sample.name);
            assert!(sample.name.ends_with(".eml"), "{}", sample.name);
        }
    }

    #[test]
    fn demo_envelope_is_complete() {
        let envelope = demo_envelope();
        assert_eq!(
            envelope.from.as_ref().map(ReversePath::as_str),
            Some(DEMO_SENDER)
        );
        assert_eq!(envelope.to.len(), DEMO_RECIPIENTS.len());
    }

    #[test]
    fn demo_messages_in_order() {
        let messages = demo_messages(3);
        assert_eq!(messages.len(), SAMPLES.len() + 3);
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(message.submission.tag, index as u64);
            assert_eq!(message.submission.recipients.len(), 3);
            assert_eq!(message.submission.reverse_path.as_str(), DEMO_SENDER);
        }
        assert_eq!(messages[0].path, PathBuf::from("samples/rfc-000.eml"));
        assert_eq!(&messages[0].submission.data[..], SAMPLES[0].data);
        let last = &messages[SAMPLES.len() + 2];
        assert_eq!(last.path, PathBuf::from("generated/000003.eml"));
        assert_eq!(last.message_id.as_deref(), Some("demo-3@ec.test"));
    }

    #[test]
    fn generated_message_shape() {
        let message = generated_message(7);
        assert!(message.len() > 1_000, "{} octets", message.len());
        let text = std::str::from_utf8(&message).expect("ASCII");
        assert!(text.contains("\r\n.A line"), "has a leading-dot line");
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "only CRLF line endings"
        );
    }
}
