//! The params of `image_pull`: [`Params`] mirrors the JSON, [`Config`] holds the checked values.
//! [`Config::from_params`] is the one place where params are checked; it runs at config load
//! (`Task::check`) and again at the start of every run.
//!
//! Messages name the param (`images[2].registry_username`) and, except for passwords, the bad
//! value. A password's value is never quoted, whatever is wrong with it.

use quarry_sdk::paths;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::reference;
use crate::secret::{Password, Redactor};

/// Longest accepted registry user name.
pub const USERNAME_MAX_CHARS: usize = 256;

/// The warning attached to every literally configured password (at load, in the host's log;
/// at run time, in the outcome's `warnings`).
pub const LITERAL_PASSWORD_WARNING: &str = "registry_password is configured literally: it \
     travels to the worker in the rocklet's request body, which an unmodified rocklet writes to \
     its log; prefer registry_password_file (a file on the worker holding the password)";

/// The params as they appear in the config (`{}` when none are given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Images to pull: each a reference string, or `{image, registry_username,
    /// registry_password | registry_password_file}`.
    #[serde(default)]
    pub images: Value,
    /// Docker's configuration directory on the worker (where logins are stored); none means
    /// Docker's default (`$DOCKER_CONFIG`, else `~/.docker`).
    #[serde(default)]
    pub docker_config: Value,
}

/// Checked params.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The images, in the configured order.
    pub images: Vec<ImageEntry>,
    /// Absolute path of Docker's configuration directory on the worker, if configured.
    pub docker_config: Option<String>,
    /// Warnings about the params (literal passwords), each naming its param.
    pub warnings: Vec<String>,
}

/// One image to pull.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    /// The reference as configured (checked).
    pub image: String,
    /// The registry host named by the reference; `None` for Docker's default registry.
    pub registry: Option<String>,
    /// The login to do before pulling, if credentials are configured.
    pub login: Option<Login>,
}

/// A registry login.
#[derive(Debug, Clone, PartialEq)]
pub struct Login {
    /// `host` or `host:port`, derived from the image reference.
    pub registry: String,
    /// The registry user.
    pub username: String,
    /// Where the password comes from.
    pub secret: Secret,
}

/// Where a login's password comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Secret {
    /// Configured literally (base64): it has to be sent to the worker.
    Literal(Password),
    /// A file on the worker holding the password: only the path travels.
    File(String),
}

impl Config {
    /// Checks `params` and builds the config. The error names the param and why.
    pub fn from_params(params: &Params) -> Result<Config, String> {
        let docker_config = match &params.docker_config {
            Value::Null => None,
            Value::String(s) => Some(paths::absolute("docker_config", s)?.to_string()),
            other => {
                return Err(format!(
                    "docker_config {other}: expected the path of a directory on the worker"
                ));
            }
        };
        let none = Vec::new();
        let entries = match &params.images {
            Value::Null => &none,
            Value::Array(entries) => entries,
            other => {
                return Err(format!(
                    "images {}: expected a list of image references or {{image, \
                     registry_username, registry_password | registry_password_file}} objects",
                    kind(other)
                ));
            }
        };
        let mut images = Vec::with_capacity(entries.len());
        let mut warnings = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = parse_entry(i, entry)?;
            if let Some(Login {
                secret: Secret::Literal(_),
                ..
            }) = &entry.login
            {
                warnings.push(format!("images[{i}]: {LITERAL_PASSWORD_WARNING}"));
            }
            images.push(entry);
        }
        Ok(Config {
            images,
            docker_config,
            warnings,
        })
    }

    /// A redactor for every form of every literal password in the config.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(
            self.images
                .iter()
                .filter_map(|e| match &e.login {
                    Some(Login {
                        secret: Secret::Literal(p),
                        ..
                    }) => Some(p.forms()),
                    _ => None,
                })
                .flatten(),
        )
    }
}

/// A JSON value's kind, for messages that must not quote a value.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "(a boolean)",
        Value::Number(_) => "(a number)",
        Value::String(_) => "(a string)",
        Value::Array(_) => "(a list)",
        Value::Object(_) => "(an object)",
    }
}

/// A string field of an entry object: absent, null and `""` are "not given" (ROCK treated an
/// empty credential as none).
fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    key: &str,
    secret: bool,
) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) if secret => Err(format!("{name}.{key}: expected a string")),
        Some(other) => Err(format!("{name}.{key} {other}: expected a string")),
    }
}

