//! The params of `sandbox_log_archive`: [`Params`] mirrors the JSON exactly, [`Config`] holds
//! the checked values. [`Config::from_params`] is the one place where params are checked; it
//! runs at config load (`Task::check`) and again at the start of every run.
//!
//! No param holds a secret: the object store's key and secret live in a file on the worker
//! (`credentials_file`), which only the worker's `curl` reads.

use quarry_sdk::paths;
use serde::Deserialize;
use serde_json::Value;

/// ROCK's `archive_prefix` default.
pub const DEFAULT_PREFIX: &str = "rock-archives/";

/// ROCK's `keep_days_before_archive` default.
pub const DEFAULT_KEEP_DAYS: u64 = 3;

/// The region signed into requests when none is given (any region suits most S3-compatible
/// stores; AWS needs the bucket's own).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The largest `keep_days_before_archive`: a century.
const MAX_KEEP_DAYS: u64 = 36_500;

/// Longest accepted endpoint or prefix, in characters.
const TEXT_MAX_CHARS: usize = 1024;

/// The params as they appear in the config (`{}` when none are given). A `null` value means
/// "not given" and takes the default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The directory holding one log dir per sandbox; default: the worker's
    /// `$ROCK_LOGGING_PATH`.
    #[serde(default)]
    pub log_root: Value,
    /// The object store's URL, `http(s)://host[:port]`.
    #[serde(default)]
    pub endpoint: Value,
    /// The bucket.
    #[serde(default)]
    pub bucket: Value,
    /// The key prefix.
    #[serde(default)]
    pub prefix: Value,
    /// The region signed into requests.
    #[serde(default)]
    pub region: Value,
    /// A curl config file on the worker holding `user = "KEY:SECRET"`.
    #[serde(default)]
    pub credentials_file: Value,
    /// Days since a log dir last changed before it is archived.
    #[serde(default)]
    pub keep_days_before_archive: Value,
    /// Whether a log dir is deleted after its verified upload.
    #[serde(default)]
    pub delete_after_upload: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute, no trailing `/`; `None` = the worker's `$ROCK_LOGGING_PATH`.
    pub log_root: Option<String>,
    /// `http(s)://host[:port]`, no trailing `/`.
    pub endpoint: String,
    /// An S3 bucket name.
    pub bucket: String,
    /// The key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// The signing region.
    pub region: String,
    /// Absolute path on the worker.
    pub credentials_file: String,
    /// Days.
    pub keep_days_before_archive: u64,
    /// Delete after a verified upload.
    pub delete_after_upload: bool,
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and the bad value.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        Ok(Config {
            log_root: match &params.log_root {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                v => Some(absolute_path("log_root", v)?),
            },
            endpoint: parse_endpoint(&params.endpoint)?,
            bucket: parse_bucket(&params.bucket)?,
            prefix: parse_prefix(&params.prefix)?,
            region: parse_region(&params.region)?,
            credentials_file: match &params.credentials_file {
                Value::Null => {
                    return Err(
                        "credentials_file: required, the path of a file on the worker \
                                holding `user = \"KEY:SECRET\"` (mode 600)"
                            .into(),
                    );
                }
                v => absolute_path("credentials_file", v)?,
            },
            keep_days_before_archive: parse_keep_days(&params.keep_days_before_archive)?,
            delete_after_upload: flag("delete_after_upload", &params.delete_after_upload)?,
        })
    }

    /// The object key of a sandbox's archive: ROCK's `<prefix>/sandbox-logs/<id>.tar.gz`.
    pub fn key(&self, sandbox_id: &str) -> String {
        if self.prefix.is_empty() {
            format!("sandbox-logs/{sandbox_id}.tar.gz")
        } else {
            format!("{}/sandbox-logs/{sandbox_id}.tar.gz", self.prefix)
        }
    }

    /// The object's URL, path-style: `<endpoint>/<bucket>/<key>`.
    pub fn url(&self, sandbox_id: &str) -> String {
        format!("{}/{}/{}", self.endpoint, self.bucket, self.key(sandbox_id))
    }
}

/// Whether a directory name can be a sandbox id that is archived: what ROCK's ids and Docker's
/// container names are made of, so that it is safe in a key and a URL as it is.
pub fn valid_sandbox_id(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 255
}

