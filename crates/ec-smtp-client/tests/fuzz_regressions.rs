//! Replays every saved fuzz input through its target's invariant checks, on
//! stable Rust, so `cargo test` covers every crash found so far.
//!
//! `cargo xtask fuzz` copies each crashing input into
//! `tests/fuzz_regressions/<target>/`; the seed inputs there (see the
//! README in that directory) cover known hard cases. The checks are the
//! ones the libFuzzer targets run, from `ec_smtp_client::fuzzing`.

use std::any::Any;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use ec_smtp_client::fuzzing::{Target, TARGETS};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

/// Runs every input saved for `name` and fails with the list of inputs
/// whose check panicked.
fn replay(name: &str) {
    let target: &Target = TARGETS
        .iter()
        .find(|target| target.name == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"));
    let dir = regressions_dir().join(name);
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no saved inputs in {}", dir.display());

    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let input = fs::read(path)
                .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
            let payload = panic::catch_unwind(|| (target.check)(&input)).err()?;
            Some(format!("{}: {}", path.display(), panic_message(&*payload)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} saved {name} inputs break an invariant:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<String>() {
        return message;
    }
    payload
        .downcast_ref::<&str>()
        .copied()
        .unwrap_or("non-text panic")
}

#[test]
fn reply_parser_inputs() {
    replay("reply_parser");
}

#[test]
fn ehlo_inputs() {
    replay("ehlo");
}

#[test]
fn data_encoder_inputs() {
    replay("data_encoder");
}

#[test]
fn client_session_inputs() {
    replay("client_session");
}

/// A target without a test above, or saved inputs under a name that is no
/// target, would be skipped silently.
#[test]
fn every_target_replayed() {
    let tested = ["reply_parser", "ehlo", "data_encoder", "client_session"];
    let names: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
    assert_eq!(names, tested, "fuzz targets without a replay test");

    for entry in fs::read_dir(regressions_dir()).expect("regressions directory") {
        let path = entry.expect("readable directory entry").path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        assert!(
            tested.contains(&name.as_ref()),
            "{} holds inputs for no fuzz target",
            path.display()
        );
    }
}
