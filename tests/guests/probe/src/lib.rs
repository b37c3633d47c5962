//! # probe: a test guest with one behaviour per `mode`
//!
//! Quarry's integration tests load this component and pick what it does through its params:
//! `{"mode": "<mode>", ...mode-specific fields}`. Unknown fields are ignored.
//!
//! | mode      | fields                        | behaviour |
//! |-----------|-------------------------------|-----------|
//! | `ok`      |                               | success, detail `{worker, address, version}` |
//! | `v1only`  |                               | like `ok`; refused by validation unless the version is 1.x |
//! | `fail`    |                               | `Outcome::failed("probe failed on purpose")` |
//! | `error`   |                               | `Err("probe error on purpose")` |
//! | `trap`    |                               | panics (a wasm trap: panic = abort) |
//! | `loop`    |                               | spins forever (only the epoch deadline stops it) |
//! | `alloc`   | `mib` (default 512)           | allocates and touches that many MiB, then success |
//! | `sleep`   | `secs`, `timeout_ms`?         | runs `sleep <secs>` on the worker (blocks in a host call) |
//! | `exec`    | `argv`, `timeout_ms`?         | runs the argv; detail `{stdout, stderr, exit_code}` |
//! | `shell`   | `script`, `timeout_ms`?       | runs the script; same detail |
//! | `read`    | `path`                        | `read_file`; detail `{content}` |
//! | `write`   | `path`, `content`             | `write_file`; detail `{written: true}` |
//! | `running` | `pid`                         | `Outcome::running(pid, {})` |
//! | `daemon`  | `secs` (default 300)          | starts `sleep secs` detached; `Outcome::running(its pid)` |
//! | `invalid` |                               | fails validation: "probe: invalid on purpose" |
//! | `dryrun`  |                               | success, detail `{dry_run: <host dry-run()>}` |
//!
//! Any mode with a `grants` field (`{programs, shell, read_paths, write_paths, dry_run}`, all
//! optional) declares those grants; without it the probe is undeclared.
//!
//! Host-call errors are not run failures here: `sleep`, `exec`, `shell`, `read` and `write`
//! succeed with detail `{error_kind, error}` (kinds `not-found`, `timeout`, `unreachable`,
//! `rejected`, `other`) so that tests can check exactly what the guest saw.

#![deny(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use quarry_sdk::host::{self, Command, Error};
use quarry_sdk::{Metadata, Outcome, Task};
use serde::Deserialize;
use serde_json::{Value, json};

/// Every mode `check` accepts.
const MODES: &[&str] = &[
    "ok", "fail", "error", "trap", "loop", "alloc", "sleep", "exec", "shell", "read", "write",
    "running", "invalid", "v1only", "daemon", "managed", "dryrun",
];

/// `alloc` allocates this many MiB unless `mib` says otherwise: more than a guest should be
/// allowed, so that a memory limit stops it.
const DEFAULT_ALLOC_MIB: u64 = 512;

/// Bytes per MiB (the `alloc` chunk size).
const MIB_BYTES: usize = 1 << 20;

/// The params: a mode and whatever that mode reads.
#[derive(Debug, Deserialize)]
pub struct Params {
    /// The behaviour; one of [`MODES`].
    pub mode: String,
    /// `alloc`: MiB to allocate.
    pub mib: Option<u64>,
    /// `sleep`: seconds to sleep (a number or a string `sleep` accepts).
    pub secs: Option<Value>,
    /// `exec`: the argv to run.
    pub argv: Option<Vec<String>>,
    /// `shell`: the script to run.
    pub script: Option<String>,
    /// `sleep`, `exec`, `shell`: the command's time limit in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `read`, `write`: the file on the worker.
    pub path: Option<String>,
    /// `write`: what to write.
    pub content: Option<String>,
    /// `running`: the pid to report.
    pub pid: Option<u32>,
    /// The grants to declare; none: undeclared.
    pub grants: Option<GrantsParam>,
}

/// The `grants` param: what [`Task::grants`] answers.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GrantsParam {
    /// Allowed programs.
    pub programs: Vec<String>,
    /// Shell allowed.
    pub shell: bool,
    /// Readable prefixes.
    pub read_paths: Vec<String>,
    /// Writable prefixes.
    pub write_paths: Vec<String>,
    /// Dry runs supported.
    pub dry_run: bool,
}

/// The task.
pub struct Probe;

impl Task for Probe {
    type Params = Params;
    type Config = Params;

    fn describe() -> Metadata {
        // Built as package `probe_daemon`, the same source is a non-idempotent task of that name.
        let daemon = env!("CARGO_PKG_NAME") == "probe_daemon";
        Metadata::new(
            if daemon { "probe_daemon" } else { "probe" },
            env!("CARGO_PKG_VERSION"),
        )
        .idempotent(!daemon)
        .default_interval_seconds(60)
        .params_doc(
            "mode: ok | fail | error | trap | loop | alloc (mib) | sleep (secs, timeout_ms) | \
                 exec (argv, timeout_ms) | shell (script, timeout_ms) | read (path) | \
                 write (path, content) | running (pid) | daemon (secs) | managed | invalid",
        )
    }

    fn grants(config: &Params) -> Option<quarry_sdk::Grants> {
        let g = config.grants.as_ref()?;
        let mut out = quarry_sdk::Grants::new().shell(g.shell).dry_run(g.dry_run);
        for p in &g.programs {
            out = out.program(p);
        }
        for p in &g.read_paths {
            out = out.read_path(p);
        }
        for p in &g.write_paths {
            out = out.write_path(p);
        }
        Some(out)
    }

