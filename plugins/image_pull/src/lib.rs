//! # image_pull: Quarry's port of ROCK's `ImagePullTask`
//!
//! On every worker, pulls a list of Docker images in order, logging in to a registry first
//! where credentials are configured. The password never appears in a process's command line,
//! in Quarry's logs, in a status file or in a report.
//!
//! Module map:
//! - [`params`]: the params ([`params::Params`], raw) and their checks ([`params::Config`]).
//! - [`reference`]: the image reference grammar and the registry a login goes to (pure).
//! - [`secret`]: base64 passwords and redaction (pure).
//! - this file: the task, and [`pull_all`], which reaches the worker only through the SDK's
//!   [`Worker`] trait ([`HostWorker`] in the component, the SDK's `FakeWorker` in the native
//!   tests).
//!
//! How a password reaches `docker login --password-stdin` (every command is an argv; the two
//! login scripts below are constant text and get every value as a positional parameter, so
//! nothing configured is ever parsed as shell syntax):
//! - `registry_password_file` (a path on the worker): `/bin/sh -c FILE_LOGIN_SCRIPT` redirects
//!   the file into `docker login`'s stdin. Only the path travels; the secret stays on the worker.
//! - `registry_password` (base64, ROCK's form): the host's `execute` has no stdin, and its
//!   `env` is passed by the rocklet client as `env -- K=V` arguments (visible in `ps` for the
//!   whole command), so neither can carry the secret. Instead: `mktemp -d` makes a private
//!   (0700) directory, `write-file` puts the base64 text in it, and
//!   `/bin/sh -c LITERAL_LOGIN_SCRIPT` opens the file, deletes the directory, and pipes
//!   `base64 -d` into `docker login`; a failed login removes the directory again. The secret
//!   is in no argv, but it does travel in the `write-file` request body, which an unmodified
//!   rocklet logs: that is why the file form exists, and why a literal password is warned about
//!   at load and in every outcome.
//!
//! Any form of a literal password is redacted from every recorded text (outputs, errors).
//!
//! Differences from ROCK, on purpose:
//! - Synchronous and bounded: every call has a time limit and no pull starts after
//!   [`START_BUDGET`]; the outcome says what was pulled, what failed and what was not attempted
//!   (ROCK launched a detached `bash -c` job and reported `running` forever, bug 11).
//! - No shell text is built from params (ROCK pasted images, users and passwords into
//!   `bash -c '…'`, bug 16); the password is never on a command line (ROCK echoed it).
//! - A failed login or pull fails the run (ROCK only logged them); one failure does not stop
//!   the others.
//! - Registry detection follows Docker (`localhost` counts, and a tag is not a port); a login
//!   for an image without a registry host, or half a set of credentials, is a config error
//!   (ROCK skipped the login with a warning, or silently).

#![deny(missing_docs)]

pub mod params;
pub mod reference;
pub mod secret;

#[cfg(test)]
mod native_tests;

use quarry_sdk::host::ErrorExt as _;
use std::time::Duration;

use quarry_sdk::host::{Error, LogLevel, Output};
use quarry_sdk::worker::{HostWorker, Worker};
use quarry_sdk::{Grants, Metadata, Outcome, Task};
use serde_json::{Map, Value, json};

use crate::params::{Config, ImageEntry, Login, Params, Secret};
use crate::secret::Redactor;

/// Time limit of one `docker pull`. The host caps it at its per-call limit and at the time left
/// in the run; a cut-short pull resumes from its downloaded layers at the next run.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// Time limit of one `docker login` (a round trip to the registry through the daemon).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of the quick commands (`mktemp`, `rm`).
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(10);

/// No login or pull starts after this much of the run (the default run budget is 80 s, status
/// writes included); the remaining images are reported as not attempted.
pub const START_BUDGET: Duration = Duration::from_secs(60);

/// A call that times out this soon after it started hit the run's deadline (the host gave it
/// no time): nothing more is started.
const DEADLINE_PROBE: Duration = Duration::from_secs(2);

/// Characters of a command's error output kept in an error message.
const ERROR_HEAD_CHARS: usize = 500;

/// `$0` of the login scripts (it prefixes the shell's own error messages).
pub const SCRIPT_NAME: &str = "quarry-image-pull";

