//! Who may call the admin API: a bearer token read once from `quarry.api.token_file`.
//!
//! The rules, decided by [`ApiAuth::check`] alone (unit-tested with addresses, no socket):
//! - `/healthz` and the dashboard's static files are public (they tell nothing about the fleet).
//! - Mutating calls (POST, DELETE) need `Authorization: Bearer <token>`. Without a token file
//!   they are refused (403, naming `quarry.api.token_file`): a loopback listener is reachable by
//!   every local user and by any web page through the browser, so "loopback" is not an identity.
//! - Reads (GET of the API and `/metrics`) need the token when the listener is not loopback. On
//!   a loopback listener they are open, but only under a loopback `Host` (`localhost`,
//!   `127.0.0.1`, `[::1]`): a web page that rebinds its own name to 127.0.0.1 gets 403.
//! - Where a token is configured, one that is presented must be right, on any call (a wrong
//!   one is a misconfiguration worth a 401 rather than being ignored).
//!
//! Only the token's SHA-256 is kept; comparisons are constant-time over the digests.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Actor;

/// Shortest token accepted: 128 bits as hex. `openssl rand -hex 32` makes a good one.
pub const MIN_TOKEN_LEN: usize = 32;

/// Whether `addr` is a loopback address (IPv4-mapped IPv6 included).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `/healthz`, static files: anyone.
    Public,
    /// GET of the API and `/metrics`.
    Read,
    /// POST and DELETE.
    Mutate,
}

/// Why a call was refused; the HTTP layer answers 401 (with `WWW-Authenticate: Bearer`) or 403.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header where one is needed (401).
    #[error("this call needs `Authorization: Bearer <token>` (the token in quarry.api.token_file)")]
    MissingToken,
    /// A header that is not `Bearer <token>` (401).
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    /// The token is not the configured one (401).
    #[error("the bearer token is not the one in quarry.api.token_file")]
    WrongToken,
    /// A mutating call on a server without a token file (403).
    #[error(
        "mutating calls are disabled: no bearer token is configured; set quarry.api.token_file to a file holding one (e.g. `openssl rand -hex 32 > token; chmod 600 token`) and restart"
    )]
    MutationsDisabled,
    /// A tokenless read under a `Host` that is not loopback (403).
    #[error(
        "Host {0:?} is not a loopback name: tokenless reads are only served to localhost (present the bearer token)"
    )]
    ForeignHost(String),
}

impl Refusal {
    /// 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::MissingToken | Refusal::Malformed | Refusal::WrongToken => 401,
            Refusal::MutationsDisabled | Refusal::ForeignHost(_) => 403,
        }
    }
}

/// Why the token file cannot be used; `quarry serve` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unreadable.
    #[error("quarry.api.token_file {}: cannot read it: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Unusable content.
    #[error("quarry.api.token_file {}: {reason}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A non-loopback listener without a token.
    #[error(
        "quarry.api.listen {0} is not a loopback address: set quarry.api.token_file (every call but /healthz then needs its bearer token)"
    )]
    PublicWithoutToken(SocketAddr),
}

/// The API's access policy: the token's digest (if any) and whether reads need it.
#[derive(Clone)]
pub struct ApiAuth {
    token_sha256: Option<[u8; 32]>,
    reads_need_token: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &self.token_sha256.map(|_| "<set>"))
            .field("reads_need_token", &self.reads_need_token)
            .finish()
    }
}

impl ApiAuth {
    /// The policy for a listener on `listen` with `token` (already read). Refuses a
    /// non-loopback listener without a token.
    pub fn new(token: Option<&str>, listen: SocketAddr) -> Result<ApiAuth, AuthError> {
        let public = !is_loopback(&listen);
        if public && token.is_none() {
            return Err(AuthError::PublicWithoutToken(listen));
        }
        Ok(ApiAuth {
            token_sha256: token.map(digest),
            reads_need_token: public,
        })
    }