    fn check(params: Params) -> Result<Params, String> {
        match params.mode.as_str() {
            "invalid" => Err("probe: invalid on purpose".into()),
            "v1only" if !env!("CARGO_PKG_VERSION").starts_with("1.") => Err(format!(
                "probe {}: mode v1only needs version 1",
                env!("CARGO_PKG_VERSION")
            )),
            m if MODES.contains(&m) => Ok(params),
            m => Err(format!("unknown mode {m:?}")),
        }
    }

    fn run(params: Params) -> Result<Outcome, String> {
        match params.mode.as_str() {
            "ok" | "v1only" => {
                let w = host::worker();
                Ok(Outcome::success(json!({
                    "worker": w.ip,
                    "address": w.address,
                    "version": env!("CARGO_PKG_VERSION"),
                })))
            }
            "dryrun" => Ok(Outcome::success(json!({ "dry_run": host::dry_run() }))),
            "fail" => Ok(Outcome::failed("probe failed on purpose")),
            "error" => Err("probe error on purpose".into()),
            "trap" => panic!("probe trap on purpose"),
            "loop" => spin_forever(),
            "alloc" => Ok(alloc(params.mib.unwrap_or(DEFAULT_ALLOC_MIB))),
            "sleep" => {
                let secs = match params.secs {
                    Some(Value::String(s)) => s,
                    Some(v) => v.to_string(),
                    None => return Err("sleep: missing \"secs\"".into()),
                };
                Ok(execute(
                    Command::argv(["sleep".to_string(), secs]),
                    params.timeout_ms,
                ))
            }
            "exec" => {
                let argv = params.argv.ok_or("exec: missing \"argv\"")?;
                Ok(execute(Command::argv(argv), params.timeout_ms))
            }
            "shell" => {
                let script = params.script.ok_or("shell: missing \"script\"")?;
                Ok(execute(Command::shell(script), params.timeout_ms))
            }
            "read" => {
                let path = params.path.ok_or("read: missing \"path\"")?;
                Ok(match host::read_file(&path) {
                    Ok(content) => Outcome::success(json!({ "content": content })),
                    Err(e) => error_outcome(&e),
                })
            }
            "write" => {
                let path = params.path.ok_or("write: missing \"path\"")?;
                let content = params.content.unwrap_or_default();
                Ok(match host::write_file(&path, &content) {
                    Ok(()) => Outcome::success(json!({ "written": true })),
                    Err(e) => error_outcome(&e),
                })
            }
            "running" => {
                let pid = params.pid.ok_or("running: missing \"pid\"")?;
                Ok(Outcome::running(pid, json!({})))
            }
            "daemon" => {
                // Starts `sleep <secs>` detached from the worker agent and reports its pid.
                let secs = params
                    .secs
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "300".into());
                let script = format!(
                    "nohup sleep {} >/dev/null 2>&1 </dev/null & echo $!",
                    quarry_sdk::shell::quote(secs.trim_matches('"'))
                );
                match Command::shell(script).run() {
                    Ok(out) => match out.stdout.trim().parse::<u32>() {
                        Ok(pid) => Ok(Outcome::running(pid, json!({"launched": "sleep"}))),
                        Err(_) => Ok(Outcome::failed(format!("no pid in {:?}", out.stdout))),
                    },
                    Err(e) => Err(format!("launch failed: {e:?}")),
                }
            }
            "managed" => {
                // A daemon the task manages while still running every tick.
                if let Some(pid) = host::previous_pid() {
                    return Ok(Outcome::managing(pid, json!({"action": "kept"})));
                }
                let script = "nohup sleep 300 >/dev/null 2>&1 </dev/null & echo $!";
                match Command::shell(script).run() {
                    Ok(out) => match out.stdout.trim().parse::<u32>() {
                        Ok(pid) => Ok(Outcome::managing(pid, json!({"action": "launched"}))),
                        Err(_) => Ok(Outcome::failed(format!("no pid in {:?}", out.stdout))),
                    },
                    Err(e) => Err(format!("launch failed: {e:?}")),
                }
            }
            // `invalid` never gets here: the SDK checks the params before every run.
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(Probe);

/// Busy-loops forever. `black_box` makes every iteration observable to the optimiser, so the
/// loop cannot be removed or turned into a trap.
fn spin_forever() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Allocates `mib` MiB in 1 MiB chunks, writes every byte, and keeps all chunks alive until
/// the end.
fn alloc(mib: u64) -> Outcome {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut chunk = vec![0u8; MIB_BYTES];
        chunk.fill(black_box(i as u8 | 1));
        chunks.push(black_box(chunk));
    }
    let touched: usize = black_box(&chunks).iter().map(Vec::len).sum();
    Outcome::success(json!({ "allocated_mib": mib, "touched_bytes": touched }))
}

/// Runs `cmd` (with an optional time limit) and reports what came back.
fn execute(cmd: Command, timeout_ms: Option<u64>) -> Outcome {
    let cmd = match timeout_ms {
        Some(ms) => cmd.timeout(Duration::from_millis(ms)),
        None => cmd,
    };
    match cmd.run() {
        Ok(out) => Outcome::success(json!({
            "stdout": out.stdout,
            "stderr": out.stderr,
            "exit_code": out.exit_code,
        })),
        Err(e) => error_outcome(&e),
    }
}

/// A host error as a successful outcome with `{error_kind, error}`.
fn error_outcome(e: &Error) -> Outcome {
    let (kind, message) = match e {
        Error::NotFound(m) => ("not-found", m),
        Error::Timeout(m) => ("timeout", m),
        Error::Unreachable(m) => ("unreachable", m),
        Error::Rejected(m) => ("rejected", m),
        Error::Other(m) => ("other", m),
    };
    Outcome::success(json!({ "error_kind": kind, "error": message }))
}
