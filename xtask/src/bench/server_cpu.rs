//! The CPU time a server's processes used, read from `/proc`.
//!
//! A server is a process tree: smtp-sink is one process, Postfix is its
//! master with smtpd, cleanup, qmgr, trivial-rewrite, discard, tlsmgr and
//! the other daemons below it. A reading of the tree is the sum, over the
//! root and every live descendant, of `utime + stime + cutime + cstime`
//! from `/proc/<pid>/stat` (proc(5)). `cutime` and `cstime` contain the
//! CPU time of the children a process has reaped, such as smtpd processes
//! that reached their use limit. So a process that exits during a run
//! still counts once: first in its own fields, then in its parent's.
//!
//! The fields are in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 per second
//! on Linux), each truncated to a whole tick. A difference between two
//! readings is therefore off by less than one tick per field that changed,
//! about ±10 ms for each process that ran, so only totals over a whole
//! run of hundreds of milliseconds or more are meaningful. A child that
//! leaves the tree (reparented to init) is lost; Postfix's are not.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{bail, Context, Result};
use nix::unistd::{sysconf, SysconfVar};

/// Maximum passes over `/proc` in search of a consistent reading.
const MAX_PASSES: usize = 10;

/// The CPU fields of one `/proc/<pid>/stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: u32,
    /// Parent's pid.
    pub(crate) ppid: u32,
    /// User time, in clock ticks.
    pub(crate) utime: u64,
    /// System time, in clock ticks.
    pub(crate) stime: u64,
    /// User time of the reaped children, in clock ticks.
    pub(crate) cutime: u64,
    /// System time of the reaped children, in clock ticks.
    pub(crate) cstime: u64,
}

impl ProcStat {
    /// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in
    /// parentheses and may itself contain spaces and parentheses, so the
    /// fields after it are found from the last `)`.
    pub(crate) fn parse(line: &str) -> Result<Self> {
        let (head, tail) = line
            .rsplit_once(')')
            .with_context(|| format!("the stat line `{line}` has no `(command)` field"))?;
        let pid_text = head.split_whitespace().next().unwrap_or_default();
        let pid = pid_text
            .parse()
            .with_context(|| format!("the stat line `{line}` starts with no pid"))?;

        // `tail` starts at field 3 (state), so field n is tail[n - 3].
        let fields: Vec<&str> = tail.split_whitespace().collect();
        let field = |number: usize, name: &str| -> Result<u64> {
            let text = fields.get(number - 3).with_context(|| {
                format!("the stat line of pid {pid} has no field {number} ({name})")
            })?;
            text.parse().with_context(|| {
                format!("field {number} ({name}) of pid {pid}'s stat line is `{text}`, not a tick count")
            })
        };
        let ppid = field(4, "ppid")?;
        Ok(Self {
            pid,
            ppid: u32::try_from(ppid)
                .with_context(|| format!("pid {pid}'s parent pid {ppid} is out of range"))?,
            utime: field(14, "utime")?,
            stime: field(15, "stime")?,
            cutime: field(16, "cutime")?,
            cstime: field(17, "cstime")?,
        })
    }

    /// User plus system time of the process and its reaped children, in
    /// clock ticks.
    fn ticks(&self) -> u64 {
        self.utime + self.stime + self.cutime + self.cstime
    }

    fn reaped_ticks(&self) -> u64 {
        self.cutime + self.cstime
    }
}

/// One reading of a process tree's CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeCpu {
    /// User plus system time of the tree, reaped children included, in
    /// clock ticks.
    pub(crate) ticks: u64,
    /// Processes in the tree, the root included.
    pub(crate) processes: usize,
}

impl TreeCpu {
    /// Returns the CPU seconds from `before` to this reading. A tree that
    /// lost a child to reparenting can read lower than before, which
    /// counts as 0.
    pub(crate) fn seconds_since(&self, before: &TreeCpu, ticks_per_second: u64) -> f64 {
        self.ticks.saturating_sub(before.ticks) as f64 / ticks_per_second as f64
    }
}