/// Logs in with the password read from a file on the worker. `$1` is the file, the remaining
/// arguments are the `docker … login … --password-stdin` argv. Constant text: values arrive as
/// positional parameters and are never parsed as shell syntax.
pub const FILE_LOGIN_SCRIPT: &str = r#"f=$1; shift
if [ ! -r "$f" ]; then printf 'password file %s is missing or not readable\n' "$f" >&2; exit 125; fi
exec "$@" <"$f""#;

/// Logs in with a base64 password written to a private temporary directory. `$1` is the
/// directory (removed as soon as the file is open, before docker runs), `$2` the file, the
/// remaining arguments the `docker … login … --password-stdin` argv.
pub const LITERAL_LOGIN_SCRIPT: &str = r#"d=$1; f=$2; shift 2
exec 3<"$f" || exit 125
rm -rf -- "$d"
base64 -d <&3 | "$@""#;

/// Where `mktemp -d -t` makes the private directory on a worker whose agent has no `TMPDIR`:
/// the write path image_pull declares for literal passwords (an agent with another `TMPDIR`
/// sees the write refused by its grants, and the login fails saying so).
pub const PRIVATE_DIR_PARENT: &str = "/tmp";

/// Name of the file holding a literal password inside its private directory.
pub const PASSWORD_FILE_NAME: &str = "password.b64";

/// The outcome message when no images are configured (ROCK's text).
const NO_IMAGES_MESSAGE: &str = "no images configured";

/// What `quarry plugins` shows for this task.
const PARAMS_DOC: &str = "\
Pulls Docker images in order (docker pull), logging in to their registry first where \
credentials are given; one failure does not stop the others. No pull starts after 60 s of the run.
  images: list (default []); each an image reference, or {image, registry_username, \
registry_password (base64, as in ROCK) | registry_password_file (a file on the worker holding the \
password)}. The registry is the image's first path segment when it contains '.' or ':' or is \
localhost. A literal registry_password travels in the rocklet's request (which the rocklet logs): \
prefer registry_password_file.
  docker_config: optional absolute path on the worker of Docker's config directory (where \
logins are stored); default: Docker's own ($DOCKER_CONFIG, else ~/.docker).";

/// The task.
pub struct ImagePull;

impl Task for ImagePull {
    type Params = Params;
    type Config = Config;

    fn describe() -> Metadata {
        Metadata::new("image_pull", "0.1.0")
            .idempotent(true)
            .default_interval_seconds(3600)
            .params_doc(PARAMS_DOC)
    }

    fn check(params: Params) -> Result<Config, String> {
        let config = Config::from_params(&params)?;
        warn_at_load(&config);
        Ok(config)
    }

    fn run(config: Config) -> Result<Outcome, String> {
        Ok(pull_all(&mut HostWorker::new(), &config))
    }

    /// `docker` (pull, login); for logins, `/bin/sh` with the constant login scripts, and for
    /// literal passwords `mktemp -d` under `/tmp` (the private directory the password file is
    /// written to) and `rm`. Docker's config directory, when configured, is a target; a
    /// password file is read.
    fn grants(config: &Config) -> Option<Grants> {
        let mut grants = Grants::new().program("docker").shell(false).dry_run(true);
        let logins: Vec<&Login> = config
            .images
            .iter()
            .filter_map(|i| i.login.as_ref())
            .collect();
        if !logins.is_empty() {
            grants = grants.program("/bin/sh");
        }
        if logins
            .iter()
            .any(|l| matches!(l.secret, Secret::Literal(_)))
        {
            grants = grants
                .program("mktemp")
                .program("rm")
                .write_path(PRIVATE_DIR_PARENT);
        }
        for l in &logins {
            if let Secret::File(path) = &l.secret {
                grants = grants.read_path(path);
            }
        }
        if let Some(dir) = &config.docker_config {
            grants = grants.write_path(dir);
        }
        Some(grants)
    }
}

