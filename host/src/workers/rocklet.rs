//! Client for ROCK's `rocklet` HTTP agent (rl-rock 1.11.0), spoken to exactly as docs/rocklet.md
//! describes it (routes, JSON shapes, status codes), with Quarry's semantics layered on top:
//!
//! - Every command is sent as an argv array (`shell:false`) wrapped in GNU coreutils
//!   `timeout -k 2 <secs>`, which runs it in a process group of its own and, on expiry, signals
//!   that whole group (SIGTERM, then SIGKILL 2 s later). The rocklet alone would kill only its
//!   direct child, would report a timeout as an anonymous 85 s 504 (CPython ≥ 3.11) and its `env`
//!   field replaces the environment; so variables are passed through `env -- K=V …`, which merges.
//! - Replies are classified by status (200, 511 by `class_path`, 504, 422/404/405) into
//!   [`WorkerError`] kinds whose messages name the worker and the object, never the request body
//!   (it may hold secrets) and never the 6–15 KB Python traceback.
//! - Reply bodies are read in chunks up to a cap derived from [`Limits`], stdout/stderr are
//!   truncated with `truncate_output`, and files larger than [`Limits::max_file_bytes`] are
//!   refused in both directions. The rocklet has no limits of its own.
//! - `execute` is never retried: a lost reply does not mean the command did not run.

use std::error::Error as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::local::format_secs;
use super::{
    Command, Doing, Limits, Output, Program, WorkerAddr, WorkerError, clip_chars, error_message,
    truncate_output,
};

/// `sandbox_id` sent in every POST body. The rocklet requires a non-blank one and only uses it
/// to tag its log lines, so it names the caller.
const SANDBOX_ID: &str = "quarry";

/// How long an idle pooled connection is kept. The rocklet (uvicorn/h11) closes keep-alive
/// connections after 5 s idle; dropping ours after 4 s means we never send a request on a
/// connection the server is closing at that moment, which would fail a non-retryable `execute`.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// After a 511 reply, how long this rocklet's requests avoid the shared pool. Uvicorn closes
/// the connection right after sending a 511 (~10 ms later, once it has logged the traceback)
/// without announcing it, so that pooled connection must not carry the next request; within
/// [`POOL_IDLE_TIMEOUT`] it is either closed or evicted.
const FRESH_CONNECTIONS_AFTER_511: Duration = POOL_IDLE_TIMEOUT;

/// TCP connect limit: a rocklet on a live host accepts in milliseconds, so 5 s means down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest command limit sent to a rocklet. With the 10 s HTTP margin added it stays under
/// the rocklet's 85 s request cap, so our own timeout (not an anonymous 504) always answers.
pub const MAX_COMMAND_TIMEOUT: Duration = Duration::from_secs(70);

/// Grace between `timeout`'s SIGTERM to the process group and its SIGKILL, in whole seconds
/// (as passed to `timeout -k`): enough for a command to clean up, short enough to stay well
/// inside [`ROCKLET_BACKSTOP_MARGIN`].
const KILL_AFTER_SECS: u64 = 2;

/// Added to the command limit for the rocklet's own `timeout` field: a backstop that only fires
/// if the `timeout` wrapper itself hangs, after the wrapper's SIGKILL ([`KILL_AFTER_SECS`]).
const ROCKLET_BACKSTOP_MARGIN: Duration = Duration::from_secs(5);

/// Added to the command limit for the HTTP request timeout: covers the kill grace, the
/// backstop and the transfer of the reply.
const HTTP_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// The rocklet answers 504 after this long, whatever the command does (work continues).
const ROCKLET_REQUEST_CAP: Duration = Duration::from_secs(85);

/// Bytes allowed in a reply body beyond twice the content caps, for the JSON envelope (and
/// error bodies, whose tracebacks run 6–15 KB).
const REPLY_OVERHEAD_BYTES: usize = 64 * 1024;

/// Longest text taken from a rocklet error (message, 422 detail, unexpected body), in
/// characters: room for a path and an errno text, not for a dump.
const MAX_ERROR_TEXT_CHARS: usize = 500;

/// Exit status of GNU `timeout` when the limit expired and the command died of SIGTERM.
const EXIT_TIMED_OUT: i32 = 124;
/// Exit status of `timeout` (or `env`) when the program does not exist.
const EXIT_NOT_FOUND: i32 = 127;
/// Exit status of `timeout` (or `env`) when the program exists but cannot be run.
const EXIT_CANNOT_RUN: i32 = 126;

/// A rocklet at `host:port`, reached over a pooled HTTP client (shared between rocklets when
/// given with [`Rocklet::with_client`]).
#[derive(Debug)]
pub struct Rocklet {
    addr: WorkerAddr,
    /// `http://host:port` (IPv6 in brackets); `None` if built with a non-remote address.
    base: Option<String>,
    /// Set by [`Rocklet::with_client`], else built on first use by [`Rocklet::http_client`].
    client: OnceLock<reqwest::Client>,
    limits: Limits,
    /// Until this instant, requests go over new connections (see [`FRESH_CONNECTIONS_AFTER_511`]).
    avoid_pool_until: Mutex<Option<Instant>>,
}

