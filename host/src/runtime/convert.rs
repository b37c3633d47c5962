//! WIT types ⇄ domain types. Nothing outside `runtime/` sees generated types.

use std::time::Duration;

use super::bindings::host as wit;
use super::bindings::{Grants, Metadata, Outcome, Status};
use crate::task::{RunOutcome, RunStatus, TaskMeta, TaskName};
use crate::workers::{Command, Output, Program, WorkerError};

/// A guest's command, with the time limit the host settled on.
pub(super) fn command(cmd: wit::Command, limit: Duration) -> Command {
    Command {
        program: match cmd.program {
            wit::Program::Argv(argv) => Program::Argv(argv),
            wit::Program::Shell(script) => Program::Shell(script),
        },
        cwd: cmd.cwd,
        env: cmd.env,
        timeout: limit,
    }
}

/// A short description of a program for debug logs: the program name only, never its
/// arguments (they may carry secrets).
pub(super) fn program_summary(program: &Program) -> String {
    match program {
        Program::Argv(argv) => argv.first().cloned().unwrap_or_default(),
        Program::Shell(_) => "/bin/sh -c <script>".to_string(),
    }
}

pub(super) fn output(out: Output) -> wit::Output {
    wit::Output {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    }
}

pub(super) fn error(err: WorkerError) -> wit::Error {
    match err {
        WorkerError::NotFound(m) => wit::Error::NotFound(m),
        WorkerError::Timeout(m) => wit::Error::Timeout(m),
        WorkerError::Unreachable(m) => wit::Error::Unreachable(m),
        WorkerError::Rejected(m) => wit::Error::Rejected(m),
        WorkerError::Other(m) => wit::Error::Other(m),
    }
}

/// A plugin's grants, as the host's domain type.
pub(super) fn grants(g: Grants) -> crate::grants::Grants {
    crate::grants::Grants {
        programs: g.programs,
        shell: g.shell,
        read_paths: g.read_paths,
        write_paths: g.write_paths,
        dry_run: g.dry_run,
    }
}

/// Checks a plugin's `describe` answer.
pub(super) fn metadata(meta: Metadata) -> Result<TaskMeta, String> {
    let name = TaskName::new(&meta.name).map_err(|e| format!("describe: {e}"))?;
    if meta.default_interval_seconds == 0 {
        return Err(format!(
            "describe: task {name} has a default interval of 0 seconds"
        ));
    }
    if meta.version.trim().is_empty() {
        return Err(format!("describe: task {name} reports an empty version"));
    }
    Ok(TaskMeta {
        name,
        version: meta.version,
        idempotent: meta.idempotent,
        default_interval: Duration::from_secs(meta.default_interval_seconds.into()),
        params_doc: meta.params_doc,
    })
}

/// Checks a task's `run` answer: the detail must be a JSON object.
pub(super) fn outcome(out: Outcome) -> Result<RunOutcome, String> {
    let detail = match serde_json::from_str::<serde_json::Value>(&out.detail) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(other) => {
            return Err(format!(
                "detail must be a JSON object, got {}",
                json_kind(&other)
            ));
        }
        Err(e) => return Err(format!("detail is not valid JSON: {e}")),
    };
    let status = match out.status {
        Status::Success => RunStatus::Success,
        Status::Running => RunStatus::Running,
        Status::Failed => RunStatus::Failed,
    };
    if status == RunStatus::Running && out.pid.is_none() {
        return Err("status running without a pid: a started process must be reported".into());
    }
    Ok(RunOutcome {
        status,
        pid: out.pid,
        detail,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
