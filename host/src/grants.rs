//! Capability grants: what a task may do on a worker, and the checks the host makes before a
//! call reaches one.
//!
//! A plugin declares [`Grants`] for each set of params (`quarry:task/capabilities.requires`,
//! since WIT 0.1.1); one that does not is [`Declared::Undeclared`]. The operator may narrow
//! either in the config ([`Narrowing`]); the result, with the protected paths and the run's
//! dry-run flag, is the [`RunPolicy`] every host call of a run is checked against.
//!
//! Paths are compared lexically, component by component, after normalisation (`.` and
//! repeated `/` dropped, `..` applied): a path that is not absolute or whose `..` climbs above
//! `/` is refused outright, so `..` cannot escape a prefix.

use std::fmt;

use crate::workers::Program;

/// What a task may do for one set of params.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grants {
    /// Programs it may run as `argv[0]`: a bare name matches by base name, an absolute path
    /// exactly.
    pub programs: Vec<String>,
    /// Whether it may run shell scripts.
    pub shell: bool,
    /// Path prefixes it may read (`read-file`, a command's working directory).
    pub read_paths: Vec<String>,
    /// Path prefixes it may write and act on (also readable).
    pub write_paths: Vec<String>,
    /// Whether it honours the host's dry-run flag.
    pub dry_run: bool,
}

/// What a plugin declared for one set of params.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Declared {
    /// The plugin exports no `capabilities` (built for 0.1.0, or another language's example),
    /// or its `requires` answered `undeclared`: unrestricted unless the config narrows it, and
    /// never run in a dry run.
    Undeclared,
    /// The plugin's grants.
    Grants(Grants),
}

/// The answer of `requires` by which a plugin says it declares no grants for these params.
pub const UNDECLARED: &str = "undeclared";

impl Declared {
    /// Whether the task may run in a dry run.
    pub fn dry_run(&self) -> bool {
        matches!(self, Declared::Grants(g) if g.dry_run)
    }

    /// The declared grants, if any.
    pub fn grants(&self) -> Option<&Grants> {
        match self {
            Declared::Undeclared => None,
            Declared::Grants(g) => Some(g),
        }
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "programs: {}; shell: {}; read-paths: {}; write-paths: {}; dry-run: {}",
            list(&self.programs),
            self.shell,
            list(&self.read_paths),
            list(&self.write_paths),
            self.dry_run
        )
    }
}

impl fmt::Display for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Declared::Undeclared => f.write_str(UNDECLARED),
            Declared::Grants(g) => g.fmt(f),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// The lexical normal form of an absolute path, as its components; `None` when the path is not
/// absolute or `..` climbs above `/`.
pub fn normalize(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts)
}

/// Whether `path` is `prefix` or inside it (both normalised; `None` when either is invalid).
fn under(path: &[&str], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

/// Whether `path` is under any of `prefixes` (invalid prefixes match nothing).
fn under_any(path: &[&str], prefixes: &[String]) -> bool {
    prefixes
        .iter()
        .filter_map(|p| normalize(p))
        .any(|p| under(path, &p))
}

/// Whether a grant's program entry allows `argv0`: a bare name by base name, an absolute path
/// exactly (after normalisation).
fn program_allowed(entry: &str, argv0: &str) -> bool {
    if entry.contains('/') {
        match (normalize(entry), normalize(argv0)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    } else {
        argv0.rsplit('/').next() == Some(entry)
    }
}

/// Paths no `write-file` and no declared write path may touch (`quarry.protected_paths`).
///
/// An entry is recursive by default (`/etc`: the directory, everything under it and its
/// ancestors); with the `exact:` prefix it protects only the directory itself and its
/// ancestors (`exact:/home/*`: every home directory, not the files inside). A `*` component
/// matches any one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPaths(Vec<Protected>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Protected {
    /// As written in the config.
    text: String,
    parts: Vec<String>,
    recursive: bool,
}

/// The default `quarry.protected_paths`.
pub const DEFAULT_PROTECTED: &[&str] = &[
    "exact:/",
    "/etc",
    "/usr",
    "/bin",
    "/boot",
    "/proc",
    "/sys",
    "exact:/root",
    "exact:/home",
    "exact:/home/*",
];

impl Default for ProtectedPaths {
    fn default() -> Self {
        ProtectedPaths::parse(DEFAULT_PROTECTED.iter().copied()).expect("valid defaults")
    }
}

impl ProtectedPaths {
    /// Parses entries (`/etc`, `exact:/home/*`); the error names the bad entry.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut out = Vec::new();
        for text in entries {
            let (recursive, path) = match text.strip_prefix("exact:") {
                Some(p) => (false, p),
                None => (true, text),
            };
            let parts = normalize(path).ok_or_else(|| {
                format!(
                    "protected path {text:?} is not an absolute path (optionally after `exact:`)"
                )
            })?;
            out.push(Protected {
                text: text.to_string(),
                parts: parts.into_iter().map(str::to_string).collect(),
                recursive,
            });
        }
        Ok(ProtectedPaths(out))
    }

    /// No protected paths at all.
    pub fn none() -> Self {
        ProtectedPaths(Vec::new())
    }

    /// The entries as written.
    pub fn entries(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.text.as_str()).collect()
    }

    /// The protected entry `path` touches: it is the protected path, one of its ancestors, or
    /// (recursive entries) inside it.
    pub fn touched_by(&self, path: &[&str]) -> Option<&str> {
        self.0.iter().find_map(|p| {
            let matches_at = |i: usize| p.parts[i] == "*" || p.parts[i] == path[i];
            let common = path.len().min(p.parts.len());
            let same_prefix = (0..common).all(matches_at);
            let hit = same_prefix && (path.len() <= p.parts.len() || p.recursive);
            hit.then_some(p.text.as_str())
        })
    }
}