/// How a request failed before any reply arrived.
enum SendFailure {
    /// Sent on a connection that failed without any reply (reset, closed): typically a pooled
    /// connection the rocklet had just closed, so an idempotent request may be sent again.
    Lost(WorkerError),
    /// Anything else (connect failure, timeout, oversized or unreadable reply…).
    Final(WorkerError),
}

impl SendFailure {
    fn into_error(self) -> WorkerError {
        match self {
            SendFailure::Lost(e) | SendFailure::Final(e) => e,
        }
    }
}

/// One call, for logs and error messages: the operation's name and what it was doing.
struct Op<'a> {
    name: &'static str,
    /// The command or path, for the context that ends error messages.
    doing: Doing<'a>,
    /// Command being executed, if any.
    cmd: Option<&'a Command>,
}

impl Rocklet {
    /// A rocklet client for `addr` (a [`WorkerAddr::Remote`]) with [`Limits::default`] and a
    /// connection pool of its own (built on first use); see [`Rocklet::with_client`] and
    /// [`Rocklet::with_limits`]. Given [`WorkerAddr::Local`], every call fails with `Rejected`.
    pub fn new(addr: WorkerAddr) -> Self {
        let base = match &addr {
            WorkerAddr::Remote { host, port } if host.contains(':') => {
                Some(format!("http://[{host}]:{port}"))
            }
            WorkerAddr::Remote { host, port } => Some(format!("http://{host}:{port}")),
            WorkerAddr::Local => None,
        };
        Rocklet {
            addr,
            base,
            client: OnceLock::new(),
            limits: Limits::default(),
            avoid_pool_until: Mutex::new(None),
        }
    }

    /// Sends requests through `client`'s connection pool: build it once with
    /// [`Rocklet::http_client`] and give it to every rocklet, so they share one pool.
    pub fn with_client(self, client: reqwest::Client) -> Self {
        Rocklet {
            client: OnceLock::from(client),
            ..self
        }
    }

    /// Applies `limits` to every call instead of [`Limits::default`].
    pub fn with_limits(self, limits: Limits) -> Self {
        Rocklet { limits, ..self }
    }

    /// The HTTP client to share between all rocklets: rustls only (no TLS is used, rocklets
    /// speak plain HTTP), pooled keep-alive connections dropped after [`POOL_IDLE_TIMEOUT`]
    /// (below the rocklet's 5 s), no proxy (worker addresses are direct; a `HTTP_PROXY` in the
    /// environment must not capture them), [`CONNECT_TIMEOUT`], `TCP_NODELAY`.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (a broken build, not a runtime condition).
    pub fn http_client() -> reqwest::Client {
        client_builder()
            .build()
            .expect("building the rocklet HTTP client (rustls backend) failed")
    }

    /// The rocklet's address.
    pub fn addr(&self) -> &WorkerAddr {
        &self.addr
    }

    /// Readiness probe: `GET /is_alive`, within `timeout`. It only shows that the rocklet's
    /// event loop answers (a large file transfer can delay it by seconds).
    pub async fn is_alive(&self, timeout: Duration) -> Result<(), WorkerError> {
        let op = Op {
            name: "is-alive",
            doing: Doing::CheckingAlive,
            cmd: None,
        };
        let started = Instant::now();
        let (status, body) = self
            .call(&op, Method::GET, "/is_alive", None::<&()>, timeout, true)
            .await?;
        let body = self.check_status(&op, status, &body, started)?;
        #[derive(Deserialize)]
        struct Alive {
            is_alive: Option<bool>,
        }
        match serde_json::from_slice::<Alive>(body) {
            Ok(Alive {
                is_alive: Some(true),
            }) => Ok(()),
            _ => Err(WorkerError::Other(self.message(
                &op,
                "the reply is not a rocklet's {\"is_alive\":true}",
            ))),
        }
    }

