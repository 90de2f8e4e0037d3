//! `docs/metrics.md` must carry the reference generated from the catalog.

use std::fs;
use std::path::PathBuf;

use ec_metrics::reference::{reference_markdown, splice, BEGIN_MARKER, END_MARKER};

/// Set to 1 to rewrite the page instead of failing.
const REGENERATE_VARIABLE: &str = "EC_REGENERATE_DOCS";

/// The most differing lines a failure shows.
const DIFF_LINES: usize = 40;

fn page_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md")
}

/// The page with its generated region brought up to date.
fn regenerated_page() -> (PathBuf, String, String) {
    let path = page_path();
    let page = fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let updated = splice(&page, &reference_markdown()).unwrap_or_else(|| {
        panic!(
            "{} lacks the generated region: add the line\n{BEGIN_MARKER}\nfollowed later by\n{END_MARKER}",
            path.display()
        )
    });
    (path, page, updated)
}

/// Lines only in `old` (marked `-`) and only in `new` (marked `+`), in
/// their order, at most [`DIFF_LINES`] of them.
fn line_diff(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let removed = old_lines
        .iter()
        .filter(|line| !new_lines.contains(line))
        .map(|line| format!("- {line}"));
    let added = new_lines
        .iter()
        .filter(|line| !old_lines.contains(line))
        .map(|line| format!("+ {line}"));
    let lines: Vec<String> = removed.chain(added).collect();
    let shown = lines.len().min(DIFF_LINES);
    let mut diff = lines[..shown].join("\n");
    if lines.len() > shown {
        diff.push_str(&format!("\n... and {} more lines", lines.len() - shown));
    }
    if lines.is_empty() {
        diff.push_str("(the same lines in another order, or whitespace only)");
    }
    diff
}

#[test]
fn docs_match_catalog() {
    let (path, page, updated) = regenerated_page();
    if page == updated {
        return;
    }

    if std::env::var(REGENERATE_VARIABLE).as_deref() == Ok("1") {
        fs::write(&path, updated)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        return;
    }

    panic!(
        "{} is out of step with the metric catalog (crates/ec-metrics/src/catalog.rs). \
         Lines in the page (-) and in the generated reference (+):\n{}\n\n\
         Run `cargo test -p ec-metrics -- --ignored regenerate` \
         or `{REGENERATE_VARIABLE}=1 cargo test -p ec-metrics` to rewrite it.",
        path.display(),
        line_diff(&page, &updated)
    );
}

#[test]
#[ignore = "rewrites docs/metrics.md; run it on purpose after changing the catalog"]
fn regenerate() {
    let (path, _, updated) = regenerated_page();
    fs::write(&path, updated)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
}
