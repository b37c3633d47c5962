//! The params of `file_cleanup`: [`Params`] mirrors the JSON exactly, [`Config`] holds the
//! checked values. [`Config::from_params`] is the one place where params are checked; it runs
//! at config load (`Task::check`) and again at the start of every run.
//!
//! Values are kept as raw JSON in [`Params`] so that every complaint can name the exact param
//! and value (`target_dirs[1].path "/data/../etc": must not contain ".."`) instead of serde's
//! position-only messages.

use serde::Deserialize;
use serde_json::Value;

/// Default `max_age_mins`: one week, as in ROCK.
pub const DEFAULT_MAX_AGE_MINS: u64 = 7 * 24 * 60;

/// Default `max_file_size`, as in ROCK (1 GiB).
pub const DEFAULT_MAX_FILE_SIZE: &str = "1G";

/// Largest accepted `max_age_mins`: 100 years. Anything larger is a typo, and keeping the
/// value small keeps it far from any integer limit in `find`'s `-mmin` parsing.
pub const MAX_AGE_MINS_LIMIT: u64 = 100 * 366 * 24 * 60;

/// The shared Miniforge installation on every worker (ROCK: `miniforge` directly in the system
/// temp dir). Cleaning it would break every sandbox that uses it.
pub const MINIFORGE_ROOT: &str = "/tmp/miniforge";

/// Most decimal places accepted in a size such as `1.5G` (enough for any real use, and small
/// enough that the exact integer arithmetic in [`parse_size`] cannot overflow).
const SIZE_MAX_DECIMALS: usize = 18;

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Directories to clean: each a path string or `{path, exclude_files, exclude_dirs}`.
    #[serde(default)]
    pub target_dirs: Value,
    /// Files not modified for more than this many minutes are deleted (and empty directories
    /// that old are removed).
    #[serde(default)]
    pub max_age_mins: Value,
    /// Files larger than this are deleted whatever their age: bytes, or a string with a
    /// 1024-based unit (`"512M"`, `"1.5G"`).
    #[serde(default)]
    pub max_file_size: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Target directories, normalised, without duplicates.
    pub targets: Vec<TargetConfig>,
    /// Age limit in minutes, `1..=MAX_AGE_MINS_LIMIT`.
    pub max_age_mins: u64,
    /// `max_file_size` as configured (string or number), echoed in the outcome.
    pub max_file_size: Value,
    /// `max_file_size` in bytes, at least 1.
    pub max_file_size_bytes: u64,
}

/// One checked target directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Absolute path, lexically normalised: no repeated `/`, no `.` component, no trailing
    /// `/`. Never `/`, never the Miniforge root or below it.
    pub path: String,
    /// File exclusions exactly as configured (checked; mapped by [`crate::find`]).
    pub exclude_files: Vec<String>,
    /// Directory exclusions exactly as configured (checked; mapped by [`crate::find`]).
    pub exclude_dirs: Vec<String>,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        let targets = parse_targets(&params.target_dirs)?;
        let max_age_mins = parse_max_age(&params.max_age_mins)?;
        let max_file_size = match &params.max_file_size {
            Value::Null => Value::String(DEFAULT_MAX_FILE_SIZE.to_string()),
            v => v.clone(),
        };
        let max_file_size_bytes = size_param_bytes(&max_file_size)?;
        Ok(Config {
            targets,
            max_age_mins,
            max_file_size,
            max_file_size_bytes,
        })
    }
}

fn parse_max_age(value: &Value) -> Result<u64, String> {
    let bad = |why: &str| Err(format!("max_age_mins {value}: {why}"));
    match value {
        Value::Null => Ok(DEFAULT_MAX_AGE_MINS),
        Value::Number(n) => match n.as_u64() {
            Some(0) => bad("must be a positive whole number of minutes"),
            Some(m) if m > MAX_AGE_MINS_LIMIT => bad(&format!(
                "must be at most {MAX_AGE_MINS_LIMIT} minutes (100 years)"
            )),
            Some(m) => Ok(m),
            None => bad("must be a positive whole number of minutes"),
        },
        _ => bad("expected a positive whole number of minutes"),
    }
}

