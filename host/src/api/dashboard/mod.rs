//! The dashboard's static assets, compiled into the binary: `index.html` at `/`, the rest under
//! `/ui/`. Plain HTML, CSS and JavaScript with no build step; they work under a
//! Content-Security-Policy that allows scripts and styles from the same origin only (no inline
//! script or style). docs/dashboard.md describes the page.

/// Each asset: its path under `/ui/`, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("favicon.svg"),
    ),
];

/// The asset at `path` (`""` or `"index.html"` for the page at `/`, other names as they follow
/// `/ui/`), with its content type; `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, content_type, bytes)| (*content_type, *bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).expect(path).1).expect("assets are UTF-8")
    }

    /// Every `src="…"` and `href="…"` value of the page.
    fn references(html: &str) -> Vec<&str> {
        let mut out = Vec::new();
        for attr in [" src=\"", " href=\""] {
            let mut rest = html;
            while let Some(at) = rest.find(attr) {
                let value = &rest[at + attr.len()..];
                let end = value.find('"').expect("attribute value is closed");
                out.push(&value[..end]);
                rest = &value[end..];
            }
        }
        out
    }

    #[test]
    fn the_page_is_served_at_the_root_and_by_name() {
        assert_eq!(asset(""), asset("index.html"));
        assert!(asset("").unwrap().0.starts_with("text/html"));
    }

    #[test]
    fn every_referenced_asset_resolves_and_nothing_is_external() {
        let refs = references(text("index.html"));
        assert!(
            refs.contains(&"/ui/app.js") && refs.contains(&"/ui/style.css"),
            "{refs:?}"
        );
        for r in refs {
            if r.starts_with('#') {
                continue; // in-page anchors
            }
            let name = r
                .strip_prefix("/ui/")
                .unwrap_or_else(|| panic!("{r:?}: assets are served under /ui/ only"));
            assert!(asset(name).is_some(), "{r:?} is referenced but not served");
        }
    }

    #[test]
    fn unknown_paths_are_not_served() {
        for p in ["nope.js", "../mod.rs", "mod.rs", "/app.js", "APP.JS"] {
            assert!(asset(p).is_none(), "{p:?}");
        }
    }

    #[test]
    fn the_page_needs_no_inline_script_or_style() {
        let html = text("index.html");
        for (i, part) in html.split("<script").enumerate().skip(1) {
            let tag_end = part.find('>').expect("script tag is closed");
            assert!(part[..tag_end].contains(" src="), "script {i} is inline");
            assert!(
                part[tag_end + 1..].starts_with("</script>"),
                "script {i} has a body"
            );
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style=\""), "inline style attribute");
        let handler = html.match_indices(" on").find(|(at, _)| {
            let name: String = html[at + 3..]
                .chars()
                .take_while(char::is_ascii_lowercase)
                .collect();
            !name.is_empty() && html[at + 3 + name.len()..].starts_with('=')
        });
        assert!(
            handler.is_none(),
            "inline event handler at byte {handler:?}"
        );
    }

    #[test]
    fn the_script_never_parses_server_strings_as_html() {
        let js = text("app.js");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }
}
