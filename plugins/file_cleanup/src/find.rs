//! Building the `find` expressions (pure: no host calls).
//!
//! The worker script ([`crate::script`]) runs `find "$dir" <options> <its own exclusions>
//! <expression>` for each pass, every element here being one positional argument: a configured
//! value always stays one argument, whatever quotes, `$()` or spaces it contains. `find -path`
//! takes a glob, though, so the literal parts of every pattern are escaped with
//! [`glob_escape`]; the script receives the glob-escaped target too, for the directories of
//! running containers (`<escaped target>/<name>`, which it adds at run time).
//!
//! Exclusion forms (as ROCK):
//! - absolute (`/data/keep`): that path, without a trailing `/`;
//! - containing `/` (`./rocklet.log`, `logs/`): `<target>/<value>`, with all leading `.` and
//!   `/` characters and all trailing `/` stripped;
//! - a plain name (`docuum.log`): `*/<name>`, that name at any depth.
//!
//! A file exclusion P adds `-not -path P` to the file pass; a directory exclusion adds
//! `-not -path P -not -path P/*` to both passes, so neither the directory nor anything below
//! it is deleted.

use crate::params::{MINIFORGE_ROOT, TargetConfig, normal_components};

/// The characters `find -path` (fnmatch(3) without `FNM_NOESCAPE`) treats specially.
const GLOB_META: &[char] = &['*', '?', '[', ']', '\\'];

/// At most this many deleted paths are listed per directory and pass in the outcome; the
/// counts are always complete (unless the worker's output was cut).
pub const MAX_LISTED_PATHS: usize = 200;

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

/// Builds the exclusions of `target`: its configured ones, and the Miniforge root when it
/// lies below the target. (The directories of running containers are added by the worker
/// script, which lists them in the same call.)
pub fn exclusions(target: &TargetConfig) -> Exclusions {
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

/// One `find` pass over a target, without the start directory: `find <dir> <options>
/// <tests and actions>`. The worker script puts its own exclusions (its temp files, the
/// running containers' directories) between the two parts, where they are ANDed with the
/// expression: it is a plain chain of tests and actions, no top-level `-o` (except in a dry
/// run's dir pass, whose `-o` branch takes exactly the entries that stay; see
/// [`prune_dirs_pass`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindPass {
    /// Global options, which GNU `find` wants before any test.
    pub options: Vec<String>,
    /// The exclusions, the tests and the actions.
    pub expression: Vec<String>,
}

fn push_strs(argv: &mut Vec<String>, items: &[&str]) {
    argv.extend(items.iter().map(|s| s.to_string()));
}

/// Whether a pass deletes what it selects, or only lists it (a dry run). Both modes share the
/// exclusions and the tests, so a dry run selects what a real run deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Delete and print each path deleted.
    Delete,
    /// Delete nothing; print what [`Mode::Delete`] would delete.
    DryRun,
}

/// The file pass: `<exclusions> -type f ( -mmin +N -o -size +Bc ) -delete -print0`: deletes
/// files older than `max_age_mins` or larger than `max_bytes`, printing each one deleted. In a
/// dry run, the same without `-delete`.
///
/// `-delete` comes before `-print0` (ROCK's order would be irrelevant, it printed nothing):
/// `-delete` is true only when the removal succeeded, so a file that could not be removed is
/// reported on stderr and not listed as deleted. `-print0` ends each path with a NUL, which no
/// file name contains, so a name with a newline is still one path.
pub fn delete_files_pass(
    excl: &Exclusions,
    max_age_mins: u64,
    max_bytes: u64,
    mode: Mode,
) -> FindPass {
    let mut expression = Vec::new();
    for p in &excl.files {
        push_strs(&mut expression, &["-not", "-path", p]);
    }
    push_dir_exclusions(&mut expression, &excl.dirs);
    let (age, size) = (format!("+{max_age_mins}"), format!("+{max_bytes}c"));
    push_strs(
        &mut expression,
        &["-type", "f", "(", "-mmin", &age, "-o", "-size", &size, ")"],
    );
    if mode == Mode::Delete {
        expression.push("-delete".into());
    }
    expression.push("-print0".into());
    FindPass {
        options: Vec::new(),
        expression,
    }
}

