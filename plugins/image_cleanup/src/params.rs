//! The params of `image_cleanup`: [`Params`] mirrors the JSON exactly, [`Config`] holds the
//! checked values. [`Config::from_params`] is the one place where params are checked; it runs
//! at config load (`Task::check`) and again at the start of every run.

use serde::Deserialize;
use serde_json::Value;

/// ROCK's default `disk_threshold`.
pub const DEFAULT_THRESHOLD: &str = "1T";

/// ROCK's default `keep_build_storage`.
pub const DEFAULT_KEEP_BUILD_STORAGE: &str = "20GB";

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default, except for `keep_build_storage`, where `null` or `""`
/// turns the prune off (as in ROCK).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// docuum's `--threshold`: a size (`500G`, `10 GB`) or a share of the disk (`70%`).
    #[serde(default)]
    pub disk_threshold: Value,
    /// Regular expressions matched against `repository:tag`; matching images are never evicted.
    #[serde(default)]
    pub image_whitelist: Value,
    /// `docker builder prune --keep-storage`; absent → 20GB; `null` or `""` → no prune.
    #[serde(default = "keep_build_storage_default")]
    pub keep_build_storage: Value,
    /// The docuum program: a name looked up on the worker's PATH, or an absolute path.
    #[serde(default)]
    pub docuum_path: Value,
    /// Where docuum's output goes on the worker (absolute path).
    #[serde(default)]
    pub log_file: Value,
    /// docuum's state directory on the worker (its `XDG_DATA_HOME`).
    #[serde(default)]
    pub state_dir: Value,
    /// docuum's `--min-age`: images younger than this are never evicted (`30m`, `2h`).
    #[serde(default)]
    pub min_age: Value,
}

fn keep_build_storage_default() -> Value {
    Value::String(DEFAULT_KEEP_BUILD_STORAGE.into())
}

/// Checked params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// docuum's `--threshold`.
    pub disk_threshold: String,
    /// docuum's `--keep` patterns, in order.
    pub image_whitelist: Vec<String>,
    /// The build cache to keep; `None` = the prune is off.
    pub keep_build_storage: Option<String>,
    /// The docuum program.
    pub docuum_path: String,
    /// docuum's log on the worker; `None` = `$ROCK_LOGGING_PATH/docuum.log` when the worker
    /// agent has that variable, else nowhere (ROCK's behaviour).
    pub log_file: Option<String>,
    /// docuum's `XDG_DATA_HOME`; `None` = docuum's default.
    pub state_dir: Option<String>,
    /// docuum's `--min-age`.
    pub min_age: Option<String>,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(p: &Params) -> Result<Config, String> {
        let disk_threshold = match &p.disk_threshold {
            Value::Null => DEFAULT_THRESHOLD.to_string(),
            Value::String(s) if is_threshold(s.trim()) => s.trim().to_string(),
            other => {
                return Err(format!(
                    "disk_threshold {other}: expected a size such as \"500G\" or \"10 GB\", or a \
                     share of the disk such as \"70%\""
                ));
            }
        };
        let image_whitelist = parse_whitelist(&p.image_whitelist)?;
        let keep_build_storage = match &p.keep_build_storage {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) if is_docker_size(s.trim()) => Some(s.trim().to_string()),
            other => {
                return Err(format!(
                    "keep_build_storage {other}: expected a size such as \"20GB\" or \"512MB\" \
                     (or null / \"\" to turn the prune off)"
                ));
            }
        };
        let docuum_path = match &p.docuum_path {
            Value::Null => "docuum".to_string(),
            Value::String(s) if is_program(s) => s.clone(),
            other => {
                return Err(format!(
                    "docuum_path {other}: expected a program name (letters, digits, `._-`) or \
                     an absolute path without `..`"
                ));
            }
        };
        let log_file = optional_abs_path("log_file", &p.log_file)?;
        let state_dir = optional_abs_path("state_dir", &p.state_dir)?;
        let min_age = match &p.min_age {
            Value::Null => None,
            Value::String(s) if is_duration(s.trim()) => Some(s.trim().to_string()),
            other => {
                return Err(format!(
                    "min_age {other}: expected a duration such as \"30m\", \"2h\" or \"7d\""
                ));
            }
        };
        Ok(Config {
            disk_threshold,
            image_whitelist,
            keep_build_storage,
            docuum_path,
            log_file,
            state_dir,
            min_age,
        })
    }
}