    /// Runs `cmd` on the rocklet and waits for it, at most `cmd.timeout` (capped at
    /// [`MAX_COMMAND_TIMEOUT`]). Never retried.
    ///
    /// Errors: `Timeout` when the limit expired (the command's process group has been killed),
    /// or when no reply came in time (outcome unknown); `NotFound` for a missing program or
    /// `cwd`; `Unreachable` when the rocklet cannot be reached; `Rejected` when the reply is
    /// larger than the limits allow or the rocklet calls the request malformed; `Other` for
    /// anything else. A non-zero exit status is not an error.
    pub async fn execute(&self, cmd: &Command) -> Result<Output, WorkerError> {
        let limit = cmd.timeout.min(MAX_COMMAND_TIMEOUT);
        let op = Op {
            name: "execute",
            doing: Doing::Running(&cmd.program),
            cmd: Some(cmd),
        };
        let Some(argv) = wrap_command(cmd, limit) else {
            return Err(WorkerError::Rejected(self.message(&op, "argv is empty")));
        };
        let body = ExecuteRequest {
            session_type: "bash",
            command: &argv,
            timeout: (limit + ROCKLET_BACKSTOP_MARGIN).as_secs_f64(),
            env: None,
            cwd: cmd.cwd.as_deref(),
            shell: false,
            check: false,
            error_msg: "",
            sandbox_id: SANDBOX_ID,
        };
        let http_timeout = (limit + HTTP_TIMEOUT_MARGIN).min(ROCKLET_REQUEST_CAP);
        let started = Instant::now();
        // Not idempotent: never sent twice, whatever happened to the first attempt.
        let (status, bytes) = self
            .call(
                &op,
                Method::POST,
                "/execute",
                Some(&body),
                http_timeout,
                false,
            )
            .await?;
        let elapsed = started.elapsed();
        let bytes = self.check_status(&op, status, &bytes, started)?;
        let reply: ExecuteReply = self.parse(&op, bytes)?;
        let exit_code = reply
            .exit_code
            .and_then(|c| i32::try_from(c).ok())
            .ok_or_else(|| {
                WorkerError::Other(self.message(&op, "the reply has no valid exit_code"))
            })?;
        let stdout = reply.stdout.unwrap_or_default();
        let stderr = reply.stderr.unwrap_or_default();

        // `timeout` exits 124 when the group died of SIGTERM; when SIGKILL was needed it kills
        // itself with the group (-9; 137 with --foreground). Only an expired limit explains
        // these after at least `limit` has passed.
        if matches!(exit_code, EXIT_TIMED_OUT | 137 | -9) && elapsed >= limit {
            return Err(WorkerError::Timeout(self.message(
                &op,
                format!(
                    "timed out after {} and its process group was killed",
                    format_secs(limit)
                ),
            )));
        }
        if let Program::Argv(user_argv) = &cmd.program
            && let Some(err) = self.wrapper_failure(&op, user_argv, exit_code, &stderr)
        {
            return Err(err);
        }
        let cap = self.limits.max_output_bytes;
        Ok(Output {
            stdout: truncate_output(stdout, cap),
            stderr: truncate_output(stderr, cap),
            exit_code,
        })
    }

    /// Reads the UTF-8 text file at `path` on the rocklet, within `timeout`. Note that the
    /// rocklet reads in text mode: CRLF and lone CR come back as LF.
    ///
    /// Errors: `NotFound` when it does not exist; `Rejected` when it is larger than
    /// [`Limits::max_file_bytes`]; `Other` for a directory or non-UTF-8 content; `Timeout`,
    /// `Unreachable` as for [`Rocklet::execute`].
    pub async fn read_file(&self, path: &str, timeout: Duration) -> Result<String, WorkerError> {
        let op = Op {
            name: "read-file",
            doing: Doing::Reading(path),
            cmd: None,
        };
        let body = ReadFileRequest {
            path,
            encoding: None,
            errors: None,
            sandbox_id: SANDBOX_ID,
        };
        let started = Instant::now();
        let (status, bytes) = self
            .call(&op, Method::POST, "/read_file", Some(&body), timeout, true)
            .await?;
        let bytes = self.check_status(&op, status, &bytes, started)?;
        let reply: ReadFileReply = self.parse(&op, bytes)?;
        let max = self.limits.max_file_bytes;
        if reply.content.len() > max {
            return Err(WorkerError::Rejected(self.message(
                &op,
                format!(
                    "{} bytes is over the limit of {max} bytes",
                    reply.content.len()
                ),
            )));
        }
        Ok(reply.content)
    }

    /// Writes `content` to `path` on the rocklet (missing parents are created), within
    /// `timeout`. The rocklet rewrites the file in place: this is not atomic.
    ///
    /// Errors: `Rejected` when `content` is larger than [`Limits::max_file_bytes`] (nothing is
    /// sent); `Other` when `path` is a directory or a parent is a file; `Timeout`,
    /// `Unreachable` as for [`Rocklet::execute`].
    pub async fn write_file(
        &self,
        path: &str,
        content: &str,
        timeout: Duration,
    ) -> Result<(), WorkerError> {
        let op = Op {
            name: "write-file",
            doing: Doing::Writing(path),
            cmd: None,
        };
        let max = self.limits.max_file_bytes;
        if content.len() > max {
            return Err(WorkerError::Rejected(self.message(
                &op,
                format!("{} bytes is over the limit of {max} bytes", content.len()),
            )));
        }
        let body = WriteFileRequest {
            content,
            path,
            sandbox_id: SANDBOX_ID,
        };
        let started = Instant::now();
        // Writing the same content twice is harmless, so a lost request may be re-sent.
        let (status, bytes) = self
            .call(&op, Method::POST, "/write_file", Some(&body), timeout, true)
            .await?;
        let bytes = self.check_status(&op, status, &bytes, started)?;
        let reply: WriteFileReply = self.parse(&op, bytes)?;
        if reply.success == Some(true) {
            Ok(())
        } else {
            Err(WorkerError::Other(self.message(
                &op,
                format!(
                    "the rocklet reported failure: {}",
                    clip(reply.message.as_deref().unwrap_or("(no message)"))
                ),
            )))
        }
    }

