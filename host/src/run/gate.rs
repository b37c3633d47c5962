//! The gate before a run: the process an earlier run of the task reported on a worker, and
//! whether that very process is still alive.
//!
//! Ownership: one [`Tracked`] per scheduled task (shared by its ticks through [`super::TaskRun`]);
//! `run_on_worker` is the only writer, and writes after each final status write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::report::StatusFile;
use crate::report::StatusWord;
use crate::workers::{Command, Program, Worker, WorkerAddr, WorkerError};

/// What the last run of a task recorded on one worker: the status word and the process it
/// reported (with its start time, which tells a reused pid apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The run said `running`: its process is a job or daemon that must not be doubled.
    pub running: bool,
    /// The process it reported.
    pub pid: Option<u32>,
    /// That process's start time (`/proc/<pid>/stat` field 22), when Quarry read it.
    pub start_time: Option<u64>,
}

impl StatusFile {
    /// This status with the process `recorded` on it (the one handed to the task), so that
    /// a run that fails part-way does not orphan it.
    pub fn handing(mut self, recorded: Recorded) -> StatusFile {
        self.pid = recorded.pid;
        self.set_start_time(recorded.start_time);
        self
    }
}

impl Recorded {
    /// What a status file records.
    pub fn of(status: &StatusFile) -> Recorded {
        Recorded {
            running: status.status == StatusWord::Running,
            pid: status.pid,
            start_time: status.start_time(),
        }
    }
}

/// Per-worker memory of what this task's runs recorded, keyed by worker address.
///
/// Strategy: Quarry writes the status files, so after the first run on a worker it knows
/// what the file says without reading it; a worker it has not seen yet (first tick, a
/// restart, a new worker) is read from its status file. This keeps the gate at zero calls for
/// tasks that report no process and at one call (`/proc/<pid>/stat`) for those that do.
#[derive(Debug, Default)]
pub struct Tracked {
    by_worker: Mutex<HashMap<WorkerAddr, Recorded>>,
}

impl Tracked {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<WorkerAddr, Recorded>> {
        self.by_worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the last run on `worker` recorded, if this process saw it.
    pub fn get(&self, worker: &Worker) -> Option<Recorded> {
        self.map().get(worker.addr()).copied()
    }

    /// Remembers what a run on `worker` recorded (its final status write succeeded).
    pub fn set(&self, worker: &Worker, rec: Recorded) {
        self.map().insert(worker.addr().clone(), rec);
    }

    /// A copy of the whole memory (to find what a tick changed).
    pub fn snapshot(&self) -> HashMap<WorkerAddr, Recorded> {
        self.map().clone()
    }

    /// Remembers what a run on `worker` recorded before this process started (from the state
    /// database).
    pub fn restore(&self, worker: WorkerAddr, rec: Recorded) {
        self.map().insert(worker, rec);
    }

    /// Forgets `worker`: its status file may say something else, read it next time.
    pub fn forget(&self, worker: &Worker) {
        self.map().remove(worker.addr());
    }
}

/// A process an earlier run of the task reported on a worker, checked alive just now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    /// Its pid.
    pub pid: u32,
    /// The run that started it said `running`: this run must not start another copy.
    pub running: bool,
    /// Its start time, as `/proc` says now.
    pub start_time: Option<u64>,
}

/// State and start time of a process, from `/proc/<pid>/stat` on the worker.
pub struct ProcStat {
    /// One-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Reads `/proc/<pid>/stat` on the worker; `None` when the process does not exist.
pub async fn proc_stat(
    worker: &Worker,
    pid: u32,
    timeout: Duration,
) -> Result<Option<ProcStat>, WorkerError> {
    let cmd = argv(vec!["cat".into(), format!("/proc/{pid}/stat")], timeout);
    let out = worker.execute(&cmd).await?;
    if out.exit_code != 0 {
        return Ok(None);
    }
    Ok(parse_proc_stat(&out.stdout))
}

/// The start time of `pid` on the worker; `None` when it is gone or cannot be read (the gate
/// then trusts the pid alone).
pub async fn start_time(worker: &Worker, pid: u32, timeout: Duration) -> Option<u64> {
    let stat = proc_stat(worker, pid, timeout).await.ok().flatten();
    stat.map(|p| p.start_time)
}

/// Parses "pid (comm) state ppid …": comm may contain spaces and parentheses, so fields are
/// counted after the last ')'.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|f| f.chars().next())?;
    let start_time = fields.get(19).and_then(|f| f.parse::<u64>().ok())?;
    Some(ProcStat { state, start_time })
}

