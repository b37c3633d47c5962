//! ROCK-compatible files: the status file each worker keeps per task
//! (`<status_dir>/<task>_status.json`) and the run report this host writes per tick
//! (`<report_dir>/<task>_run_report.json`).
//!
//! Both are JSON with 2-space indent and no trailing newline, keys in ROCK's order (the struct
//! field order here). Status files escape non-ASCII as `\uXXXX` (Python's `ensure_ascii`);
//! reports keep raw UTF-8. Timestamps are naive ISO-8601 with microseconds, like ROCK's, but
//! always in UTC (ROCK used the scheduler's local zone; Quarry documents one zone).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ErrorType;
use crate::task::RunStatus;

/// Longest `error` text kept in reports and status files, in UTF-8 bytes, suffix included.
pub const ERROR_MAX_BYTES: usize = 4096;
const TRUNCATED_SUFFIX: &str = "...[truncated]";

/// Now, as ROCK writes timestamps (naive, microseconds), in UTC.
pub fn timestamp_now() -> String {
    chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// `t` as the admin API and the state database write times: UTC RFC 3339 with microseconds
/// (`2026-12-04T15:40:46.123456Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Cuts an error to [`ERROR_MAX_BYTES`], keeping the head (Quarry's errors lead with the kind
/// and message, so the head is the useful part).
pub fn truncate_error(s: &str) -> String {
    if s.len() <= ERROR_MAX_BYTES {
        return s.to_string();
    }
    let mut cut = ERROR_MAX_BYTES - TRUNCATED_SUFFIX.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATED_SUFFIX}", &s[..cut])
}

/// The status file's `status` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusWord {
    /// Written before the task runs.
    Pending,
    /// The task started something long-lived.
    Running,
    /// Done.
    Success,
    /// Failed.
    Failed,
}

impl From<RunStatus> for StatusWord {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Success => StatusWord::Success,
            RunStatus::Running => StatusWord::Running,
            RunStatus::Failed => StatusWord::Failed,
        }
    }
}

/// `<task>_status.json` on a worker, keys in ROCK's order.
///
/// Reading one back ([`StatusFile::parse`]) is lenient where ROCK's own files differ: missing
/// keys take their defaults and a `pid` that is not a positive 32-bit number counts as none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// Task name.
    #[serde(default)]
    pub task_name: String,
    /// Worker host.
    #[serde(default)]
    pub worker_ip: String,
    /// Pid of a started process, if any.
    #[serde(default, deserialize_with = "lenient_pid")]
    pub pid: Option<u32>,
    /// Status.
    pub status: StatusWord,
    /// When the run started (kept from the pending write).
    #[serde(default)]
    pub last_run: String,
    /// Error text of a failed run.
    #[serde(default)]
    pub error: Option<String>,
    /// The task's detail object.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Key in a status file's `extra` where Quarry records the start time of a process a run
/// reported (field 22 of `/proc/<pid>/stat`), so that a reused pid is not mistaken for it.
pub const START_TIME_KEY: &str = "quarry_proc_start_time";

/// A `pid` as ROCK may have written it: anything but a positive number that fits a pid is none.
fn lenient_pid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_u64()
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok()))
}