    /// Reads `token_file` once (trimmed) and builds the policy for `listen`. An empty or
    /// short token, or one that cannot travel in a header, is an error naming the file; a
    /// file that group or others may read is logged as a warning.
    pub fn load(token_file: Option<&Path>, listen: SocketAddr) -> Result<ApiAuth, AuthError> {
        let Some(path) = token_file else {
            return ApiAuth::new(None, listen);
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let content = |reason: String| AuthError::Content {
            path: path.to_path_buf(),
            reason,
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(content("is empty: write a bearer token into it".into()));
        }
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(content(format!(
                "holds {c:?}, which cannot be sent in an Authorization header (use visible ASCII, e.g. hex)"
            )));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(content(format!(
                "holds a {}-character token; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                token.len()
            )));
        }
        warn_if_shared(path);
        ApiAuth::new(Some(token), listen)
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token_sha256.is_some()
    }

    /// Whether reads need the token (the listener is not loopback).
    pub fn reads_need_token(&self) -> bool {
        self.reads_need_token
    }

    /// Decides a call: `authorization` is the `Authorization` header, `host` the `Host`
    /// header. The actor is [`Actor::Token`] when the right token was presented.
    pub fn check(
        &self,
        access: Access,
        authorization: Option<&str>,
        host: Option<&str>,
    ) -> Result<Actor, Refusal> {
        if access == Access::Public {
            return Ok(Actor::Anonymous);
        }
        let Some(expected) = &self.token_sha256 else {
            // No token configured (so the listener is loopback): whatever is presented,
            // mutations are off and reads are open to loopback names.
            return match access {
                Access::Mutate => Err(Refusal::MutationsDisabled),
                _ => local_read(host),
            };
        };
        if let Some(header) = authorization {
            let presented = bearer(header).ok_or(Refusal::Malformed)?;
            return if constant_time_eq(&digest(presented), expected) {
                Ok(Actor::Token)
            } else {
                Err(Refusal::WrongToken)
            };
        }
        match access {
            Access::Read if !self.reads_need_token => local_read(host),
            _ => Err(Refusal::MissingToken),
        }
    }
}

/// A tokenless read on a loopback listener: only under a loopback `Host` (or none).
fn local_read(host: Option<&str>) -> Result<Actor, Refusal> {
    match host {
        Some(h) if !is_loopback_host(h) => Err(Refusal::ForeignHost(h.to_string())),
        _ => Ok(Actor::Anonymous),
    }
}