/// The record prefix, in a dry run's dir pass, of an old directory that passes the exclusions
/// (it goes if everything below it goes)...
pub const DRY_CANDIDATE: &str = "c";
/// ... and of any other entry, which stays and so keeps its parent directory.
pub const DRY_KEPT: &str = "o";

/// The empty-directory pass: `-mindepth 1 -depth <dir exclusions> -type d -empty -mmin +N
/// -delete -print0`: removes empty directories not modified for `max_age_mins` (the age guard
/// spares new, still-empty sandbox log directories), deepest first.
///
/// ROCK has no `-mindepth 1`, so an old, empty target directory deleted itself. Quarry never
/// deletes the configured target directory.
///
/// A chain of old, empty directories goes at once (`find` checks a directory's age as it was
/// when it entered it). A directory emptied by this run's *file* pass has just been modified,
/// so it stays until a later run finds it old enough.
///
/// A dry run cannot ask `-empty` (nothing below was deleted), so it lists every entry, deepest
/// first: `( <dir exclusions> -type d -mmin +N -readable -printf c<path>\0 ) -o -printf
/// o<path>\0`, and the worker script keeps the candidates with nothing kept below them: what
/// `-delete` removes, child before parent. (The script's own exclusions, ANDed in front, send
/// its temp files and the running containers' directories to the `o` branch: kept.) Files the
/// file pass would delete are listed as kept, as in a real run, where deleting them makes
/// their directory young.
pub fn prune_dirs_pass(excl: &Exclusions, max_age_mins: u64, mode: Mode) -> FindPass {
    let mut expression = Vec::new();
    if mode == Mode::DryRun {
        expression.push("(".into());
    }
    push_dir_exclusions(&mut expression, &excl.dirs);
    let age = format!("+{max_age_mins}");
    match mode {
        Mode::Delete => push_strs(
            &mut expression,
            &["-type", "d", "-empty", "-mmin", &age, "-delete", "-print0"],
        ),
        Mode::DryRun => {
            let (candidate, kept) = (format!("{DRY_CANDIDATE}%p\\0"), format!("{DRY_KEPT}%p\\0"));
            push_strs(
                &mut expression,
                &[
                    "-type",
                    "d",
                    "-mmin",
                    &age,
                    "-readable",
                    "-printf",
                    &candidate,
                    ")",
                    "-o",
                    "-printf",
                    &kept,
                ],
            )
        }
    }
    FindPass {
        options: vec!["-mindepth".into(), "1".into(), "-depth".into()],
        expression,
    }
}

/// Checks one name from `docker ps --format '{{.Names}}'` (`^[A-Za-z0-9][A-Za-z0-9_.-]*$`).
/// Anything else means the output is not what we think it is, and deleting with an unknown
/// protection set is unsafe. The worker script checks the same before it uses a name; this is
/// the second look, on what it reported.
pub fn check_container_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(not_a_container_name(name))
    }
}