/// What the operator allows a task, in the config (`quarry.grants`, a task's `grants:`): each
/// field given narrows the plugin's grants to its intersection with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Allowed programs.
    pub programs: Option<Vec<String>>,
    /// Whether shell scripts are allowed.
    pub shell: Option<bool>,
    /// Allowed read prefixes.
    pub read_paths: Option<Vec<String>>,
    /// Allowed write prefixes.
    pub write_paths: Option<Vec<String>>,
}

impl Narrowing {
    /// Whether nothing is narrowed.
    pub fn is_empty(&self) -> bool {
        *self == Narrowing::default()
    }

    /// `self`, with every field `other` gives and `self` does not taken from `other` (a task's
    /// own narrowing over the config-wide default).
    pub fn or(&self, other: &Narrowing) -> Narrowing {
        Narrowing {
            programs: self.programs.clone().or_else(|| other.programs.clone()),
            shell: self.shell.or(other.shell),
            read_paths: self.read_paths.clone().or_else(|| other.read_paths.clone()),
            write_paths: self
                .write_paths
                .clone()
                .or_else(|| other.write_paths.clone()),
        }
    }

    /// The effective grants: `declared` narrowed by `self`; `None` is unrestricted (an
    /// undeclared plugin the config does not narrow).
    pub fn apply(&self, declared: &Declared) -> Option<Grants> {
        let Some(g) = declared.grants() else {
            if self.is_empty() {
                return None;
            }
            // Undeclared: what the operator gives is the grant; a field not given stays open.
            return Some(Grants {
                programs: self.programs.clone().unwrap_or_else(|| vec!["*".into()]),
                shell: self.shell.unwrap_or(true),
                read_paths: self.read_paths.clone().unwrap_or_else(|| vec!["/".into()]),
                write_paths: self.write_paths.clone().unwrap_or_else(|| vec!["/".into()]),
                dry_run: false,
            });
        };
        Some(Grants {
            programs: match &self.programs {
                None => g.programs.clone(),
                Some(allowed) => (g.programs.iter())
                    .filter(|p| allowed.iter().any(|a| a == "*" || a == *p))
                    .cloned()
                    .collect(),
            },
            shell: g.shell && self.shell.unwrap_or(true),
            read_paths: intersect(&g.read_paths, self.read_paths.as_deref()),
            write_paths: intersect(&g.write_paths, self.write_paths.as_deref()),
            dry_run: g.dry_run,
        })
    }

    /// What `wanted` asks for beyond `self`'s explicit limits ("" when `self` covers it, or
    /// gives no limit for that part): for the growth rule.
    pub fn covers(&self, wanted: &Grants) -> bool {
        let programs = self.programs.as_ref().is_some_and(|allowed| {
            (wanted.programs.iter()).all(|p| allowed.iter().any(|a| a == "*" || a == p))
        });
        let shell = !wanted.shell || self.shell == Some(true);
        let paths = |limit: &Option<Vec<String>>, asked: &[String]| {
            limit.as_ref().is_some_and(|l| {
                asked
                    .iter()
                    .all(|a| normalize(a).is_some_and(|a| under_any(&a, l)))
            })
        };
        programs
            && shell
            && paths(&self.read_paths, &wanted.read_paths)
            && paths(&self.write_paths, &wanted.write_paths)
    }
}

