//! Settling a run: what a task's result (or its failure) means for the final status file,
//! the report row and the gate's memory. Pure: every input is given, nothing is read.

use crate::error::{ErrorType, RunError};
use crate::report::{StatusFile, StatusWord, WorkerOutcome, WorkerResult, truncate_error};
use crate::task::{RunOutcome, RunStatus};

use super::WorkerRun;
use super::gate::{Previous, Recorded};

/// Everything a finished run decides.
#[derive(Clone, Debug)]
pub struct Settled {
    /// The final status file.
    pub status: StatusFile,
    /// What the gate remembers once that file is written.
    pub recorded: Recorded,
    /// The report row and the task's detail.
    pub run: WorkerRun,
}

/// What the gate remembers before the task answers: the live process handed to it, if any,
/// so that a run that fails part-way does not orphan it.
pub fn before_run(previous: Option<Previous>) -> Recorded {
    Recorded {
        running: false,
        pid: previous.map(|p| p.pid),
        start_time: previous.and_then(|p| p.start_time),
    }
}

/// The pid whose start time must be read from `/proc` before settling: a process the task
/// reports that is not the one handed to it.
pub fn new_process(
    result: &Result<RunOutcome, RunError>,
    previous: Option<Previous>,
) -> Option<u32> {
    match result {
        Ok(out) => out.pid.filter(|pid| previous.is_none_or(|p| p.pid != *pid)),
        Err(_) => None,
    }
}

