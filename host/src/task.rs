//! Domain types for tasks: what a plugin says about itself and what a run produced.
//! These are what the scheduler, reports and CLI speak; WIT types stop at `runtime/`.

use std::fmt;
use std::time::Duration;

/// A task's name: lower-case ASCII letters, digits and `_`, starting with a letter. It names
/// the plugin, the config entry (`task_class`), status files and reports.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskName(String);

impl TaskName {
    /// Checks and wraps a name.
    pub fn new(name: &str) -> Result<Self, String> {
        let ok = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(TaskName(name.to_string()))
        } else {
            Err(format!(
                "task name {name:?} is invalid: use 1-64 lower-case letters, digits and '_', starting with a letter"
            ))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TaskName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TaskName::new(s)
    }
}

impl std::borrow::Borrow<str> for TaskName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Debug-formats as the quoted name (`"file_cleanup"`), as messages quote names.
impl fmt::Debug for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What started a tick: its interval, the admin API or the command line. One type for the
/// scheduler, the state database and the metrics (each adds its own encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The task's interval.
    Schedule,
    /// The admin API (`POST /api/v1/tasks/{task}/trigger`, tasksets).
    Api,
    /// A `quarry` CLI verb.
    Cli,
}

impl Trigger {
    /// How many values there are.
    pub const COUNT: usize = 3;

    /// The word the state database, the API and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Api => "api",
            Trigger::Cli => "cli",
        }
    }

    /// The trigger `text` names, if any.
    pub fn parse(text: &str) -> Option<Trigger> {
        [Trigger::Schedule, Trigger::Api, Trigger::Cli]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plugin reports about itself when loaded (`describe`).
#[derive(Clone, Debug)]
pub struct TaskMeta {
    /// Unique name.
    pub name: TaskName,
    /// The task's own version.
    pub version: String,
    /// False for tasks that start daemons.
    pub idempotent: bool,
    /// Interval used when the config gives none.
    pub default_interval: Duration,
    /// Short description of the params.
    pub params_doc: String,
}

/// How a run ended on one worker, as the task reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Done.
    Success,
    /// Started something long-lived.
    Running,
    /// Failed.
    Failed,
}

impl RunStatus {
    /// The word used in status files.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Running => "running",
            RunStatus::Failed => "failed",
        }
    }
}

/// A task's answer for one worker.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// Pid of a process it started that outlives the run.
    pub pid: Option<u32>,
    /// JSON object; becomes the status file's `extra`.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl RunOutcome {
    /// The error message of a failed outcome: the detail's `error` string if any.
    pub fn error_message(&self) -> Option<String> {
        match self.detail.get("error") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(v) if !v.is_null() => Some(v.to_string()),
            _ => None,
        }
    }
}
