//! # quarry-sdk: write Quarry maintenance tasks in Rust
//!
//! A Quarry task is a WebAssembly component that the Quarry host runs on every worker of a
//! fleet. The task never touches the worker directly: it asks the host to [`host::execute`] a
//! command, [`host::read_file`] or [`host::write_file`], and the host forwards each call to the
//! worker the run targets (a rocklet over HTTP, or the host machine itself for the `local`
//! worker).
//!
//! Module map:
//! - [`Task`] and [`export_task!`]: what a task implements and how it is exported.
//! - [`host`]: the calls a task makes to its worker, and [`host::Command`] to build commands.
//! - [`worker`]: the same calls behind the [`worker::Worker`] trait, so that a task's logic
//!   runs natively against `worker::fake::FakeWorker` (feature `fake`) in its tests.
//! - [`shell`]: quoting for the rare case where a task must run a shell script.
//! - [`text`]: cutting long output for reports.
//! - [`Metadata`], [`Outcome`], [`Status`]: what a task reports.
//! - [`Grants`]: what a task may do on a worker ([`Task::grants`]), which the host enforces.
//!
//! ```no_run
//! use quarry_sdk::{host, Metadata, Outcome, Task};
//! use serde::Deserialize;
//!
//! /// Params, parsed from the `params` map of the task's config entry.
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Params {
//!     path: String,
//! }
//!
//! /// Checked params: what `run` works with.
//! struct Config {
//!     path: String,
//! }
//!
//! struct DiskUsage;
//!
//! impl Task for DiskUsage {
//!     type Params = Params;
//!     type Config = Config;
//!
//!     fn describe() -> Metadata {
//!         Metadata::new("disk_usage", "0.1.0")
//!             .idempotent(true)
//!             .default_interval_seconds(600)
//!             .params_doc("path: directory whose file system is reported")
//!     }
//!
//!     fn check(params: Params) -> Result<Config, String> {
//!         if !params.path.starts_with('/') {
//!             return Err(format!("path {:?} must be absolute", params.path));
//!         }
//!         Ok(Config { path: params.path })
//!     }
//!
//!     fn run(config: Config) -> Result<Outcome, String> {
//!         // An argv runs without a shell: `config.path` cannot inject anything.
//!         let out = host::Command::argv(["df", "-P", config.path.as_str()])
//!             .run()
//!             .map_err(|e| format!("df failed: {e}"))?;
//!         if out.exit_code != 0 {
//!             return Ok(Outcome::failed(format!("df exited with {}: {}", out.exit_code, out.stderr)));
//!         }
//!         Ok(Outcome::success(serde_json::json!({ "df": out.stdout })))
//!     }
//! }
//!
//! quarry_sdk::export_task!(DiskUsage);
//! ```
#![deny(missing_docs)]

pub mod host;
pub mod paths;
pub mod shell;
pub mod text;
pub mod worker;

use serde::de::DeserializeOwned;

/// The WIT package version this SDK targets (`quarry:task@WIT_VERSION`).
pub const WIT_VERSION: &str = "0.1.1";

/// Static facts about a task, returned by [`Task::describe`].
#[derive(Debug, Clone)]
pub struct Metadata {
    name: String,
    version: String,
    idempotent: bool,
    default_interval_seconds: u32,
    params_doc: String,
}

impl Metadata {
    /// A task named `name` (lower-case letters, digits, `_`) at version `version`. It is
    /// idempotent and runs hourly unless the builder methods say otherwise.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Metadata {
            name: name.into(),
            version: version.into(),
            idempotent: true,
            default_interval_seconds: 3600,
            params_doc: String::new(),
        }
    }

    /// Whether running again while an earlier run's effects are under way is harmless. A task
    /// that starts a daemon and reports its pid is not idempotent.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// The interval used when the config gives none.
    pub fn default_interval_seconds(mut self, seconds: u32) -> Self {
        self.default_interval_seconds = seconds;
        self
    }

    /// A short description of the params, shown by `quarry plugins`.
    pub fn params_doc(mut self, doc: impl Into<String>) -> Self {
        self.params_doc = doc.into();
        self
    }
}

/// What a task may do on a worker for one config, returned by [`Task::grants`]. The host
/// checks every call of a run against it (narrowed by the operator's config) before the call
/// reaches the worker: a call outside it is answered [`host::Error::Rejected`] with a message
/// naming the grant.
///
/// ```
/// let grants = quarry_sdk::Grants::new()
///     .program("find")
///     .shell(false)
///     .read_path("/var/log/app")
///     .write_path("/var/cache/app")
///     .dry_run(true);
/// assert_eq!(grants.programs(), ["find"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    programs: Vec<String>,
    shell: bool,
    read_paths: Vec<String>,
    write_paths: Vec<String>,
    dry_run: bool,
}