impl StatusFile {
    /// A `pending` status for `task` on `worker_ip`, written before the task runs, stamped now.
    pub fn pending(task: &str, worker_ip: &str) -> StatusFile {
        StatusFile {
            task_name: task.to_string(),
            worker_ip: worker_ip.to_string(),
            pid: None,
            status: StatusWord::Pending,
            last_run: timestamp_now(),
            error: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Path of a task's status file in `status_dir`.
    pub fn path(status_dir: &str, task: &str) -> String {
        format!("{}/{task}_status.json", status_dir.trim_end_matches('/'))
    }

    /// The file's text: ROCK's layout with ASCII-only escaping.
    pub fn to_json(&self) -> String {
        ascii_only(&pretty(self))
    }

    /// Reads a status file's text; `None` when it is not one.
    pub fn parse(text: &str) -> Option<StatusFile> {
        serde_json::from_str(text).ok()
    }

    /// The start time Quarry recorded for [`StatusFile::pid`], if any.
    pub fn start_time(&self) -> Option<u64> {
        self.extra.get(START_TIME_KEY).and_then(|v| v.as_u64())
    }

    /// Records (or, with `None`, removes) the start time of [`StatusFile::pid`].
    pub fn set_start_time(&mut self, start_time: Option<u64>) {
        match start_time {
            Some(t) => self.extra.insert(START_TIME_KEY.into(), t.into()),
            None => self.extra.remove(START_TIME_KEY),
        };
    }
}

/// One worker's outcome in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerOutcome {
    /// Task finished successfully.
    Success,
    /// Task started a long-lived process.
    Started,
    /// The gate decided not to run.
    Skipped,
    /// Failed.
    Failed,
    /// Ran out of time.
    Timeout,
}

impl WorkerOutcome {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerOutcome::Success => "success",
            WorkerOutcome::Started => "started",
            WorkerOutcome::Skipped => "skipped",
            WorkerOutcome::Failed => "failed",
            WorkerOutcome::Timeout => "timeout",
        }
    }

    /// The outcome of a run ended by a worker call of Quarry's own (the gate's check, a
    /// status write) failing with `e`: a deadline is a timeout, anything else a failure.
    pub fn of_call_error(e: &crate::workers::WorkerError) -> WorkerOutcome {
        match e {
            crate::workers::WorkerError::Timeout(_) => WorkerOutcome::Timeout,
            _ => WorkerOutcome::Failed,
        }
    }
}

/// One entry of `worker_results`.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerResult {
    /// Worker host.
    pub worker_ip: String,
    /// Outcome.
    pub outcome: WorkerOutcome,
    /// Kind of error (`ConnectionError`, `TimeoutError`, `TaskResultFailed`, …).
    pub error_type: Option<ErrorType>,
    /// Error text.
    pub error: Option<String>,
}

/// One entry of `failed_details`.
#[derive(Clone, Debug, Serialize)]
pub struct FailedDetail {
    /// Worker host.
    pub ip: String,
    /// Error text or "unknown error".
    pub reason: String,
}

/// Aggregate outcome of a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// No workers.
    NoWorkers,
    /// Every worker failed or timed out.
    Failed,
    /// Some failed.
    Partial,
    /// Every worker skipped.
    Skipped,
    /// Otherwise.
    Success,
}

impl TickOutcome {
    /// The word reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            TickOutcome::NoWorkers => "no_workers",
            TickOutcome::Failed => "failed",
            TickOutcome::Partial => "partial",
            TickOutcome::Skipped => "skipped",
            TickOutcome::Success => "success",
        }
    }
}

/// `<task>_run_report.json`, keys in ROCK's order.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Task name.
    pub task_type: String,
    /// End of the tick.
    pub timestamp: String,
    /// Tick duration in milliseconds.
    pub duration_ms: f64,
    /// Aggregate outcome.
    pub outcome: TickOutcome,
    /// Number of workers.
    pub total: usize,
    /// success + started + skipped.
    pub success_count: usize,
    /// Of which started.
    pub started_count: usize,
    /// Of which skipped.
    pub skipped_count: usize,
    /// failed + timeout.
    pub failed_count: usize,
    /// Of which timeout.
    pub timeout_count: usize,
    /// Hosts counted in `success_count`.
    pub success_ips: Vec<String>,
    /// Hosts counted in `failed_count`, with reasons.
    pub failed_details: Vec<FailedDetail>,
    /// Every worker, in worker-set order.
    pub worker_results: Vec<WorkerResult>,
}

impl RunReport {
    /// Aggregates worker results as ROCK does.
    pub fn build(task: &str, duration_ms: f64, results: Vec<WorkerResult>) -> RunReport {
        use WorkerOutcome::*;
        let count =
            |f: &dyn Fn(WorkerOutcome) -> bool| results.iter().filter(|r| f(r.outcome)).count();
        let success_count = count(&|o| matches!(o, Success | Started | Skipped));
        let failed_count = count(&|o| matches!(o, Failed | Timeout));
        let skipped_count = count(&|o| o == Skipped);
        let total = results.len();
        let outcome = if total == 0 {
            TickOutcome::NoWorkers
        } else if failed_count == total {
            TickOutcome::Failed
        } else if failed_count > 0 {
            TickOutcome::Partial
        } else if skipped_count == total {
            TickOutcome::Skipped
        } else {
            TickOutcome::Success
        };
        RunReport {
            task_type: task.to_string(),
            timestamp: timestamp_now(),
            duration_ms,
            outcome,
            total,
            success_count,
            started_count: count(&|o| o == Started),
            skipped_count,
            failed_count,
            timeout_count: count(&|o| o == Timeout),
            success_ips: results
                .iter()
                .filter(|r| matches!(r.outcome, Success | Started | Skipped))
                .map(|r| r.worker_ip.clone())
                .collect(),
            failed_details: results
                .iter()
                .filter(|r| matches!(r.outcome, Failed | Timeout))
                .map(|r| FailedDetail {
                    ip: r.worker_ip.clone(),
                    reason: r.error.clone().unwrap_or_else(|| "unknown error".into()),
                })
                .collect(),
            worker_results: results,
        }
    }