    /// An error message of this worker: `reason`, then what `op` was doing.
    fn message(&self, op: &Op<'_>, reason: impl std::fmt::Display) -> String {
        error_message(&self.addr, op.doing, reason)
    }

    fn url(&self, op: &Op<'_>, route: &str) -> Result<String, WorkerError> {
        match &self.base {
            Some(base) => Ok(format!("{base}{route}")),
            None => Err(WorkerError::Rejected(
                self.message(op, "not a rocklet address"),
            )),
        }
    }

    /// Largest reply body accepted: JSON escaping can double the size of output or content.
    fn reply_cap(&self) -> usize {
        let l = self.limits;
        let double = |n: usize| n.saturating_mul(2).saturating_add(REPLY_OVERHEAD_BYTES);
        double(l.max_output_bytes).max(double(l.max_file_bytes))
    }

    /// Sends one request and reads the reply body (capped), all within `limit`. An idempotent
    /// request whose connection was lost before any reply is sent once more, on a new
    /// connection, within what is left of `limit`.
    async fn call<B: Serialize>(
        &self,
        op: &Op<'_>,
        method: Method,
        route: &str,
        body: Option<&B>,
        limit: Duration,
        idempotent: bool,
    ) -> Result<(StatusCode, Vec<u8>), WorkerError> {
        let url = self.url(op, route)?;
        let deadline = Instant::now() + limit;
        let fresh = self.pool_suspect();
        let first = self
            .send(op, method.clone(), &url, body, limit, fresh)
            .await;
        match first {
            Ok(reply) => Ok(reply),
            Err(SendFailure::Lost(e)) if idempotent => {
                tracing::debug!(worker = %self.addr, op = op.name, error = %e,
                    "connection lost before any reply; sending again on a new connection");
                let left = deadline.saturating_duration_since(Instant::now());
                self.send(op, method, &url, body, left, true)
                    .await
                    .map_err(SendFailure::into_error)
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    /// One attempt of [`Rocklet::call`]; `fresh` forces a new connection.
    async fn send<B: Serialize>(
        &self,
        op: &Op<'_>,
        method: Method,
        url: &str,
        body: Option<&B>,
        limit: Duration,
        fresh: bool,
    ) -> Result<(StatusCode, Vec<u8>), SendFailure> {
        let pooled = self.client.get_or_init(Rocklet::http_client);
        let client = if fresh {
            fresh_client().unwrap_or(pooled)
        } else {
            pooled
        };
        let mut request = client.request(method, url).timeout(limit);
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                SendFailure::Final(WorkerError::Other(
                    self.message(op, format!("cannot encode the request: {e}")),
                ))
            })?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let exchange = async {
            let mut response = request
                .send()
                .await
                .map_err(|e| self.send_failure(op, &e, limit))?;
            let status = response.status();
            if status.as_u16() == 511 {
                self.suspect_pool();
            }
            let cap = self.reply_cap();
            let too_big = || {
                SendFailure::Final(WorkerError::Rejected(self.message(
                    op,
                    format!("the reply is larger than {cap} bytes (over Quarry's size limits)"),
                )))
            };
            if response.content_length().is_some_and(|n| n > cap as u64) {
                return Err(too_big());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| SendFailure::Final(self.transport_error(op, &e, limit)))?
            {
                if body.len() + chunk.len() > cap {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SendFailure::Final(self.no_reply_in_time(op, limit))),
        }
    }

    /// Whether requests should currently avoid pooled connections (a 511 came recently).
    fn pool_suspect(&self) -> bool {
        let until = *self
            .avoid_pool_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }

    /// Records a 511: its connection is about to be closed by the rocklet.
    fn suspect_pool(&self) {
        *self
            .avoid_pool_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(Instant::now() + FRESH_CONNECTIONS_AFTER_511);
    }

    /// Classifies a failure of `send()` (no reply at all).
    fn send_failure(&self, op: &Op<'_>, e: &reqwest::Error, limit: Duration) -> SendFailure {
        let error = self.transport_error(op, e, limit);
        let lost =
            !e.is_connect() && !e.is_timeout() && matches!(error, WorkerError::Unreachable(_));
        if lost {
            SendFailure::Lost(error)
        } else {
            SendFailure::Final(error)
        }
    }

    fn no_reply_in_time(&self, op: &Op<'_>, limit: Duration) -> WorkerError {
        let consequence = if op.cmd.is_some() {
            "the command may still be running"
        } else {
            "its outcome is unknown"
        };
        WorkerError::Timeout(self.message(
            op,
            format!("no reply within {}; {consequence}", format_secs(limit)),
        ))
    }

    /// Maps an HTTP-level failure. Never includes the request (body or URL).
    fn transport_error(&self, op: &Op<'_>, e: &reqwest::Error, limit: Duration) -> WorkerError {
        let reason = root_cause(e);
        if e.is_connect() {
            WorkerError::Unreachable(self.message(op, format!("unreachable: {reason}")))
        } else if e.is_timeout() {
            self.no_reply_in_time(op, limit)
        } else if e.is_body() || e.is_decode() {
            WorkerError::Other(self.message(op, format!("the reply could not be read: {reason}")))
        } else {
            let consequence = if op.cmd.is_some() {
                "; the command may or may not have run"
            } else {
                ""
            };
            WorkerError::Unreachable(self.message(
                op,
                format!("unreachable: connection lost before any reply: {reason}{consequence}"),
            ))
        }
    }

    /// Returns the body of a 200 reply, or the error any other status stands for.
    fn check_status<'b>(
        &self,
        op: &Op<'_>,
        status: StatusCode,
        body: &'b [u8],
        started: Instant,
    ) -> Result<&'b [u8], WorkerError> {
        let message = |reason: String| self.message(op, reason);
        match status.as_u16() {
            200 => Ok(body),
            511 => Err(self.remote_exception(op, body)),
            504 => {
                let elapsed = started.elapsed();
                let consequence = if op.cmd.is_some() {
                    "the command may still be running"
                } else {
                    "the operation may still complete"
                };
                let why = if elapsed + Duration::from_secs(1) >= ROCKLET_REQUEST_CAP {
                    "the rocklet gave up after 85 s".to_string()
                } else {
                    format!(
                        "the rocklet gave up after {} (its own command timeout)",
                        format_secs(elapsed)
                    )
                };
                Err(WorkerError::Timeout(message(format!(
                    "{why}; {consequence}"
                ))))
            }
            422 => Err(WorkerError::Rejected(message(format!(
                "the rocklet rejected the request as malformed (HTTP 422, a Quarry bug): {}",
                validation_detail(body)
            )))),
            404 | 405 => Err(WorkerError::Rejected(message(format!(
                "HTTP {status}: not a compatible rocklet? ({})",
                validation_detail(body)
            )))),
            _ => Err(WorkerError::Other(message(format!(
                "unexpected HTTP {status}: {}",
                clip(&String::from_utf8_lossy(body))
            )))),
        }
    }

