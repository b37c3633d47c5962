//! Pure pieces of the cleanup: the `docker` argument vectors, the parsers of their output, the
//! RFC 3339 timestamp parser and the age decision. Nothing here touches a worker.

use crate::params::Config;

/// The `docker container inspect` template: one line per container, four fields.
pub const INSPECT_FORMAT: &str = "{{.Id}} {{.State.Status}} {{.State.FinishedAt}} {{.Created}}";

/// Docker's zero time: the `FinishedAt` (and `StartedAt`) of a container that never ran.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The container states this task removes (ROCK's two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Ran and stopped; its age is measured from `State.FinishedAt`.
    Exited,
    /// Created and never started; its age is measured from `Created`.
    Created,
}

impl State {
    /// The word docker uses (`status=` filter, `State.Status`).
    pub fn word(self) -> &'static str {
        match self {
            State::Exited => "exited",
            State::Created => "created",
        }
    }
}

/// `docker ps -aq --no-trunc --filter status=<state> [--filter label=<label>]`.
pub fn ps_argv(state: State, label: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = ["docker", "ps", "-aq", "--no-trunc", "--filter"]
        .map(String::from)
        .to_vec();
    argv.push(format!("status={}", state.word()));
    if let Some(label) = label {
        argv.push("--filter".into());
        argv.push(format!("label={label}"));
    }
    argv
}

/// `docker container inspect --format <INSPECT_FORMAT> <ids…>`.
pub fn inspect_argv(ids: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = ["docker", "container", "inspect", "--format", INSPECT_FORMAT]
        .map(String::from)
        .to_vec();
    argv.extend(ids.iter().cloned());
    argv
}

/// `docker rm -v <ids…>` (anonymous volumes go with their container, as in ROCK).
pub fn rm_argv(ids: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = ["docker", "rm", "-v"].map(String::from).to_vec();
    argv.extend(ids.iter().cloned());
    argv
}

/// Whether `s` is a full container id: 64 lower-case hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The ids printed by `docker ps -q --no-trunc`, in order, without duplicates. Anything that
/// is not a full id is an error: the output is not what this task understands, so nothing
/// must be removed on its strength.
pub fn parse_ids(stdout: &str) -> Result<Vec<String>, String> {
    let mut ids: Vec<String> = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !is_container_id(line) {
            return Err(format!("unexpected line in docker ps output: {line:?}"));
        }
        if !ids.iter().any(|i| i == line) {
            ids.push(line.to_string());
        }
    }
    Ok(ids)
}

/// One line of `docker container inspect --format INSPECT_FORMAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// Full id.
    pub id: String,
    /// `State.Status`: `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    pub status: String,
    /// `State.FinishedAt`, RFC 3339 with nanoseconds; the zero time if it never ran.
    pub finished_at: String,
    /// `Created`, RFC 3339 with nanoseconds.
    pub created: String,
}

/// Parses the inspect output: the containers, and the lines that could not be read.
pub fn parse_inspect(stdout: &str) -> (Vec<Inspected>, Vec<String>) {
    let mut found = Vec::new();
    let mut bad = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [id, status, finished_at, created] if is_container_id(id) => found.push(Inspected {
                id: id.to_string(),
                status: status.to_string(),
                finished_at: finished_at.to_string(),
                created: created.to_string(),
            }),
            _ => bad.push(line.to_string()),
        }
    }
    (found, bad)
}

/// Why a listed container is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keep {
    /// Younger than its cutoff.
    Young,
    /// No usable time: the zero time (never finished) or a date that does not parse.
    NoTime,
    /// No longer exited or created (started, being removed…) when inspected or removed.
    StateChanged,
}

impl Keep {
    /// The key in the outcome's `kept_by_reason`.
    pub fn word(self) -> &'static str {
        match self {
            Keep::Young => "young",
            Keep::NoTime => "no_time",
            Keep::StateChanged => "state_changed",
        }
    }
}

/// What to do with one inspected container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Remove it.
    Remove {
        /// The state it was inspected in.
        state: State,
        /// Its age in nanoseconds (from `FinishedAt` or `Created`, per state).
        age_nanos: i128,
    },
    /// Keep it.
    Keep(Keep),
}