/// The byte count of a `max_file_size` value (string with unit, or a whole number of bytes).
fn size_param_bytes(value: &Value) -> Result<u64, String> {
    let bad = |why: &str| Err(format!("max_file_size {value}: {why}"));
    match value {
        Value::String(s) => parse_size(s).or_else(bad),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(0), _) | (None, Some(_)) => bad("must be greater than zero"),
            (Some(b), _) => Ok(b),
            (None, None) => bad(
                "a number must be a whole count of bytes (write fractions as a string, e.g. \"1.5K\")",
            ),
        },
        _ => bad("expected a size such as \"1G\" or a whole number of bytes"),
    }
}

/// Parses a size such as `"1G"`, `"1.5 GiB"`, `"512k"` or `"1048576"` into bytes.
///
/// Units are 1024-based and case-insensitive: none or `B` (bytes), `K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB`, `G`/`GB`/`GiB`, `T`/`TB`/`TiB`. The number may have a fraction; the result
/// is rounded down to whole bytes and must be at least 1 and fit in 64 bits. The error is the
/// reason only; the caller adds the param name and value.
pub fn parse_size(text: &str) -> Result<u64, &'static str> {
    const EXPECTED: &str = "expected a number of bytes with an optional 1024-based unit \
         (K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB), e.g. \"1.5G\"";
    let text = text.trim();
    if text.starts_with('-') {
        return Err("must be greater than zero");
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift: u32 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(EXPECTED),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(EXPECTED);
    }
    if fraction.len() > SIZE_MAX_DECIMALS {
        return Err("too many decimal places");
    }
    const TOO_LARGE: &str = "too large (must fit in 64 bits of bytes)";
    // Only ASCII digits are left, so parsing fails only on overflow.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| TOO_LARGE)?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| TOO_LARGE)?
    };
    let unit = 1u128 << shift;
    // fraction_value < 10^18 and unit <= 2^40, so this product fits easily in u128.
    let fraction_bytes = fraction_value * unit / 10u128.pow(fraction.len() as u32);
    let bytes = whole
        .checked_mul(unit)
        .and_then(|b| b.checked_add(fraction_bytes))
        .ok_or(TOO_LARGE)?;
    if bytes == 0 {
        return Err("must be at least one byte");
    }
    u64::try_from(bytes).map_err(|_| TOO_LARGE)
}