fn flag(name: &str, value: &Value) -> Result<bool, String> {
    match value {
        Value::Null => Ok(true),
        Value::Bool(b) => Ok(*b),
        other => Err(format!("{name} {other}: expected true or false")),
    }
}

fn required_string<'a>(name: &str, value: &'a Value, what: &str) -> Result<&'a str, String> {
    match value {
        Value::Null => Err(format!("{name}: required, {what}")),
        Value::String(s) if s.is_empty() => Err(format!("{name} \"\": required, {what}")),
        Value::String(s) => Ok(s),
        other => Err(format!("{name} {other}: expected a string")),
    }
}

fn absolute_path(name: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => paths::absolute_below_root(name, s),
        other => Err(format!("{name} {other}: expected a string")),
    }
}

fn parse_endpoint(value: &Value) -> Result<String, String> {
    let url = required_string(
        "endpoint",
        value,
        "the object store's URL, e.g. \"https://s3.example.com\"",
    )?;
    let bad = |why: &str| Err(format!("endpoint {url:?}: {why}"));
    if url.chars().count() > TEXT_MAX_CHARS {
        return bad(&format!("longer than {TEXT_MAX_CHARS} characters"));
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return bad("must start with http:// or https://");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() {
        return bad("names no host");
    }
    if authority.contains('@') {
        return bad("must not hold credentials (use credentials_file)");
    }
    if authority.contains(['/', '?', '#']) {
        return bad("must be only scheme, host and port (the bucket is a param of its own)");
    }
    if !authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return bad("the host may hold only letters, digits, '.', '-', and ':' with a port");
    }
    Ok(url.trim_end_matches('/').to_string())
}

fn parse_bucket(value: &Value) -> Result<String, String> {
    let bucket = required_string("bucket", value, "the bucket's name")?;
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(format!(
            "bucket {bucket:?}: not a bucket name (3 to 63 lower-case letters, digits, '.' and \
             '-', starting and ending with a letter or digit)"
        ));
    }
    Ok(bucket.to_string())
}

fn parse_prefix(value: &Value) -> Result<String, String> {
    let prefix = match value {
        Value::Null => DEFAULT_PREFIX,
        Value::String(s) => s.as_str(),
        other => return Err(format!("prefix {other}: expected a string")),
    };
    let bad = |why: &str| Err(format!("prefix {prefix:?}: {why}"));
    if prefix.chars().count() > TEXT_MAX_CHARS {
        return bad(&format!("longer than {TEXT_MAX_CHARS} characters"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        return bad("may hold only letters, digits, '/', '.', '_' and '-'");
    }
    let trimmed = prefix.trim_matches('/');
    if trimmed
        .split('/')
        .any(|c| c.is_empty() && !trimmed.is_empty() || c == "..")
    {
        return bad("must not have empty or `..` components");
    }
    Ok(trimmed.to_string())
}

fn parse_region(value: &Value) -> Result<String, String> {
    let region = match value {
        Value::Null => return Ok(DEFAULT_REGION.to_string()),
        v => required_string("region", v, "e.g. \"us-east-1\"")?,
    };
    if region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "region {region:?}: expected lower-case letters, digits and '-' (e.g. \"us-east-1\")"
        ));
    }
    Ok(region.to_string())
}

