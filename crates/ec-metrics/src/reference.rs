//! The metric reference of `docs/metrics.md`, generated from the catalog.
//!
//! The page keeps hand-written text around a generated region between
//! [`BEGIN_MARKER`] and [`END_MARKER`]. A test in this crate fails when the
//! region differs from [`reference_markdown`]; run
//! `cargo test -p ec-metrics -- --ignored regenerate` (or the tests with
//! `EC_REGENERATE_DOCS=1`) to rewrite it.

use std::fmt::Write as _;

use crate::catalog::{self, LabelValues, MetricDef, MetricKind};
use crate::labels::{DEFAULT_DOMAIN_LABEL_LIMIT, OTHER_DOMAIN};

/// The line that opens the generated region.
pub const BEGIN_MARKER: &str =
    "<!-- BEGIN GENERATED from crates/ec-metrics/src/catalog.rs: do not edit; run `cargo test -p ec-metrics -- --ignored regenerate` -->";

/// The line that closes the generated region.
pub const END_MARKER: &str = "<!-- END GENERATED -->";

/// Generates the region between the markers: a summary table and one
/// section per metric.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    write_summary(&mut out);
    for def in catalog::ALL {
        write_section(&mut out, def);
    }
    out
}

/// Replaces the generated region of `page` with `region`, or returns `None`
/// when `page` lacks the markers (or has them out of order).
pub fn splice(page: &str, region: &str) -> Option<String> {
    let begin = page.find(BEGIN_MARKER)?;
    let region_start = begin + BEGIN_MARKER.len();
    let end = region_start + page[region_start..].find(END_MARKER)?;
    Some(format!(
        "{}\n\n{}\n{}",
        &page[..region_start],
        region.trim_end(),
        &page[end..]
    ))
}

fn write_summary(out: &mut String) {
    out.push_str("| Metric | Type | Unit | Labels | Label sets at most |\n");
    out.push_str("|---|---|---|---|---|\n");
    for def in catalog::ALL {
        let labels: Vec<String> = def
            .labels
            .iter()
            .map(|label| format!("`{}`", label.name))
            .collect();
        let labels = if labels.is_empty() {
            "none".to_owned()
        } else {
            labels.join(", ")
        };
        let _ = writeln!(
            out,
            "| [`{name}`](#{name}) | {kind} | {unit} | {labels} | {bound} |",
            name = def.name,
            kind = def.kind.as_str(),
            unit = def.unit.as_str(),
            bound = def.label_set_bound(),
        );
    }
    out.push_str(
        "\n`B` is the number of configured and registered bindings; `D` is the number of domain label \
         values, at most the configured domains plus ",
    );
    let _ = writeln!(
        out,
        "{DEFAULT_DOMAIN_LABEL_LIMIT} (the default limit) plus one for `{OTHER_DOMAIN}`."
    );
}

fn write_section(out: &mut String, def: &MetricDef) {
    let _ = writeln!(out, "\n### {}\n", def.name);
    let _ = writeln!(out, "{}.\n", def.help);
    let _ = writeln!(
        out,
        "- Type: {}; unit: {}",
        def.kind.as_str(),
        def.unit.as_str()
    );

    if def.labels.is_empty() {
        out.push_str("- Labels: none\n");
    } else {
        out.push_str("- Labels:\n");
        for label in def.labels {
            let _ = writeln!(
                out,
                "  - `{}`: {}",
                label.name,
                describe_values(label.values)
            );
        }
    }

    if def.kind == MetricKind::Histogram {
        let buckets: Vec<String> = def.buckets.iter().map(f64::to_string).collect();
        let _ = writeln!(out, "- Buckets (upper bounds): {}", buckets.join(", "));
    }
    let _ = writeln!(out, "- Label sets: at most {}", def.label_set_bound());

    let _ = writeln!(out, "\n{}", def.meaning);

    for query in def.queries {
        let _ = writeln!(
            out,
            "\n{}:\n\n```promql\n{}\n```",
            query.purpose, query.promql
        );
    }
}

fn describe_values(values: LabelValues) -> String {
    match values {
        LabelValues::Binding => "the name of a configured or registered binding".to_owned(),
        LabelValues::Domain => format!(
            "a destination domain: a configured domain, one of the first N other domains \
             seen (N = {DEFAULT_DOMAIN_LABEL_LIMIT} by default), or `{OTHER_DOMAIN}`"
        ),
        LabelValues::Fixed(list) => {
            let quoted: Vec<String> = list().iter().map(|value| format!("`{value}`")).collect();
            quoted.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_section() {
        let markdown = reference_markdown();
        for def in catalog::ALL {
            assert!(
                markdown.contains(&format!("\n### {}\n", def.name)),
                "no section for {}",
                def.name
            );
        }
    }

    #[test]
    fn splice_replaces_region_only() {
        let page = format!("intro\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\noutro\n");

        let spliced = splice(&page, "new\n").expect("page has markers");

        assert_eq!(
            spliced,
            format!("intro\n\n{BEGIN_MARKER}\n\nnew\n{END_MARKER}\n\noutro\n")
        );
    }

    #[test]
    fn splice_needs_markers() {
        assert!(splice("no markers here", "new").is_none());
        let reversed = format!("{END_MARKER}\n{BEGIN_MARKER}\n");
        assert!(splice(&reversed, "new").is_none());
    }
}