fn parse_whitelist(value: &Value) -> Result<Vec<String>, String> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "image_whitelist {other}: expected a list of regular expressions matched \
                 against `repository:tag`"
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(pattern) = item else {
            return Err(format!(
                "image_whitelist[{i}] {item}: expected a string (a regular expression)"
            ));
        };
        if pattern.is_empty() {
            return Err(format!(
                "image_whitelist[{i}] is empty: it would match every image"
            ));
        }
        if pattern.chars().any(|c| c.is_control()) {
            return Err(format!(
                "image_whitelist[{i}] {pattern:?}: control characters (newlines, NUL) are not \
                 allowed"
            ));
        }
        // docuum compiles the patterns with Rust's `regex`; reject what it would reject,
        // here, at load, instead of as a daemon that exits on the worker.
        if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
            let first = e.to_string();
            let last = first.lines().last().unwrap_or("invalid").trim().to_string();
            return Err(format!(
                "image_whitelist[{i}] {pattern:?} is not a valid regular expression: {last}"
            ));
        }
        out.push(pattern.clone());
    }
    Ok(out)
}

fn optional_abs_path(name: &str, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s)
            if s.starts_with('/')
                && !s.split('/').any(|c| c == "..")
                && !s.chars().any(|c| c.is_control()) =>
        {
            Ok(Some(s.clone()))
        }
        other => Err(format!(
            "{name} {other}: expected an absolute path on the worker without `..`"
        )),
    }
}

/// `12`, `1.5`: digits with at most one dot inside.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(end);
    let valid = !num.is_empty()
        && num.matches('.').count() <= 1
        && !num.starts_with('.')
        && !num.ends_with('.');
    valid.then_some((num, rest))
}

/// docuum's threshold: `<number>[ ]<unit>` (B, K/KB/KiB … E/EB/EiB, any case) or `<number>%`
/// with the number in (0, 100].
pub fn is_threshold(s: &str) -> bool {
    let Some((num, rest)) = split_number(s) else {
        return false;
    };
    if rest == "%" {
        return num.parse::<f64>().is_ok_and(|p| p > 0.0 && p <= 100.0);
    }
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    is_byte_unit(unit) && num.parse::<f64>().is_ok_and(|n| n > 0.0)
}

/// Docker's `--keep-storage`: `<number>[ ]<unit>` with units b, k/kb/kib, m…, g…, t…, p….
pub fn is_docker_size(s: &str) -> bool {
    let Some((_, rest)) = split_number(s) else {
        return false;
    };
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    is_byte_unit(unit) && !unit.to_ascii_lowercase().starts_with('e')
}

fn is_byte_unit(unit: &str) -> bool {
    let u = unit.to_ascii_lowercase();
    if u.is_empty() || u == "b" {
        return true;
    }
    let mut chars = u.chars();
    let prefix = chars.next().unwrap_or(' ');
    let suffix: String = chars.collect();
    "kmgtpe".contains(prefix) && ["", "b", "ib"].contains(&suffix.as_str())
}

/// docuum's `--min-age`: `<number><unit>` with s, m, h, d (also full words docuum accepts
/// through `parse_duration`; the short forms are what we allow).
pub fn is_duration(s: &str) -> bool {
    let Some((_, rest)) = split_number(s) else {
        return false;
    };
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    ["s", "m", "h", "d", "w"].contains(&unit)
}

/// A program name (looked up on PATH) or an absolute path without `..` or odd characters.
pub fn is_program(s: &str) -> bool {
    let ok_chars = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
    };
    if let Some(abs) = s.strip_prefix('/') {
        abs.split('/').all(|c| ok_chars(c) && c != "..")
    } else {
        ok_chars(s) && !s.starts_with('-')
    }
}