    /// Classifies a 511 `{"rockletexception":{…}}` reply by its `class_path`.
    fn remote_exception(&self, op: &Op<'_>, body: &[u8]) -> WorkerError {
        let Ok(RemoteExceptionReply {
            rockletexception: exc,
        }) = serde_json::from_slice::<RemoteExceptionReply>(body)
        else {
            return WorkerError::Other(self.message(
                op,
                "failed on the worker (HTTP 511 with an unreadable error body)",
            ));
        };
        let message_of = |reason: String| self.message(op, reason);
        let class = exc.class_path.as_deref().unwrap_or("(unknown exception)");
        let message = clip(exc.message.as_deref().unwrap_or(""));
        match (class, op.cmd) {
            ("builtins.FileNotFoundError", Some(cmd)) => match &cmd.cwd {
                // The program is always `timeout`; a missing user program is exit 127.
                Some(cwd) if message.contains(cwd.as_str()) => {
                    WorkerError::NotFound(message_of(format!("cwd {cwd:?} not found ({message})")))
                }
                _ => WorkerError::NotFound(message_of(format!(
                    "GNU coreutils `timeout` (which Quarry runs every command under) was not found on the worker ({message})"
                ))),
            },
            ("builtins.FileNotFoundError", None) => {
                WorkerError::NotFound(message_of(format!("not found ({message})")))
            }
            ("builtins.UnicodeDecodeError", _) => WorkerError::Other(message_of(format!(
                "the file is not valid UTF-8 text ({message})"
            ))),
            (
                "builtins.IsADirectoryError"
                | "builtins.FileExistsError"
                | "builtins.NotADirectoryError"
                | "builtins.PermissionError"
                | "builtins.LookupError",
                _,
            ) => WorkerError::Other(message_of(message)),
            ("rock.rocklet.exceptions.CommandTimeoutError", _) => {
                WorkerError::Timeout(message_of(format!(
                    "the rocklet's own command timeout fired ({message}); the command may still be running"
                )))
            }
            _ => WorkerError::Other(message_of(format!(
                "failed on the worker: {}: {message}",
                clip(class)
            ))),
        }
    }