/// An argv command with `timeout`.
pub(super) fn argv(args: Vec<String>, timeout: Duration) -> Command {
    Command {
        program: Program::Argv(args),
        cwd: None,
        env: Vec::new(),
        timeout,
    }
}

/// The gate: the process the task's previous run on `worker` recorded (status file `pid`),
/// when that very process is still alive; `None` when there is none.
///
/// Strategy: what the previous run recorded comes from memory ([`Tracked`]) or, for a worker
/// not seen yet, from the status file (no file, an unreadable one or no pid → none: a failed
/// launch is retried, no sticky failure). The pid must exist, not be a zombie, and — when
/// Quarry recorded it — have the same start time; otherwise it died or the pid was reused.
pub async fn previous_process(
    worker: &Worker,
    tracked: &Tracked,
    status_path: &str,
    timeout: Duration,
) -> Result<Option<Previous>, WorkerError> {
    let recorded = match tracked.get(worker) {
        Some(rec) => rec,
        None => read_recorded(worker, status_path, timeout).await?,
    };
    let Some(pid) = recorded.pid else {
        return Ok(None);
    };
    let Some(proc) = proc_stat(worker, pid, timeout).await? else {
        return Ok(None);
    };
    Ok(alive(recorded, pid, &proc))
}

/// `pid` as recorded, given what `/proc` says of it now: gone when a zombie or when its start
/// time differs from the recorded one (the pid was reused).
fn alive(recorded: Recorded, pid: u32, proc: &ProcStat) -> Option<Previous> {
    if matches!(proc.state, 'Z' | 'X' | 'x') {
        return None;
    }
    if recorded.start_time.is_some_and(|t| t != proc.start_time) {
        return None;
    }
    Some(Previous {
        pid,
        running: recorded.running,
        start_time: Some(proc.start_time),
    })
}

/// What a status file on the worker records; a missing or unreadable file records nothing.
async fn read_recorded(
    worker: &Worker,
    status_path: &str,
    timeout: Duration,
) -> Result<Recorded, WorkerError> {
    match worker.read_file(status_path, timeout).await {
        Ok(text) => Ok(StatusFile::parse(&text)
            .map(|s| Recorded::of(&s))
            .unwrap_or_default()),
        Err(e @ (WorkerError::Unreachable(_) | WorkerError::Timeout(_))) => Err(e),
        Err(_) => Ok(Recorded::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(state: char, start: u64) -> ProcStat {
        ProcStat {
            state,
            start_time: start,
        }
    }

    #[test]
    fn parses_proc_stat_with_hostile_comm() {
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 \
                    123456 1 1 18446744073709551615";
        let p = parse_proc_stat(line).unwrap();
        assert_eq!((p.state, p.start_time), ('S', 123456));
        assert!(parse_proc_stat("garbage").is_none());
        assert!(parse_proc_stat("1 (x) S 1 2").is_none());
    }

    #[test]
    fn alive_only_when_the_same_process_lives() {
        let rec = |running, start_time| Recorded {
            running,
            pid: Some(7),
            start_time,
        };
        let live = Previous {
            pid: 7,
            running: true,
            start_time: Some(50),
        };
        assert_eq!(alive(rec(true, Some(50)), 7, &stat('S', 50)), Some(live));
        // No start time on record (ROCK's file): the pid alone decides.
        assert_eq!(alive(rec(true, None), 7, &stat('R', 50)), Some(live));
        // Reused pid, zombie, dead.
        assert_eq!(alive(rec(true, Some(49)), 7, &stat('S', 50)), None);
        for z in ['Z', 'X', 'x'] {
            assert_eq!(alive(rec(true, Some(50)), 7, &stat(z, 50)), None);
        }
        let handed = alive(rec(false, None), 7, &stat('S', 50)).unwrap();
        assert!(!handed.running);
    }
}