/// Logs the config's warnings (literal passwords) through the host when the params are checked
/// at load. `check` also runs at the start of every run, where the warnings go into the
/// outcome instead of the log (one line per worker per tick would be noise, ROCK bug 5).
#[cfg(target_arch = "wasm32")]
fn warn_at_load(config: &Config) {
    // Outside a run (describe, validate-config) the host answers with an empty address.
    use quarry_sdk::host;
    if !config.warnings.is_empty() && host::worker().address.is_empty() {
        for warning in &config.warnings {
            host::warn(&format!("image_pull: {warning}"));
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn warn_at_load(_config: &Config) {}

// Exported only in the wasm build (see file_cleanup for why).
#[cfg(target_arch = "wasm32")]
quarry_sdk::export_task!(ImagePull);

/// Why the remaining images are not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// [`START_BUDGET`] is used up.
    TimeBudget,
    /// A call came back at once with a timeout: the run's deadline has passed.
    RunDeadline,
    /// The worker stopped answering.
    Unreachable,
    /// `docker` is not on the worker's PATH.
    NoDocker,
}

impl Stop {
    fn reason(self) -> &'static str {
        match self {
            Stop::TimeBudget => "time budget",
            Stop::RunDeadline => "run deadline reached",
            Stop::Unreachable => "worker unreachable",
            Stop::NoDocker => "docker not found on the worker",
        }
    }
}

/// What happened to one image.
struct Record {
    image: String,
    registry: Option<String>,
    /// `none`, `ok`, `failed` or `skipped` (not attempted).
    login: &'static str,
    login_error: Option<String>,
    pulled: bool,
    error: Option<String>,
    attempted: bool,
}

impl Record {
    fn to_json(&self) -> Value {
        json!({
            "image": self.image,
            "registry": self.registry,
            "login": self.login,
            "login_error": self.login_error,
            "pulled": self.pulled,
            "error": self.error,
        })
    }
}

/// One run: the worker, the config, and what is known so far.
struct Session<'a, W: Worker> {
    worker: &'a mut W,
    config: &'a Config,
    redactor: Redactor,
    /// The login each registry currently holds in Docker's config (set by this run).
    current: Vec<Login>,
    /// Logins that failed in this run, with their error: not retried.
    failed: Vec<(Login, String)>,
    stop: Option<Stop>,
}

/// Pulls the configured images on one worker with checked params.
pub fn pull_all(worker: &mut impl Worker, config: &Config) -> Outcome {
    // Strategy: with no images, succeed without touching the worker (ROCK's answer). Else, per
    // image in order: log in if credentials are given (once per registry and credentials),
    // then `docker pull`. Nothing starts after START_BUDGET, after the run's deadline, once the
    // worker is unreachable or when docker is missing; those images are "not attempted". Any
    // failed login or pull, or image not attempted, fails the run with every record kept.
    // A dry run takes another path: `preview_all`.
    let dry_run = worker.dry_run();
    if config.images.is_empty() {
        let mut result = json!({ "status": "success", "message": NO_IMAGES_MESSAGE });
        if dry_run {
            result["dry_run"] = true.into();
        }
        return Outcome::success(result);
    }
    let mut session = Session {
        worker,
        config,
        redactor: config.redactor(),
        current: Vec::new(),
        failed: Vec::new(),
        stop: None,
    };
    if dry_run {
        return session.preview_all();
    }
    let records: Vec<Record> = config.images.iter().map(|e| session.image(e)).collect();

    let pulled = records.iter().filter(|r| r.pulled).count();
    let not_attempted = records.iter().filter(|r| !r.attempted).count();
    let failed = records.len() - pulled - not_attempted;
    let logins_failed = records.iter().filter(|r| r.login == "failed").count();
    let mut detail = Map::new();
    detail.insert(
        "images".into(),
        records.iter().map(Record::to_json).collect(),
    );
    detail.insert("pulled_count".into(), pulled.into());
    detail.insert("failed_count".into(), failed.into());
    detail.insert("not_attempted_count".into(), not_attempted.into());
    detail.insert("login_failed_count".into(), logins_failed.into());
    if let Some(dir) = &config.docker_config {
        detail.insert("docker_config".into(), dir.clone().into());
    }
    detail.insert("warnings".into(), config.warnings.clone().into());

    let summary = format!(
        "image_pull: pulled {pulled} of {} images ({failed} failed, {not_attempted} not \
         attempted, {logins_failed} failed logins)",
        records.len()
    );
    let ok = failed == 0 && not_attempted == 0 && logins_failed == 0;
    session.worker.log(
        if ok { LogLevel::Info } else { LogLevel::Warn },
        &session.redactor.redact(&summary),
    );
    if ok {
        let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
        ordered.extend(detail);
        return Outcome::success(Value::Object(ordered));
    }
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!(
            "{failed} of {} images failed to pull",
            records.len()
        ));
    }
    if not_attempted > 0 {
        let reason = session.stop.map_or("", Stop::reason);
        parts.push(format!("{not_attempted} not attempted ({reason})"));
    }
    if logins_failed > 0 {
        parts.push(format!("{logins_failed} logins failed"));
    }
    let first = records
        .iter()
        .find_map(|r| {
            r.login_error
                .as_ref()
                .map(|e| format!("{}: login: {e}", r.image))
                .or_else(|| {
                    (r.attempted && !r.pulled)
                        .then(|| format!("{}: {}", r.image, r.error.as_deref().unwrap_or("")))
                })
        })
        .map(|f| format!("; first error: {f}"))
        .unwrap_or_default();
    let message = session
        .redactor
        .redact(&format!("{}{first}", parts.join(", ")));
    detail
        .into_iter()
        .fold(Outcome::failed(message), |o, (k, v)| o.with_detail(&k, v))
}