impl Grants {
    /// Nothing granted: no program, no shell, no path, no dry run.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows running `program` as `argv[0]`: a bare name (`find`) allows any program with
    /// that base name (`find`, `/usr/bin/find`), an absolute path that exact path. Note that
    /// [`worker::HostWorker`]'s `pause` runs `sleep`.
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.programs.push(program.into());
        self
    }

    /// Allows (or not) `Command::shell` scripts, which can run anything.
    pub fn shell(mut self, shell: bool) -> Self {
        self.shell = shell;
        self
    }

    /// Allows reading under the absolute path prefix `path` (`read_file`, a command's `cwd`).
    pub fn read_path(mut self, path: impl Into<String>) -> Self {
        self.read_paths.push(path.into());
        self
    }

    /// Allows writing (and reading) under the absolute path prefix `path`, and declares it a
    /// target the task acts on: the host refuses a config in which it touches a protected
    /// path (`/`, `/etc`, home directories, ...).
    pub fn write_path(mut self, path: impl Into<String>) -> Self {
        self.write_paths.push(path.into());
        self
    }

    /// Declares that the task honours [`worker::Worker::dry_run`]: in a dry run it changes
    /// nothing and reports what it would do. The host never runs a task in a dry run without
    /// it.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// The allowed programs.
    pub fn programs(&self) -> &[String] {
        &self.programs
    }

    /// Whether shell scripts are allowed.
    pub fn allows_shell(&self) -> bool {
        self.shell
    }

    /// The readable path prefixes.
    pub fn read_paths(&self) -> &[String] {
        &self.read_paths
    }

    /// The writable path prefixes.
    pub fn write_paths(&self) -> &[String] {
        &self.write_paths
    }

    /// Whether the task honours dry runs.
    pub fn allows_dry_run(&self) -> bool {
        self.dry_run
    }
}

/// How a run ended on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The work is done.
    Success,
    /// The task started something that keeps running; the outcome carries its pid.
    Running,
    /// The work failed.
    Failed,
}

/// The result of a run on one worker. `detail` becomes the `extra` object of the worker's
/// status file; it always carries a `status` field, and an `error` field when failed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the run ended.
    pub status: Status,
    /// The pid of a process started by the task that outlives the run.
    pub pid: Option<u32>,
    /// A JSON object describing what happened.
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Outcome {
    /// A successful run. `detail` should be a JSON object; anything else is stored under
    /// the key `result`.
    pub fn success(detail: serde_json::Value) -> Self {
        Self::with(Status::Success, None, detail)
    }

    /// A run whose work is done while a daemon it manages (`pid`) keeps running: the host
    /// calls the task again every tick and hands the pid back through
    /// [`host::previous_pid`] while that process lives.
    pub fn managing(pid: u32, detail: serde_json::Value) -> Self {
        let mut o = Self::with(Status::Success, Some(pid), detail);
        o.detail.insert("pid".into(), pid.into());
        o
    }

    /// A run that started a process (a background job or a daemon) with the given pid that
    /// carries on the work: the host does not run the task on this worker until it exits.
    pub fn running(pid: u32, detail: serde_json::Value) -> Self {
        let mut o = Self::with(Status::Running, Some(pid), detail);
        o.detail.insert("pid".into(), pid.into());
        o
    }

    /// A failed run with an error message for the report.
    pub fn failed(error: impl Into<String>) -> Self {
        let mut o = Self::with(Status::Failed, None, serde_json::Value::Null);
        o.detail.insert("error".into(), error.into().into());
        o
    }

    /// A failed run with an error message and further detail fields (after `status` and
    /// `error`, in their order).
    pub fn failed_with(
        error: impl Into<String>,
        detail: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let mut o = Self::failed(error);
        o.detail.extend(detail);
        o
    }

    /// Adds or replaces one field of the detail object.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.insert(key.to_string(), value.into());
        self
    }

    fn with(status: Status, pid: Option<u32>, detail: serde_json::Value) -> Self {
        let mut map = match detail {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("result".into(), other);
                m
            }
        };
        let word = match status {
            Status::Success => "success",
            Status::Running => "running",
            Status::Failed => "failed",
        };
        map.entry("status").or_insert_with(|| word.into());
        Outcome {
            status,
            pid,
            detail: map,
        }
    }
}

/// A Quarry task. Implement it on a unit struct and export it with [`export_task!`].
///
/// Params are checked in one place, [`Task::check`], which turns them into the task's
/// [`Task::Config`]: the host asks for it when the config is loaded (`validate-config`), and
/// every run gets the checked config from it (`run` calls `check`, then [`Task::run`]).
pub trait Task {
    /// The task's params, deserialized from the JSON object built from the config entry's
    /// `params` map. Use `#[serde(deny_unknown_fields)]` so that typos are reported.
    type Params: DeserializeOwned;

    /// The checked params that [`Task::run`] works with (`Self::Params` itself when
    /// deserializing checks everything).
    type Config;

    /// Static facts about the task.
    fn describe() -> Metadata;

