//! Building the `find` argument vectors, and reading what they print.
//!
//! Everything here is pure: no host calls. The vectors go to the worker as argv (no shell), so
//! a configured value always stays one argument, whatever quotes, `$()` or spaces it contains.
//! `find -path` takes a glob, though, so the literal parts of every pattern are escaped with
//! [`glob_escape`].
//!
//! Exclusion forms (as ROCK):
//! - absolute (`/data/keep`): that path, without a trailing `/`;
//! - containing `/` (`./rocklet.log`, `logs/`): `<target>/<value>`, with all leading `.` and
//!   `/` characters and all trailing `/` stripped;
//! - a plain name (`docuum.log`): `*/<name>`, that name at any depth.
//!
//! A file exclusion P adds `-not -path P` to the file `find`; a directory exclusion adds
//! `-not -path P -not -path P/*` to both `find`s, so neither the directory nor anything below
//! it is deleted.

use crate::params::{MINIFORGE_ROOT, TargetConfig, normal_components};

/// The characters `find -path` (fnmatch(3) without `FNM_NOESCAPE`) treats specially.
const GLOB_META: &[char] = &['*', '?', '[', ']', '\\'];

/// At most this many deleted paths are listed per directory and kind in the outcome; the
/// counts are always complete (unless the worker's output was truncated).
pub const MAX_LISTED_PATHS: usize = 200;

/// How the host marks a command output it cut at its size limit (`...[quarry: N more bytes
/// truncated]` on a line of its own). The WIT interface does not expose this, so it is
/// recognised by its text.
const TRUNCATION_MARKER_START: &str = "...[quarry: ";
const TRUNCATION_MARKER_END: &str = " more bytes truncated]";

/// Escapes glob metacharacters so that `find -path` matches `literal` exactly.
pub fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if GLOB_META.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True when an exclusion value maps to no path at all (`/`, `./`, `.`): it would produce an
/// empty pattern that matches nothing, silently protecting nothing. Rejected at validation.
pub fn exclusion_names_nothing(value: &str) -> bool {
    if value.contains('/') {
        relative_or_absolute_components(value).is_empty()
    } else {
        value == "."
    }
}

/// The components a `/`-containing exclusion value names, after ROCK's stripping.
fn relative_or_absolute_components(value: &str) -> Vec<&str> {
    if value.starts_with('/') {
        normal_components(value)
    } else {
        // ROCK quirk, kept on purpose: *all* leading `.` and `/` characters are stripped, not
        // just a leading "./". So `./rocklet.log` → `<target>/rocklet.log` as intended, but
        // `.cache/x` → `<target>/cache/x` (the dot of a hidden directory is lost) and
        // `...x/y` → `<target>/x/y`. Configs written for ROCK rely on this mapping.
        normal_components(value.trim_start_matches(['.', '/']))
    }
}

/// The `-path` pattern (glob-escaped, without the `/*` a directory exclusion adds) for the
/// exclusion `value` under the target directory `target` (already normalised).
pub fn exclusion_pattern(target: &str, value: &str) -> String {
    if value.starts_with('/') {
        // Absolute: the path itself; a trailing `/` (and any `//` or `/./`) would make the
        // pattern miss the path `find` prints.
        format!("/{}", glob_escape(&normal_components(value).join("/")))
    } else if value.contains('/') {
        let rest = relative_or_absolute_components(value).join("/");
        format!("{}/{}", glob_escape(target), glob_escape(&rest))
    } else {
        // A plain name: at any depth below the target.
        format!("*/{}", glob_escape(value))
    }
}

/// The exclusion patterns of one target: `files` for files only, `dirs` for whole trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusions {
    /// Patterns of excluded files.
    pub files: Vec<String>,
    /// Patterns of excluded directories (each also excludes everything below it).
    pub dirs: Vec<String>,
}