/// The prefixes of `asked` that `allowed` also covers (the deeper of each overlapping pair).
fn intersect(asked: &[String], allowed: Option<&[String]>) -> Vec<String> {
    let Some(allowed) = allowed else {
        return asked.to_vec();
    };
    let mut out = Vec::new();
    for a in asked {
        for b in allowed {
            let (Some(na), Some(nb)) = (normalize(a), normalize(b)) else {
                continue;
            };
            let deeper = if under(&na, &nb) {
                a
            } else if under(&nb, &na) {
                b
            } else {
                continue;
            };
            if !out.contains(deeper) {
                out.push(deeper.clone());
            }
        }
    }
    out
}

/// What grew from `old` to `new`: programs, shell, or wider paths; empty when nothing did.
pub fn growth(old: &Declared, new: &Declared) -> Vec<String> {
    let (Some(new), Some(old)) = (new.grants(), old.grants()) else {
        return match (old, new) {
            (Declared::Grants(_), Declared::Undeclared) => {
                vec!["it no longer declares grants (unrestricted)".to_string()]
            }
            _ => Vec::new(),
        };
    };
    let mut grew = Vec::new();
    for p in &new.programs {
        if !old.programs.contains(p) {
            grew.push(format!("program `{p}`"));
        }
    }
    if new.shell && !old.shell {
        grew.push("shell".to_string());
    }
    let wider = |kind: &str, new: &[String], old: &[String], grew: &mut Vec<String>| {
        for p in new {
            if !normalize(p).is_some_and(|n| under_any(&n, old)) {
                grew.push(format!("{kind} `{p}`"));
            }
        }
    };
    wider("read path", &new.read_paths, &old.read_paths, &mut grew);
    wider("write path", &new.write_paths, &old.write_paths, &mut grew);
    grew
}

/// What the config says about one task's grants: the operator's narrowing, whether it runs
/// dry, the protected paths, and whether a new plugin version may ask for more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskPolicy {
    /// The task's `grants:` over `quarry.grants`.
    pub narrowing: Narrowing,
    /// `dry_run: true` for the task, or `quarry run --dry-run`.
    pub dry_run: bool,
    /// `quarry.protected_paths`.
    pub protected: ProtectedPaths,
    /// `allow_grant_growth` for the task, or `quarry.allow_grant_growth`.
    pub allow_growth: bool,
}

impl TaskPolicy {
    /// The policy of one run of a plugin that declared `declared`; `Err` when the run must
    /// not happen (a dry run of a task that does not support it).
    pub fn for_run(&self, plugin: &str, declared: &Declared) -> Result<RunPolicy, String> {
        if self.dry_run && !declared.dry_run() {
            return Err(format!("plugin {plugin} does not support dry-run"));
        }
        Ok(RunPolicy {
            grants: self.narrowing.apply(declared),
            dry_run: self.dry_run,
            protected: self.protected.clone(),
        })
    }

    /// The first of `declared`'s write paths that touches a protected path, as a message
    /// naming both.
    pub fn protected_target(&self, task: &str, declared: &Declared) -> Option<String> {
        let g = declared.grants()?;
        g.write_paths.iter().find_map(|w| {
            let Some(n) = normalize(w) else {
                return Some(format!(
                    "{task} declares the write path {w:?}, which is not an absolute path"
                ));
            };
            // Equal to, inside (recursive entries) or an ancestor of a protected path.
            let p = self.protected.touched_by(&n)?;
            Some(format!(
                "{task} would act on {w:?}, which touches the protected path {p:?} (quarry.protected_paths)"
            ))
        })
    }
}

/// What every host call of one run is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunPolicy {
    /// The effective grants; `None` is unrestricted.
    pub grants: Option<Grants>,
    /// Whether this run is a dry run (write-file refused, the task told through `dry-run`).
    pub dry_run: bool,
    /// Paths no write-file may touch.
    pub protected: ProtectedPaths,
}

/// Which host call a refusal was for, as the metric's `call` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantCall {
    /// `execute`.
    Execute,
    /// `read-file`.
    ReadFile,
    /// `write-file`.
    WriteFile,
}