    /// Checks params beyond what deserialization checks (paths, ranges) and builds the config.
    /// The error names the bad param and value. Runs when the config is loaded, outside any
    /// run (no worker to call: [`host::worker`] answers an empty address), and again at the
    /// start of every run, before [`Task::run`].
    fn check(params: Self::Params) -> Result<Self::Config, String>;

    /// Runs the task on the current worker with the config [`Task::check`] built. Return `Err`
    /// (or [`Outcome::failed`]) when it failed; the message is reported for this worker.
    fn run(config: Self::Config) -> Result<Outcome, String>;

    /// What the task may do on a worker with `config`: the programs it runs, whether it uses a
    /// shell, the paths it reads and writes (its targets), and whether it honours dry runs.
    /// The host asks when the config is loaded and enforces the answer on every call.
    ///
    /// `None` (the default) declares nothing: the task is "undeclared", like a plugin built
    /// for WIT 0.1.0: unrestricted unless the operator's config narrows it, and never run in a
    /// dry run. (On the wire, `capabilities.requires` answers the error `"undeclared"`.)
    fn grants(config: &Self::Config) -> Option<Grants> {
        let _ = config;
        None
    }
}

/// Exports a [`Task`] implementation as the component's `quarry:task/task` interface.
///
/// Invoke it once, at the crate root of a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        // Exported names such as `quarry:task/task@0.1.1#run` only link for wasm; natively
        // (unit tests, docs) the task is plain Rust.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct QuarryTaskExport;
            impl $crate::__private::Guest for QuarryTaskExport {
                fn describe() -> $crate::__private::WitMetadata {
                    $crate::__private::describe::<$task>()
                }
                fn validate_config(params: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_config::<$task>(&params)
                }
                fn run(
                    params: ::std::string::String,
                ) -> ::std::result::Result<$crate::__private::WitOutcome, ::std::string::String> {
                    $crate::__private::run::<$task>(&params)
                }
            }
            impl $crate::__private::CapabilitiesGuest for QuarryTaskExport {
                fn requires(
                    params: ::std::string::String,
                ) -> ::std::result::Result<$crate::__private::WitGrants, ::std::string::String> {
                    $crate::__private::requires::<$task>(&params)
                }
            }
            $crate::__private::export_bindings!(QuarryTaskExport with_types_in $crate::__private::bindings);
        };
    };
}

/// Generated bindings and glue used by [`export_task!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::export_bindings;
    pub use crate::bindings::exports::quarry::task::capabilities::{
        Grants as WitGrants, Guest as CapabilitiesGuest,
    };
    pub use crate::bindings::exports::quarry::task::task::{
        Guest, Metadata as WitMetadata, Outcome as WitOutcome,
    };

    /// The generated bindings module, for the export macro.
    pub mod bindings {
        pub use crate::bindings::*;
    }

    use crate::bindings::exports::quarry::task::task::Status as WitStatus;
    use crate::{Outcome, Status, Task};

    fn parse<T: Task>(params: &str) -> Result<T::Params, String> {
        let raw = if params.trim().is_empty() {
            "{}"
        } else {
            params
        };
        serde_json::from_str(raw).map_err(|e| {
            // Positions refer to the JSON text the host built, not to the user's config.
            let msg = e.to_string();
            // The host already says "invalid params for <task>:", so this is the reason only.
            msg.split(" at line ").next().unwrap_or(&msg).to_string()
        })
    }

    pub fn describe<T: Task>() -> WitMetadata {
        let m = T::describe();
        WitMetadata {
            name: m.name,
            version: m.version,
            idempotent: m.idempotent,
            default_interval_seconds: m.default_interval_seconds,
            params_doc: m.params_doc,
        }
    }

    pub fn validate_config<T: Task>(params: &str) -> Result<(), String> {
        T::check(parse::<T>(params)?).map(|_| ())
    }

    /// The answer to `capabilities.requires`: the task's grants, or `"undeclared"`.
    pub fn requires<T: Task>(params: &str) -> Result<WitGrants, String> {
        let config = T::check(parse::<T>(params)?)?;
        let Some(g) = T::grants(&config) else {
            return Err("undeclared".to_string());
        };
        Ok(WitGrants {
            programs: g.programs,
            shell: g.shell,
            read_paths: g.read_paths,
            write_paths: g.write_paths,
            dry_run: g.dry_run,
        })
    }

    pub fn run<T: Task>(params: &str) -> Result<WitOutcome, String> {
        let config = T::check(parse::<T>(params)?)?;
        let Outcome {
            status,
            pid,
            detail,
        } = T::run(config)?;
        Ok(WitOutcome {
            status: match status {
                Status::Success => WitStatus::Success,
                Status::Running => WitStatus::Running,
                Status::Failed => WitStatus::Failed,
            },
            pid,
            detail: serde_json::Value::Object(detail).to_string(),
        })
    }
}

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "granted-task-plugin",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "quarry_sdk::__private::bindings",
    });
}