impl<W: Worker> Session<'_, W> {
    /// A dry run: per image, only `docker image inspect` (is it here, which id); no login, no
    /// pull, no temporary directory, no write. Reports what a real run would do: the images it
    /// would pull (all of them: a pull also refreshes a present tag) and the registries it
    /// would log in to. Fails as a real run would when docker is missing or does not answer.
    fn preview_all(&mut self) -> Outcome {
        let config = self.config;
        let mut images = Vec::new();
        let mut would_log_in: Vec<&str> = Vec::new();
        let mut errors = Vec::new();
        for entry in &config.images {
            let login = entry.login.as_ref().map(|l| l.registry.as_str());
            if let Some(registry) = login.filter(|r| !would_log_in.contains(r)) {
                would_log_in.push(registry);
            }
            let (present, local_id, error) = self.inspect(&entry.image);
            if let Some(e) = &error {
                errors.push(format!("{}: {e}", entry.image));
            }
            images.push(json!({
                "image": entry.image,
                "registry": entry.registry,
                "would_log_in": login.is_some(),
                "present": present,
                "local_id": local_id,
                "error": error,
            }));
        }
        let would_pull: Vec<&str> = config.images.iter().map(|e| e.image.as_str()).collect();
        let summary = format!(
            "image_pull: dry run: would pull {} images, would log in to {} registries              ({} errors)",
            would_pull.len(),
            would_log_in.len(),
            errors.len()
        );
        self.worker.log(LogLevel::Info, &self.redact(&summary));
        let mut detail = Map::new();
        detail.insert("dry_run".into(), true.into());
        detail.insert("images".into(), images.into());
        detail.insert("would_pull".into(), json!(would_pull));
        detail.insert("would_pull_count".into(), would_pull.len().into());
        detail.insert("would_log_in".into(), json!(would_log_in));
        if let Some(dir) = &config.docker_config {
            detail.insert("docker_config".into(), dir.clone().into());
        }
        detail.insert("warnings".into(), config.warnings.clone().into());
        let Some(first) = errors.first() else {
            let mut ordered = Map::from_iter([("status".to_string(), Value::from("success"))]);
            ordered.extend(detail);
            return Outcome::success(Value::Object(ordered));
        };
        let message = self.redact(&format!(
            "dry run: {} of {} images could not be inspected; first error: {first}",
            errors.len(),
            config.images.len()
        ));
        detail
            .into_iter()
            .fold(Outcome::failed(message), |o, (k, v)| o.with_detail(&k, v))
    }

    /// `docker image inspect` of one image: (present, its id, an error). "No such image" is
    /// not an error: the image is not here yet.
    fn inspect(&mut self, image: &str) -> (Option<bool>, Option<String>, Option<String>) {
        if let Some(stop) = self.should_stop() {
            return (None, None, Some(not_attempted(stop)));
        }
        let argv = self.docker(&["image", "inspect", "--format", "{{.Id}}", image]);
        match self.execute(&argv, QUICK_TIMEOUT) {
            Ok(out) if out.exit_code == 0 => (Some(true), Some(out.stdout.trim().into()), None),
            Ok(out) if out.stderr.to_ascii_lowercase().contains("no such image") => {
                (Some(false), None, None)
            }
            Ok(out) => (
                None,
                None,
                Some(self.exit_error("docker image inspect", &out)),
            ),
            Err(e) => {
                if matches!(e, Error::NotFound(_)) {
                    self.stop.get_or_insert(Stop::NoDocker);
                }
                let e = format!("docker image inspect did not finish ({})", e.describe());
                (None, None, Some(self.redact(&e)))
            }
        }
    }

    /// Logs in (if needed) and pulls one image.
    fn image(&mut self, entry: &ImageEntry) -> Record {
        let mut record = Record {
            image: entry.image.clone(),
            registry: entry.registry.clone(),
            login: "none",
            login_error: None,
            pulled: false,
            error: None,
            attempted: false,
        };
        if let Some(login) = &entry.login {
            if let Some(stop) = self.should_stop() {
                record.login = "skipped";
                record.error = Some(not_attempted(stop));
                return record;
            }
            match self.login(login) {
                Ok(()) => record.login = "ok",
                Err(e) => {
                    record.login = "failed";
                    record.login_error = Some(e);
                }
            }
        }
        if let Some(stop) = self.should_stop() {
            record.error = Some(not_attempted(stop));
            // A failed login still counts as an attempt.
            record.attempted = record.login == "failed";
            return record;
        }
        record.attempted = true;
        let argv = self.docker(&["pull", &entry.image]);
        match self.execute(&argv, PULL_TIMEOUT) {
            Ok(out) if out.exit_code == 0 => record.pulled = true,
            Ok(out) => {
                record.error = Some(self.exit_error("docker pull", &out));
            }
            Err(e) => {
                if matches!(e, Error::NotFound(_)) {
                    self.stop.get_or_insert(Stop::NoDocker);
                }
                record.error =
                    Some(self.redact(&format!("docker pull did not finish ({})", e.describe())));
            }
        }
        record
    }

    /// The reason to start nothing more, if any.
    fn should_stop(&mut self) -> Option<Stop> {
        if self.stop.is_none() && self.worker.elapsed() >= START_BUDGET {
            self.stop = Some(Stop::TimeBudget);
        }
        self.stop
    }

    /// Runs a command, noting a lost worker or a passed deadline.
    fn execute(&mut self, argv: &[String], timeout: Duration) -> Result<Output, Error> {
        let started = self.worker.elapsed();
        let result = self.worker.execute_argv(argv, timeout);
        self.note(&result, started);
        result
    }

    fn note<T>(&mut self, result: &Result<T, Error>, started: Duration) {
        match result {
            Err(Error::Unreachable(_)) => {
                self.stop.get_or_insert(Stop::Unreachable);
            }
            Err(Error::Timeout(_))
                if self.worker.elapsed().saturating_sub(started) < DEADLINE_PROBE =>
            {
                self.stop.get_or_insert(Stop::RunDeadline);
            }
            _ => {}
        }
    }

    /// `docker [--config=DIR] <args>`.
    fn docker(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec!["docker".to_string()];
        if let Some(dir) = &self.config.docker_config {
            argv.push(format!("--config={dir}"));
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// `<what> exited with <code>: <first error output>`, redacted.
    fn exit_error(&self, what: &str, out: &Output) -> String {
        let text = if out.stderr.trim().is_empty() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        };
        // Redact before cutting, so that no part of a secret survives at the cut.
        let text = self.redact(text);
        format!(
            "{what} exited with {}: {}",
            out.exit_code,
            head(&text, ERROR_HEAD_CHARS)
        )
    }

    /// Logs in unless this run already did with the same credentials (or already failed to).
    /// The error is redacted.
    fn login(&mut self, login: &Login) -> Result<(), String> {
        if self.current.contains(login) {
            return Ok(());
        }
        if let Some((_, e)) = self.failed.iter().find(|(l, _)| l == login) {
            return Err(format!("{e} (same credentials as an earlier image)"));
        }
        let result = self.do_login(login);
        match &result {
            Ok(()) => {
                self.current.retain(|l| l.registry != login.registry);
                self.current.push(login.clone());
            }
            Err(e) => {
                // Docker keeps whatever login the registry had before.
                self.failed.push((login.clone(), e.clone()));
            }
        }
        result
    }

    fn do_login(&mut self, login: &Login) -> Result<(), String> {
        let docker = self.docker(&[
            "login",
            &format!("--username={}", login.username),
            "--password-stdin",
            &login.registry,
        ]);
        match &login.secret {
            Secret::File(path) => {
                let mut argv: Vec<String> = ["/bin/sh", "-c", FILE_LOGIN_SCRIPT, SCRIPT_NAME]
                    .map(String::from)
                    .to_vec();
                argv.push(path.clone());
                argv.extend(docker);
                let result = self.execute(&argv, LOGIN_TIMEOUT);
                self.login_result(result)
            }
            Secret::Literal(password) => {
                let dir = self.private_dir()?;
                let file = format!("{dir}/{PASSWORD_FILE_NAME}");
                let content = format!("{}\n", password.canonical_base64());
                let started = self.worker.elapsed();
                let written = self.worker.write_file(&file, &content);
                self.note(&written, started);
                let result = match written {
                    Ok(()) => {
                        let mut argv: Vec<String> =
                            ["/bin/sh", "-c", LITERAL_LOGIN_SCRIPT, SCRIPT_NAME]
                                .map(String::from)
                                .to_vec();
                        argv.extend([dir.clone(), file]);
                        argv.extend(docker);
                        let result = self.execute(&argv, LOGIN_TIMEOUT);
                        self.login_result(result)
                    }
                    Err(e) => Err(self.redact(&format!(
                        "writing the password to a private temporary directory on the worker \
                         failed ({})",
                        e.describe()
                    ))),
                };
                if result.is_err() {
                    self.remove_dir(&dir);
                }
                result
            }
        }
    }

    /// Turns the login command's answer into the login's result.
    fn login_result(&self, result: Result<Output, Error>) -> Result<(), String> {
        match result {
            Ok(out) if out.exit_code == 0 => Ok(()),
            Ok(out) => Err(self.exit_error("docker login", &out)),
            Err(e) => Err(self.redact(&format!("docker login did not finish ({})", e.describe()))),
        }
    }

    /// Makes a private (0700) temporary directory on the worker with `mktemp -d`.
    fn private_dir(&mut self) -> Result<String, String> {
        let argv = ["mktemp", "-d", "-t", "quarry-image-pull.XXXXXXXXXX"].map(String::from);
        let out = match self.execute(&argv, QUICK_TIMEOUT) {
            Ok(out) if out.exit_code == 0 => out,
            Ok(out) => return Err(self.exit_error("mktemp -d", &out)),
            Err(e) => {
                return Err(format!(
                    "mktemp -d did not finish ({})",
                    self.redact(&e.describe())
                ));
            }
        };
        let dir = out.stdout.trim_end_matches(['\n', '\r']);
        if !dir.starts_with('/') || dir.contains('\n') || dir.chars().any(char::is_control) {
            return Err(format!(
                "mktemp -d printed {:?}, not a directory path",
                head(dir, 200)
            ));
        }
        Ok(dir.to_string())
    }

    /// Removes a private directory left behind by a login that did not get as far as removing
    /// it itself. Best effort: a failure is logged (the directory is 0700).
    fn remove_dir(&mut self, dir: &str) {
        if self.stop == Some(Stop::Unreachable) {
            return;
        }
        let ok = matches!(
            self.worker
                .execute_argv(["rm", "-rf", "--", dir], QUICK_TIMEOUT),
            Ok(Output { exit_code: 0, .. })
        );
        if !ok {
            self.worker.log(
                LogLevel::Warn,
                &format!(
                    "image_pull: could not remove the private temporary directory {dir} \
                     (mode 0700) holding a registry password; remove it by hand"
                ),
            );
        }
    }
}

/// `not attempted (<reason>)`.
fn not_attempted(stop: Stop) -> String {
    format!("not attempted ({})", stop.reason())
}

/// The first `max` characters of `text`, with `…` when cut.
fn head(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
