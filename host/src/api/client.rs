//! The admin API's client, for the `quarry` CLI verbs (`status`, `runs`, `trigger`, …): one
//! method that sends a call and returns the answer's JSON, and errors that say what to do.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, Url};

use super::model::ErrorBody;

/// Giving up on connecting: the API is local or near, so a slow connect is a dead server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Giving up on an answer: above the server's own request timeout (30 s), so its 503 arrives.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The flags are wrong (bad URL, unreadable token file).
    #[error("{0}")]
    Usage(String),
    /// No answer: connection refused, timeout, DNS.
    #[error(
        "cannot reach the Quarry API at {url} ({reason}); is `quarry serve` running there? (--api or QUARRY_API)"
    )]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server refused the call.
    #[error("{status}: {}{}", body.error, hint(*status))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error.
        body: ErrorBody,
    },
    /// An answer that is not the API's (a proxy's error page, a different server).
    #[error("{url} answered {status} with something else than Quarry's JSON: {snippet}")]
    Foreign {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the answer.
        snippet: String,
    },
}

fn hint(status: u16) -> &'static str {
    match status {
        401 => " (give the token with --token-file or QUARRY_TOKEN_FILE)",
        _ => "",
    }
}

impl ClientError {
    /// The CLI's exit code: 2 when the request itself was wrong (bad flags, 400, 404, …), 1
    /// when it could not be done (unreachable, refused by auth, conflict, cooldown, 5xx).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => 2,
            ClientError::Refused {
                status: 400 | 404 | 405 | 413 | 415,
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// A client of one server's admin API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:8080`), sending `token` if any.
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        let url = Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--api {base:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(ApiClient {
            base: url,
            token,
            http,
        })
    }

    /// Reads a token file (trimmed), as the server does.
    pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Usage(format!(
                "--token-file {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ClientError::Usage(format!(
                "--token-file {}: is empty",
                path.display()
            )));
        }
        Ok(token.to_string())
    }

    /// The URL of `segments` (each percent-encoded) below the base, with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one call; returns the answer's JSON (`None` for an empty answer such as 204).
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, ClientError> {
        let url = self.url(segments, query);
        let mut req = self.http.request(method, url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.to_string(),
            reason: root_cause(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        let foreign = || ClientError::Foreign {
            url: url.to_string(),
            status,
            snippet: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
        };
        if (200..300).contains(&status) {
            if bytes.is_empty() {
                return Ok(None);
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| foreign());
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| foreign())?;
        Err(ClientError::Refused { status, body })
    }
}

/// The innermost cause of a reqwest error ("Connection refused (os error 111)").
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
