//! Building and running the cargo-fuzz targets, and reading libFuzzer's
//! output.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process;

/// How long libFuzzer may spend on one input before it reports a timeout,
/// which counts as a crash. The slowest inputs, about 4 MiB of repeated
/// server input for `client_session`, take well under a second.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// One target's run.
#[derive(Debug)]
pub(super) struct TargetRun {
    pub(super) target: String,
    /// Wall-clock time of `cargo fuzz run`, with any rebuild.
    pub(super) elapsed: Duration,
    /// Time from libFuzzer's first line to its exit; `None` when it never
    /// started.
    pub(super) fuzzed: Option<Duration>,
    pub(super) stats: Stats,
    pub(super) outcome: Outcome,
}

/// The figures libFuzzer printed; `None` for one it did not print.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Stats {
    /// Inputs executed.
    pub(super) executions: Option<u64>,
    pub(super) execs_per_second: Option<u64>,
    /// Coverage points (edges) reached, libFuzzer's `cov:`.
    pub(super) coverage: Option<u64>,
    /// Coverage features, libFuzzer's `ft:`: edges, edge counts and
    /// compared values.
    pub(super) features: Option<u64>,
    /// Inputs in the corpus at the end.
    pub(super) corpus: Option<u64>,
    pub(super) peak_rss_mb: Option<u64>,
}

/// The end of a run.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The time ran out without a crash.
    Passed,
    /// An input broke an invariant, crashed, leaked, ran out of memory or
    /// timed out; `saved` is its copy among the regression inputs.
    Crashed { saved: PathBuf },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passed => f.write_str("passed"),
            Self::Crashed { saved } => {
                let name = saved.file_name().unwrap_or(saved.as_os_str());
                write!(f, "CRASH ({})", name.to_string_lossy())
            }
        }
    }
}

/// Returns the names of the fuzz targets, from `cargo fuzz list`.
pub(super) fn list_targets(crate_dir: &Path) -> Result<Vec<String>> {
    let output = process::output(cargo_fuzz(crate_dir).arg("list"))?;
    let targets: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!(
            "`cargo fuzz list` in {} found no fuzz targets",
            crate_dir.display()
        );
    }
    Ok(targets)
}

/// Builds every target, so the runs' times do not include the build.
pub(super) fn build(crate_dir: &Path) -> Result<()> {
    let mut command = cargo_fuzz(crate_dir);
    command.arg("build");
    println!("\n==> xtask fuzz: build: {}", process::describe(&command));
    process::run(&mut command)
}

/// Runs `target` for `seconds` on its corpus and the saved regression
/// inputs. A crashing input is copied into `regressions`.
pub(super) fn run_target(
    crate_dir: &Path,
    target: &str,
    regressions: &Path,
    seconds: u64,
) -> Result<TargetRun> {
    let corpus = crate_dir.join("fuzz/corpus").join(target);
    for dir in [&corpus, regressions] {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }

    let mut command = cargo_fuzz(crate_dir);
    command
        .args(["run", target])
        .arg(&corpus)
        .arg(regressions)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={}", INPUT_TIMEOUT.as_secs()))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let line = process::describe(&command);
    println!("\n==> xtask fuzz: {target} for {seconds}s: {line}");

    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start `{line}`"))?;
    let stderr = child
        .stderr
        .take()
        .context("stderr of cargo fuzz not captured")?;
    let progress = echo_progress(stderr).with_context(|| format!("failed to read `{line}`"))?;
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for `{line}`"))?;
    let elapsed = started.elapsed();
    let fuzzed = progress.fuzzing_started.map(|instant| instant.elapsed());
    let output = progress.lines;

    let outcome = if status.success() {
        Outcome::Passed
    } else {
        let Some(artifact) = find_artifact(&output) else {
            bail!("`{line}` failed ({status}) without writing a crash input; see its output above");
        };
        let saved = save_crash(regressions, &crate_dir.join(artifact))?;
        println!(
            "xtask fuzz: {target} crashed; input saved to {}",
            saved.display()
        );
        Outcome::Crashed { saved }
    };

    Ok(TargetRun {
        target: target.to_owned(),
        elapsed,
        fuzzed,
        stats: Stats::parse(&output),
        outcome,
    })
}

/// `cargo +nightly fuzz` in the crate's directory, through the rustup proxy
/// so that `+nightly` applies even though xtask itself runs on stable.
fn cargo_fuzz(crate_dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz"])
        .current_dir(crate_dir)
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// The output of `cargo fuzz run`.
struct Progress {
    lines: Vec<String>,
    /// When libFuzzer printed its first line; cargo may rebuild before that.
    fuzzing_started: Option<Instant>,
}

/// Copies the output of `cargo fuzz run` to stderr as it comes, leaving out
/// the line per new corpus input, and collects it.
fn echo_progress(stderr: impl Read) -> Result<Progress> {
    let mut progress = Progress {
        lines: Vec::new(),
        fuzzing_started: None,
    };
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        if progress.fuzzing_started.is_none() && line.starts_with("INFO: ") {
            progress.fuzzing_started = Some(Instant::now());
        }
        if !is_corpus_update(&line) {
            eprintln!("{line}");
        }
        progress.lines.push(line);
    }
    Ok(progress)
}

