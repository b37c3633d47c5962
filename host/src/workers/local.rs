//! The `local` worker: runs commands and file operations on the machine Quarry itself runs on,
//! with the same semantics as a rocklet reached through [`super::rocklet::Rocklet`]:
//!
//! - [`Program::Argv`] is executed directly (the program is looked up on `PATH`); a missing
//!   program is [`WorkerError::NotFound`]. [`Program::Shell`] runs as `/bin/sh -c <script>`.
//! - `env` is merged into the inherited environment; stdin is `/dev/null`.
//! - Every command runs in its own process group. When the time limit expires, or when the
//!   future driving [`LocalWorker::execute`] is dropped, the whole group is killed with `SIGKILL`,
//!   so background jobs started by the command die with it. A command that finishes normally
//!   leaves its detached descendants alone (they may be intentional daemons).
//! - Standard output and standard error are each capped at [`Limits::max_output_bytes`]; the
//!   rest is drained and discarded so the child never blocks on a full pipe.
//! - Files are read and written as UTF-8 text, capped at [`Limits::max_file_bytes`]; writes go
//!   through a temporary sibling file and a rename, so readers never see a partial file.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{
    CONTEXT_MAX_CHARS, Command, Doing, Limits, Output, Program, WorkerAddr, WorkerError,
    clip_chars, error_message, truncate_output,
};

/// Bytes kept beyond the output cap before discarding starts, so a multi-byte UTF-8 character
/// straddling the cap is still decoded whole before [`truncate_output`] cuts on its boundary.
const OUTPUT_KEEP_SLACK_BYTES: usize = 4;

/// Size of one read from a child's pipe, in bytes: large enough that draining a chatty command
/// costs few syscalls, small enough to live on the stack of the reading task.
const PIPE_READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long to wait for a killed process group's leader to be reaped after a timeout. `SIGKILL`
/// cannot be caught, so this only guards against a process stuck in uninterruptible sleep (D).
const REAP_AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Distinguishes temporary files of concurrent writes from this process.
static TEMP_FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This machine as a worker. See the [module documentation](self) for the semantics.
#[derive(Debug)]
pub struct LocalWorker {
    addr: WorkerAddr,
    limits: Limits,
    env: Vec<(String, String)>,
}

impl LocalWorker {
    /// A local worker applying `limits` to every call.
    pub fn new(limits: Limits) -> Self {
        LocalWorker {
            addr: WorkerAddr::Local,
            limits,
            env: Vec::new(),
        }
    }