fn parse_targets(value: &Value) -> Result<Vec<TargetConfig>, String> {
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => {
            return Err(format!(
                "target_dirs {other}: expected a list of paths or {{path, exclude_files, exclude_dirs}} objects"
            ));
        }
    };
    let mut targets: Vec<TargetConfig> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let (name, raw_path, target) = parse_target(i, entry)?;
        if let Some(j) = targets.iter().position(|t| t.path == target.path) {
            return Err(format!(
                "{name} {raw_path:?}: the same directory as target_dirs[{j}]"
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

/// Parses entry `i`; returns the name of its path param (for messages), the raw path and the
/// checked target.
fn parse_target(i: usize, entry: &Value) -> Result<(String, String, TargetConfig), String> {
    let (name, raw_path, exclude_files, exclude_dirs) = match entry {
        Value::String(path) => (format!("target_dirs[{i}]"), path.clone(), vec![], vec![]),
        Value::Object(map) => {
            if let Some(key) = map
                .keys()
                .find(|k| !matches!(k.as_str(), "path" | "exclude_files" | "exclude_dirs"))
            {
                return Err(format!(
                    "target_dirs[{i}]: unknown field {key:?} (expected path, exclude_files, exclude_dirs)"
                ));
            }
            let name = format!("target_dirs[{i}].path");
            let path = match map.get("path") {
                Some(Value::String(p)) => p.clone(),
                None | Some(Value::Null) => {
                    return Err(format!("target_dirs[{i}]: missing \"path\""));
                }
                Some(other) => return Err(format!("{name} {other}: expected a string")),
            };
            let files = parse_exclusions(i, "exclude_files", map.get("exclude_files"))?;
            let dirs = parse_exclusions(i, "exclude_dirs", map.get("exclude_dirs"))?;
            (name, path, files, dirs)
        }
        other => {
            return Err(format!(
                "target_dirs[{i}] {other}: expected a path string or a {{path, exclude_files, exclude_dirs}} object"
            ));
        }
    };
    let path = check_target_path(&raw_path).map_err(|why| format!("{name} {raw_path:?}: {why}"))?;
    Ok((
        name,
        raw_path,
        TargetConfig {
            path,
            exclude_files,
            exclude_dirs,
        },
    ))
}

fn parse_exclusions(i: usize, field: &str, value: Option<&Value>) -> Result<Vec<String>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "target_dirs[{i}].{field} {other}: expected a list of strings"
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let name = format!("target_dirs[{i}].{field}[{k}]");
            match item {
                Value::String(s) => match check_exclusion(s) {
                    Ok(()) => Ok(s.clone()),
                    Err(why) => Err(format!("{name} {s:?}: {why}")),
                },
                other => Err(format!("{name} {other}: expected a string")),
            }
        })
        .collect()
}

/// Checks a target directory path and returns it normalised (see [`TargetConfig::path`]).
pub fn check_target_path(path: &str) -> Result<String, &'static str> {
    if path.is_empty() {
        return Err("must not be empty");
    }
    if path.contains('\0') {
        return Err("must not contain a NUL byte");
    }
    if !path.starts_with('/') {
        return Err("must be an absolute path");
    }
    if path.split('/').any(|c| c == "..") {
        return Err("must not contain \"..\"");
    }
    let components = normal_components(path);
    if components.is_empty() {
        return Err("must not be the root directory \"/\"");
    }
    let miniforge = normal_components(MINIFORGE_ROOT);
    if components.starts_with(&miniforge) {
        return Err("must not be the shared Miniforge root /tmp/miniforge or inside it");
    }
    Ok(format!("/{}", components.join("/")))
}

/// Checks one `exclude_files` / `exclude_dirs` entry.
pub fn check_exclusion(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.contains('\0') {
        return Err("must not contain a NUL byte");
    }
    if value.split('/').any(|c| c == "..") {
        return Err("must not contain \"..\"");
    }
    if crate::find::exclusion_names_nothing(value) {
        return Err("names no file or directory (only \"/\" and \".\" characters)");
    }
    Ok(())
}

