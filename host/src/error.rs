//! Error types callers branch on. Orchestration code uses `anyhow` with context instead.

use std::path::PathBuf;

/// Why a plugin file was not loaded. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {}: {kind}", path.display())]
pub struct LoadError {
    /// The .wasm file (or the plugins directory, for [`LoadErrorKind::ListDir`]).
    pub path: PathBuf,
    /// What was wrong with it.
    pub kind: LoadErrorKind,
}

impl LoadError {
    /// A load error for `path`.
    pub fn new(path: impl Into<PathBuf>, kind: LoadErrorKind) -> LoadError {
        LoadError {
            path: path.into(),
            kind,
        }
    }
}

/// The kinds of [`LoadError`]; callers branch on them (e.g. a refused new version keeps the
/// previous one running).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadErrorKind {
    /// The plugins directory could not be listed.
    #[error("cannot list the plugins directory: {0}")]
    ListDir(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// The compiler thread died.
    #[error("compiler thread failed: {0}")]
    CompilerThread(String),
    /// Not a component wasmtime accepts.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// No `quarry:task` export, or one of another version (the message names both).
    #[error("{0}")]
    Version(String),
    /// Imports the linker cannot satisfy.
    #[error("cannot be linked: {0}")]
    Link(String),
    /// The `quarry:task` exports are missing or have the wrong types.
    #[error("does not have the quarry:task exports: {0}")]
    Exports(String),
    /// `describe` failed or answered something invalid.
    #[error("{0}")]
    Describe(String),
    /// The new version's `validate-config` refuses (or fails on) a configured task's params.
    #[error("version {version}: its validate-config {}", if *.crashed { format!("failed on the params of {field}: {reason}") } else { format!("rejects the params of {field}: {reason}") })]
    ParamsRefused {
        /// The plugin's version.
        version: String,
        /// The config entry whose params were refused (`scheduler.tasks[N]`).
        field: String,
        /// The plugin's message, or how it failed.
        reason: String,
        /// The check trapped or failed instead of answering.
        crashed: bool,
    },
    /// The new version's grants for a configured task's params are refused: a target on a
    /// protected path, or more than the running version's without the config allowing it.
    #[error("version {version}: its grants for {field} are refused: {reason}")]
    GrantsRefused {
        /// The plugin's version.
        version: String,
        /// The config entry (`scheduler.tasks[N]`).
        field: String,
        /// What is wrong (what grew, or the protected path).
        reason: String,
    },
    /// Several files claim one task name.
    #[error("{} files claim the task name {name:?} ({}); {}", files.len(), files.join(", "), match keeping { Some(k) => format!("keeping {}, refusing this one", k.display()), None => "none of them is loaded until only one does".into() })]
    DuplicateName {
        /// The contested name.
        name: String,
        /// Every file claiming it.
        files: Vec<String>,
        /// The incumbent kept, if any.
        keeping: Option<PathBuf>,
    },
    /// A new version of a loaded file failed; the previous version keeps running.
    #[error("{cause}; still running the previous version {previous_version}")]
    KeptPrevious {
        /// Why the new version failed.
        cause: Box<LoadErrorKind>,
        /// The version still running.
        previous_version: String,
    },
}

/// Why a run of a task on one worker failed before the task could answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The run did not finish within its wall-clock deadline.
    #[error("deadline of {secs:.1}s exceeded; the run was stopped")]
    Deadline {
        /// The deadline in seconds.
        secs: f64,
    },
    /// The guest tried to use more memory than allowed.
    #[error("memory limit of {mib} MiB exceeded: {detail}")]
    Memory {
        /// The limit.
        mib: u64,
        /// The trap or message that followed.
        detail: String,
    },
    /// The guest trapped (panic, unreachable, out-of-bounds access, …).
    #[error("task trapped: {0}")]
    Trap(String),
    /// The task returned an error.
    #[error("{0}")]
    Task(String),
    /// The task's answer broke the interface contract (e.g. detail not a JSON object).
    #[error("task returned an invalid result: {0}")]
    InvalidResult(String),
}