impl GrantCall {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantCall::Execute => "execute",
            GrantCall::ReadFile => "read_file",
            GrantCall::WriteFile => "write_file",
        }
    }
}

impl RunPolicy {
    /// Checks a command of `task`: its program against `programs`/`shell`, its working
    /// directory against the readable paths.
    pub fn check_execute(
        &self,
        task: &str,
        program: &Program,
        cwd: Option<&str>,
    ) -> Result<(), String> {
        let Some(g) = &self.grants else {
            return Ok(());
        };
        match program {
            Program::Argv(argv) => {
                let argv0 = argv.first().map(String::as_str).unwrap_or("");
                let ok = g
                    .programs
                    .iter()
                    .any(|p| p == "*" || program_allowed(p, argv0));
                if !ok {
                    return Err(format!(
                        "grant: {task} may not run `{argv0}` (programs: {})",
                        list(&g.programs)
                    ));
                }
            }
            Program::Shell(_) if !g.shell => {
                return Err(format!(
                    "grant: {task} may not run shell scripts (shell: false)"
                ));
            }
            Program::Shell(_) => {}
        }
        if let Some(cwd) = cwd {
            self.check_read_path(task, cwd, "use as working directory")?;
        }
        Ok(())
    }

    /// Checks a `read-file` of `path`.
    pub fn check_read(&self, task: &str, path: &str) -> Result<(), String> {
        self.check_read_path(task, path, "read")
    }

    fn check_read_path(&self, task: &str, path: &str, doing: &str) -> Result<(), String> {
        let Some(g) = &self.grants else {
            return Ok(());
        };
        let Some(n) = normalize(path) else {
            return Err(format!(
                "grant: {task} may not {doing} `{path}`: not an absolute path, or `..` climbs above `/`"
            ));
        };
        if under_any(&n, &g.read_paths) || under_any(&n, &g.write_paths) {
            return Ok(());
        }
        Err(format!(
            "grant: {task} may not {doing} `{path}` (read-paths: {}; write-paths: {})",
            list(&g.read_paths),
            list(&g.write_paths)
        ))
    }

