//! The worker side of a run: one constant bash script, its argument vector, and the reader of
//! what it prints.
//!
//! A run is ONE `execute` per worker: `["bash", "-c", SCRIPT, "file_cleanup", <args…>]`. The
//! script is the constant [`SCRIPT`]; it is never formatted with a configured value. Every
//! value (target paths, their glob-escaped forms, the `find` expressions built by
//! [`crate::find`], limits) travels as a positional argument, and the script only ever expands
//! them inside double quotes (`"$d"`, `"${args[@]:from:len}"`); there is no `eval` and no
//! arithmetic on anything but numbers it has checked. So no value can inject shell syntax,
//! whatever quotes, `$()`, backticks or newlines it contains.
//!
//! What the script does, in order:
//! 1. checks its arguments (numbers, layout, absolute targets, the mode: delete or dry run)
//!    and makes a temp dir (`mktemp -d`, removed by a `trap` on exit); any problem → an `A`
//!    record, nothing deleted;
//! 2. Docker, fail closed: no `docker` on PATH → absent; else `docker ps --format
//!    '{{.Names}}'` under `timeout`, each non-empty line checked against
//!    `^[A-Za-z0-9][A-Za-z0-9_.-]*$` before any name is used; a failure or a bad line ends the
//!    run before any target is touched;
//! 3. per target: missing → `Smissing` (told apart from "exists but is not a directory" and
//!    "a parent is not searchable" by file tests, not by locale messages); else the file pass
//!    and the empty-dir pass, each `find` under `timeout <seconds left>`, writing to the temp
//!    dir (excluded from the walk by `-samefile`), then at most `MAX_LISTED` paths, the exact
//!    count, the exit status and the head of its stderr. The running containers' directories
//!    `<glob-escaped target>/<name>` (and `/*`) are added as exclusions here. Once the budget
//!    is spent (a `find` timed out, or less than a second is left) the remaining targets are
//!    `Sskipped`. In a dry run the passes delete nothing and list what they would delete (the
//!    dir pass works out, from a listing of every entry, which old directories would be empty
//!    when `-delete` reached them: see [`find::prune_dirs_pass`]);
//! 4. `Z`, the end of the output.
//!
//! Output protocol: NUL-terminated records on stdout. A NUL cannot occur in a path, and the
//! rocklet (Python `bytes.decode`, JSON `\u0000`) and the host keep it, so a file name (even one
//! with newlines that look like records) is always exactly one record. A path record starts
//! with `/` (targets are absolute); every other record starts with a letter:
//!
//! | record | meaning |
//! |---|---|
//! | `A<text>` | the script refused to start (bad arguments, no temp dir); then `Z` |
//! | `Dabsent` | no docker CLI on the worker |
//! | `Dpresent`, then `N<name>`… | the running containers |
//! | `Dfailed`, `X<exit>`, `E<stderr>` | `docker ps` failed (124: timed out); then `Z` |
//! | `Dbad`, `E<line>` | `docker ps` printed a line that is not a name; then `Z` |
//! | `T<index>` | target `index` (0-based, in config order) starts |
//! | `Smissing`, `Snotdir`, `Snoaccess`, `Sskipped` | that target's whole result |
//! | `P<f\|d>`, `/path`…, `C<count>`, `X<exit>`, `E<stderr>` | one pass; `X-` = not started |
//! | `Sdone` | the target's two passes are reported |
//! | `Z` | end of output |
//!
//! Empty records are ignored (the script ends every listing with one, so that a path cut by a
//! killed `find` never merges with the next record). Output that stops before `Z` was cut (the
//! host's size limit) or the script died: listings are then marked truncated and targets
//! without a result did not finish.

use std::time::Duration;

use crate::find::{self, MAX_LISTED_PATHS, Mode, glob_escape};
use crate::params::Config;