/// Builds the exclusions of `target`: its configured ones, one directory per protected
/// (running) container `<target>/<name>`, and the Miniforge root when it lies below the target.
pub fn exclusions(target: &TargetConfig, protected_containers: &[String]) -> Exclusions {
    let files = target
        .exclude_files
        .iter()
        .map(|v| exclusion_pattern(&target.path, v))
        .collect();
    let mut dirs: Vec<String> = target
        .exclude_dirs
        .iter()
        .map(|v| exclusion_pattern(&target.path, v))
        .collect();
    dirs.extend(
        protected_containers
            .iter()
            .map(|name| format!("{}/{}", glob_escape(&target.path), glob_escape(name))),
    );
    // ROCK only refuses targets *at or below* the Miniforge root; a target above it (`/tmp`)
    // would still reach into it. Quarry protects it there too.
    if MINIFORGE_ROOT.starts_with(&format!("{}/", target.path)) {
        dirs.push(glob_escape(MINIFORGE_ROOT));
    }
    Exclusions { files, dirs }
}

fn push_dir_exclusions(argv: &mut Vec<String>, dirs: &[String]) {
    for p in dirs {
        argv.extend(["-not".into(), "-path".into(), p.clone()]);
        argv.extend(["-not".into(), "-path".into(), format!("{p}/*")]);
    }
}

/// `find <dir> <exclusions> -type f ( -mmin +N -o -size +Bc ) -delete -print`: deletes files
/// older than `max_age_mins` or larger than `max_bytes`, printing each one deleted.
///
/// `-delete` comes before `-print` (ROCK's order would be irrelevant, it printed nothing):
/// `-delete` is true only when the removal succeeded, so a file that could not be removed is
/// reported on stderr and not listed as deleted.
pub fn delete_files_argv(
    dir: &str,
    excl: &Exclusions,
    max_age_mins: u64,
    max_bytes: u64,
) -> Vec<String> {
    let mut argv: Vec<String> = vec!["find".into(), dir.into()];
    for p in &excl.files {
        argv.extend(["-not".into(), "-path".into(), p.clone()]);
    }
    push_dir_exclusions(&mut argv, &excl.dirs);
    argv.extend(
        [
            "-type",
            "f",
            "(",
            "-mmin",
            &format!("+{max_age_mins}"),
            "-o",
            "-size",
            &format!("+{max_bytes}c"),
            ")",
            "-delete",
            "-print",
        ]
        .map(String::from),
    );
    argv
}

/// `find <dir> -mindepth 1 -depth <dir exclusions> -type d -empty -mmin +N -delete -print`:
/// removes empty directories not modified for `max_age_mins` (the age guard spares new,
/// still-empty sandbox log directories), deepest first.
///
/// ROCK has no `-mindepth 1`, so an old, empty target directory deleted itself. Quarry never
/// deletes the configured target directory.
///
/// A chain of old, empty directories goes at once (`find` checks a directory's age as it was
/// when it entered it). A directory emptied by this run's *file* deletion has just been
/// modified, so it stays until a later run finds it old enough.
pub fn prune_dirs_argv(dir: &str, excl: &Exclusions, max_age_mins: u64) -> Vec<String> {
    let mut argv: Vec<String> = ["find", dir, "-mindepth", "1", "-depth"]
        .map(String::from)
        .to_vec();
    push_dir_exclusions(&mut argv, &excl.dirs);
    argv.extend(
        [
            "-type",
            "d",
            "-empty",
            "-mmin",
            &format!("+{max_age_mins}"),
            "-delete",
            "-print",
        ]
        .map(String::from),
    );
    argv
}

/// What a `find … -print` printed: the paths it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The first [`MAX_LISTED_PATHS`] paths.
    pub paths: Vec<String>,
    /// How many paths were printed (a lower bound when `truncated`).
    pub count: usize,
    /// The host cut the output at its size limit: the list and count are incomplete.
    pub truncated: bool,
}

/// Reads `find -print` output: one path per line. (A name containing a newline is listed as
/// two entries; the deletion itself is unaffected.)
pub fn parse_listing(stdout: &str) -> Listing {
    let mut lines: Vec<&str> = stdout.lines().collect();
    let truncated = lines.last().is_some_and(|l| {
        l.starts_with(TRUNCATION_MARKER_START) && l.ends_with(TRUNCATION_MARKER_END)
    });
    if truncated {
        lines.pop(); // the marker
        lines.pop(); // the line the host cut in the middle
    }
    let paths: Vec<&str> = lines.into_iter().filter(|l| !l.is_empty()).collect();
    Listing {
        count: paths.len(),
        paths: paths
            .iter()
            .take(MAX_LISTED_PATHS)
            .map(|p| p.to_string())
            .collect(),
        truncated,
    }
}