    /// Checks a `write-file` of `path`: refused in a dry run, on a protected path, or outside
    /// the write paths.
    pub fn check_write(&self, task: &str, path: &str) -> Result<(), String> {
        if self.dry_run {
            return Err(format!("dry run: write-file `{path}` refused"));
        }
        let Some(n) = normalize(path) else {
            return Err(format!(
                "grant: {task} may not write `{path}`: not an absolute path, or `..` climbs above `/`"
            ));
        };
        if let Some(p) = self.protected.touched_by(&n) {
            return Err(format!(
                "protected path: {task} may not write `{path}` (`{p}` is protected)"
            ));
        }
        let Some(g) = &self.grants else {
            return Ok(());
        };
        if under_any(&n, &g.write_paths) {
            return Ok(());
        }
        Err(format!(
            "grant: {task} may not write `{path}` (write-paths: {})",
            list(&g.write_paths)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            programs: vec!["find".into(), "/usr/bin/bash".into()],
            shell: false,
            read_paths: vec!["/var/log".into()],
            write_paths: vec!["/tmp/work".into()],
            dry_run: false,
        }
    }

    fn policy(g: Option<Grants>) -> RunPolicy {
        RunPolicy {
            grants: g,
            ..RunPolicy::default()
        }
    }

    #[test]
    fn normalises_lexically_and_refuses_escapes() {
        assert_eq!(normalize("/a//b/./c/../d"), Some(vec!["a", "b", "d"]));
        assert_eq!(normalize("/"), Some(vec![]));
        assert_eq!(normalize("/.."), None);
        assert_eq!(normalize("a/b"), None);
    }

    #[test]
    fn programs_match_by_base_name_or_exact_path() {
        let p = policy(Some(grants()));
        let argv = |a: &str| Program::Argv(vec![a.into(), "x".into()]);
        assert!(p.check_execute("t", &argv("find"), None).is_ok());
        assert!(p.check_execute("t", &argv("/usr/bin/find"), None).is_ok());
        assert!(p.check_execute("t", &argv("/usr/bin/bash"), None).is_ok());
        let e = p.check_execute("t", &argv("/bin/bash"), None).unwrap_err();
        assert_eq!(
            e,
            "grant: t may not run `/bin/bash` (programs: find, /usr/bin/bash)"
        );
        let e = p.check_execute("t", &argv("rm"), None).unwrap_err();
        assert!(e.starts_with("grant: t may not run `rm`"), "{e}");
        let e = (p.check_execute("t", &Program::Shell("ls".into()), None)).unwrap_err();
        assert_eq!(e, "grant: t may not run shell scripts (shell: false)");
        assert!(
            p.check_execute("t", &argv("find"), Some("/var/log/x"))
                .is_ok()
        );
        assert!(p.check_execute("t", &argv("find"), Some("/etc")).is_err());
    }

    #[test]
    fn paths_are_prefixes_and_dotdot_cannot_escape() {
        let p = policy(Some(grants()));
        assert!(p.check_read("t", "/var/log/syslog").is_ok());
        assert!(p.check_read("t", "/tmp/work/a").is_ok());
        assert!(p.check_read("t", "/var/logs").is_err());
        assert!(p.check_read("t", "/var/log/../../etc/passwd").is_err());
        assert!(p.check_write("t", "/tmp/work/a/b").is_ok());
        let e = p.check_write("t", "/tmp/work/../x").unwrap_err();
        assert_eq!(
            e,
            "grant: t may not write `/tmp/work/../x` (write-paths: /tmp/work)"
        );
        assert!(p.check_write("t", "/var/log/x").is_err());
    }

    #[test]
    fn protected_paths_recursive_and_exact() {
        let p = policy(None);
        assert!(p.check_write("t", "/etc/passwd").is_err());
        assert!(p.check_write("t", "/etc").is_err());
        assert!(p.check_write("t", "/").is_err());
        assert!(p.check_write("t", "/home/u").is_err());
        assert!(p.check_write("t", "/home").is_err());
        assert!(p.check_write("t", "/home/u/.cache/x").is_ok());
        assert!(p.check_write("t", "/root/x").is_ok());
        assert!(p.check_write("t", "/tmp/x").is_ok());
        let e = p.check_write("t", "/usr/lib/x").unwrap_err();
        assert_eq!(
            e,
            "protected path: t may not write `/usr/lib/x` (`/usr` is protected)"
        );
        let custom = ProtectedPaths::parse(["/data/keep"]).unwrap();
        assert!(custom.touched_by(&["data"]).is_some());
        assert!(custom.touched_by(&["data", "keep", "x"]).is_some());
        assert!(custom.touched_by(&["data", "other"]).is_none());
        assert!(ProtectedPaths::parse(["etc"]).is_err());
    }

    #[test]
    fn dry_run_refuses_every_write() {
        let p = RunPolicy {
            dry_run: true,
            ..RunPolicy::default()
        };
        let e = p.check_write("t", "/tmp/x").unwrap_err();
        assert_eq!(e, "dry run: write-file `/tmp/x` refused");
    }

    #[test]
    fn narrowing_intersects() {
        let declared = Declared::Grants(grants());
        let n = Narrowing {
            programs: Some(vec!["find".into()]),
            shell: Some(true),
            read_paths: Some(vec!["/var/log/app".into(), "/srv".into()]),
            write_paths: Some(vec!["/tmp".into()]),
        };
        let g = n.apply(&declared).unwrap();
        assert_eq!(g.programs, ["find"]);
        assert!(!g.shell);
        assert_eq!(g.read_paths, ["/var/log/app"]);
        assert_eq!(g.write_paths, ["/tmp/work"]);
        assert_eq!(Narrowing::default().apply(&Declared::Undeclared), None);
        let open = Narrowing {
            programs: Some(vec!["ls".into()]),
            ..Narrowing::default()
        };
        let g = open.apply(&Declared::Undeclared).unwrap();
        assert_eq!((g.programs, g.shell), (vec!["ls".to_string()], true));
    }

    #[test]
    fn growth_names_what_grew() {
        let old = Declared::Grants(grants());
        let mut g = grants();
        g.programs.push("rm".into());
        g.shell = true;
        g.write_paths = vec!["/tmp".into()];
        g.read_paths = vec!["/var/log/sub".into()];
        let grew = growth(&old, &Declared::Grants(g.clone()));
        assert_eq!(grew, ["program `rm`", "shell", "write path `/tmp`"]);
        assert!(growth(&old, &old).is_empty());
        let n = Narrowing {
            programs: Some(vec!["*".into()]),
            shell: Some(true),
            read_paths: Some(vec!["/".into()]),
            write_paths: Some(vec!["/tmp".into()]),
        };
        assert!(n.covers(&g));
        assert!(!Narrowing::default().covers(&g));
    }
}