impl RunError {
    /// Its kind, for a run report's `error_type`.
    pub fn kind(&self) -> ErrorType {
        match self {
            RunError::Deadline { .. } => ErrorType::Timeout,
            RunError::Memory { .. } => ErrorType::MemoryLimitExceeded,
            RunError::Trap(_) => ErrorType::Trap,
            RunError::Task(_) => ErrorType::TaskError,
            RunError::InvalidResult(_) => ErrorType::InvalidResult,
        }
    }
}

/// A run report's `error_type`: what kind of error ended a run on a worker. Serialized under
/// ROCK's names where ROCK has one (it writes Python exception class names there), so that
/// readers of ROCK's reports keep working; code branches on the variant, never on the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorType {
    /// A deadline passed: a host call's, the run's or the tick's.
    #[serde(rename = "TimeoutError")]
    Timeout,
    /// The worker could not be reached (discovery refreshes early after one).
    #[serde(rename = "ConnectionError")]
    Unreachable,
    /// A file, directory or program was missing on the worker.
    NotFound,
    /// The worker or the host refused a call (size limit, invalid argument).
    Rejected,
    /// Any other worker failure.
    WorkerError,
    /// The task answered `failed` (ROCK's name).
    TaskResultFailed,
    /// The run exceeded its memory limit.
    MemoryLimitExceeded,
    /// The guest trapped.
    Trap,
    /// The task returned an error instead of an outcome.
    TaskError,
    /// The task's answer broke the interface contract.
    InvalidResult,
    /// The run was cancelled through the admin API (Python's `asyncio.CancelledError`).
    #[serde(rename = "CancelledError")]
    Cancelled,
    /// The task is quarantined on the worker: the run was not started.
    Quarantined,
}

impl ErrorType {
    /// The name written into reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Timeout => "TimeoutError",
            ErrorType::Unreachable => "ConnectionError",
            ErrorType::NotFound => "NotFound",
            ErrorType::Rejected => "Rejected",
            ErrorType::WorkerError => "WorkerError",
            ErrorType::TaskResultFailed => "TaskResultFailed",
            ErrorType::MemoryLimitExceeded => "MemoryLimitExceeded",
            ErrorType::Trap => "Trap",
            ErrorType::TaskError => "TaskError",
            ErrorType::InvalidResult => "InvalidResult",
            ErrorType::Cancelled => "CancelledError",
            ErrorType::Quarantined => "Quarantined",
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_serialize_under_their_report_names() {
        for t in [
            ErrorType::Timeout,
            ErrorType::Unreachable,
            ErrorType::NotFound,
            ErrorType::Rejected,
            ErrorType::WorkerError,
            ErrorType::TaskResultFailed,
            ErrorType::MemoryLimitExceeded,
            ErrorType::Trap,
            ErrorType::TaskError,
            ErrorType::InvalidResult,
            ErrorType::Cancelled,
            ErrorType::Quarantined,
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<ErrorType>(&json).unwrap(), t);
        }
        assert_eq!(ErrorType::Unreachable.as_str(), "ConnectionError");
        assert_eq!(ErrorType::Timeout.as_str(), "TimeoutError");
    }

    #[test]
    fn load_errors_read_as_before() {
        let e = LoadError::new(
            "/p/a.wasm",
            LoadErrorKind::KeptPrevious {
                cause: Box::new(LoadErrorKind::ParamsRefused {
                    version: "0.2.0".into(),
                    field: "scheduler.tasks[0]".into(),
                    reason: "bad".into(),
                    crashed: false,
                }),
                previous_version: "0.1.0".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "plugin /p/a.wasm: version 0.2.0: its validate-config rejects the params of \
             scheduler.tasks[0]: bad; still running the previous version 0.1.0"
        );
        let d = LoadErrorKind::DuplicateName {
            name: "x".into(),
            files: vec!["a".into(), "b".into()],
            keeping: None,
        };
        assert_eq!(
            d.to_string(),
            "2 files claim the task name \"x\" (a, b); none of them is loaded until only one does"
        );
    }
}