    /// The file's text (raw UTF-8).
    pub fn to_json(&self) -> String {
        pretty(self)
    }

    /// Path of a task's report in `report_dir`.
    pub fn path(report_dir: &Path, task: &str) -> PathBuf {
        report_dir.join(format!("{task}_run_report.json"))
    }

    /// Writes the report atomically (temp file + rename), creating the directory.
    pub fn write(&self, report_dir: &Path) -> std::io::Result<PathBuf> {
        write_atomically(
            report_dir,
            &format!("{}_run_report.json", self.task_type),
            &self.to_json(),
        )
    }
}

/// What uninstalling a task did on one worker.
#[derive(Clone, Debug, Serialize)]
pub struct UninstallResult {
    /// Worker host.
    pub worker_ip: String,
    /// The daemon that was killed, if one was alive.
    pub stopped_pid: Option<u32>,
    /// Whether the status file was removed (or already absent).
    pub status_removed: bool,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// `<task>_uninstall_report.json`: what uninstalling a task did on every worker.
#[derive(Clone, Debug, Serialize)]
pub struct UninstallReport {
    /// Task name.
    pub task_type: String,
    /// When it finished.
    pub timestamp: String,
    /// Per worker, in worker order.
    pub worker_results: Vec<UninstallResult>,
}

impl UninstallReport {
    /// Path of a task's uninstall report in `report_dir`.
    pub fn path(report_dir: &Path, task: &str) -> PathBuf {
        report_dir.join(format!("{task}_uninstall_report.json"))
    }