/// Checks `docker ps --format '{{.Names}}'` output: every non-empty line must be a container
/// name (`^[A-Za-z0-9][A-Za-z0-9_.-]*$`). Anything else means the output is not what we think
/// it is, and deleting with an unknown protection set is unsafe.
pub fn parse_container_names(stdout: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut chars = line.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !(first_ok && rest_ok) {
            return Err(format!(
                "docker ps printed {:?}, which is not a container name",
                head(line, 200)
            ));
        }
        names.push(line.to_string());
    }
    Ok(names)
}

pub use quarry_sdk::text::head;

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "/data/sandbox";

    fn target(files: &[&str], dirs: &[&str]) -> TargetConfig {
        TargetConfig {
            path: T.into(),
            exclude_files: files.iter().map(|s| s.to_string()).collect(),
            exclude_dirs: dirs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rock_exclusion_forms() {
        let cases: &[(&str, &str)] = &[
            // relative with '/': under the target, leading "./" stripped
            ("./rocklet.log", "/data/sandbox/rocklet.log"),
            ("logs/app.log", "/data/sandbox/logs/app.log"),
            // ROCK quirk: every leading '.' goes, even a hidden directory's
            (".cache/x", "/data/sandbox/cache/x"),
            ("././a", "/data/sandbox/a"),
            // trailing slashes: stripped; a '/' makes a name target-relative
            ("logs/", "/data/sandbox/logs"),
            ("./keep//", "/data/sandbox/keep"),
            ("a//b/./c", "/data/sandbox/a/b/c"),
            // plain names: any depth
            ("docuum.log", "*/docuum.log"),
            (".hidden", "*/.hidden"),
            ("...", "*/..."),
            // absolute: itself, minus trailing '/'
            ("/var/keep", "/var/keep"),
            ("/var/keep/", "/var/keep"),
            ("//var//keep/.", "/var/keep"),
        ];
        for (value, pattern) in cases {
            assert_eq!(exclusion_pattern(T, value), *pattern, "{value:?}");
        }
    }

    #[test]
    fn glob_metacharacters_are_escaped_in_literal_parts_only() {
        assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(exclusion_pattern(T, "[x]*"), r"*/\[x\]\*");
        assert_eq!(exclusion_pattern(T, "./a?/b*"), r"/data/sandbox/a\?/b\*");
        assert_eq!(exclusion_pattern(T, "/k[1]/"), r"/k\[1\]");
        assert_eq!(exclusion_pattern("/d[1]", "x/y"), r"/d\[1\]/x/y");
        let e = exclusions(
            &TargetConfig {
                path: "/d*".into(),
                exclude_files: vec![],
                exclude_dirs: vec!["c?".into()],
            },
            &["web".into()],
        );
        assert_eq!(e.dirs, vec![r"*/c\?".to_string(), r"/d\*/web".to_string()]);
        let argv = prune_dirs_argv("/d*", &e, 5);
        assert!(argv.contains(&r"*/c\?/*".to_string()), "{argv:?}");
        assert!(argv.contains(&r"/d\*/web/*".to_string()), "{argv:?}");
        assert_eq!(
            argv[1], "/d*",
            "the start point is a literal argument, not a glob"
        );
    }

    #[test]
    fn hostile_values_stay_single_arguments() {
        let nasty = [
            "it's $(reboot) `id`",
            "a b",
            "\"q\"",
            "x;y|z&",
            "$HOME",
            "-delete",
        ];
        let t = target(&nasty, &nasty);
        let e = exclusions(&t, &[]);
        let argv = delete_files_argv(T, &e, 60, 1024);
        for v in nasty {
            assert!(argv.contains(&format!("*/{v}")), "{v:?} in {argv:?}");
            assert!(argv.contains(&format!("*/{v}/*")), "{v:?} in {argv:?}");
        }
        // Nothing was split or merged: 2 + 3 per file + 6 per dir + 11 fixed.
        assert_eq!(argv.len(), 2 + 3 * nasty.len() + 6 * nasty.len() + 11);
    }

    #[test]
    fn names_nothing() {
        for v in ["/", "//", "/./", "./", ".", "./.", "././/"] {
            assert!(exclusion_names_nothing(v), "{v:?}");
        }
        for v in ["a", "...", "./a", "/a", ".a", "a/"] {
            assert!(!exclusion_names_nothing(v), "{v:?}");
        }
    }

    #[test]
    fn argv_shapes() {
        let t = target(&["./rocklet.log", "docuum.log"], &["cache/"]);
        let e = exclusions(&t, &["c1".into()]);
        assert_eq!(
            delete_files_argv(T, &e, 10080, 1 << 30),
            [
                "find",
                T,
                "-not",
                "-path",
                "/data/sandbox/rocklet.log",
                "-not",
                "-path",
                "*/docuum.log",
                "-not",
                "-path",
                "/data/sandbox/cache",
                "-not",
                "-path",
                "/data/sandbox/cache/*",
                "-not",
                "-path",
                "/data/sandbox/c1",
                "-not",
                "-path",
                "/data/sandbox/c1/*",
                "-type",
                "f",
                "(",
                "-mmin",
                "+10080",
                "-o",
                "-size",
                "+1073741824c",
                ")",
                "-delete",
                "-print",
            ]
        );
        assert_eq!(
            prune_dirs_argv(T, &e, 10080),
            [
                "find",
                T,
                "-mindepth",
                "1",
                "-depth",
                "-not",
                "-path",
                "/data/sandbox/cache",
                "-not",
                "-path",
                "/data/sandbox/cache/*",
                "-not",
                "-path",
                "/data/sandbox/c1",
                "-not",
                "-path",
                "/data/sandbox/c1/*",
                "-type",
                "d",
                "-empty",
                "-mmin",
                "+10080",
                "-delete",
                "-print",
            ]
        );
    }

    #[test]
    fn miniforge_is_protected_below_a_target() {
        let tmp = TargetConfig {
            path: "/tmp".into(),
            exclude_files: vec![],
            exclude_dirs: vec![],
        };
        assert_eq!(
            exclusions(&tmp, &[]).dirs,
            vec!["/tmp/miniforge".to_string()]
        );
        assert!(exclusions(&target(&[], &[]), &[]).dirs.is_empty());
        let similar = TargetConfig {
            path: "/tm".into(),
            ..tmp
        };
        assert!(exclusions(&similar, &[]).dirs.is_empty());
    }

    #[test]
    fn listings() {
        assert_eq!(parse_listing(""), Listing::default());
        let l = parse_listing("/d/a\n/d/b c\n\n");
        assert_eq!(l.paths, vec!["/d/a", "/d/b c"]);
        assert_eq!((l.count, l.truncated), (2, false));
        let many: String = (0..500).map(|i| format!("/d/{i}\n")).collect();
        let l = parse_listing(&many);
        assert_eq!((l.paths.len(), l.count), (MAX_LISTED_PATHS, 500));
        let cut = "/d/a\n/d/b\n/d/ha\n...[quarry: 1234 more bytes truncated]";
        let l = parse_listing(cut);
        assert_eq!(l.paths, vec!["/d/a", "/d/b"]);
        assert!(l.truncated);
    }

    #[test]
    fn container_names() {
        assert_eq!(
            parse_container_names("web\n\nsandbox-1_a.b\n").unwrap(),
            vec!["web", "sandbox-1_a.b"]
        );
        assert!(parse_container_names("").unwrap().is_empty());
        for bad in ["-x", ".x", "a b", "a/b", "a*", "ok\n$(id)", "_x", "é"] {
            assert!(parse_container_names(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn head_cuts_on_chars() {
        assert_eq!(head("ééé", 2), "éé");
        assert_eq!(head("ab", 5), "ab");
    }
}
