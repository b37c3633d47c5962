//! Checks for the paths on the worker that a task's params name, with messages that name the
//! param and the value.

/// Longest path a param may hold, in characters (Linux's `PATH_MAX`).
pub const PATH_MAX_CHARS: usize = 4096;

/// The value `path` of param `name` as a path on the worker: not empty, absolute, without
/// control characters, at most [`PATH_MAX_CHARS`] characters.
///
/// ```
/// use quarry_sdk::paths::absolute;
/// assert_eq!(absolute("cfg", "/etc/x"), Ok("/etc/x"));
/// assert_eq!(absolute("cfg", "x").unwrap_err(), "cfg \"x\": must be an absolute path on the worker");
/// ```
pub fn absolute<'a>(name: &str, path: &'a str) -> Result<&'a str, String> {
    let bad = |why: &str| Err(format!("{name} {path:?}: {why}"));
    if path.is_empty() {
        return bad("must not be empty");
    }
    if !path.starts_with('/') {
        return bad("must be an absolute path on the worker");
    }
    if path.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if path.chars().count() > PATH_MAX_CHARS {
        return bad(&format!("longer than {PATH_MAX_CHARS} characters"));
    }
    Ok(path)
}

/// Like [`absolute`], for a path a task acts under (deletes, archives): also no `..`
/// component and not the root directory. Returned without trailing `/`.
///
/// ```
/// use quarry_sdk::paths::absolute_below_root;
/// assert_eq!(absolute_below_root("dir", "/data/x/").unwrap(), "/data/x");
/// assert!(absolute_below_root("dir", "//").unwrap_err().contains("root directory"));
/// assert!(absolute_below_root("dir", "/a/../b").unwrap_err().contains("`..`"));
/// ```
pub fn absolute_below_root(name: &str, path: &str) -> Result<String, String> {
    let path = absolute(name, path)?;
    let bad = |why: &str| Err(format!("{name} {path:?}: {why}"));
    if path.split('/').any(|c| c == "..") {
        return bad("must not contain a `..` component");
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return bad("must not be the root directory");
    }
    Ok(trimmed.to_string())
}
