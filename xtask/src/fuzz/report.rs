//! The results table in the Fuzzing section of `docs/ROBUSTNESS.md`.
//!
//! Only the text between two HTML comment markers is rewritten, so the rest
//! of the document stays as its authors wrote it. Each run replaces the rows
//! of the targets it ran and keeps the other rows.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::libfuzzer::TargetRun;
use super::toolchain::Tools;

const BEGIN: &str = "<!-- fuzz-results:begin (written by cargo xtask fuzz) -->";
const END: &str = "<!-- fuzz-results:end -->";

const HEADER: &str = "\
| target | date (UTC) | seconds | executions | execs/s | coverage (edges) | features | corpus | result |
|---|---|--:|--:|--:|--:|--:|--:|---|";

/// Rewrites the results table of the document at `path` with `runs`.
pub(super) fn update(
    path: &Path,
    runs: &[TargetRun],
    command_line: &str,
    tools: &Tools,
) -> Result<()> {
    let text =
        fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let environment = format!(
        "The last run (`{command_line}`) used {}, cargo-fuzz {} and {}.",
        tools.rustc,
        tools.cargo_fuzz.trim_start_matches("cargo-fuzz "),
        machine()
    );
    let rows: Vec<(String, String)> = runs
        .iter()
        .map(|run| (run.target.clone(), row(run, &utc_date(SystemTime::now()))))
        .collect();
    let updated = rewrite(&text, &rows, &environment)
        .with_context(|| format!("failed to update {}", path.display()))?;
    fs::write(path, updated).with_context(|| format!("failed to write {}", path.display()))
}

/// Replaces the text between the markers with the table, the rows of
/// `rows` replacing earlier rows of the same target.
fn rewrite(text: &str, rows: &[(String, String)], environment: &str) -> Result<String> {
    let (before, rest) = text
        .split_once(BEGIN)
        .with_context(|| format!("the line {BEGIN} is missing; put it in the Fuzzing section"))?;
    let (table, after) = rest
        .split_once(END)
        .with_context(|| format!("the line {END} is missing after {BEGIN}"))?;

    let mut merged: Vec<(String, String)> = table
        .lines()
        .filter_map(|line| Some((row_target(line)?, line.to_owned())))
        .collect();
    for (target, line) in rows {
        match merged.iter_mut().find(|(name, _)| name == target) {
            Some(existing) => existing.1 = line.clone(),
            None => merged.push((target.clone(), line.clone())),
        }
    }

    let body: Vec<&str> = merged.iter().map(|(_, line)| line.as_str()).collect();
    Ok(format!(
        "{before}{BEGIN}\n{HEADER}\n{}\n\n{environment}\n{END}{after}",
        body.join("\n")
    ))
}

/// Returns the target of a table row, or `None` for the header, the
/// separator and other lines.
fn row_target(line: &str) -> Option<String> {
    let cell = line.strip_prefix('|')?.split('|').next()?.trim();
    let is_name = !cell.is_empty()
        && cell != "target"
        && cell
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    is_name.then(|| cell.to_owned())
}

fn row(run: &TargetRun, date: &str) -> String {
    let stats = &run.stats;
    let cells = [
        run.target.clone(),
        date.to_owned(),
        format!("{:.0}", run.fuzzed.unwrap_or(run.elapsed).as_secs_f64()),
        figure(stats.executions),
        figure(stats.execs_per_second),
        figure(stats.coverage),
        figure(stats.features),
        figure(stats.corpus),
        run.outcome.to_string(),
    ];
    format!("| {} |", cells.join(" | "))
}

fn figure(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |value| value.to_string())
}

/// Describes the CPU count and model, from the scheduler and `/proc/cpuinfo`.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    format!("{cpus} CPUs ({model}), one target at a time on one core")
}

/// Formats a time as an ISO 8601 date in UTC.
fn utc_date(time: SystemTime) -> String {
    let days = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date, with
/// Howard Hinnant's `civil_from_days` algorithm
/// (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn table_rows_merged() {
        let text = format!(
            "# Robustness\n\n## Fuzzing\n\nIntro.\n\n{BEGIN}\n{HEADER}\n\
             | ehlo | 2025-01-01 | 60 | 5 | 1 | 2 | 3 | 4 | passed |\n\
             | data_encoder | 2025-01-01 | 60 | 9 | 1 | 2 | 3 | 4 | passed |\n\n\
             Old environment.\n{END}\n\n## Later section\n"
        );
        let rows = vec![
            (
                "data_encoder".to_owned(),
                "| data_encoder | new |".to_owned(),
            ),
            (
                "client_session".to_owned(),
                "| client_session | new |".to_owned(),
            ),
        ];
        let updated = rewrite(&text, &rows, "New environment.").unwrap();

        assert!(updated.starts_with("# Robustness\n\n## Fuzzing\n\nIntro.\n\n"));
        assert!(updated.ends_with(&format!("{END}\n\n## Later section\n")));
        assert!(updated.contains("| ehlo | 2025-01-01 | 60 | 5 |"));
        assert!(updated.contains("| data_encoder | new |\n| client_session | new |\n"));
        assert!(!updated.contains("| data_encoder | 2025-01-01"));
        assert!(updated.contains("New environment."));
        assert!(!updated.contains("Old environment."));
        assert_eq!(updated.matches(HEADER).count(), 1);
    }

    #[test]
    fn missing_markers_rejected() {
        let error = rewrite("# Robustness\n", &[], "").unwrap_err();
        assert!(error.to_string().contains("fuzz-results:begin"));
    }
}