/// The token of a `Bearer <token>` header (scheme case-insensitive, as RFC 7235 says).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `localhost`, a loopback IP, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "quarry.api.token_file {} is readable by group or others (mode {mode:03o}); `chmod 600` it",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_addresses() {
        for a in [
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(is_loopback(&addr(a)), "{a}");
        }
        for a in ["0.0.0.0:8080", "[::]:8080", "10.0.0.7:8080", "[fd00::7]:80"] {
            assert!(!is_loopback(&addr(a)), "{a}");
        }
    }

    #[test]
    fn a_public_listener_needs_a_token() {
        let e = ApiAuth::new(None, addr("0.0.0.0:8080")).unwrap_err();
        assert!(e.to_string().contains("quarry.api.token_file"), "{e}");
        assert!(ApiAuth::new(None, addr("127.0.0.1:8080")).is_ok());
        assert!(ApiAuth::new(Some(TOKEN), addr("0.0.0.0:8080")).is_ok());
    }

    #[test]
    fn decisions() {
        use Access::*;
        let ok = Ok(Actor::Token);
        let anon = Ok(Actor::Anonymous);
        let right = format!("Bearer {TOKEN}");
        let right_lower = format!("bearer  {TOKEN} ");
        let wrong = "Bearer 0123456789abcdef0123456789abcdeX";
        let local = Some("127.0.0.1:8080");
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Access,
            Option<&'a str>,
            Result<Actor, Refusal>,
        );
        let cases: Vec<Case<'_>> = vec![
            // Loopback with a token: reads open, mutations need it.
            ("127.0.0.1:8080", Some(TOKEN), Read, None, anon.clone()),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Read,
                Some(&right),
                ok.clone(),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Read,
                Some(wrong),
                Err(Refusal::WrongToken),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                None,
                Err(Refusal::MissingToken),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                Some(&right),
                ok.clone(),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                Some(&right_lower),
                ok.clone(),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                Some(wrong),
                Err(Refusal::WrongToken),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                Some(TOKEN),
                Err(Refusal::Malformed),
            ),
            (
                "127.0.0.1:8080",
                Some(TOKEN),
                Mutate,
                Some("Basic eDp5"),
                Err(Refusal::Malformed),
            ),
            // Loopback without a token: reads open, mutations disabled whatever is sent.
            ("127.0.0.1:8080", None, Read, None, anon.clone()),
            (
                "127.0.0.1:8080",
                None,
                Mutate,
                None,
                Err(Refusal::MutationsDisabled),
            ),
            (
                "[::1]:8080",
                None,
                Mutate,
                Some(&right),
                Err(Refusal::MutationsDisabled),
            ),
            // Public: everything but public routes needs the token.
            (
                "0.0.0.0:8080",
                Some(TOKEN),
                Read,
                None,
                Err(Refusal::MissingToken),
            ),
            ("0.0.0.0:8080", Some(TOKEN), Read, Some(&right), ok.clone()),
            (
                "0.0.0.0:8080",
                Some(TOKEN),
                Mutate,
                Some(&right),
                ok.clone(),
            ),
            (
                "10.0.0.7:8080",
                Some(TOKEN),
                Read,
                Some(wrong),
                Err(Refusal::WrongToken),
            ),
            ("0.0.0.0:8080", Some(TOKEN), Public, None, anon.clone()),
            (
                "0.0.0.0:8080",
                Some(TOKEN),
                Public,
                Some(wrong),
                anon.clone(),
            ),
        ];
        for (listen, token, access, header, want) in cases {
            let auth = ApiAuth::new(token, addr(listen)).unwrap();
            assert_eq!(
                auth.check(access, header, local),
                want,
                "{listen} token={} {access:?} {header:?}",
                token.is_some()
            );
        }
    }

    #[test]
    fn tokenless_reads_need_a_loopback_host() {
        let auth = ApiAuth::new(None, addr("127.0.0.1:8080")).unwrap();
        for h in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert_eq!(
                auth.check(Access::Read, None, Some(h)),
                Ok(Actor::Anonymous),
                "{h}"
            );
        }
        for h in [
            "evil.example:8080",
            "10.0.0.7",
            "[fd00::1]:80",
            "localhost.evil.example",
        ] {
            assert_eq!(
                auth.check(Access::Read, None, Some(h)),
                Err(Refusal::ForeignHost(h.into())),
                "{h}"
            );
        }
        let auth = ApiAuth::new(Some(TOKEN), addr("127.0.0.1:8080")).unwrap();
        let right = format!("Bearer {TOKEN}");
        assert_eq!(
            auth.check(Access::Read, Some(&right), Some("quarry.internal")),
            Ok(Actor::Token),
            "the token makes any Host fine"
        );
    }

    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("quarry-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let listen = addr("127.0.0.1:8080");
        let good = write("good", &format!("  {TOKEN}\n"));
        let auth = ApiAuth::load(Some(&good), listen).unwrap();
        assert_eq!(
            auth.check(Access::Mutate, Some(&format!("Bearer {TOKEN}")), None),
            Ok(Actor::Token),
            "trimmed"
        );
        assert!(!format!("{auth:?}").contains(TOKEN));
        for (name, text, want) in [
            ("empty", "\n  \n", "is empty"),
            ("short", "abc", "3-character token"),
            (
                "spaced",
                "0123456789abcdef 0123456789abcdef",
                "cannot be sent",
            ),
        ] {
            let p = write(name, text);
            let e = ApiAuth::load(Some(&p), listen).unwrap_err().to_string();
            assert!(
                e.contains(&p.display().to_string()) && e.contains(want),
                "{e}"
            );
        }
        let missing = dir.join("missing");
        let e = ApiAuth::load(Some(&missing), listen)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: cannot read it"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