    /// Writes the report atomically (temp file + rename), creating the directory.
    pub fn write(&self, report_dir: &Path) -> std::io::Result<PathBuf> {
        let name = format!("{}_uninstall_report.json", self.task_type);
        write_atomically(report_dir, &name, &pretty(self))
    }
}

/// Writes `dir/name` through a hidden temp file and a rename, so that a reader never sees a
/// half-written file; creates `dir`.
fn write_atomically(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// JSON with 2-space indent, like Python's `json.dumps(indent=2)`.
fn pretty<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Escapes every non-ASCII char as `\uXXXX` (surrogate pairs beyond the BMP). Safe on JSON
/// text because non-ASCII can only occur inside strings.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_file_round_trips_and_reads_rock_files() {
        let mut st = StatusFile::pending("image_cleanup", "10.0.0.1");
        st.status = StatusWord::Running;
        st.pid = Some(4242);
        st.set_start_time(Some(987));
        let back = StatusFile::parse(&st.to_json()).unwrap();
        assert_eq!(back, st);
        assert_eq!(back.start_time(), Some(987));
        // ROCK's failed launch: pid null, extra {}.
        let rock = r#"{"task_name": "x", "worker_ip": "h", "pid": null, "status": "failed",
            "last_run": "2025-01-01T00:00:00.000000", "error": "boom", "extra": {}}"#;
        let f = StatusFile::parse(rock).unwrap();
        assert_eq!(
            (f.pid, f.status, f.start_time()),
            (None, StatusWord::Failed, None)
        );
        // Pids that cannot be a process: none.
        for pid in ["0", "-5", "4294967296", "\"12\"", "1.5"] {
            let text = format!(r#"{{"status": "running", "pid": {pid}}}"#);
            assert_eq!(StatusFile::parse(&text).unwrap().pid, None, "{pid}");
        }
        assert_eq!(StatusFile::parse("not json"), None);
        assert_eq!(StatusFile::parse(r#"{"status": "exploded"}"#), None);
        assert_eq!(StatusFile::parse(r#"{"pid": 1}"#), None);
    }

    #[test]
    fn uninstall_report_is_written_atomically_beside_the_run_report() {
        let dir = std::env::temp_dir().join(format!("quarry-report-{}", std::process::id()));
        let r = UninstallReport {
            task_type: "t".into(),
            timestamp: timestamp_now(),
            worker_results: vec![],
        };
        let path = r.write(&dir).unwrap();
        assert_eq!(path, UninstallReport::path(&dir, "t"));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["t_uninstall_report.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn result(ip: &str, outcome: WorkerOutcome) -> WorkerResult {
        WorkerResult {
            worker_ip: ip.into(),
            outcome,
            error_type: None,
            error: None,
        }
    }

    #[test]
    fn aggregates_like_rock() {
        use WorkerOutcome::*;
        let r = RunReport::build("t", 1.0, vec![]);
        assert_eq!(r.outcome, TickOutcome::NoWorkers);
        let r = RunReport::build("t", 1.0, vec![result("a", Skipped), result("b", Skipped)]);
        assert_eq!(r.outcome, TickOutcome::Skipped);
        assert_eq!(r.success_count, 2);
        let r = RunReport::build(
            "t",
            1.0,
            vec![
                result("a", Started),
                result("b", Timeout),
                result("c", Success),
            ],
        );
        assert_eq!(r.outcome, TickOutcome::Partial);
        assert_eq!(
            (
                r.success_count,
                r.started_count,
                r.failed_count,
                r.timeout_count
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(r.success_ips, vec!["a", "c"]);
        assert_eq!(r.failed_details[0].reason, "unknown error");
        let r = RunReport::build("t", 1.0, vec![result("a", Failed), result("b", Timeout)]);
        assert_eq!(r.outcome, TickOutcome::Failed);
        let r = RunReport::build("t", 1.0, vec![result("a", Skipped), result("b", Success)]);
        assert_eq!(r.outcome, TickOutcome::Success);
    }

    #[test]
    fn report_keys_in_rock_order() {
        let json = RunReport::build(
            "file_cleanup",
            5.0,
            vec![result("h", WorkerOutcome::Success)],
        )
        .to_json();
        let keys = [
            "task_type",
            "timestamp",
            "duration_ms",
            "outcome",
            "total",
            "success_count",
            "started_count",
            "skipped_count",
            "failed_count",
            "timeout_count",
            "success_ips",
            "failed_details",
            "worker_results",
        ];
        let mut last = 0;
        for k in keys {
            let at = json
                .find(&format!("\"{k}\""))
                .unwrap_or_else(|| panic!("{k} missing"));
            assert!(at > last || last == 0, "{k} out of order");
            last = at;
        }
        assert!(
            json.starts_with("{\n  \"task_type\": \"file_cleanup\",\n"),
            "{json}"
        );
        assert!(!json.ends_with('\n'));
        assert!(json.contains("\"duration_ms\": 5.0,"));
    }

    #[test]
    fn status_file_is_ascii_with_rock_layout() {
        let mut extra = serde_json::Map::new();
        extra.insert("note".into(), "héllo 😀".into());
        let s = StatusFile {
            task_name: "t".into(),
            worker_ip: "10.0.0.1".into(),
            pid: None,
            status: StatusWord::Pending,
            last_run: "2026-11-23T02:44:47.166424".into(),
            error: None,
            extra,
        };
        let json = s.to_json();
        assert_eq!(
            json,
            "{\n  \"task_name\": \"t\",\n  \"worker_ip\": \"10.0.0.1\",\n  \"pid\": null,\n  \"status\": \"pending\",\n  \"last_run\": \"2026-11-23T02:44:47.166424\",\n  \"error\": null,\n  \"extra\": {\n    \"note\": \"h\\u00e9llo \\ud83d\\ude00\"\n  }\n}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["extra"]["note"], "héllo 😀");
    }

    #[test]
    fn truncates_errors_keeping_the_head() {
        let long = "é".repeat(3000);
        let t = truncate_error(&long);
        assert!(t.len() <= ERROR_MAX_BYTES && t.ends_with(TRUNCATED_SUFFIX) && t.starts_with('é'));
        assert_eq!(truncate_error("short"), "short");
    }
}