/// The components of a path without empty (`//`, trailing `/`) and `.` components.
pub fn normal_components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: Value) -> Result<Config, String> {
        let params: Params = serde_json::from_value(params).map_err(|e| e.to_string())?;
        Config::from_params(&params)
    }

    fn err(params: Value) -> String {
        config(params).expect_err("params should be rejected")
    }

    #[test]
    fn defaults_are_rocks() {
        let c = config(json!({})).unwrap();
        assert!(c.targets.is_empty());
        assert_eq!(c.max_age_mins, 10080);
        assert_eq!(c.max_file_size, json!("1G"));
        assert_eq!(c.max_file_size_bytes, 1 << 30);
        let nulls = json!({"target_dirs": null, "max_age_mins": null, "max_file_size": null});
        assert_eq!(config(nulls).unwrap(), c);
    }

    #[test]
    fn unknown_params_are_rejected() {
        assert!(err(json!({"target_dir": ["/data"]})).contains("unknown field `target_dir`"));
    }

    #[test]
    fn size_units() {
        let cases: &[(&str, u64)] = &[
            ("1", 1),
            ("1024", 1024),
            ("1B", 1),
            ("1k", 1024),
            ("1K", 1024),
            ("1KB", 1024),
            ("1kib", 1024),
            ("1KiB", 1024),
            ("2M", 2 << 20),
            ("2mb", 2 << 20),
            ("2MiB", 2 << 20),
            ("1G", 1 << 30),
            ("1gb", 1 << 30),
            ("1GiB", 1 << 30),
            ("1T", 1 << 40),
            ("1TB", 1 << 40),
            ("1tib", 1 << 40),
            ("1.5G", 1_610_612_736),
            ("0.5K", 512),
            (".5K", 512),
            ("1.", 1),
            (" 10 MB ", 10 << 20),
            ("1.0000001K", 1024),
            ("16777215T", 16_777_215u64 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(*bytes), "{text:?}");
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for text in [
            "",
            "0",
            "0G",
            "0.0001",
            "-1G",
            "-5",
            "G",
            "1X",
            "1 GBB",
            "1.2.3G",
            "1e3",
            "abc",
            "1,5G",
            "16777216T",
            "99999999999999999999999999999999999999999",
            "..5K",
            "1.0000000000000000001G",
            "0x10",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn size_param_forms_and_messages() {
        let bytes = |v: Value| config(json!({ "max_file_size": v })).map(|c| c.max_file_size_bytes);
        assert_eq!(bytes(json!(4096)), Ok(4096));
        assert_eq!(bytes(json!("512m")), Ok(512 << 20));
        assert_eq!(
            bytes(json!("1X")).unwrap_err(),
            "max_file_size \"1X\": expected a number of bytes with an optional 1024-based unit \
             (K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB, TiB), e.g. \"1.5G\""
        );
        assert_eq!(
            bytes(json!(0)).unwrap_err(),
            "max_file_size 0: must be greater than zero"
        );
        assert_eq!(
            bytes(json!(-3)).unwrap_err(),
            "max_file_size -3: must be greater than zero"
        );
        assert_eq!(
            bytes(json!("-1G")).unwrap_err(),
            "max_file_size \"-1G\": must be greater than zero"
        );
        assert_eq!(
            bytes(json!("0")).unwrap_err(),
            "max_file_size \"0\": must be at least one byte"
        );
        assert!(
            bytes(json!(1.5))
                .unwrap_err()
                .starts_with("max_file_size 1.5: ")
        );
        assert!(
            bytes(json!(true))
                .unwrap_err()
                .starts_with("max_file_size true: ")
        );
    }

    #[test]
    fn max_age_checks() {
        let age = |v: Value| config(json!({ "max_age_mins": v })).map(|c| c.max_age_mins);
        assert_eq!(age(json!(1)), Ok(1));
        assert_eq!(age(json!(MAX_AGE_MINS_LIMIT)), Ok(MAX_AGE_MINS_LIMIT));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("60"),
            json!(MAX_AGE_MINS_LIMIT + 1),
        ] {
            let e = age(bad.clone()).unwrap_err();
            assert!(e.starts_with(&format!("max_age_mins {bad}: ")), "{e}");
        }
    }

    #[test]
    fn target_path_safety() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("data/logs", "must be an absolute path"),
            ("./data", "must be an absolute path"),
            ("/data/../etc", "must not contain \"..\""),
            ("/..", "must not contain \"..\""),
            ("/data/..", "must not contain \"..\""),
            ("/", "must not be the root directory \"/\""),
            ("///", "must not be the root directory \"/\""),
            ("/./", "must not be the root directory \"/\""),
            (
                "/tmp/miniforge",
                "must not be the shared Miniforge root /tmp/miniforge or inside it",
            ),
            (
                "/tmp/miniforge/",
                "must not be the shared Miniforge root /tmp/miniforge or inside it",
            ),
            (
                "/tmp//miniforge/pkgs",
                "must not be the shared Miniforge root /tmp/miniforge or inside it",
            ),
            (
                "/tmp/./miniforge",
                "must not be the shared Miniforge root /tmp/miniforge or inside it",
            ),
            ("/data/\0x", "must not contain a NUL byte"),
        ];
        for (path, why) in cases {
            assert_eq!(check_target_path(path), Err(*why), "{path:?}");
        }
        assert_eq!(
            check_target_path("/data/logs/").as_deref(),
            Ok("/data/logs")
        );
        assert_eq!(
            check_target_path("//data/./logs//").as_deref(),
            Ok("/data/logs")
        );
        assert_eq!(
            check_target_path("/tmp/miniforge3").as_deref(),
            Ok("/tmp/miniforge3")
        );
        assert_eq!(check_target_path("/tmp").as_deref(), Ok("/tmp"));
        assert_eq!(check_target_path("/data/..x").as_deref(), Ok("/data/..x"));
    }

    #[test]
    fn target_messages_name_the_param() {
        assert_eq!(
            err(json!({"target_dirs": ["/ok", {"path": "/data/../etc"}]})),
            "target_dirs[1].path \"/data/../etc\": must not contain \"..\""
        );
        assert_eq!(
            err(json!({"target_dirs": ["/ok", "relative"]})),
            "target_dirs[1] \"relative\": must be an absolute path"
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_files": ["a", "x/../y"]}]})),
            "target_dirs[0].exclude_files[1] \"x/../y\": must not contain \"..\""
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_dirs": [""]}]})),
            "target_dirs[0].exclude_dirs[0] \"\": must not be empty"
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_dirs": ["a\u{0}b"]}]})),
            "target_dirs[0].exclude_dirs[0] \"a\\0b\": must not contain a NUL byte"
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_files": [".."]}]})),
            "target_dirs[0].exclude_files[0] \"..\": must not contain \"..\""
        );
        for nothing in ["/", "./", ".", "//", "/./", "./."] {
            let e = err(json!({"target_dirs": [{"path": "/d", "exclude_dirs": [nothing]}]}));
            assert!(e.contains("names no file or directory"), "{nothing:?}: {e}");
        }
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude": []}]})),
            "target_dirs[0]: unknown field \"exclude\" (expected path, exclude_files, exclude_dirs)"
        );
        assert_eq!(
            err(json!({"target_dirs": [{"exclude_files": []}]})),
            "target_dirs[0]: missing \"path\""
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_files": "x"}]})),
            "target_dirs[0].exclude_files \"x\": expected a list of strings"
        );
        assert_eq!(
            err(json!({"target_dirs": [{"path": "/d", "exclude_files": [3]}]})),
            "target_dirs[0].exclude_files[0] 3: expected a string"
        );
        assert!(err(json!({"target_dirs": [7]})).starts_with("target_dirs[0] 7: expected"));
        assert!(
            err(json!({"target_dirs": "/data"})).starts_with("target_dirs \"/data\": expected")
        );
        assert_eq!(
            err(json!({"target_dirs": ["/data/x", "/data//x/"]})),
            "target_dirs[1] \"/data//x/\": the same directory as target_dirs[0]"
        );
    }

    #[test]
    fn both_entry_forms_parse() {
        let c = config(json!({"target_dirs": [
            "/data/logs/",
            {"path": "/data/sandbox", "exclude_files": ["./rocklet.log"], "exclude_dirs": ["cache"]},
            {"path": "/data/other", "exclude_files": null},
        ]}))
        .unwrap();
        assert_eq!(
            c.targets,
            vec![
                TargetConfig {
                    path: "/data/logs".into(),
                    exclude_files: vec![],
                    exclude_dirs: vec![],
                },
                TargetConfig {
                    path: "/data/sandbox".into(),
                    exclude_files: vec!["./rocklet.log".into()],
                    exclude_dirs: vec!["cache".into()],
                },
                TargetConfig {
                    path: "/data/other".into(),
                    exclude_files: vec![],
                    exclude_dirs: vec![],
                },
            ]
        );
    }
}