/// The complaint about a line of `docker ps` output that is not a container name.
pub fn not_a_container_name(line: &str) -> String {
    format!(
        "docker ps printed {:?}, which is not a container name",
        head(line, 200)
    )
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
        let e = exclusions(&TargetConfig {
            path: "/d*".into(),
            exclude_files: vec![],
            exclude_dirs: vec!["c?".into()],
        });
        assert_eq!(e.dirs, vec![r"*/c\?".to_string()]);
        let pass = prune_dirs_pass(&e, 5, Mode::Delete);
        assert!(
            pass.expression.contains(&r"*/c\?/*".to_string()),
            "{pass:?}"
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
        let e = exclusions(&t);
        let pass = delete_files_pass(&e, 60, 1024, Mode::Delete);
        for v in nasty {
            assert!(
                pass.expression.contains(&format!("*/{v}")),
                "{v:?} in {pass:?}"
            );
            assert!(
                pass.expression.contains(&format!("*/{v}/*")),
                "{v:?} in {pass:?}"
            );
        }
        // Nothing was split or merged: 3 per file + 6 per dir + 11 fixed.
        assert_eq!(
            pass.expression.len(),
            3 * nasty.len() + 6 * nasty.len() + 11
        );
        assert!(pass.options.is_empty());
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
    fn pass_shapes() {
        let t = target(&["./rocklet.log", "docuum.log"], &["cache/"]);
        let e = exclusions(&t);
        let strings = |items: &[&[&str]]| -> Vec<String> {
            items.concat().into_iter().map(String::from).collect()
        };
        let cache = [
            "-not",
            "-path",
            "/data/sandbox/cache",
            "-not",
            "-path",
            "/data/sandbox/cache/*",
        ];
        assert_eq!(
            delete_files_pass(&e, 10080, 1 << 30, Mode::Delete),
            FindPass {
                options: vec![],
                expression: strings(&[
                    &[
                        "-not",
                        "-path",
                        "/data/sandbox/rocklet.log",
                        "-not",
                        "-path",
                        "*/docuum.log"
                    ],
                    &cache,
                    &[
                        "-type",
                        "f",
                        "(",
                        "-mmin",
                        "+10080",
                        "-o",
                        "-size",
                        "+1073741824c",
                        ")"
                    ],
                    &["-delete", "-print0"],
                ]),
            }
        );
        assert_eq!(
            prune_dirs_pass(&e, 10080, Mode::Delete),
            FindPass {
                options: strings(&[&["-mindepth", "1", "-depth"]]),
                expression: strings(&[
                    &cache,
                    &[
                        "-type", "d", "-empty", "-mmin", "+10080", "-delete", "-print0"
                    ],
                ]),
            }
        );
    }

    #[test]
    fn a_dry_run_selects_with_the_same_tests_and_deletes_nothing() {
        let e = exclusions(&target(&["./rocklet.log"], &["cache/"]));
        let real = delete_files_pass(&e, 60, 1024, Mode::Delete);
        let dry = delete_files_pass(&e, 60, 1024, Mode::DryRun);
        let mut expected = real.expression.clone();
        expected.retain(|a| a != "-delete");
        assert_eq!(
            dry,
            FindPass {
                expression: expected,
                ..real
            }
        );

        let real = prune_dirs_pass(&e, 60, Mode::Delete);
        let dry = prune_dirs_pass(&e, 60, Mode::DryRun);
        assert_eq!(dry.options, real.options);
        assert!(!dry.expression.iter().any(|a| a == "-delete"), "{dry:?}");
        // The exclusions and the age test pick the candidates; everything else is kept.
        let exclusions = &real.expression[..6];
        assert_eq!(&dry.expression[1..7], exclusions);
        assert_eq!(
            dry.expression,
            [
                &["("][..],
                exclusions
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                &[
                    "-type",
                    "d",
                    "-mmin",
                    "+60",
                    "-readable",
                    "-printf",
                    "c%p\\0",
                    ")"
                ],
                &["-o", "-printf", "o%p\\0"],
            ]
            .concat()
        );
    }

    #[test]
    fn miniforge_is_protected_below_a_target() {
        let tmp = TargetConfig {
            path: "/tmp".into(),
            exclude_files: vec![],
            exclude_dirs: vec![],
        };
        assert_eq!(exclusions(&tmp).dirs, vec!["/tmp/miniforge".to_string()]);
        assert!(exclusions(&target(&[], &[])).dirs.is_empty());
        let similar = TargetConfig {
            path: "/tm".into(),
            ..tmp
        };
        assert!(exclusions(&similar).dirs.is_empty());
    }

    #[test]
    fn container_names() {
        for good in ["web", "sandbox-1_a.b", "0"] {
            assert_eq!(check_container_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "", "-x", ".x", "a b", "a/b", "a*", "$(id)", "_x", "é", "a\u{1}b",
        ] {
            assert!(check_container_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_container_name("WARNING: odd").unwrap_err(),
            "docker ps printed \"WARNING: odd\", which is not a container name"
        );
    }

    #[test]
    fn head_cuts_on_chars() {
        assert_eq!(head("ééé", 2), "éé");
        assert_eq!(head("ab", 5), "ab");
    }
}