    /// Recognises `timeout`/`env` failing to start the user's program (exit 127: missing,
    /// 126: not executable): then stderr is exactly their one-line complaint naming it.
    fn wrapper_failure(
        &self,
        op: &Op<'_>,
        argv: &[String],
        exit_code: i32,
        stderr: &str,
    ) -> Option<WorkerError> {
        let program = argv.first()?;
        let line = stderr.trim_end();
        let from_wrapper = !line.contains('\n')
            && line.contains(program.as_str())
            && (line.starts_with("timeout: failed to run command")
                || line.starts_with("env: ")
                // The `exec "$0"` shell used for program names containing '=' (dash: "$0: 1:
                // exec: …", bash: "$0: line 1: exec: …").
                || (line.starts_with(&format!("{program}: ")) && line.contains(": exec: ")));
        if !from_wrapper {
            return None;
        }
        match exit_code {
            EXIT_NOT_FOUND => Some(WorkerError::NotFound(self.message(
                op,
                format!(
                    "program {program:?} not found on the worker ({})",
                    clip(line)
                ),
            ))),
            EXIT_CANNOT_RUN => Some(WorkerError::Other(self.message(
                op,
                format!("cannot run program {program:?} ({})", clip(line)),
            ))),
            _ => None,
        }
    }

    fn parse<'de, T: Deserialize<'de>>(
        &self,
        op: &Op<'_>,
        body: &'de [u8],
    ) -> Result<T, WorkerError> {
        serde_json::from_slice(body).map_err(|e| {
            WorkerError::Other(self.message(
                op,
                format!(
                    "unreadable reply from the rocklet: {}",
                    clip(&e.to_string())
                ),
            ))
        })
    }
}

super::impl_worker_api!(Rocklet);

/// Settings shared by the pooled client and [`fresh_client`].
fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_rustls()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
}

/// A process-wide client that keeps no idle connections, so every request it sends opens a new
/// one. `None` if it cannot be built (then the pooled client is used).
fn fresh_client() -> Option<&'static reqwest::Client> {
    static FRESH: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    FRESH
        .get_or_init(|| client_builder().pool_max_idle_per_host(0).build().ok())
        .as_ref()
}

