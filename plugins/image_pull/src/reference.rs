//! Image references: a syntax check following Docker's reference grammar
//! (distribution/reference), and the registry host a login goes to.
//!
//! ```text
//! reference       := name [ ":" tag ] [ "@" digest ]
//! name            := [ domain "/" ] path-component ( "/" path-component )*
//! domain          := host [ ":" port ]            host: DNS labels joined by ".", or "[IPv6]"
//! path-component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag             := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest          := algorithm ":" hex{32,}
//! ```
//!
//! The first `/`-separated segment is a registry host when the name has more than one segment
//! and that segment contains `.` or `:` or is `localhost` (Docker's rule; ROCK looked only for
//! `.` or `:`, and also in single-segment names such as `busybox:1.36`, where it took the tag
//! for a port). Everything else lives on Docker's default registry.

/// Longest name (registry and path, without tag and digest) Docker accepts.
pub const NAME_MAX_CHARS: usize = 255;

/// Longest tag Docker accepts.
pub const TAG_MAX_CHARS: usize = 128;

/// Shortest digest (hex characters after the algorithm) Docker accepts.
pub const DIGEST_MIN_HEX: usize = 32;

/// A checked image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (`host` or `host:port`) named by the reference; `None` for Docker's
    /// default registry (Docker Hub).
    pub registry: Option<String>,
}

/// Checks an image reference; the error is the reason only (the caller names the param).
pub fn parse(reference: &str) -> Result<ImageRef, String> {
    if reference.is_empty() {
        return Err("must not be empty".into());
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not contain whitespace or control characters".into());
    }
    if reference.starts_with('-') {
        return Err("must not start with '-'".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag is what follows the last ':' when no '/' comes after it (a ':' before a '/' is
    // a registry port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if name.is_empty() {
        return Err("has no image name".into());
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(format!(
            "the name is longer than {NAME_MAX_CHARS} characters"
        ));
    }
    let segments: Vec<&str> = name.split('/').collect();
    let (registry, path) = match segments.split_first() {
        Some((first, path)) if !path.is_empty() && is_registry_segment(first) => {
            check_domain(first)?;
            (Some(first.to_string()), path)
        }
        _ => (None, segments.as_slice()),
    };
    for component in path {
        check_path_component(component)?;
    }
    Ok(ImageRef { registry })
}

/// Docker's rule for "this first segment is a registry host".
fn is_registry_segment(segment: &str) -> bool {
    segment.contains('.') || segment.contains(':') || segment == "localhost"
}

fn check_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("has an empty path component (\"//\", or a leading or trailing \"/\")".into());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository name component {component:?} must be lowercase"
        ));
    }
    let bad = || {
        Err(format!(
            "repository name component {component:?} must be lowercase letters and digits, \
             separated by single '.', one or two '_', or '-'s"
        ))
    };
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry {domain:?}: {why}"));
    let (host, port) = if let Some(inner) = domain.strip_prefix('[') {
        // [IPv6] or [IPv6]:port
        let Some((addr, after)) = inner.split_once(']') else {
            return bad("an IPv6 address needs a closing ']'");
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad("not a valid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("expected ':port' after the IPv6 address"),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return bad("has no host name");
        }
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
            if !ok {
                return bad(
                    "host names are letters, digits and '-', in labels joined by '.' (each label \
                     starts and ends with a letter or digit)",
                );
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the port must be a number");
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("has an empty tag after ':'".into());
    }
    if b.len() > TAG_MAX_CHARS {
        return Err(format!("the tag is longer than {TAG_MAX_CHARS} characters"));
    }
    if !word(b[0]) || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-') {
        return Err(format!(
            "tag {tag:?} must be letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "digest {digest:?} must look like sha256:<at least {DIGEST_MIN_HEX} hex digits>"
        ))
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad();
    };
    // algorithm := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
    let parts_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    if !parts_ok || hex.len() < DIGEST_MIN_HEX || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(r: &str) -> Option<String> {
        parse(r).unwrap_or_else(|e| panic!("{r:?}: {e}")).registry
    }

    #[test]
    fn valid_references_and_their_registry() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases: Vec<(String, Option<&str>)> = vec![
            ("busybox".into(), None),
            ("busybox:1.36".into(), None),
            ("library/busybox:latest".into(), None),
            ("team/app-x__y.z:v1.2_3-rc".into(), None),
            ("a--b/c".into(), None),
            ("docker.io/library/busybox".into(), Some("docker.io")),
            (
                "registry.example.com/team/app:1".into(),
                Some("registry.example.com"),
            ),
            (
                "127.0.0.1:5055/quarry/busybox:1".into(),
                Some("127.0.0.1:5055"),
            ),
            ("localhost/app".into(), Some("localhost")),
            ("localhost:5000/app:tag".into(), Some("localhost:5000")),
            ("[::1]:5000/app".into(), Some("[::1]:5000")),
            (
                "Registry.Example.COM/app".into(),
                Some("Registry.Example.COM"),
            ),
            (format!("busybox@{digest}"), None),
            (format!("reg.io:443/a/b:t@{digest}"), Some("reg.io:443")),
        ];
        for (r, want) in cases {
            assert_eq!(registry(&r).as_deref(), want, "{r}");
        }
    }

    #[test]
    fn rock_would_have_logged_in_to_the_tag() {
        // ROCK: first path segment containing ':' → registry "busybox:1.36". Docker: no registry.
        assert_eq!(registry("busybox:1.36"), None);
        assert_eq!(registry("myhost:5000/app"), Some("myhost:5000".into()));
    }

    #[test]
    fn invalid_references_say_why() {
        let cases = [
            ("", "must not be empty"),
            ("-busybox", "must not start with '-'"),
            ("busy box", "whitespace"),
            ("busybox\n", "whitespace or control"),
            ("busybox\u{7}", "control"),
            ("BusyBox", "must be lowercase"),
            ("team//app", "empty path component"),
            ("app/", "empty path component"),
            ("/app", "empty path component"),
            ("a..b", "separated by"),
            ("a___b", "separated by"),
            ("_ab", "separated by"),
            ("$(id)", "separated by"),
            ("$(touch x)", "whitespace"),
            ("`id`", "separated by"),
            ("a;b", "separated by"),
            ("a'b", "separated by"),
            ("a\"b", "separated by"),
            ("busybox:", "empty tag"),
            ("busybox:-x", "tag"),
            ("busybox:a;b", "tag"),
            ("reg.io:port/app", "port must be a number"),
            ("-reg.io/app", "must not start with '-'"),
            ("reg_x.io/app", "host names"),
            ("reg.io./app", "host names"),
            ("[::1/app", "closing ']'"),
            ("busybox@sha256:abc", "digest"),
            ("busybox@md5", "digest"),
            ("busybox@sha256:zz", "digest"),
            ("a@b@c", "digest"),
            (":tag", "no image name"),
        ];
        for (r, want) in cases {
            let e = parse(r).expect_err(r);
            assert!(e.contains(want), "{r:?}: {e}");
        }
        assert!(parse(&format!("{}:1", "a".repeat(256))).is_err());
        assert!(parse(&format!("a:{}", "b".repeat(129))).is_err());
        assert!(parse(&format!("a:{}", "b".repeat(128))).is_ok());
    }
}
