//! The command line of `cargo xtask bench`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Usage text, printed by `cargo xtask help` too.
pub(crate) const USAGE: &str = "\
  bench [--quick] [--repetitions N] [--only GROUPS] [--no-profile] [--output FILE]
                        run the benchmarks against loopback peers and write
                        docs/BENCHMARKS.md (needs root); GROUPS is a comma list
                        of reuse, churn, tls, sched, memory";

/// A group of benchmark cases that runs as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Throughput over reused connections to smtp-sink.
    Reuse,
    /// One plain-text connection per message to smtp-sink.
    Churn,
    /// One STARTTLS connection per message to Postfix, and the handshake
    /// floor.
    Tls,
    /// The scheduler's own benchmark (`sched_bench`).
    Sched,
    /// Resident memory per idle connection and per queued message.
    Memory,
}

impl Group {
    pub(crate) const ALL: [Group; 5] = [
        Group::Reuse,
        Group::Churn,
        Group::Tls,
        Group::Sched,
        Group::Memory,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Group::Reuse => "reuse",
            Group::Churn => "churn",
            Group::Tls => "tls",
            Group::Sched => "sched",
            Group::Memory => "memory",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|group| group.name() == text)
            .with_context(|| {
                format!("unknown benchmark group `{text}`; use reuse, churn, tls, sched or memory")
            })
    }
}

/// The options of one `cargo xtask bench` run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Measured runs of each contender in each case.
    pub(crate) repetitions: usize,
    /// Smaller message counts and fewer repetitions, for a smoke test.
    pub(crate) quick: bool,
    /// The groups to run, in the order of [`Group::ALL`].
    pub(crate) groups: Vec<Group>,
    /// Profile ec where it misses a target.
    pub(crate) profile: bool,
    /// The report's path, relative to the workspace root unless absolute.
    pub(crate) output: PathBuf,
    /// The command line as given, for the report.
    pub(crate) command_line: String,
}

/// Default measured runs per contender and case.
const DEFAULT_REPETITIONS: usize = 5;
/// Measured runs per contender and case under `--quick`.
pub(crate) const QUICK_REPETITIONS: usize = 2;

impl Options {
    /// Parses the words after `bench`.
    pub(crate) fn parse(args: &[&str]) -> Result<Self> {
        let mut repetitions = None;
        let mut quick = false;
        let mut groups = Group::ALL.to_vec();
        let mut profile = true;
        let mut output = PathBuf::from("docs/BENCHMARKS.md");

        let mut words = args.iter();
        while let Some(word) = words.next() {
            let mut value = |name: &str| {
                words
                    .next()
                    .copied()
                    .with_context(|| format!("{name} needs a value"))
            };
            match *word {
                "--quick" => quick = true,
                "--no-profile" => profile = false,
                "--repetitions" => {
                    let text = value("--repetitions")?;
                    let count: usize = text.parse().ok().filter(|n| *n > 0).with_context(|| {
                        format!("--repetitions {text} is not a positive whole number")
                    })?;
                    repetitions = Some(count);
                }
                "--only" => {
                    let list = value("--only")?;
                    let chosen = list
                        .split(',')
                        .map(|name| Group::parse(name.trim()))
                        .collect::<Result<Vec<_>>>()?;
                    groups = Group::ALL
                        .into_iter()
                        .filter(|group| chosen.contains(group))
                        .collect();
                }
                "--output" => output = PathBuf::from(value("--output")?),
                other => {
                    bail!("unknown option `{other}` for `cargo xtask bench`\n\nusage:\n{USAGE}")
                }
            }
        }

        let repetitions = repetitions.unwrap_or(if quick {
            QUICK_REPETITIONS
        } else {
            DEFAULT_REPETITIONS
        });
        let mut command_line = String::from("cargo xtask bench");
        for word in args {
            command_line.push(' ');
            command_line.push_str(word);
        }
        Ok(Self {
            repetitions,
            quick,
            groups,
            profile,
            output,
            command_line,
        })
    }

    /// Tells whether `group` runs.
    pub(crate) fn runs(&self, group: Group) -> bool {
        self.groups.contains(&group)
    }

    /// `full` for a normal run, `full / 5` (at least 1) under `--quick`.
    pub(crate) fn count(&self, full: u64) -> u64 {
        if self.quick {
            (full / 5).max(1)
        } else {
            full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_everything() {
        let options = Options::parse(&[]).expect("parses");
        assert_eq!(options.repetitions, DEFAULT_REPETITIONS);
        assert_eq!(options.groups, Group::ALL.to_vec());
        assert!(options.profile);
        assert_eq!(options.count(1_000), 1_000);
    }

    #[test]
    fn quick_and_only() {
        let options = Options::parse(&["--quick", "--only", "tls,reuse"]).expect("parses");
        assert_eq!(options.repetitions, QUICK_REPETITIONS);
        assert_eq!(options.groups, vec![Group::Reuse, Group::Tls]);
        assert_eq!(options.count(1_000), 200);
        assert_eq!(
            options.command_line,
            "cargo xtask bench --quick --only tls,reuse"
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Options::parse(&["--repetitions", "0"]).is_err());
        assert!(Options::parse(&["--only", "speed"]).is_err());
        assert!(Options::parse(&["--fast"]).is_err());
        assert!(Options::parse(&["--output"]).is_err());
    }
}
