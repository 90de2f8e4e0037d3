//! Envelopes taken from real messages (mail-parser's test corpus, copied
//! into `testdata/` with its licenses).

use std::path::{Path, PathBuf};

use ec_cli::input::{
    collect_paths, load_file, EnvelopeOverride, Input, InputMessage, InvalidReason, Loaded,
    MessageFile,
};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn load(name: &str) -> Loaded {
    let file = MessageFile::resolve(testdata().join(name));
    load_file(0, &file, &EnvelopeOverride::default())
}

fn message(name: &str) -> InputMessage {
    match load(name) {
        Loaded::Message(message) => message,
        Loaded::Invalid(invalid) => panic!("{name} should be sendable: {invalid}"),
    }
}

fn reason(name: &str) -> InvalidReason {
    match load(name) {
        Loaded::Invalid(invalid) => invalid.reason,
        Loaded::Message(message) => panic!("{name} should be invalid, got {message:?}"),
    }
}

fn recipients(message: &InputMessage) -> Vec<&str> {
    message
        .submission
        .recipients
        .iter()
        .map(|address| address.as_str())
        .collect()
}

#[test]
fn forwarded_message_uses_outer_header() {
    // The attached message/rfc822 part has its own Return-Path; only the
    // outer header counts.
    let message = message("rfc-002.eml");
    assert_eq!(
        message.submission.reverse_path.as_str(),
        "vice-president@whitehouse.gov"
    );
    assert_eq!(recipients(&message), ["transport@whitehouse.gov"]);
}

#[test]
fn return_path_without_brackets() {
    let message = message("thirdparty-011.eml");
    assert_eq!(
        message.submission.reverse_path.as_str(),
        "dummy@xyz-webserver.abcd-gestion.local"
    );
    assert_eq!(
        recipients(&message),
        ["admin@xyz-webserver.abcd-gestion.local"]
    );
    assert_eq!(
        message.message_id.as_deref(),
        Some("ca2236fb-9819-82dd-c501-d3bcf737a768@xyz-webserver.abcd-gestion.local")
    );
}

#[test]
fn return_path_wins_over_from() {
    let message = message("thirdparty-015.eml");
    assert_eq!(
        message.submission.reverse_path.as_str(),
        "jsterr@proxforge.de"
    );
    assert_eq!(recipients(&message), ["jonas.sterr@gmx.net"]);
}

#[test]
fn folded_to_with_encoded_names() {
    let message = message("legacy-045.eml");
    assert_eq!(
        message.submission.reverse_path.as_str(),
        "doug@penguin.example.com"
    );
    assert_eq!(
        recipients(&message),
        ["blow@example.com", "mueller@example.com"]
    );
}

#[test]
fn display_names_only_is_invalid() {
    assert!(matches!(reason("rfc-001.eml"), InvalidReason::NoSender));
}

#[test]
fn missing_to_is_invalid() {
    assert!(matches!(
        reason("malformed-022.eml"),
        InvalidReason::NoRecipient
    ));
}

/// The data sent is the file's bytes, apart from the header fields that ec
/// drops (`thirdparty-015.eml` has a Return-Path field).
#[test]
fn bytes_match_the_file() {
    for name in ["rfc-002.eml", "legacy-045.eml", "thirdparty-015.eml"] {
        let message = message(name);
        let file = std::fs::read(testdata().join(name)).expect("read test message");
        let expected = without_dropped_fields(&file);
        assert_eq!(&message.submission.data[..], &expected[..], "{name}");
    }
    let file = std::fs::read(testdata().join("thirdparty-015.eml")).expect("read test message");
    assert!(without_dropped_fields(&file).len() < file.len());
}

/// Removes Bcc, Resent-Bcc, Return-Path and Content-Length fields, with
/// their continuation lines, from the header section of a message whose
/// lines end in LF.
fn without_dropped_fields(file: &[u8]) -> Vec<u8> {
    const DROPPED: [&[u8]; 4] = [b"bcc", b"resent-bcc", b"return-path", b"content-length"];
    let mut kept = Vec::with_capacity(file.len());
    let mut lines = file.split_inclusive(|&byte| byte == b'\n');
    let mut dropping = false;
    for line in lines.by_ref() {
        if line == b"\n" {
            kept.extend_from_slice(line);
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&byte| byte == b':').next().unwrap_or_default();
            let name = name.trim_ascii_end().to_ascii_lowercase();
            dropping = DROPPED.contains(&name.as_slice());
        }
        if !dropping {
            kept.extend_from_slice(line);
        }
    }
    for line in lines {
        kept.extend_from_slice(line);
    }
    kept
}

#[test]
fn directory_run_in_sorted_order() {
    let all = collect_paths(&[testdata()]).expect("testdata has messages");
    // `testdata/corpus/` holds the whole corpus for the end-to-end tests;
    // it sorts before the loose files, and this test reads only those.
    let corpus = testdata().join("corpus");
    let (in_corpus, files): (Vec<MessageFile>, Vec<MessageFile>) = all
        .into_iter()
        .partition(|file| file.path.starts_with(&corpus));
    assert_eq!(in_corpus.len(), 96, "every .eml file of testdata/corpus");
    let names: Vec<_> = files
        .iter()
        .map(|file| {
            file.path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "legacy-045.eml",
            "malformed-022.eml",
            "rfc-001.eml",
            "rfc-002.eml",
            "thirdparty-011.eml",
            "thirdparty-015.eml"
        ]
    );

    let loaded: Vec<Loaded> = Input::from_files(files, EnvelopeOverride::default()).collect();
    let invalid = loaded
        .iter()
        .filter(|loaded| matches!(loaded, Loaded::Invalid(_)))
        .count();
    assert_eq!((loaded.len(), invalid), (6, 2));
}