/// Settles a run.
///
/// - `pending`: the status file written before the run (it carries the handed-back process).
/// - `result`: the task's answer, or why it gave none.
/// - `previous`: the live process the gate found (handed to the task as `previous-pid`).
/// - `new_start_time`: the start time of [`new_process`]'s pid, when it was read.
///
/// A task that answers `success` with a pid it launched now reports `started`; `running`
/// is `started`; `failed` is `TaskResultFailed` with the task's error. A run without an
/// answer fails (a deadline: `timeout`) and keeps the handed-back process on record.
pub fn settle(
    pending: StatusFile,
    result: Result<RunOutcome, RunError>,
    previous: Option<Previous>,
    new_start_time: Option<u64>,
) -> Settled {
    let mut status = pending;
    let row = |outcome, error_type: Option<ErrorType>, error: Option<String>| WorkerResult {
        worker_ip: status.worker_ip.clone(),
        outcome,
        error_type,
        error: error.map(|e| truncate_error(&e)),
    };
    match result {
        Ok(out) => {
            let previous_pid = previous.map(|p| p.pid);
            let start_time = match out.pid {
                Some(pid) if previous_pid == Some(pid) => previous.and_then(|p| p.start_time),
                Some(_) => new_start_time,
                None => None,
            };
            let (outcome, error) = match out.status {
                RunStatus::Success if out.pid.is_some() && out.pid != previous_pid => {
                    (WorkerOutcome::Started, None)
                }
                RunStatus::Success => (WorkerOutcome::Success, None),
                RunStatus::Running => (WorkerOutcome::Started, None),
                RunStatus::Failed => (
                    WorkerOutcome::Failed,
                    Some(
                        out.error_message()
                            .unwrap_or_else(|| "task returned failed status".into()),
                    ),
                ),
            };
            let result = row(
                outcome,
                error.as_ref().map(|_| ErrorType::TaskResultFailed),
                error.clone(),
            );
            status.status = out.status.into();
            status.pid = out.pid;
            status.error = error.map(|e| truncate_error(&e));
            status.extra = out.detail.clone();
            status.set_start_time(start_time);
            Settled {
                status,
                recorded: Recorded {
                    running: out.status == RunStatus::Running,
                    pid: out.pid,
                    start_time,
                },
                run: WorkerRun {
                    result,
                    detail: Some(out.detail),
                    pid: out.pid,
                },
            }
        }
        Err(e) => {
            let msg = e.to_string();
            let outcome = match e {
                RunError::Deadline { .. } => WorkerOutcome::Timeout,
                _ => WorkerOutcome::Failed,
            };
            let result = row(outcome, Some(e.kind()), Some(msg.clone()));
            status.status = StatusWord::Failed;
            status.error = Some(truncate_error(&msg));
            let pid = status.pid;
            Settled {
                status,
                recorded: before_run(previous),
                run: WorkerRun {
                    result,
                    detail: None,
                    pid,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::START_TIME_KEY;
    use serde_json::json;

    fn outcome(status: RunStatus, pid: Option<u32>, detail: serde_json::Value) -> RunOutcome {
        RunOutcome {
            status,
            pid,
            detail: detail.as_object().cloned().unwrap_or_default(),
        }
    }

    /// The pending file as run_on_worker writes it, with the handed-back process if any.
    fn pending(previous: Option<Previous>) -> StatusFile {
        let mut st = StatusFile::pending("t", "10.0.0.1");
        st.pid = previous.map(|p| p.pid);
        st.set_start_time(previous.and_then(|p| p.start_time));
        st
    }

    const DAEMON: Previous = Previous {
        pid: 100,
        running: false,
        start_time: Some(5),
    };

    struct Case {
        name: &'static str,
        result: Result<RunOutcome, RunError>,
        previous: Option<Previous>,
        new_start: Option<u64>,
        // Expected:
        outcome: WorkerOutcome,
        error_type: Option<ErrorType>,
        word: StatusWord,
        pid: Option<u32>,
        start: Option<u64>,
        running: bool,
        error: Option<&'static str>,
    }

    #[test]
    fn settles_every_kind_of_result() {
        let cases = [
            Case {
                name: "plain success",
                result: Ok(outcome(RunStatus::Success, None, json!({"n": 1}))),
                previous: None,
                new_start: None,
                outcome: WorkerOutcome::Success,
                error_type: None,
                word: StatusWord::Success,
                pid: None,
                start: None,
                running: false,
                error: None,
            },
            Case {
                name: "success launching a daemon is started",
                result: Ok(outcome(RunStatus::Success, Some(200), json!({}))),
                previous: None,
                new_start: Some(9),
                outcome: WorkerOutcome::Started,
                error_type: None,
                word: StatusWord::Success,
                pid: Some(200),
                start: Some(9),
                running: false,
                error: None,
            },
            Case {
                name: "success handing back the same daemon keeps its start time",
                result: Ok(outcome(RunStatus::Success, Some(100), json!({}))),
                previous: Some(DAEMON),
                new_start: None,
                outcome: WorkerOutcome::Success,
                error_type: None,
                word: StatusWord::Success,
                pid: Some(100),
                start: Some(5),
                running: false,
                error: None,
            },
            Case {
                name: "success with a replacement daemon",
                result: Ok(outcome(RunStatus::Success, Some(101), json!({}))),
                previous: Some(DAEMON),
                new_start: Some(6),
                outcome: WorkerOutcome::Started,
                error_type: None,
                word: StatusWord::Success,
                pid: Some(101),
                start: Some(6),
                running: false,
                error: None,
            },
            Case {
                name: "running job",
                result: Ok(outcome(RunStatus::Running, Some(300), json!({}))),
                previous: None,
                new_start: None,
                outcome: WorkerOutcome::Started,
                error_type: None,
                word: StatusWord::Running,
                pid: Some(300),
                start: None,
                running: true,
                error: None,
            },
            Case {
                name: "failed with the task's message",
                result: Ok(outcome(
                    RunStatus::Failed,
                    None,
                    json!({"error": "disk gone"}),
                )),
                previous: None,
                new_start: None,
                outcome: WorkerOutcome::Failed,
                error_type: Some(ErrorType::TaskResultFailed),
                word: StatusWord::Failed,
                pid: None,
                start: None,
                running: false,
                error: Some("disk gone"),
            },
            Case {
                name: "failed without a message",
                result: Ok(outcome(RunStatus::Failed, None, json!({}))),
                previous: None,
                new_start: None,
                outcome: WorkerOutcome::Failed,
                error_type: Some(ErrorType::TaskResultFailed),
                word: StatusWord::Failed,
                pid: None,
                start: None,
                running: false,
                error: Some("task returned failed status"),
            },
            Case {
                name: "deadline keeps the handed-back daemon on record",
                result: Err(RunError::Deadline { secs: 1.5 }),
                previous: Some(DAEMON),
                new_start: None,
                outcome: WorkerOutcome::Timeout,
                error_type: Some(ErrorType::Timeout),
                word: StatusWord::Failed,
                pid: Some(100),
                start: Some(5),
                running: false,
                error: Some("deadline of 1.5s exceeded; the run was stopped"),
            },
            Case {
                name: "trap",
                result: Err(RunError::Trap("unreachable".into())),
                previous: None,
                new_start: None,
                outcome: WorkerOutcome::Failed,
                error_type: Some(ErrorType::Trap),
                word: StatusWord::Failed,
                pid: None,
                start: None,
                running: false,
                error: Some("task trapped: unreachable"),
            },
        ];
        for c in cases {
            let s = settle(pending(c.previous), c.result, c.previous, c.new_start);
            let r = &s.run.result;
            assert_eq!(r.outcome, c.outcome, "{}", c.name);
            assert_eq!(r.error_type, c.error_type, "{}", c.name);
            assert_eq!(r.error.as_deref(), c.error, "{}", c.name);
            assert_eq!(r.worker_ip, "10.0.0.1", "{}", c.name);
            assert_eq!(s.status.status, c.word, "{}", c.name);
            assert_eq!(s.status.pid, c.pid, "{}", c.name);
            assert_eq!(s.status.start_time(), c.start, "{}", c.name);
            assert_eq!(s.status.error.as_deref(), c.error, "{}", c.name);
            let want = Recorded {
                running: c.running,
                pid: c.pid,
                start_time: c.start,
            };
            assert_eq!(s.recorded, want, "{}", c.name);
        }
    }

    #[test]
    fn detail_becomes_extra_without_a_forged_start_time() {
        let detail = json!({"pid": 7, START_TIME_KEY: 1, "images": ["a"]});
        let s = settle(
            pending(None),
            Ok(outcome(RunStatus::Running, Some(7), detail)),
            None,
            None,
        );
        assert_eq!(s.status.extra.get("images"), Some(&json!(["a"])));
        assert_eq!(
            s.status.start_time(),
            None,
            "the task cannot set Quarry's key"
        );
        assert!(s.run.detail.unwrap().contains_key("images"));
    }

    #[test]
    fn errors_are_clipped_in_the_file_and_the_report() {
        let long = "x".repeat(10_000);
        let s = settle(pending(None), Err(RunError::Task(long)), None, None);
        assert!(s.status.error.unwrap().len() <= crate::report::ERROR_MAX_BYTES);
        assert!(s.run.result.error.unwrap().len() <= crate::report::ERROR_MAX_BYTES);
    }

    #[test]
    fn only_a_new_pid_needs_its_start_time() {
        let ok = |pid| Ok(outcome(RunStatus::Success, pid, json!({})));
        assert_eq!(new_process(&ok(Some(100)), Some(DAEMON)), None);
        assert_eq!(new_process(&ok(Some(101)), Some(DAEMON)), Some(101));
        assert_eq!(new_process(&ok(Some(101)), None), Some(101));
        assert_eq!(new_process(&ok(None), None), None);
        assert_eq!(new_process(&Err(RunError::Trap("t".into())), None), None);
    }
}