fn parse_keep_days(value: &Value) -> Result<u64, String> {
    const NAME: &str = "keep_days_before_archive";
    match value {
        Value::Null => Ok(DEFAULT_KEEP_DAYS),
        Value::Number(n) => match n.as_u64() {
            Some(v) if (1..=MAX_KEEP_DAYS).contains(&v) => Ok(v),
            Some(v) if v > MAX_KEEP_DAYS => {
                Err(format!("{NAME} {n}: must be at most {MAX_KEEP_DAYS}"))
            }
            _ if n.is_f64() => Err(format!("{NAME} {n}: expected a whole number")),
            _ => Err(format!("{NAME} {n}: must be at least 1")),
        },
        other => Err(format!("{NAME} {other}: expected a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: Value) -> Result<Config, String> {
        let params: Params = serde_json::from_value(params).map_err(|e| e.to_string())?;
        Config::from_params(&params)
    }

    fn minimal() -> Value {
        json!({"endpoint": "https://s3.example.com/", "bucket": "logs", "credentials_file": "/etc/quarry/s3.curl"})
    }

    fn with(extra: Value) -> Value {
        let mut v = minimal();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn defaults_are_rocks() {
        let c = config(minimal()).unwrap();
        assert_eq!(
            c,
            Config {
                log_root: None,
                endpoint: "https://s3.example.com".into(),
                bucket: "logs".into(),
                prefix: "rock-archives".into(),
                region: "us-east-1".into(),
                credentials_file: "/etc/quarry/s3.curl".into(),
                keep_days_before_archive: 3,
                delete_after_upload: true,
            }
        );
        assert_eq!(
            c.url("sb-1"),
            "https://s3.example.com/logs/rock-archives/sandbox-logs/sb-1.tar.gz"
        );
        let c = config(with(json!({"prefix": "", "log_root": "/data/logs/"}))).unwrap();
        assert_eq!(c.key("sb-1"), "sandbox-logs/sb-1.tar.gz");
        assert_eq!(c.log_root.as_deref(), Some("/data/logs"));
        let c = config(with(json!({"prefix": "/a/b/", "log_root": ""}))).unwrap();
        assert_eq!(c.key("x"), "a/b/sandbox-logs/x.tar.gz");
        assert_eq!(c.log_root, None);
    }

    #[test]
    fn bad_values_are_named_with_the_reason() {
        let cases = [
            (json!({}), "endpoint: required, the object store's URL"),
            (
                json!({"endpoint": "http://127.0.0.1:9000", "bucket": "b-1"}),
                "credentials_file: required",
            ),
            (
                with(json!({"endpoint": "s3.example.com"})),
                "endpoint \"s3.example.com\": must start with http:// or https://",
            ),
            (
                with(json!({"endpoint": "https://key:secret@s3.example.com"})),
                "must not hold credentials (use credentials_file)",
            ),
            (
                with(json!({"endpoint": "https://s3.example.com/logs"})),
                "must be only scheme, host and port",
            ),
            (
                with(json!({"endpoint": "https://s3.example.com;id"})),
                "the host may hold only",
            ),
            (
                with(json!({"bucket": "Logs"})),
                "bucket \"Logs\": not a bucket name",
            ),
            (
                with(json!({"bucket": "ab"})),
                "bucket \"ab\": not a bucket name",
            ),
            (
                with(json!({"prefix": "a/../b"})),
                "prefix \"a/../b\": must not have empty or `..` components",
            ),
            (with(json!({"prefix": "a//b"})), "must not have empty"),
            (
                with(json!({"prefix": "a b"})),
                "prefix \"a b\": may hold only",
            ),
            (with(json!({"region": "US East"})), "region \"US East\""),
            (
                with(json!({"credentials_file": "s3.curl"})),
                "credentials_file \"s3.curl\": must be an absolute path on the worker",
            ),
            (
                with(json!({"log_root": "/"})),
                "log_root \"/\": must not be the root directory",
            ),
            (
                with(json!({"log_root": "/a/\nb"})),
                "log_root \"/a/\\nb\": must not contain control characters",
            ),
            (
                with(json!({"keep_days_before_archive": 0})),
                "keep_days_before_archive 0: must be at least 1",
            ),
            (
                with(json!({"keep_days_before_archive": 2.5})),
                "keep_days_before_archive 2.5: expected a whole number",
            ),
            (
                with(json!({"keep_days_before_archive": 36501})),
                "keep_days_before_archive 36501: must be at most 36500",
            ),
            (
                with(json!({"delete_after_upload": "yes"})),
                "delete_after_upload \"yes\": expected true or false",
            ),
            (with(json!({"secret": "x"})), "unknown field `secret`"),
        ];
        for (params, want) in cases {
            let err = config(params.clone()).unwrap_err();
            assert!(
                err.contains(want),
                "{params}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn sandbox_ids() {
        for ok in ["sb-1", "a", "0abc_def.g-h"] {
            assert!(valid_sandbox_id(ok), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", "a?b", "é", "a\nb"] {
            assert!(!valid_sandbox_id(bad), "{bad:?}");
        }
    }
}
