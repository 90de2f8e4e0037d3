//! `promtool check metrics` on the output of a recorder that has every
//! metric and every fixed label value recorded.

mod common;

use std::io::{self, Write};
use std::process::{Command, Stdio};

use common::record_every_metric;
use ec_metrics::{BindingLabels, DomainLabels, LocalRecorder};
use ec_types::Domain;

/// Where Debian's `prometheus` package puts promtool.
const PROMTOOL: &str = "/usr/bin/promtool";

#[test]
fn promtool_accepts_exposition() {
    let recorder = LocalRecorder::new();
    let binding = BindingLabels::new(["default"])
        .get("default")
        .expect("configured");
    let mut domains = DomainLabels::new([], 1);
    let admitted = domains.label(&Domain::new("example.com").expect("valid"));
    let folded = domains.label(&Domain::new("example.net").expect("valid"));
    recorder.scope(|| {
        record_every_metric(&binding, &admitted);
        record_every_metric(&binding, &folded);
    });
    let text = recorder.render();

    let mut child = match Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == io::ErrorKind::NotFound => panic!(
            "{PROMTOOL} not found; install it with `apt-get install -y prometheus` \
             (Debian's package ships promtool)"
        ),
        Err(error) => panic!("cannot run {PROMTOOL}: {error}"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("promtool reads its stdin");
    let output = child.wait_with_output().expect("promtool runs to the end");

    assert!(
        output.status.success(),
        "promtool check metrics failed with {}:\n{}{}\n--- exposition text ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