/// The script. Constant: configured values arrive only as positional arguments.
pub const SCRIPT: &str = r#"# quarry file_cleanup, worker side; see plugins/file_cleanup/src/script.rs.
# Args: BUDGET_SECS DOCKER_PS_SECS MAX_LISTED ERR_BYTES DRY (1: a dry run, 0: delete), then
# per target: DIR GLOB_DIR and, for the file pass then the dir pass, N OPTIONS... N EXPRESSION...
# Values are only ever expanded inside double quotes. Output: NUL-terminated records.
export LC_ALL=C
rec() { printf '%s\0' "$@"; }
fatal() { rec "A$1" Z; exit 0; }
num='^(0|[1-9][0-9]{0,8})$'
name_re='^[A-Za-z0-9][A-Za-z0-9_.-]*$'
[[ $# -ge 5 && $1 =~ $num && $2 =~ $num && $3 =~ $num && $4 =~ $num && $2 != 0 &&
  $5 =~ ^[01]$ ]] || fatal 'bad arguments'
budget=$1 docker_secs=$2 max_listed=$3 err_bytes=$4 dry=$5
shift 5
args=("$@")
n=${#args[@]} t=0 i=0
while ((i < n)); do
  ((i + 2 < n)) || fatal 'bad arguments: a target is cut short'
  dirs[t]=${args[i]}
  globs[t]=${args[i + 1]}
  [[ ${dirs[t]} == /* ]] || fatal 'bad arguments: a target is not an absolute path'
  ((i += 2))
  for p in 0 1 2 3; do
    c=${args[i]-}
    [[ $c =~ $num ]] && ((i + 1 + c <= n)) || fatal 'bad arguments: a bad count'
    ((from[t * 4 + p] = i + 1, len[t * 4 + p] = c, i += 1 + c))
  done
  ((t += 1))
done
tmp=$(mktemp -d 2>&1) || fatal "mktemp -d failed: $tmp"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 143' HUP INT TERM
out=$tmp/out err=$tmp/err
# Each process costs the worker a fork and an exec: none while stderr is empty (the usual case).
errors() {
  if [[ -s $err ]]; then printf E; head -c "$err_bytes" -- "$err" | tr -d '\0'; printf '\0'
  else printf 'E\0'; fi
}
# Every `timeout` here is --foreground: it stays in the host's process group, so that the
# host's own kill (if its call limit is shorter than our budget) reaches docker and find too.

names=()
if ! command -v docker >/dev/null 2>&1; then
  rec Dabsent
else
  timeout --foreground -k 2 "$docker_secs" docker ps --format '{{.Names}}' >"$out" 2>"$err"
  rc=$?
  if ((rc != 0)); then rec Dfailed "X$rc"; errors; rec Z; exit 0; fi
  # NUL would vanish in bash's strings: make it a visible \1. A failure here must stop the
  # run: reading no names would leave the containers unprotected.
  tr '\0' '\1' <"$out" >"$err" && mapfile -t lines <"$err" ||
    fatal 'cannot read the output of docker ps'
  for line in "${lines[@]}"; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -z $line ]] && continue
    [[ $line =~ $name_re ]] || { rec Dbad "E${line:0:400}" Z; exit 0; }
    names+=("$line")
  done
  rec Dpresent
  for nm in "${names[@]}"; do rec "N$nm"; done
fi

pass() { # OFFSET (0: file pass, 2: dir pass) KIND
  local o=$((k * 4 + $1)) left rc
  rec "P$2"
  left=$((budget - SECONDS - 1))
  if ((expired || left < 1)); then expired=1; rec C0 X- E; return; fi
  timeout --foreground -k 2 "$left" find "$d" "${args[@]:from[o]:len[o]}" \
    -not -samefile "$out" -not -samefile "$err" "${cx[@]}" \
    "${args[@]:from[o + 1]:len[o + 1]}" >"$out" 2>"$err"
  rc=$?
  ((rc == 124 || rc == 137)) && expired=1
  if ((dry)) && [[ $2 == d ]]; then
    # A dry run's dir pass (see find::prune_dirs_pass): c<path> is an old directory, o<path>
    # an entry that stays, children before their parent. A directory goes when it is a
    # candidate and nothing below it stays, as -delete would remove it. A record cut by a
    # killed find has no NUL and is not read.
    found=()
    local -A stays=()
    local r p
    while IFS= read -r -d '' r; do
      ((SECONDS < budget)) || { rc=124 expired=1; break; }
      p=${r:1}
      if [[ $r == c* && -z ${stays[$p]-} ]]; then found+=("$p"); else stays[${p%/*}]=1; fi
    done <"$out"
  else
    # Listing and count in bash itself (no head/tr/wc processes). A find killed by its time
    # limit may have written half a path last: dropped (a timed-out pass's count is a lower
    # bound anyway, since find deletes before it prints).
    mapfile -d '' -t found <"$out"
    ((expired && ${#found[@]})) && unset 'found[${#found[@]}-1]'
  fi
  ((${#found[@]})) && printf '%s\0' "${found[@]:0:max_listed}"
  rec '' "C${#found[@]}" "X$rc"
  errors
}

expired=0
for ((k = 0; k < t; k++)); do
  d=${dirs[k]}
  rec "T$k"
  if ((expired || budget - SECONDS - 1 < 1)); then expired=1; rec Sskipped; continue; fi
  if [[ ! -d $d ]]; then
    if [[ -e $d || -L $d ]]; then rec Snotdir; continue; fi
    a=$d
    while [[ -n $a && ! -e $a ]]; do a=${a%/*}; done
    if [[ -z $a || ! -d $a || -x $a ]]; then rec Smissing; else rec Snoaccess; fi
    continue
  fi
  cx=()
  for nm in "${names[@]}"; do
    cx+=(-not -path "${globs[k]}/$nm" -not -path "${globs[k]}/$nm/*")
  done
  pass 0 f
  pass 2 d
  rec Sdone
done
rec Z
exit 0
"#;

/// Time limit of `docker ps` inside the script: a busy daemon can take a few seconds to answer.
pub const DOCKER_PS_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of each stderr (of `docker ps`, of each `find`) the script sends back: room for the
/// characters kept in the outcome, even if every one takes four bytes.
pub const STDERR_HEAD_BYTES: usize = 4 * crate::ERRORS_HEAD_CHARS;

/// The name the script runs under (`$0`, in bash's own messages).
const SCRIPT_NAME: &str = "file_cleanup";

/// How the host marks a command output it cut at its size limit (`...[quarry: N more bytes
/// truncated]` on a line of its own). The WIT interface does not expose this, so it is
/// recognised by its text.
const TRUNCATION_MARKER_START: &str = "...[quarry: ";
const TRUNCATION_MARKER_END: &str = " more bytes truncated]";

/// The program of a run: `bash -c SCRIPT file_cleanup <limits> <mode> <targets…>`, with
/// `budget` (whole seconds, at least 1) as the script's own deadline; in [`Mode::DryRun`] the
/// passes only list what they would delete.
pub fn argv(config: &Config, budget: Duration, mode: Mode) -> Vec<String> {
    let mut argv: Vec<String> = ["bash", "-c", SCRIPT, SCRIPT_NAME]
        .map(String::from)
        .to_vec();
    argv.extend([
        budget.as_secs().max(1).to_string(),
        DOCKER_PS_TIMEOUT.as_secs().to_string(),
        MAX_LISTED_PATHS.to_string(),
        STDERR_HEAD_BYTES.to_string(),
        u8::from(mode == Mode::DryRun).to_string(),
    ]);
    for target in &config.targets {
        let excl = find::exclusions(target);
        argv.push(target.path.clone());
        argv.push(glob_escape(&target.path));
        let passes = [
            find::delete_files_pass(&excl, config.max_age_mins, config.max_file_size_bytes, mode),
            find::prune_dirs_pass(&excl, config.max_age_mins, mode),
        ];
        for pass in passes {
            for part in [pass.options, pass.expression] {
                argv.push(part.len().to_string());
                argv.extend(part);
            }
        }
    }
    argv
}

/// What the script said about Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerSeen {
    /// No docker CLI on the worker: nothing to protect.
    Absent,
    /// The names of the running containers (as printed; checked again by the caller).
    Present(Vec<String>),
    /// `docker ps` failed.
    Failed {
        /// Its exit status (124 or 137: its time limit).
        exit_code: i32,
        /// The head of its stderr.
        stderr: String,
    },
    /// `docker ps` printed this line, which is not a container name.
    BadName(String),
}

/// How a `find` pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassExit {
    /// It exited with this status (124 or 137: its time limit).
    Code(i32),
    /// The run's time budget was spent before it could start.
    NotStarted,
    /// The output stops before its exit status.
    Unknown,
}

/// What a pass printed: the paths it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The first [`MAX_LISTED_PATHS`] paths.
    pub paths: Vec<String>,
    /// How many paths it deleted (a lower bound when `truncated`).
    pub count: usize,
    /// The output was cut before the count: the list and count are incomplete.
    pub truncated: bool,
}

/// One pass as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassSeen {
    /// What it deleted.
    pub listing: Listing,
    /// How it ended.
    pub exit: PassExit,
    /// The head of its stderr.
    pub stderr: String,
}

/// One target as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSeen {
    /// The directory does not exist.
    Missing,
    /// The path exists but is not a directory.
    NotADirectory,
    /// A parent directory cannot be searched, so existence cannot be told.
    NoAccess,
    /// Not reached: the run's time budget was spent.
    Skipped,
    /// Cleaned: the passes reported so far (two when complete).
    Cleaned(Vec<PassSeen>),
}

/// Everything the script reported, as far as its output goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptReport {
    /// The script refused to start, with this reason.
    pub fatal: Option<String>,
    /// Docker's state, once reported.
    pub docker: Option<DockerSeen>,
    /// The targets reported, in config order (a prefix of the config's list).
    pub targets: Vec<TargetSeen>,
    /// The end-of-output record came: nothing was cut.
    pub complete: bool,
    /// The host cut the output at its size limit.
    pub cut_by_host: bool,
    /// A record broke the protocol; reading stopped there.
    pub problem: Option<String>,
}

/// Reads the script's stdout. Never fails: what cannot be read is described in the report.
pub fn parse(stdout: &str) -> ScriptReport {
    let mut records: Vec<&str> = stdout.split('\0').collect();
    // After the last NUL: "" when the output is whole, else a record that was cut.
    let tail = records.pop().unwrap_or_default();
    let mut report = ScriptReport {
        cut_by_host: tail.lines().last().is_some_and(|l| {
            l.starts_with(TRUNCATION_MARKER_START) && l.ends_with(TRUNCATION_MARKER_END)
        }),
        ..ScriptReport::default()
    };
    let mut records = Records {
        items: records.into_iter().filter(|r| !r.is_empty()).collect(),
        pos: 0,
    };
    if let Err(problem) = read_all(&mut report, &mut records) {
        report.problem = Some(problem);
        report.complete = false;
    }
    report
}

/// The records, read in order.
struct Records<'a> {
    items: Vec<&'a str>,
    pos: usize,
}

impl<'a> Records<'a> {
    fn next(&mut self) -> Option<&'a str> {
        let r = self.items.get(self.pos).copied();
        self.pos += usize::from(r.is_some());
        r
    }

    fn peek(&self) -> Option<&'a str> {
        self.items.get(self.pos).copied()
    }
}

/// Describes a record that breaks the protocol (its start only: it may be a long path).
fn unexpected(what: &str, record: &str) -> String {
    format!("expected {what}, got {:?}", find::head(record, 80))
}

/// Reads the record `<tag><value>` and returns the value; `None` at the end of the output.
fn tagged<'a>(records: &mut Records<'a>, tag: char, what: &str) -> Result<Option<&'a str>, String> {
    match records.next() {
        None => Ok(None),
        Some(r) => r
            .strip_prefix(tag)
            .map(Some)
            .ok_or_else(|| unexpected(what, r)),
    }
}

fn number<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value.parse().map_err(|_| unexpected(what, value))
}

/// Fills `report` from `records`; returns early (Ok) where the output stops.
fn read_all(report: &mut ScriptReport, records: &mut Records<'_>) -> Result<(), String> {
    let Some(first) = records.next() else {
        return Ok(());
    };
    if let Some(reason) = first.strip_prefix('A') {
        report.fatal = Some(reason.to_string());
        return read_end(report, records);
    }
    match first {
        "Dabsent" => report.docker = Some(DockerSeen::Absent),
        "Dpresent" => {
            let mut names = Vec::new();
            while let Some(name) = records.peek().and_then(|r| r.strip_prefix('N')) {
                records.next();
                names.push(name.to_string());
            }
            report.docker = Some(DockerSeen::Present(names));
        }
        "Dfailed" => {
            let Some(code) = tagged(records, 'X', "docker's exit status")? else {
                return Ok(());
            };
            let exit_code = number(code, "docker's exit status")?;
            let Some(stderr) = tagged(records, 'E', "docker's stderr")? else {
                return Ok(());
            };
            let stderr = stderr.to_string();
            report.docker = Some(DockerSeen::Failed { exit_code, stderr });
            return read_end(report, records);
        }
        "Dbad" => {
            let Some(line) = tagged(records, 'E', "docker's bad line")? else {
                return Ok(());
            };
            report.docker = Some(DockerSeen::BadName(line.to_string()));
            return read_end(report, records);
        }
        other => return Err(unexpected("the docker record", other)),
    }
    loop {
        let Some(record) = records.next() else {
            return Ok(());
        };
        if record == "Z" {
            report.complete = true;
            return read_after_end(records);
        }
        let index: usize = match record.strip_prefix('T') {
            Some(i) => number(i, "a target index")?,
            None => return Err(unexpected("a target", record)),
        };
        if index != report.targets.len() {
            return Err(format!(
                "target {index} reported where target {} was due",
                report.targets.len()
            ));
        }
        report.targets.push(TargetSeen::Cleaned(Vec::new()));
        let Some(status) = records.next() else {
            return Ok(());
        };
        let seen = match status {
            "Smissing" => TargetSeen::Missing,
            "Snotdir" => TargetSeen::NotADirectory,
            "Snoaccess" => TargetSeen::NoAccess,
            "Sskipped" => TargetSeen::Skipped,
            "Pf" => {
                let Some(TargetSeen::Cleaned(passes)) = report.targets.last_mut() else {
                    unreachable!("pushed just above");
                };
                if !read_pass(records, passes)? {
                    return Ok(());
                }
                match tagged(records, 'P', "the dir pass")? {
                    None => return Ok(()),
                    Some("d") => {}
                    Some(other) => return Err(unexpected("the dir pass", other)),
                }
                if !read_pass(records, passes)? {
                    return Ok(());
                }
                match records.next() {
                    None => return Ok(()),
                    Some("Sdone") => continue,
                    Some(other) => return Err(unexpected("the end of a target", other)),
                }
            }
            other => return Err(unexpected("a target's result", other)),
        };
        *report.targets.last_mut().expect("pushed just above") = seen;
    }
}

/// Reads one pass after its `P` record into a new entry of `passes`. False when the output
/// stops inside it.
fn read_pass(records: &mut Records<'_>, passes: &mut Vec<PassSeen>) -> Result<bool, String> {
    passes.push(PassSeen {
        listing: Listing {
            truncated: true,
            ..Listing::default()
        },
        exit: PassExit::Unknown,
        stderr: String::new(),
    });
    let pass = passes.last_mut().expect("pushed just above");
    let listing = &mut pass.listing;
    loop {
        match records.next() {
            None => return Ok(false),
            Some(path) if path.starts_with('/') => {
                listing.count += 1;
                if listing.paths.len() < MAX_LISTED_PATHS {
                    listing.paths.push(path.to_string());
                }
            }
            Some(r) => {
                let Some(count) = r.strip_prefix('C') else {
                    return Err(unexpected("a path or a count", r));
                };
                listing.count = number(count, "a count")?;
                // A path cut by a killed `find` is listed but not counted.
                listing.paths.truncate(listing.count);
                listing.truncated = false;
                break;
            }
        }
    }
    pass.exit = match tagged(records, 'X', "an exit status")? {
        None => return Ok(false),
        Some("-") => PassExit::NotStarted,
        Some(code) => PassExit::Code(number(code, "an exit status")?),
    };
    match tagged(records, 'E', "a stderr")? {
        None => Ok(false),
        Some(stderr) => {
            pass.stderr = stderr.to_string();
            Ok(true)
        }
    }
}

/// Reads the `Z` that must follow a final record.
fn read_end(report: &mut ScriptReport, records: &mut Records<'_>) -> Result<(), String> {
    match records.next() {
        None => Ok(()),
        Some("Z") => {
            report.complete = true;
            read_after_end(records)
        }
        Some(other) => Err(unexpected("the end of the output", other)),
    }
}

fn read_after_end(records: &mut Records<'_>) -> Result<(), String> {
    match records.next() {
        None => Ok(()),
        Some(r) => Err(unexpected("nothing after the end", r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(items: &[&str]) -> String {
        items.iter().map(|r| format!("{r}\0")).collect()
    }

    fn pass(paths: &[&str], count: usize, exit: PassExit, stderr: &str) -> PassSeen {
        PassSeen {
            listing: Listing {
                paths: paths.iter().map(|p| p.to_string()).collect(),
                count,
                truncated: false,
            },
            exit,
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_whole_report() {
        let out = records(&[
            "Dpresent",
            "Nweb-1",
            "Nb",
            "T0",
            "Pf",
            "/d/a",
            "/d/b\nZ",
            "",
            "C2",
            "X0",
            "E",
            "Pd",
            "",
            "C0",
            "X1",
            "Eoops\nmore",
            "Sdone",
            "T1",
            "Smissing",
            "T2",
            "Snotdir",
            "T3",
            "Snoaccess",
            "T4",
            "Sskipped",
            "Z",
        ]);
        let r = parse(&out);
        assert_eq!(
            r,
            ScriptReport {
                fatal: None,
                docker: Some(DockerSeen::Present(vec!["web-1".into(), "b".into()])),
                targets: vec![
                    TargetSeen::Cleaned(vec![
                        pass(&["/d/a", "/d/b\nZ"], 2, PassExit::Code(0), ""),
                        pass(&[], 0, PassExit::Code(1), "oops\nmore"),
                    ]),
                    TargetSeen::Missing,
                    TargetSeen::NotADirectory,
                    TargetSeen::NoAccess,
                    TargetSeen::Skipped,
                ],
                complete: true,
                cut_by_host: false,
                problem: None,
            }
        );
    }

    #[test]
    fn docker_failures_and_refusals_end_the_output() {
        let r = parse(&records(&["Dfailed", "X1", "ECannot connect\n", "Z"]));
        assert_eq!(
            r.docker,
            Some(DockerSeen::Failed {
                exit_code: 1,
                stderr: "Cannot connect\n".into()
            })
        );
        assert!(r.complete && r.targets.is_empty());
        let r = parse(&records(&["Dbad", "EWARNING: x", "Z"]));
        assert_eq!(r.docker, Some(DockerSeen::BadName("WARNING: x".into())));
        let r = parse(&records(&["Abad arguments", "Z"]));
        assert_eq!(r.fatal.as_deref(), Some("bad arguments"));
        assert!(r.complete);
        // Anything after the end is a protocol problem.
        let r = parse(&records(&["Dabsent", "Z", "T0"]));
        assert!(!r.complete && r.problem.is_some());
    }

    #[test]
    fn not_started_and_timed_out_passes() {
        let r = parse(&records(&[
            "Dabsent", "T0", "Pf", "/d/x", "", "C1", "X124", "E", "Pd", "C0", "X-", "E", "Sdone",
            "T1", "Sskipped", "Z",
        ]));
        let TargetSeen::Cleaned(passes) = &r.targets[0] else {
            panic!("{r:?}")
        };
        assert_eq!(passes[0].exit, PassExit::Code(124));
        assert_eq!(passes[1].exit, PassExit::NotStarted);
        assert_eq!(r.targets[1], TargetSeen::Skipped);
    }

    #[test]
    fn a_path_cut_by_a_killed_find_is_not_counted() {
        // find was killed after writing "/d/pa" of its second path: head printed it
        // unterminated, and the script's empty record ended it.
        let r = parse(&records(&[
            "Dabsent", "T0", "Pf", "/d/a", "/d/pa", "C1", "X124", "E",
        ]));
        let TargetSeen::Cleaned(passes) = &r.targets[0] else {
            panic!("{r:?}")
        };
        assert_eq!(passes[0].listing.paths, vec!["/d/a"]);
        assert!(!r.complete);
    }

    #[test]
    fn output_cut_by_the_host() {
        let mut out = records(&["Dabsent", "T0", "Pf"]);
        for i in 0..300 {
            out.push_str(&format!("/d/{i}\0"));
        }
        out.push_str("/d/hal\n...[quarry: 1234 more bytes truncated]");
        let r = parse(&out);
        assert!(r.cut_by_host && !r.complete && r.problem.is_none());
        let TargetSeen::Cleaned(passes) = &r.targets[0] else {
            panic!("{r:?}")
        };
        let l = &passes[0].listing;
        assert_eq!(
            (l.paths.len(), l.count, l.truncated),
            (MAX_LISTED_PATHS, 300, true)
        );
        assert_eq!(passes[0].exit, PassExit::Unknown);
        // Cut before any record, or right after the docker record.
        assert_eq!(parse(""), ScriptReport::default());
        let r = parse("Dabsent\0T0\0");
        assert_eq!(r.targets, vec![TargetSeen::Cleaned(vec![])]);
    }

    #[test]
    fn records_that_break_the_protocol_stop_the_reading() {
        for (out, problem) in [
            (
                records(&["/etc", "Z"]),
                "expected the docker record, got \"/etc\"",
            ),
            (
                records(&["Dabsent", "T1", "Smissing"]),
                "target 1 reported where target 0 was due",
            ),
            (
                records(&["Dabsent", "T0", "Pf", "X0"]),
                "expected a path or a count, got \"X0\"",
            ),
            (
                records(&["Dabsent", "T0", "Pf", "Cx"]),
                "expected a count, got \"x\"",
            ),
            (
                records(&["Dabsent", "T0", "Pf", "C0", "X0", "E", "Pf"]),
                "expected the dir pass, got \"f\"",
            ),
            (
                records(&["Dabsent", "/T0"]),
                "expected a target, got \"/T0\"",
            ),
        ] {
            let r = parse(&out);
            assert_eq!(r.problem.as_deref(), Some(problem), "{out:?}");
            assert!(!r.complete);
        }
    }

    #[test]
    fn the_script_is_constant_and_has_no_eval() {
        assert!(!SCRIPT.contains("eval"), "no eval");
        assert!(SCRIPT.contains("export LC_ALL=C"));
        // No `$` expansion outside double quotes except in [[ ]], (( )) and assignments,
        // which do not split or glob: every use of an argument-derived variable in a
        // command's arguments is quoted.
        for word in [
            "$d ",
            "$tmp ",
            "$out ",
            "$err ",
            "${args[@]",
            "${cx[@]}",
            "${names[@]}",
        ] {
            for (i, _) in SCRIPT.match_indices(word) {
                let before = &SCRIPT[..i];
                let line_start = before.rfind('\n').map_or(0, |j| j + 1);
                let line = &SCRIPT[line_start..];
                let line = &line[..line.find('\n').unwrap_or(line.len())];
                let quoted = before.ends_with('"');
                let test = line.trim_start().starts_with("[[") || line.contains("[[ ");
                assert!(quoted || test, "unquoted {word:?} in {line:?}");
            }
        }
    }
}