/// Reads the CPU time of `root` and its descendants.
///
/// The processes are read one after another, so a child reaped between
/// the reading of its own line and of its parent's would count twice, or
/// not at all in the other order. Two full passes are compared to rule
/// that out: the reading is taken when every process of the first pass is
/// still there in the second with the same reaped-children time.
pub(crate) fn read_tree(root: u32) -> Result<TreeCpu> {
    let mut previous = tree_of(root, &read_processes())?;
    for _ in 0..MAX_PASSES {
        let current = tree_of(root, &read_processes())?;
        if same_reaped(&previous, &current) {
            return Ok(TreeCpu {
                ticks: current.values().map(ProcStat::ticks).sum(),
                processes: current.len(),
            });
        }
        previous = current;
    }
    bail!(
        "processes under pid {root} exited during each of {MAX_PASSES} passes over /proc, \
         so no consistent CPU reading was taken; run again when the server is less busy"
    )
}

/// Clock ticks per second, the unit of the `/proc/<pid>/stat` times.
pub(crate) fn ticks_per_second() -> Result<u64> {
    let ticks = sysconf(SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK) failed")?
        .context("sysconf(_SC_CLK_TCK) returned no value")?;
    u64::try_from(ticks)
        .ok()
        .filter(|ticks| *ticks > 0)
        .with_context(|| format!("sysconf(_SC_CLK_TCK) returned {ticks}, not a positive count"))
}

/// Reads the stat line of every process, by pid. Processes that exit
/// while `/proc` is listed are skipped.
fn read_processes() -> BTreeMap<u32, ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|line| ProcStat::parse(&line).ok())
        .map(|stat| (stat.pid, stat))
        .collect()
}

/// Selects `root` and all its descendants from `processes`.
fn tree_of(root: u32, processes: &BTreeMap<u32, ProcStat>) -> Result<BTreeMap<u32, ProcStat>> {
    let Some(root_stat) = processes.get(&root) else {
        bail!("the server process {root} is not running (no readable /proc/{root}/stat)");
    };
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for stat in processes.values() {
        children.entry(stat.ppid).or_default().push(stat.pid);
    }

    let mut tree = BTreeMap::from([(root, *root_stat)]);
    let mut unvisited = vec![root];
    while let Some(pid) = unvisited.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if tree.insert(*child, processes[child]).is_none() {
                unvisited.push(*child);
            }
        }
    }
    Ok(tree)
}