/// Returns whether a line is libFuzzer's report of one new or reduced corpus
/// input, such as `#1234\tNEW    cov: 310 ft: 900 corp: 80/2Kb ...`.
fn is_corpus_update(line: &str) -> bool {
    line.starts_with('#') && (line.contains("\tNEW ") || line.contains("\tREDUCE "))
}

/// Finds the input libFuzzer saved after a crash, from its line
/// `... Test unit written to fuzz/artifacts/<target>/crash-<sha1>`.
fn find_artifact(output: &[String]) -> Option<PathBuf> {
    const MARKER: &str = "Test unit written to ";
    output.iter().rev().find_map(|line| {
        let start = line.find(MARKER)? + MARKER.len();
        Some(PathBuf::from(line[start..].trim()))
    })
}

/// Copies a crashing input into `regressions` and returns the copy's path.
fn save_crash(regressions: &Path, artifact: &Path) -> Result<PathBuf> {
    let name = artifact
        .file_name()
        .with_context(|| format!("crash input path {} has no file name", artifact.display()))?;
    let saved = regressions.join(name);
    fs::copy(artifact, &saved).with_context(|| {
        format!(
            "failed to copy crash input {} to {}",
            artifact.display(),
            saved.display()
        )
    })?;
    Ok(saved)
}

impl Stats {
    /// Reads the `-print_final_stats=1` lines and the last status line.
    fn parse(output: &[String]) -> Self {
        let mut stats = Self::default();
        for line in output {
            if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.executions = leading_number(rest);
            } else if let Some(rest) = line.strip_prefix("stat::average_exec_per_sec:") {
                stats.execs_per_second = leading_number(rest);
            } else if let Some(rest) = line.strip_prefix("stat::peak_rss_mb:") {
                stats.peak_rss_mb = leading_number(rest);
            } else if line.starts_with('#') && line.contains(" cov: ") {
                stats.coverage = number_after(line, " cov: ");
                stats.features = number_after(line, " ft: ").or(stats.features);
                stats.corpus = number_after(line, " corp: ").or(stats.corpus);
            } else if let Some(rest) = line.strip_prefix("Done ") {
                // `Done 123 runs in 60 second(s)`, printed when the time ran out.
                stats.executions = stats.executions.or_else(|| leading_number(rest));
            }
        }
        stats
    }
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let start = line.find(key)? + key.len();
    leading_number(&line[start..])
}

fn leading_number(text: &str) -> Option<u64> {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn stats_from_final_lines() {
        let output = lines(
            "#2\tINITED cov: 40 ft: 41 corp: 1/1b exec/s: 0 rss: 30Mb\n\
             #65536\tpulse  cov: 310 ft: 900 corp: 80/2Kb lim: 4096 exec/s: 32768 rss: 45Mb\n\
             #120000\tDONE   cov: 315 ft: 911 corp: 83/2388b lim: 4096 exec/s: 1967 rss: 46Mb\n\
             Done 120000 runs in 61 second(s)\n\
             stat::number_of_executed_units: 120000\n\
             stat::average_exec_per_sec:     1967\n\
             stat::new_units_added:          82\n\
             stat::slowest_unit_time_sec:    0\n\
             stat::peak_rss_mb:              46",
        );
        let stats = Stats::parse(&output);
        assert_eq!(
            stats,
            Stats {
                executions: Some(120_000),
                execs_per_second: Some(1967),
                coverage: Some(315),
                features: Some(911),
                corpus: Some(83),
                peak_rss_mb: Some(46),
            }
        );
    }

    #[test]
    fn stats_missing_are_none() {
        let stats = Stats::parse(&lines("error: could not compile"));
        assert_eq!(stats, Stats::default());
    }

    #[test]
    fn artifact_path_found() {
        let output = lines(
            "==1234== ERROR: libFuzzer: deadly signal\n\
             MS: 1 ChangeByte-; base unit: 0000\n\
             artifact_prefix='/w/fuzz/artifacts/ehlo/'; Test unit written to /w/fuzz/artifacts/ehlo/crash-ab12\n\
             Base64: MjUw",
        );
        assert_eq!(
            find_artifact(&output),
            Some(PathBuf::from("/w/fuzz/artifacts/ehlo/crash-ab12"))
        );
        assert_eq!(find_artifact(&lines("Done 5 runs")), None);
    }

    #[test]
    fn corpus_updates_hidden() {
        assert!(is_corpus_update("#1234\tNEW    cov: 310 ft: 900"));
        assert!(is_corpus_update("#1300\tREDUCE cov: 310 ft: 900"));
        assert!(!is_corpus_update("#65536\tpulse  cov: 310 ft: 900"));
        assert!(!is_corpus_update("INFO: Seed: 42"));
    }
}