/// Decides about one container, `now_nanos` being the worker's clock (Unix nanoseconds).
/// An exited container is removed when `State.FinishedAt` is more than `max_age_hours` ago,
/// a created one when `Created` is more than `created_max_age_hours` ago.
pub fn decide(c: &Inspected, now_nanos: i128, config: &Config) -> Decision {
    let (state, time, cutoff) = match c.status.as_str() {
        "exited" => (State::Exited, &c.finished_at, config.max_age_nanos),
        "created" => (State::Created, &c.created, config.created_max_age_nanos),
        _ => return Decision::Keep(Keep::StateChanged),
    };
    if time == ZERO_TIME {
        return Decision::Keep(Keep::NoTime);
    }
    let Some(at) = parse_rfc3339_nanos(time) else {
        return Decision::Keep(Keep::NoTime);
    };
    let age_nanos = now_nanos - at;
    if age_nanos > cutoff {
        Decision::Remove { state, age_nanos }
    } else {
        Decision::Keep(Keep::Young)
    }
}

/// What one `docker rm` chunk did, per id of the chunk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RmResult {
    /// Removed (printed on stdout).
    pub removed: Vec<String>,
    /// Already gone, or being removed by someone else: nothing left to do.
    pub gone: Vec<String>,
    /// Started (or paused) since it was inspected: kept.
    pub running: Vec<String>,
    /// Failed, with docker's message (`<id>: <message>`, or the chunk's stderr).
    pub errors: Vec<(String, String)>,
}

/// Reads the answer of `docker rm -v <chunk…>`: stdout lists what was removed, stderr has one
/// line per failure naming the container. A failure that names no id of the chunk is
/// reported against every id that is otherwise unaccounted for.
pub fn parse_rm(chunk: &[String], exit_code: i32, stdout: &str, stderr: &str) -> RmResult {
    let mut r = RmResult::default();
    let printed: Vec<&str> = stdout.lines().map(str::trim).collect();
    let mut unattributed: Vec<&str> = Vec::new();
    let mut messages: Vec<(&str, &str)> = Vec::new();
    for line in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match chunk.iter().find(|id| line.contains(id.as_str())) {
            Some(id) => messages.push((id, line)),
            None => unattributed.push(line),
        }
    }
    for id in chunk {
        if printed.contains(&id.as_str()) {
            r.removed.push(id.clone());
        } else if let Some((_, line)) = messages.iter().find(|(i, _)| *i == id) {
            let lower = line.to_ascii_lowercase();
            if lower.contains("no such container") || lower.contains("already in progress") {
                r.gone.push(id.clone());
            } else if lower.contains("cannot remove a running container")
                || lower.contains("cannot remove a paused container")
            {
                r.running.push(id.clone());
            } else {
                r.errors.push((id.clone(), line.to_string()));
            }
        } else {
            let why = if unattributed.is_empty() {
                format!("docker rm exited with {exit_code} without removing it")
            } else {
                format!(
                    "docker rm exited with {exit_code}: {}",
                    unattributed.join("; ")
                )
            };
            r.errors.push((id.clone(), why));
        }
    }
    r
}