fn parse_entry(i: usize, entry: &Value) -> Result<ImageEntry, String> {
    const KEYS: [&str; 4] = [
        "image",
        "registry_username",
        "registry_password",
        "registry_password_file",
    ];
    let name = format!("images[{i}]");
    let (image, obj) = match entry {
        Value::String(image) => (image.as_str(), None),
        Value::Object(obj) => {
            if let Some(unknown) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "{name}: unknown field {unknown:?} (expected {})",
                    KEYS.join(", ")
                ));
            }
            match obj.get("image") {
                Some(Value::String(image)) => (image.as_str(), Some(obj)),
                None | Some(Value::Null) => {
                    return Err(format!("{name}: missing \"image\" (the image reference)"));
                }
                Some(other) => {
                    return Err(format!("{name}.image {other}: expected a string"));
                }
            }
        }
        other => {
            return Err(format!(
                "{name} {}: expected an image reference or an {{image, registry_username, \
                 registry_password | registry_password_file}} object",
                kind(other)
            ));
        }
    };
    let image_name = if obj.is_some() {
        format!("{name}.image")
    } else {
        name.clone()
    };
    let reference =
        reference::parse(image).map_err(|why| format!("{image_name} {image:?}: {why}"))?;
    let login = match obj {
        Some(obj) => parse_login(&name, image, &reference.registry, obj)?,
        None => None,
    };
    Ok(ImageEntry {
        image: image.to_string(),
        registry: reference.registry,
        login,
    })
}