    /// Adds variables to every command's environment (before the command's own `env`, which
    /// wins). Like a rocklet started with a different environment: for instance a `PATH`
    /// with site-specific tools first.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env = env;
        self
    }

    /// Always [`WorkerAddr::Local`].
    pub fn addr(&self) -> &WorkerAddr {
        &self.addr
    }

    /// Runs `cmd` and waits for it, at most `cmd.timeout`.
    ///
    /// Errors: `NotFound` for a missing program, `/bin/sh` or `cwd`; `Timeout` when the limit
    /// expired (the process group has then been killed); `Rejected` for an empty argv; `Other`
    /// when the program cannot be started for another reason (permissions, `cwd` not a
    /// directory…). A non-zero exit status is not an error: it is [`Output::exit_code`], `-N`
    /// for death by signal N.
    pub async fn execute(&self, cmd: &Command) -> Result<Output, WorkerError> {
        let (program, args): (&str, &[String]) = match &cmd.program {
            Program::Argv(argv) => match argv.split_first() {
                Some((first, rest)) => (first.as_str(), rest),
                None => {
                    return Err(WorkerError::Rejected(running(cmd, "argv is empty")));
                }
            },
            Program::Shell(script) => ("/bin/sh", std::slice::from_ref(script)),
        };

        if let Some(cwd) = &cmd.cwd {
            check_cwd(cmd, cwd).await?;
        }

        let mut command = tokio::process::Command::new(program);
        if matches!(cmd.program, Program::Shell(_)) {
            command.arg("-c");
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group (pgid = child pid), so a timeout can kill every descendant.
            .process_group(0)
            // The group guard below does the killing; tokio still reaps a dropped child.
            .kill_on_drop(false);
        if let Some(cwd) = &cmd.cwd {
            command.current_dir(cwd);
        }

        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Err(spawn_error(program, cmd, e).await),
        };
        // Declared after `child`, so it is dropped first: on cancellation the group is killed
        // before tokio hands the child to its background reaper.
        let mut group = GroupGuard::new(child.id());

        let keep = self.limits.max_output_bytes;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let collected = tokio::time::timeout(cmd.timeout, async {
            tokio::join!(
                read_capped(stdout, keep),
                read_capped(stderr, keep),
                child.wait()
            )
        })
        .await;

        match collected {
            Ok((out, err, status)) => {
                group.disarm();
                let status = status.map_err(|e| {
                    WorkerError::Other(running(cmd, format!("waiting for the command failed: {e}")))
                })?;
                let read_error = |e: io::Error| {
                    WorkerError::Other(running(cmd, format!("reading its output failed: {e}")))
                };
                let (out, out_total) = out.map_err(read_error)?;
                let (err, err_total) = err.map_err(read_error)?;
                let exit_code = status
                    .code()
                    .unwrap_or_else(|| status.signal().map_or(-1, |s| -s));
                Ok(Output {
                    stdout: decode_capped(&out, out_total, keep),
                    stderr: decode_capped(&err, err_total, keep),
                    exit_code,
                })
            }
            Err(_elapsed) => {
                group.kill();
                // Reap the leader; the pipes were dropped with the collecting future.
                let _ = tokio::time::timeout(REAP_AFTER_KILL_TIMEOUT, child.wait()).await;
                Err(WorkerError::Timeout(running(
                    cmd,
                    format!(
                        "timed out after {} and its process group was killed",
                        format_secs(cmd.timeout)
                    ),
                )))
            }
        }
    }

    /// Reads the UTF-8 text file at `path`, within `timeout`.
    ///
    /// Errors: `NotFound` when it does not exist; `Rejected` when it is larger than
    /// [`Limits::max_file_bytes`] (checked before reading); `Other` for a directory, non-UTF-8
    /// content or an I/O error; `Timeout` when `timeout` expired.
    pub async fn read_file(&self, path: &str, timeout: Duration) -> Result<String, WorkerError> {
        match tokio::time::timeout(timeout, self.read_file_inner(path)).await {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Timeout(local(
                Doing::Reading(path),
                format!("timed out after {}", format_secs(timeout)),
            ))),
        }
    }

    async fn read_file_inner(&self, path: &str) -> Result<String, WorkerError> {
        let max = self.limits.max_file_bytes;
        let doing = Doing::Reading(path);
        let fail = |what: &str, e: io::Error| file_error(doing, what, e);
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| fail("cannot stat", e))?;
        if meta.is_dir() {
            return Err(WorkerError::Other(local(doing, "is a directory")));
        }
        if meta.len() > max as u64 {
            return Err(too_big(doing, meta.len(), max));
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| fail("cannot open", e))?;
        // The file may grow between stat and read (or be a device): never read past the cap.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| fail("cannot read", e))?;
        if bytes.len() > max {
            return Err(WorkerError::Rejected(local(
                doing,
                format!("the file is larger than the limit of {max} bytes"),
            )));
        }
        String::from_utf8(bytes).map_err(|e| {
            WorkerError::Other(local(
                doing,
                format!(
                    "the file is not valid UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ))
        })
    }

    /// Writes `content` to `path` atomically (temporary sibling file + rename), creating missing
    /// parent directories, within `timeout`. An existing file keeps its permission bits; a
    /// symbolic link is written through, not replaced.
    ///
    /// Errors: `Rejected` when `content` is larger than [`Limits::max_file_bytes`]; `Other` when
    /// `path` is a directory, a parent cannot be created or an I/O error occurs; `Timeout` when
    /// `timeout` expired (no partial file is left behind).
    pub async fn write_file(
        &self,
        path: &str,
        content: &str,
        timeout: Duration,
    ) -> Result<(), WorkerError> {
        let max = self.limits.max_file_bytes;
        if content.len() > max {
            return Err(too_big(Doing::Writing(path), content.len() as u64, max));
        }
        match tokio::time::timeout(timeout, write_atomically(path, content)).await {
            Ok(result) => result,
            Err(_) => Err(WorkerError::Timeout(local(
                Doing::Writing(path),
                format!(
                    "timed out after {}; the file was not changed",
                    format_secs(timeout)
                ),
            ))),
        }
    }
}

super::impl_worker_api!(LocalWorker);

/// Kills a command's process group when dropped while armed (timeout or cancellation).
struct GroupGuard {
    /// Process group id (= the child's pid); `None` once disarmed or fired.
    pgid: Option<libc::pid_t>,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> Self {
        GroupGuard {
            pgid: pid
                .and_then(|p| libc::pid_t::try_from(p).ok())
                .filter(|&p| p > 0),
        }
    }

    /// The command finished normally: leave its group (and any daemons in it) alone.
    fn disarm(&mut self) {
        self.pgid = None;
    }

    /// Sends `SIGKILL` to the whole group, once.
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the
            // process group we created with process_group(0), and pgid > 0 so it is never -1
            // ("every process").
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` to the end, keeping at most `cap + OUTPUT_KEEP_SLACK_BYTES` bytes and
/// discarding the rest. Returns the kept bytes and the total number of bytes read.
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
) -> io::Result<(Vec<u8>, u64)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), 0));
    };
    let keep = cap.saturating_add(OUTPUT_KEEP_SLACK_BYTES);
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let mut chunk = vec![0u8; PIPE_READ_CHUNK_BYTES];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, total));
        }
        total += n as u64;
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// Decodes captured output (lossy UTF-8) and applies the cap with [`truncate_output`]'s marker.
/// When bytes were discarded while draining, the marker counts them too, so it reads the same
/// as for a rocklet, which returns everything and is truncated afterwards.
fn decode_capped(kept: &[u8], total: u64, cap: usize) -> String {
    let text = String::from_utf8_lossy(kept).into_owned();
    let discarded = total.saturating_sub(kept.len() as u64);
    if discarded == 0 {
        return truncate_output(text, cap);
    }
    // `kept` holds more than `cap` bytes here (cap + slack), so truncate_output cuts and
    // appends its marker; restate the marker's count as the number of bytes really dropped.
    let mut cut = cap.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped_in_text = (text.len() - cut) as u64;
    // Counted in raw bytes when the kept prefix decoded unchanged (a replacement character
    // for a split sequence at the end of `kept` would otherwise inflate the count).
    let dropped = if kept.get(..cut) == text.as_bytes().get(..cut) {
        total - cut as u64
    } else {
        dropped_in_text + discarded
    };
    let with_marker = truncate_output(text, cap);
    let marker = format!("\n...[quarry: {dropped_in_text} more bytes truncated]");
    match with_marker.strip_suffix(&marker) {
        Some(head) => format!("{head}\n...[quarry: {dropped} more bytes truncated]"),
        // The shared marker format changed: keep its text rather than guessing.
        None => with_marker,
    }
}

/// An error message of this worker: `reason`, then what was being done.
fn local(doing: Doing<'_>, reason: impl std::fmt::Display) -> String {
    error_message(&WorkerAddr::Local, doing, reason)
}

/// An error message about running `cmd` on this worker.
fn running(cmd: &Command, reason: impl std::fmt::Display) -> String {
    local(Doing::Running(&cmd.program), reason)
}

/// Checks that a command's working directory exists and is a directory.
async fn check_cwd(cmd: &Command, cwd: &str) -> Result<(), WorkerError> {
    match tokio::fs::metadata(cwd).await {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(WorkerError::Other(running(
            cmd,
            format!("cwd {cwd:?} is not a directory"),
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(WorkerError::NotFound(running(
            cmd,
            format!("cwd {cwd:?} not found"),
        ))),
        Err(e) => Err(WorkerError::Other(running(
            cmd,
            format!("cwd {cwd:?} is not usable: {e}"),
        ))),
    }
}

/// Maps a failed spawn to a worker error naming the program (or the cwd, if it vanished).
async fn spawn_error(program: &str, cmd: &Command, e: io::Error) -> WorkerError {
    if e.kind() == io::ErrorKind::NotFound {
        if let Some(cwd) = &cmd.cwd
            && tokio::fs::metadata(cwd).await.is_err()
        {
            return WorkerError::NotFound(running(cmd, format!("cwd {cwd:?} not found")));
        }
        let where_ = if program.contains('/') {
            ""
        } else {
            " on PATH"
        };
        return WorkerError::NotFound(running(
            cmd,
            format!("program {program:?} not found{where_}"),
        ));
    }
    WorkerError::Other(running(cmd, format!("cannot run program {program:?}: {e}")))
}

/// Error for a failed file-system call on `path`: `NotFound` for a missing file, else `Other`.
fn file_error(doing: Doing<'_>, what: &str, e: io::Error) -> WorkerError {
    if e.kind() == io::ErrorKind::NotFound {
        WorkerError::NotFound(local(doing, "not found"))
    } else {
        WorkerError::Other(local(doing, format!("{what}: {e}")))
    }
}

fn too_big(doing: Doing<'_>, len: u64, max: usize) -> WorkerError {
    WorkerError::Rejected(local(
        doing,
        format!("{len} bytes is over the limit of {max} bytes"),
    ))
}

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort (also runs when a timeout cancels the write half-way).
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `content` to a temporary sibling of `path`, then renames it over `path`.
async fn write_atomically(path: &str, content: &str) -> Result<(), WorkerError> {
    let doing = Doing::Writing(path);
    let other = |what: &str, e: io::Error| WorkerError::Other(local(doing, format!("{what}: {e}")));

    // Write through a symbolic link, as a plain write would, instead of replacing the link.
    let mut target = PathBuf::from(path);
    let existing = match tokio::fs::symlink_metadata(&target).await {
        Ok(meta) if meta.file_type().is_symlink() => {
            if let Ok(resolved) = tokio::fs::canonicalize(&target).await {
                target = resolved;
            }
            tokio::fs::metadata(&target).await.ok()
        }
        Ok(meta) => Some(meta),
        Err(_) => None,
    };
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(WorkerError::Other(local(doing, "is a directory")));
    }

    let Some(file_name) = target.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(WorkerError::Rejected(local(
            doing,
            "the path does not name a file",
        )));
    };
    let parent = parent_dir(&target);
    tokio::fs::create_dir_all(&parent).await.map_err(|e| {
        WorkerError::Other(local(
            doing,
            format!("cannot create parent directory {}: {e}", parent.display()),
        ))
    })?;

    let n = TEMP_FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_path = parent.join(format!(
        ".{file_name}.quarry-tmp.{}.{n}",
        std::process::id()
    ));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .await
        .map_err(|e| other("cannot create a temporary file next to it", e))?;
    let mut temp = TempFile {
        path: Some(temp_path.clone()),
    };
    file.write_all(content.as_bytes())
        .await
        .map_err(|e| other("cannot write", e))?;
    // Durable before it becomes visible: a crash must not leave an empty status file.
    file.sync_all().await.map_err(|e| other("cannot sync", e))?;
    drop(file);
    if let Some(meta) = &existing {
        let mode = meta.permissions().mode();
        tokio::fs::set_permissions(&temp_path, std::fs::Permissions::from_mode(mode))
            .await
            .map_err(|e| other("cannot copy the permissions of the existing file", e))?;
    }
    tokio::fs::rename(&temp_path, &target)
        .await
        .map_err(|e| other("cannot rename the temporary file into place", e))?;
    temp.path = None;
    Ok(())
}

/// A short, single-line description of a command for error messages: argv words (quoted when
/// they contain anything but plain characters) or `sh -c "<script>"`, cut to
/// [`CONTEXT_MAX_CHARS`] characters. Environment values are never included.
pub(super) fn describe_command(program: &Program) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    };
    let text = match program {
        Program::Argv(argv) => argv
            .iter()
            .map(|a| {
                if plain(a) {
                    a.clone()
                } else {
                    format!("{a:?}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Program::Shell(script) => format!("sh -c {script:?}"),
    };
    clip_chars(&text, CONTEXT_MAX_CHARS)
}

/// Formats a duration as seconds with up to three decimals: `1s`, `1.5s`, `0.25s`.
pub(super) fn format_secs(d: Duration) -> String {
    let millis = d.as_millis();
    let (secs, frac) = (millis / 1000, millis % 1000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

/// The directory a file at `target` lives in (`.` for a bare file name).
fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_capped_matches_truncate_output() {
        let full = "abcdefghij".to_string();
        // Nothing discarded: identical to truncate_output.
        assert_eq!(
            decode_capped(full.as_bytes(), 10, 4),
            truncate_output(full.clone(), 4)
        );
        // Bytes discarded while draining are counted in the marker.
        assert_eq!(
            decode_capped(&full.as_bytes()[..6], 10, 4),
            truncate_output(full, 4)
        );
        assert_eq!(decode_capped(b"abc", 3, 4), "abc");
    }

    #[test]
    fn decode_capped_cuts_on_char_boundary() {
        let s = "ééé"; // 6 bytes
        // Kept bytes end inside a character: the count is still of raw bytes.
        let out = decode_capped(&s.as_bytes()[..5], 6, 3);
        assert_eq!(out, truncate_output(s.to_string(), 3));
        assert!(
            out.starts_with("é\n") && out.contains("4 more bytes truncated"),
            "{out}"
        );
    }

    #[test]
    fn describes_commands_briefly() {
        let argv = Program::Argv(vec!["ls".into(), "-l".into(), "a b".into()]);
        assert_eq!(describe_command(&argv), r#"ls -l "a b""#);
        assert_eq!(
            describe_command(&Program::Shell("echo hi\nexit 3".into())),
            r#"sh -c "echo hi\nexit 3""#
        );
        let long = describe_command(&Program::Shell("x".repeat(1000)));
        assert_eq!(long.chars().count(), CONTEXT_MAX_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn formats_seconds() {
        assert_eq!(format_secs(Duration::from_secs(1)), "1s");
        assert_eq!(format_secs(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_secs(Duration::from_millis(250)), "0.25s");
        assert_eq!(format_secs(Duration::from_millis(70_001)), "70.001s");
    }

    #[test]
    fn parent_of_bare_name_is_cwd() {
        assert_eq!(parent_dir(Path::new("x.txt")), PathBuf::from("."));
        assert_eq!(parent_dir(Path::new("/a/b.txt")), PathBuf::from("/a"));
    }
}