/// Parses an RFC 3339 timestamp (`2026-11-23T02:44:47.166424123Z`, `…+02:00`) into Unix
/// nanoseconds. Fractions of up to 9 digits are exact; further digits are ignored. `None` for
/// anything that is not a valid timestamp.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')),
        )
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NS: i128 = 1_000_000_000;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn argvs() {
        assert_eq!(
            ps_argv(State::Exited, None),
            [
                "docker",
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                "status=exited"
            ]
        );
        assert_eq!(
            ps_argv(State::Created, Some("team=a b; $(id)")),
            [
                "docker",
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                "status=created",
                "--filter",
                "label=team=a b; $(id)"
            ]
        );
        let ids = vec![id('a'), id('b')];
        assert_eq!(
            inspect_argv(&ids),
            [
                "docker",
                "container",
                "inspect",
                "--format",
                INSPECT_FORMAT,
                &id('a'),
                &id('b')
            ]
        );
        assert_eq!(rm_argv(&ids), ["docker", "rm", "-v", &id('a'), &id('b')]);
    }

    #[test]
    fn ids_must_be_full_ids() {
        let a = id('a');
        let b = id('1');
        assert_eq!(
            parse_ids(&format!("{a}\n\n{b}\n{a}\n")).unwrap(),
            vec![a.clone(), b]
        );
        assert_eq!(parse_ids("").unwrap(), Vec::<String>::new());
        assert!(parse_ids("abc123\n").unwrap_err().contains("\"abc123\""));
        assert!(parse_ids(&format!("{a}\n-rf\n")).is_err());
        assert!(!is_container_id(&id('A')));
        assert!(!is_container_id(&id('g')));
    }

    #[test]
    fn inspect_lines() {
        let a = id('a');
        let text = format!(
            "{a} exited 2026-11-23T18:02:57.548185897Z 2026-11-23T18:02:57.387388651Z\n\
             garbage line\n\n"
        );
        let (found, bad) = parse_inspect(&text);
        assert_eq!(
            found,
            vec![Inspected {
                id: a,
                status: "exited".into(),
                finished_at: "2026-11-23T18:02:57.548185897Z".into(),
                created: "2026-11-23T18:02:57.387388651Z".into(),
            }]
        );
        assert_eq!(bad, vec!["garbage line".to_string()]);
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339_nanos;
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(t("1970-01-01T00:00:01.5Z"), Some(NS + NS / 2));
        assert_eq!(
            t("2026-11-23T18:02:57.548185897Z"),
            Some(1_795_456_977 * NS + 548_185_897)
        );
        // Digits beyond nanoseconds are ignored.
        assert_eq!(
            t("2026-11-23T18:02:57.5481858979Z"),
            Some(1_795_456_977 * NS + 548_185_897)
        );
        assert_eq!(t("2000-02-29T12:00:00z"), Some(951_825_600 * NS));
        assert_eq!(t("2000-02-29 12:00:00Z"), Some(951_825_600 * NS));
        assert_eq!(t("2000-02-29T14:30:00+02:30"), Some(951_825_600 * NS));
        assert_eq!(t("2000-02-29T10:00:00-02:00"), Some(951_825_600 * NS));
        assert_eq!(t("1969-12-31T23:59:59Z"), Some(-NS));
        assert_eq!(t(ZERO_TIME), Some(-62_135_596_800 * NS));
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T18:02:57",
            "2026-11-23T18:02:57.Z",
            "2026-11-23T18:02:57ZZ",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T18:60:00Z",
            "2026-11-23T18:02:61Z",
            "2026-11-23T18:02:57+0200",
            "2026-11-23T18:02:57+24:00",
            "2026/11/23T18:02:57Z",
            "+026-11-23T18:02:57Z",
            "2026-11-23T18:02:5éZ",
            "<no value>",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_agrees_with_gnu_date() {
        // Cross-check the calendar arithmetic against the real `date` on this machine.
        for s in [
            "1999-12-31T23:59:59Z",
            "2024-02-29T00:00:00Z",
            "2038-01-19T03:14:08Z",
            "2263-06-30T12:34:56Z",
        ] {
            let out = std::process::Command::new("date")
                .args(["-u", "-d", s, "+%s"])
                .output()
                .expect("date runs");
            let secs: i128 = String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(parse_rfc3339_nanos(s), Some(secs * NS), "{s}");
        }
    }

    fn config(max_h: f64, created_h: f64) -> Config {
        let params: crate::params::Params = serde_json::from_value(
            json!({"max_age_hours": max_h, "created_max_age_hours": created_h}),
        )
        .unwrap();
        Config::from_params(&params).unwrap()
    }

    fn inspected(status: &str, finished: &str, created: &str) -> Inspected {
        Inspected {
            id: id('c'),
            status: status.into(),
            finished_at: finished.into(),
            created: created.into(),
        }
    }

    #[test]
    fn decisions() {
        let now = parse_rfc3339_nanos("2026-11-23T12:00:00Z").unwrap();
        let c = config(24.0, 1.0);
        let created = "2026-11-20T00:00:00Z";
        let d = |s: &str, f: &str, cr: &str| decide(&inspected(s, f, cr), now, &c);
        // Exited: FinishedAt counts, not Created.
        assert_eq!(
            d("exited", "2026-11-22T11:59:59Z", created),
            Decision::Remove {
                state: State::Exited,
                age_nanos: (24 * 3600 + 1) * NS
            }
        );
        assert_eq!(
            d("exited", "2026-11-22T12:00:00Z", created),
            Decision::Keep(Keep::Young),
            "exactly the cutoff is kept"
        );
        assert_eq!(
            d("exited", "2026-11-23T11:00:00Z", created),
            Decision::Keep(Keep::Young)
        );
        assert_eq!(
            d("exited", ZERO_TIME, created),
            Decision::Keep(Keep::NoTime)
        );
        assert_eq!(
            d("exited", "yesterday", created),
            Decision::Keep(Keep::NoTime)
        );
        // A clock skewed into the future is young, not negative-old.
        assert_eq!(
            d("exited", "2026-11-24T00:00:00Z", created),
            Decision::Keep(Keep::Young)
        );
        // Created: Created counts, with its own cutoff.
        assert_eq!(
            d("created", ZERO_TIME, "2026-11-23T10:59:00Z"),
            Decision::Remove {
                state: State::Created,
                age_nanos: 61 * 60 * NS
            }
        );
        assert_eq!(
            d("created", ZERO_TIME, "2026-11-23T11:59:30Z"),
            Decision::Keep(Keep::Young),
            "a container created 30 s ago may be about to start"
        );
        for s in ["running", "paused", "restarting", "removing", "dead"] {
            assert_eq!(
                d(s, "2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
                Decision::Keep(Keep::StateChanged),
                "{s}"
            );
        }
        // Fractional cutoffs (tests use seconds).
        let c = config(0.001, 0.0);
        let at = now - 4 * NS;
        let finished = "2026-11-23T11:59:56Z";
        assert_eq!(parse_rfc3339_nanos(finished), Some(at));
        assert!(matches!(
            decide(&inspected("exited", finished, created), now, &c),
            Decision::Remove { .. }
        ));
        let c = config(0.002, 0.0);
        assert_eq!(
            decide(&inspected("exited", finished, created), now, &c),
            Decision::Keep(Keep::Young)
        );
    }

    #[test]
    fn rm_answers() {
        let (a, b, c, d, e) = (id('a'), id('b'), id('c'), id('d'), id('e'));
        let chunk = vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()];
        // As Debian's docker 20.10 and docker 28 CLIs print them.
        let stderr = format!(
            "Error response from daemon: You cannot remove a running container {b}. Stop the container before attempting removal or force remove\n\
             Error: No such container: {c}\n\
             Error response from daemon: removal of container {d} is already in progress\n\
             Error response from daemon: driver \"overlay2\" failed to remove root filesystem for {e}: device busy\n"
        );
        let r = parse_rm(&chunk, 1, &format!("{a}\n"), &stderr);
        assert_eq!(r.removed, vec![a.clone()]);
        assert_eq!(r.running, vec![b]);
        assert_eq!(r.gone, vec![c, d]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].0, e);
        assert!(r.errors[0].1.contains("device busy"));

        // Unattributed stderr is charged to the ids nobody accounted for.
        let r = parse_rm(
            &[a.clone(), e.clone()],
            1,
            &format!("{a}\n"),
            "Cannot connect to the Docker daemon\n",
        );
        assert_eq!(r.removed, vec![a.clone()]);
        assert_eq!(
            r.errors,
            vec![(
                e.clone(),
                "docker rm exited with 1: Cannot connect to the Docker daemon".into()
            )]
        );
        let r = parse_rm(std::slice::from_ref(&e), 2, "", "");
        assert_eq!(r.errors[0].1, "docker rm exited with 2 without removing it");
    }
}