/// The argv actually sent: `timeout -k 2 <secs> [env -- K=V…] <program…>`. `None` for an empty
/// argv.
fn wrap_command(cmd: &Command, limit: Duration) -> Option<Vec<String>> {
    let mut argv = vec![
        "timeout".to_string(),
        "-k".to_string(),
        KILL_AFTER_SECS.to_string(),
        timeout_arg(limit),
    ];
    if !cmd.env.is_empty() {
        argv.push("env".into());
        // `--` ends env's options, so a variable name starting with '-' is still a variable.
        argv.push("--".into());
        argv.extend(cmd.env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    match &cmd.program {
        Program::Argv(user) => {
            let first = user.first()?;
            if !cmd.env.is_empty() && first.contains('=') {
                // env would take a program name containing '=' for one more variable: have a
                // shell exec it instead (the name arrives as $0, never parsed as shell text).
                argv.extend(["/bin/sh", "-c", "exec \"$0\" \"$@\""].map(String::from));
            }
            argv.extend(user.iter().cloned());
        }
        Program::Shell(script) => {
            argv.extend(["/bin/sh".to_string(), "-c".to_string(), script.clone()]);
        }
    }
    Some(argv)
}

/// `limit` as `timeout`'s DURATION: seconds with up to 3 decimals, at least 0.001 (0 would
/// disable the limit).
fn timeout_arg(limit: Duration) -> String {
    let millis = limit.as_millis().max(1);
    let (secs, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        secs.to_string()
    } else {
        format!("{secs}.{}", format!("{frac:03}").trim_end_matches('0'))
    }
}

/// The innermost cause of an error (e.g. "Connection refused (os error 111)"), which is the
/// informative part of reqwest's chain and never contains the URL or request.
fn root_cause(e: &reqwest::Error) -> String {
    let mut last = e.source();
    while let Some(inner) = last.and_then(|s| s.source()) {
        last = Some(inner);
    }
    match last {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// Cuts rocklet-provided text to [`MAX_ERROR_TEXT_CHARS`] characters.
fn clip(s: &str) -> String {
    clip_chars(s, MAX_ERROR_TEXT_CHARS)
}

/// Summarises a FastAPI error body (`{"detail": "…"}` or `{"detail": [{type, loc, msg, input}]}`)
/// without its `input`, which echoes the request body.
fn validation_detail(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Detail {
        detail: DetailKind,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum DetailKind {
        Text(String),
        Items(Vec<DetailItem>),
    }
    #[derive(Deserialize)]
    struct DetailItem {
        #[serde(rename = "type")]
        kind: Option<String>,
        loc: Option<Vec<serde_json::Value>>,
        msg: Option<String>,
    }
    let text = match serde_json::from_slice::<Detail>(body) {
        Ok(Detail {
            detail: DetailKind::Text(t),
        }) => t,
        Ok(Detail {
            detail: DetailKind::Items(items),
        }) => items
            .iter()
            .map(|item| {
                let loc = item
                    .loc
                    .iter()
                    .flatten()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                format!(
                    "{} at {loc}: {}",
                    item.kind.as_deref().unwrap_or("error"),
                    item.msg.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => "unreadable error body".to_string(),
    };
    clip(&text)
}

/// `POST /execute` body, every field explicit as ROCK sends it.
#[derive(Serialize)]
struct ExecuteRequest<'a> {
    session_type: &'static str,
    command: &'a [String],
    /// The rocklet's own limit (seconds): a backstop behind the `timeout` wrapper.
    timeout: f64,
    /// Always null: the rocklet's `env` replaces the environment; variables go through `env`.
    env: Option<()>,
    cwd: Option<&'a str>,
    shell: bool,
    check: bool,
    error_msg: &'static str,
    sandbox_id: &'static str,
}

/// `POST /read_file` body.
#[derive(Serialize)]
struct ReadFileRequest<'a> {
    path: &'a str,
    /// Null: the rocklet's locale encoding, UTF-8 in practice.
    encoding: Option<&'a str>,
    /// Null: strict decoding, so non-UTF-8 content is an error rather than silently altered.
    errors: Option<&'a str>,
    sandbox_id: &'static str,
}

/// `POST /write_file` body.
#[derive(Serialize)]
struct WriteFileRequest<'a> {
    content: &'a str,
    path: &'a str,
    sandbox_id: &'static str,
}

#[derive(Deserialize)]
struct ExecuteReply {
    stdout: Option<String>,
    stderr: Option<String>,
    exit_code: Option<i64>,
}

#[derive(Deserialize)]
struct ReadFileReply {
    content: String,
}

#[derive(Deserialize)]
struct WriteFileReply {
    success: Option<bool>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct RemoteExceptionReply {
    rockletexception: RemoteException,
}

/// The useful part of a 511 body; `traceback` and `extra_info` are ignored.
#[derive(Deserialize)]
struct RemoteException {
    message: Option<String>,
    class_path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(program: Program, env: &[(&str, &str)]) -> Command {
        Command {
            program,
            cwd: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timeout: Duration::from_millis(1500),
        }
    }

    fn rocklet(host: &str) -> Rocklet {
        Rocklet::new(WorkerAddr::Remote {
            host: host.into(),
            port: 9,
        })
    }

    fn op_for(c: &Command) -> Op<'_> {
        Op {
            name: "execute",
            doing: Doing::Running(&c.program),
            cmd: Some(c),
        }
    }

    #[test]
    fn wraps_argv_in_timeout_and_env() {
        let c = cmd(Program::Argv(vec!["ls".into(), "-l".into()]), &[]);
        assert_eq!(
            wrap_command(&c, c.timeout).unwrap(),
            ["timeout", "-k", "2", "1.5", "ls", "-l"]
        );
        let c = cmd(
            Program::Argv(vec!["ls".into()]),
            &[("A", "1"), ("B", "x y")],
        );
        assert_eq!(
            wrap_command(&c, Duration::from_secs(3)).unwrap(),
            ["timeout", "-k", "2", "3", "env", "--", "A=1", "B=x y", "ls"]
        );
        let c = cmd(Program::Shell("echo $A; exit 3".into()), &[("A", "1")]);
        assert_eq!(
            wrap_command(&c, Duration::from_millis(250)).unwrap(),
            [
                "timeout",
                "-k",
                "2",
                "0.25",
                "env",
                "--",
                "A=1",
                "/bin/sh",
                "-c",
                "echo $A; exit 3"
            ]
        );
        let c = cmd(
            Program::Argv(vec!["./a=b".into(), "x".into()]),
            &[("A", "1")],
        );
        assert_eq!(
            wrap_command(&c, Duration::from_secs(1)).unwrap()[7..],
            ["/bin/sh", "-c", "exec \"$0\" \"$@\"", "./a=b", "x"]
        );
        assert!(wrap_command(&cmd(Program::Argv(vec![]), &[]), Duration::from_secs(1)).is_none());
    }

    #[test]
    fn formats_timeout_argument() {
        assert_eq!(timeout_arg(Duration::from_secs(70)), "70");
        assert_eq!(timeout_arg(Duration::from_millis(1001)), "1.001");
        assert_eq!(timeout_arg(Duration::from_micros(10)), "0.001");
        assert_eq!(timeout_arg(Duration::ZERO), "0.001");
    }

    #[test]
    fn builds_base_urls() {
        assert_eq!(
            rocklet("10.0.0.1").base.as_deref(),
            Some("http://10.0.0.1:9")
        );
        assert_eq!(rocklet("::1").base.as_deref(), Some("http://[::1]:9"));
        let local = Rocklet::new(WorkerAddr::Local);
        assert!(local.base.is_none());
    }

    #[test]
    fn classifies_remote_exceptions_without_traceback() {
        let r = rocklet("h");
        let body = |class: &str, msg: &str| {
            serde_json::json!({"rockletexception": {"message": msg, "class_path": class,
                "traceback": "Traceback (most recent call last): SECRET", "extra_info": {}}})
            .to_string()
        };
        let read = Op {
            name: "read-file",
            doing: Doing::Reading("/x"),
            cmd: None,
        };
        let e = r.remote_exception(
            &read,
            body("builtins.FileNotFoundError", "[Errno 2] nope").as_bytes(),
        );
        assert!(
            matches!(&e, WorkerError::NotFound(m)
                if m == "not found ([Errno 2] nope) — while reading \"/x\" on worker h:9"),
            "{e:?}"
        );
        let e = r.remote_exception(
            &read,
            body("builtins.UnicodeDecodeError", "'utf-8' codec").as_bytes(),
        );
        assert!(
            matches!(&e, WorkerError::Other(m) if m.contains("UTF-8")),
            "{e:?}"
        );
        let e = r.remote_exception(
            &read,
            body("builtins.IsADirectoryError", "[Errno 21]").as_bytes(),
        );
        assert!(
            matches!(&e, WorkerError::Other(m) if m.contains("Errno 21")),
            "{e:?}"
        );
        let e = r.remote_exception(&read, body("foo.Weird", &"m".repeat(5000)).as_bytes());
        match &e {
            WorkerError::Other(m) => {
                assert!(m.starts_with("failed on the worker: foo.Weird: mmm"), "{m}");
                assert!(m.len() < 700, "{}", m.len());
            }
            other => panic!("{other:?}"),
        }
        let e = r.remote_exception(&read, b"not json");
        assert!(
            matches!(&e, WorkerError::Other(m) if m.contains("unreadable")),
            "{e:?}"
        );
        let mut c = cmd(Program::Argv(vec!["ls".into()]), &[]);
        c.cwd = Some("/nope".into());
        let e = r.remote_exception(
            &op_for(&c),
            body(
                "builtins.FileNotFoundError",
                "[Errno 2] No such file or directory: '/nope'",
            )
            .as_bytes(),
        );
        assert!(
            matches!(&e, WorkerError::NotFound(m) if m.contains("cwd \"/nope\"")),
            "{e:?}"
        );
        let e = r.remote_exception(
            &op_for(&c),
            body(
                "rock.rocklet.exceptions.CommandTimeoutError",
                "Timeout (6.5s) exceeded",
            )
            .as_bytes(),
        );
        assert!(
            matches!(&e, WorkerError::Timeout(m) if !m.contains("SECRET")),
            "{e:?}"
        );
    }

    #[test]
    fn validation_detail_drops_the_echoed_input() {
        let body = br#"{"detail":[{"type":"missing","loc":["body","sandbox_id"],"msg":"Field required","input":{"env":{"TOKEN":"s3cret"}}}]}"#;
        let d = validation_detail(body);
        assert_eq!(d, "missing at body.sandbox_id: Field required");
        assert_eq!(validation_detail(br#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(validation_detail(b"<html>"), "unreadable error body");
    }

    #[test]
    fn recognises_wrapper_failures_only() {
        let r = rocklet("h");
        let argv = vec!["nosuch".to_string()];
        let c = cmd(Program::Argv(argv.clone()), &[]);
        let op = op_for(&c);
        let e = r.wrapper_failure(
            &op,
            &argv,
            127,
            "timeout: failed to run command ‘nosuch’: No such file or directory\n",
        );
        assert!(matches!(e, Some(WorkerError::NotFound(_))), "{e:?}");
        let e = r.wrapper_failure(
            &op,
            &argv,
            127,
            "env: ‘nosuch’: No such file or directory\n",
        );
        assert!(matches!(e, Some(WorkerError::NotFound(_))), "{e:?}");
        let e = r.wrapper_failure(&op, &argv, 126, "env: ‘nosuch’: Permission denied\n");
        assert!(matches!(e, Some(WorkerError::Other(_))), "{e:?}");
        // The program ran and printed more: its own exit status, not ours.
        assert!(
            r.wrapper_failure(
                &op,
                &argv,
                127,
                "nosuch: starting\nenv: ‘x’: No such file\n"
            )
            .is_none()
        );
        assert!(
            r.wrapper_failure(&op, &argv, 127, "env: ‘other’: No such file or directory\n")
                .is_none()
        );
        assert!(
            r.wrapper_failure(&op, &argv, 1, "env: ‘nosuch’: whatever\n")
                .is_none()
        );
    }

    #[test]
    fn reply_cap_allows_json_escaping() {
        let r = Rocklet::new(WorkerAddr::Remote {
            host: "h".into(),
            port: 1,
        })
        .with_limits(Limits {
            max_output_bytes: 1000,
            max_file_bytes: 10,
        });
        assert_eq!(r.reply_cap(), 2000 + REPLY_OVERHEAD_BYTES);
    }
}