fn parse_login(
    name: &str,
    image: &str,
    registry: &Option<String>,
    obj: &Map<String, Value>,
) -> Result<Option<Login>, String> {
    let username = optional_string(obj, name, "registry_username", false)?;
    let password = optional_string(obj, name, "registry_password", true)?;
    let password_file = optional_string(obj, name, "registry_password_file", false)?;
    let secret = match (password, password_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{name}: registry_password and registry_password_file are mutually exclusive \
                 (give one)"
            ));
        }
        (Some(b64), None) => Some(Secret::Literal(Password::from_base64(b64).map_err(
            |why| format!("{name}.registry_password: {why} (ROCK's form: the password in base64)"),
        )?)),
        (None, Some(path)) => Some(Secret::File(
            paths::absolute(&format!("{name}.registry_password_file"), path)?.to_string(),
        )),
        (None, None) => None,
    };
    let (username, secret) = match (username, secret) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(format!(
                "{name}: registry_username is set but there is no password: give \
                 registry_password or registry_password_file too (or neither, for no login)"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "{name}: a password is set but registry_username is not: give both (or neither, \
                 for no login)"
            ));
        }
        (Some(u), Some(s)) => (u, s),
    };
    if username.chars().any(char::is_control) {
        return Err(format!(
            "{name}.registry_username {username:?}: must not contain control characters"
        ));
    }
    if username.chars().count() > USERNAME_MAX_CHARS {
        return Err(format!(
            "{name}.registry_username: longer than {USERNAME_MAX_CHARS} characters"
        ));
    }
    let Some(registry) = registry else {
        return Err(format!(
            "{name}: credentials are set but image {image:?} names no registry host, so there \
             is nothing to log in to (a registry is the first path segment when it contains \
             '.' or ':' or is \"localhost\", e.g. registry.example.com/team/app:1); ROCK \
             skipped such a login with a warning"
        ));
    };
    Ok(Some(Login {
        registry: registry.clone(),
        username: username.to_string(),
        secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: Value) -> Result<Config, String> {
        let p: Params = serde_json::from_value(params).map_err(|e| e.to_string())?;
        Config::from_params(&p)
    }

    fn err(params: Value) -> String {
        config(params.clone()).expect_err(&params.to_string())
    }

    const SECRET_B64: &str = "czNjcjN0LXBhc3M="; // "s3cr3t-pass"

    #[test]
    fn defaults_and_plain_entries() {
        let c = config(json!({})).unwrap();
        assert!(c.images.is_empty() && c.docker_config.is_none() && c.warnings.is_empty());
        let c = config(json!({"images": null, "docker_config": null})).unwrap();
        assert!(c.images.is_empty());
        let c = config(json!({"images": ["busybox:1.36", {"image": "reg.io/a/b"}],
                              "docker_config": "/etc/quarry/docker"}))
        .unwrap();
        assert_eq!(c.images.len(), 2);
        assert_eq!(c.images[0].registry, None);
        assert_eq!(c.images[1].registry.as_deref(), Some("reg.io"));
        assert!(c.images.iter().all(|e| e.login.is_none()));
        assert_eq!(c.docker_config.as_deref(), Some("/etc/quarry/docker"));
    }

    #[test]
    fn logins_with_a_literal_password_or_a_file() {
        let c = config(json!({"images": [
            {"image": "127.0.0.1:5000/app:1", "registry_username": "bot", "registry_password": SECRET_B64},
            {"image": "reg.io/app", "registry_username": "bot", "registry_password_file": "/run/secrets/reg"},
            {"image": "reg.io/public", "registry_username": "", "registry_password": ""},
        ]}))
        .unwrap();
        let l0 = c.images[0].login.as_ref().unwrap();
        assert_eq!(l0.registry, "127.0.0.1:5000");
        assert_eq!(l0.username, "bot");
        assert!(matches!(&l0.secret, Secret::Literal(p) if p.canonical_base64() == SECRET_B64));
        let l1 = c.images[1].login.as_ref().unwrap();
        assert_eq!(l1.secret, Secret::File("/run/secrets/reg".into()));
        assert!(
            c.images[2].login.is_none(),
            "empty credentials mean no login (ROCK)"
        );
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("images[0]: registry_password is configured literally"));
        let r = c.redactor();
        assert_eq!(r.redact("a s3cr3t-pass b"), "a [REDACTED] b");
        assert_eq!(r.redact(SECRET_B64), "[REDACTED]");
    }

    #[test]
    fn messages_name_the_param_and_why() {
        let cases = [
            (
                json!({"images": "busybox"}),
                "images (a string): expected a list",
            ),
            (
                json!({"images": [1]}),
                "images[0] (a number): expected an image reference",
            ),
            (
                json!({"images": ["ok", "BAD"]}),
                "images[1] \"BAD\": repository name component \"BAD\" must be lowercase",
            ),
            (
                json!({"images": [{"image": "a b"}]}),
                "images[0].image \"a b\": must not contain whitespace",
            ),
            (json!({"images": [{}]}), "images[0]: missing \"image\""),
            (
                json!({"images": [{"image": 3}]}),
                "images[0].image 3: expected a string",
            ),
            (
                json!({"images": [{"image": "a", "registry_user": "x"}]}),
                "images[0]: unknown field \"registry_user\"",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u"}]}),
                "registry_username is set but there is no password",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_password": SECRET_B64}]}),
                "a password is set but registry_username is not",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_password_file": "/p"}]}),
                "a password is set but registry_username is not",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": SECRET_B64, "registry_password_file": "/p"}]}),
                "mutually exclusive",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": "not base64!"}]}),
                "images[0].registry_password: is not valid base64",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": 12345}]}),
                "images[0].registry_password: expected a string",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password_file": "rel/p"}]}),
                "images[0].registry_password_file \"rel/p\": must be an absolute path",
            ),
            (
                json!({"images": [{"image": "reg.io/a", "registry_username": "u\nv", "registry_password_file": "/p"}]}),
                "images[0].registry_username \"u\\nv\": must not contain control characters",
            ),
            (
                json!({"images": [{"image": "busybox", "registry_username": "u", "registry_password_file": "/p"}]}),
                "images[0]: credentials are set but image \"busybox\" names no registry host",
            ),
            (
                json!({"images": [{"image": "team/app:1", "registry_username": "u", "registry_password_file": "/p"}]}),
                "names no registry host",
            ),
            (
                json!({"docker_config": "docker"}),
                "docker_config \"docker\": must be an absolute path",
            ),
            (
                json!({"docker_config": 1}),
                "docker_config 1: expected the path",
            ),
            (json!({"image": []}), "unknown field `image`"),
        ];
        for (params, want) in cases {
            let e = err(params.clone());
            assert!(e.contains(want), "{params}: {e}");
        }
    }

    #[test]
    fn a_bad_password_is_never_quoted() {
        for bad in ["not base64!", "c2VjcmV0=x", "s3cr3t!", "===="] {
            let e = err(
                json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": bad}]}),
            );
            assert!(!e.contains(bad), "{e}");
        }
        let e = err(
            json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": 987654}]}),
        );
        assert!(!e.contains("987654"), "{e}");
        // Other errors in an entry holding a good password do not quote it either.
        let e = err(
            json!({"images": [{"image": "busybox", "registry_username": "u", "registry_password": SECRET_B64}]}),
        );
        assert!(!e.contains(SECRET_B64) && !e.contains("s3cr3t"), "{e}");
        let c = config(json!({"images": [{"image": "reg.io/a", "registry_username": "u", "registry_password": SECRET_B64}]})).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(SECRET_B64) && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn hostile_usernames_and_paths_are_accepted_verbatim() {
        // They are passed as arguments, never parsed as shell text.
        let c = config(json!({"images": [{"image": "reg.io/a", "registry_username": "$(touch x) `id` ; 'q\" \\",
                                          "registry_password_file": "/tmp/a b/$(touch y)/p;`id`"}]}))
        .unwrap();
        let l = c.images[0].login.as_ref().unwrap();
        assert_eq!(l.username, "$(touch x) `id` ; 'q\" \\");
        assert_eq!(l.secret, Secret::File("/tmp/a b/$(touch y)/p;`id`".into()));
    }
}
