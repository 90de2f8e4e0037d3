//! The soak: thousands of messages through several bindings to many domains,
//! all routed to a fault peer that breaks connections at random, with
//! retries on. Nothing may be lost or reported twice, the accounting audit
//! must pass throughout, and no connection, socket, thread or memory may
//! outlive the run or grow with it.
//!
//! `soak_under_chaos` is the short run CI makes. `soak_full` is the run of
//! `cargo xtask soak`, which passes its size through `EC_SOAK_MESSAGES` and
//! `EC_SOAK_SECONDS` and reads the report from the file `EC_SOAK_REPORT`
//! names. Either replays a fault schedule with `EC_SOAK_SEED`.
//!
//! Each test measures the process's descriptors and threads, so this file
//! contains nothing else that could run beside them.

use ec_tests::soak::{run, SoakOptions, SoakReport, ENV_SEED};

/// The variable naming the file `soak_full` writes its Markdown report to.
const ENV_REPORT: &str = "EC_SOAK_REPORT";

fn soak(base: SoakOptions) -> SoakReport {
    let options = SoakOptions::from_env(base).unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "soak: {} submissions, cap {:?}, seed {} (replay with {ENV_SEED}={})",
        options.messages, options.cap, options.seed, options.seed
    );
    let report = run(&options);
    eprintln!("{}", report.to_markdown());
    report
}

fn assert_passed(report: &SoakReport) {
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "the soak with seed {} broke {} rules:\n{}",
        report.seed,
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn soak_under_chaos() {
    let report = soak(SoakOptions::ci());
    assert!(!report.capped, "the CI soak ran into its time cap");
    assert_passed(&report);
}

#[test]
#[ignore = "the full soak takes minutes; `cargo xtask soak` runs it"]
fn soak_full() {
    let report = soak(SoakOptions::full());
    if let Ok(path) = std::env::var(ENV_REPORT) {
        std::fs::write(&path, report.to_markdown())
            .unwrap_or_else(|error| panic!("writing the soak report to {path} failed: {error}"));
    }
    assert_passed(&report);
}