/// Tells whether every process of `before` is in `after` with the same
/// reaped-children time, that is, no process was reaped between the two
/// passes. Processes new in `after` are fine: their time is their own.
fn same_reaped(before: &BTreeMap<u32, ProcStat>, after: &BTreeMap<u32, ProcStat>) -> bool {
    before.iter().all(|(pid, stat)| {
        after
            .get(pid)
            .is_some_and(|later| later.reaped_ticks() == stat.reaped_ticks())
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    /// Builds a stat line with the given CPU fields and fixed others.
    fn line(pid: u32, comm: &str, ppid: u32, times: [u64; 4]) -> String {
        let [utime, stime, cutime, cstime] = times;
        format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 120 0 0 0 \
             {utime} {stime} {cutime} {cstime} 20 0 1 0 4521 8560640 301 \
             18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0"
        )
    }

    fn stat(pid: u32, ppid: u32, times: [u64; 4]) -> ProcStat {
        ProcStat::parse(&line(pid, "p", ppid, times)).expect("valid line")
    }

    #[test]
    fn parses_plain_command() {
        let parsed = ProcStat::parse(&line(26067, "master", 1, [171, 141, 12, 7])).expect("parses");
        assert_eq!(parsed.pid, 26067);
        assert_eq!(parsed.ppid, 1);
        assert_eq!(parsed.utime, 171);
        assert_eq!(parsed.stime, 141);
        assert_eq!(parsed.cutime, 12);
        assert_eq!(parsed.cstime, 7);
        assert_eq!(parsed.ticks(), 331);
    }

    #[test]
    fn parses_command_with_spaces_and_parentheses() {
        for comm in ["smtp sink", "(smtp sink)", "a) 9 9 (b", ") R 1 2 3"] {
            let parsed = ProcStat::parse(&line(42, comm, 7, [5, 6, 7, 8])).expect(comm);
            assert_eq!(parsed.pid, 42, "{comm}");
            assert_eq!(parsed.ppid, 7, "{comm}");
            assert_eq!(parsed.utime, 5, "{comm}");
            assert_eq!(parsed.stime, 6, "{comm}");
            assert_eq!(parsed.cutime, 7, "{comm}");
            assert_eq!(parsed.cstime, 8, "{comm}");
        }
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(ProcStat::parse("").is_err());
        assert!(ProcStat::parse("42 smtp-sink S 1 2 3").is_err());
        assert!(ProcStat::parse("x (sh) S 1 2 3").is_err());
        assert!(ProcStat::parse("42 (sh) S 1 2 3 4 5").is_err());
        let negative = line(42, "sh", 1, [1, 2, 3, 4]).replace(" 1 2 3 4 ", " 1 2 -3 4 ");
        assert!(ProcStat::parse(&negative).is_err());
    }

    #[test]
    fn tree_takes_descendants_only() {
        let processes: BTreeMap<u32, ProcStat> = [
            stat(1, 0, [1_000, 0, 0, 0]),
            stat(10, 1, [1, 2, 30, 40]),
            stat(11, 10, [5, 5, 0, 0]),
            stat(12, 11, [7, 0, 0, 0]),
            stat(20, 1, [500, 0, 0, 0]),
        ]
        .into_iter()
        .map(|stat| (stat.pid, stat))
        .collect();
        let tree = tree_of(10, &processes).expect("pid 10 exists");
        assert_eq!(tree.keys().copied().collect::<Vec<_>>(), vec![10, 11, 12]);
        assert_eq!(tree.values().map(ProcStat::ticks).sum::<u64>(), 90);
        assert!(tree_of(99, &processes).is_err());
    }

    #[test]
    fn reaping_between_passes_is_detected() {
        let pass = |entries: &[ProcStat]| -> BTreeMap<u32, ProcStat> {
            entries.iter().map(|stat| (stat.pid, *stat)).collect()
        };
        let first = pass(&[stat(10, 1, [1, 1, 0, 0]), stat(11, 10, [3, 0, 0, 0])]);
        let steady = pass(&[stat(10, 1, [2, 1, 0, 0]), stat(11, 10, [4, 0, 0, 0])]);
        let forked = pass(&[
            stat(10, 1, [2, 1, 0, 0]),
            stat(11, 10, [4, 0, 0, 0]),
            stat(12, 10, [0, 0, 0, 0]),
        ]);
        let reaped = pass(&[stat(10, 1, [2, 1, 3, 0])]);
        let vanished = pass(&[stat(10, 1, [2, 1, 0, 0])]);
        assert!(same_reaped(&first, &steady));
        assert!(same_reaped(&first, &forked));
        assert!(!same_reaped(&first, &reaped));
        assert!(!same_reaped(&first, &vanished));
    }

    #[test]
    fn seconds_between_readings() {
        let before = TreeCpu {
            ticks: 1_000,
            processes: 5,
        };
        let after = TreeCpu {
            ticks: 1_330,
            processes: 6,
        };
        assert_eq!(after.seconds_since(&before, 100), 3.3);
        assert_eq!(before.seconds_since(&after, 100), 0.0);
    }

    #[test]
    fn clock_ticks_are_positive() {
        assert!(ticks_per_second().expect("sysconf works") > 0);
    }

    #[test]
    fn reads_live_and_reaped_children() {
        // The shell runs one busy child to completion (reaped: its time
        // moves to the shell's cutime and cstime), then leaves a second
        // busy child alive for a few seconds, and reports both done.
        let busy = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done";
        let script = format!("({busy}); echo reaped; ({busy}; echo live; sleep 3) & wait");
        let mut shell = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let stdout = shell.stdout.take().expect("piped stdout");
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|line| line.expect("a line"))
            .collect();
        assert_eq!(lines, ["reaped", "live"]);

        // The parts first, then the reading, which can only be larger.
        let root = shell.id();
        let processes = tree_of(root, &read_processes());
        let reading = read_tree(root);
        let _ = shell.wait();

        let processes = processes.expect("the shell is running");
        let reading = reading.expect("the tree is readable");
        let shell_stat = processes[&root];
        let live_ticks: u64 = processes
            .values()
            .filter(|stat| stat.pid != root)
            .map(|stat| stat.utime + stat.stime)
            .sum();
        // Each busy loop takes well over 50 ms of CPU.
        assert!(shell_stat.reaped_ticks() >= 5, "{shell_stat:?}");
        assert!(live_ticks >= 5, "{processes:?}");
        assert!(reading.processes >= 2, "{reading:?}");
        assert!(
            reading.ticks >= shell_stat.reaped_ticks() + live_ticks,
            "{reading:?} {processes:?}"
        );
    }
}
