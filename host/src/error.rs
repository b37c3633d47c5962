//! Error types callers branch on. Orchestration code uses `anyhow` with context instead.

use std::path::PathBuf;

/// Why a plugin file was not loaded. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {}: {reason}", path.display())]
pub struct LoadError {
    /// The .wasm file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
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
    /// Name for a run report's `error_type`.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Deadline { .. } => "TimeoutError",
            RunError::Memory { .. } => "MemoryLimitExceeded",
            RunError::Trap(_) => "Trap",
            RunError::Task(_) => "TaskError",
            RunError::InvalidResult(_) => "InvalidResult",
        }
    }
}
