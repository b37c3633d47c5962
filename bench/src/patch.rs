//! Distinct plugins from one build: the bench guest (`bench/guests/noop`) carries a name and
//! a version placeholder; a copy with a placeholder overwritten in place (same length) is a
//! different component (different hash, name or version) that behaves identically.

use anyhow::bail;

/// The name placeholder in `bench_noop.wasm` (`bench/guests/noop/src/lib.rs`, `NAME`).
pub const NAME_PLACEHOLDER: &str = "bench_noop_zzzz";

/// The version placeholder (`VERSION`).
pub const VERSION_PLACEHOLDER: &str = "1.0.0-vvvvvvvv";

/// A copy of `wasm` with `from` (which must occur exactly once) replaced by `to`.
fn replace_once(wasm: &[u8], from: &str, to: &str) -> anyhow::Result<Vec<u8>> {
    if from.len() != to.len() {
        bail!("{to:?} must have the length of {from:?}");
    }
    let hits: Vec<usize> = wasm
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from.as_bytes())
        .map(|(i, _)| i)
        .collect();
    let [at] = hits[..] else {
        bail!(
            "the placeholder {from:?} occurs {} times in the component (expected once); \
             was it built from bench/guests/noop?",
            hits.len()
        );
    };
    let mut out = wasm.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    Ok(out)
}

/// The component with task name `name` (15 characters, like the placeholder).
pub fn with_name(wasm: &[u8], name: &str) -> anyhow::Result<Vec<u8>> {
    replace_once(wasm, NAME_PLACEHOLDER, name)
}

/// The component with task version `version` (14 characters, like the placeholder).
pub fn with_version(wasm: &[u8], version: &str) -> anyhow::Result<Vec<u8>> {
    replace_once(wasm, VERSION_PLACEHOLDER, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_exactly_once() {
        let wasm = b"..bench_noop_zzzz..1.0.0-vvvvvvvv..".to_vec();
        let named = with_name(&wasm, "bench_noop_0042").unwrap();
        assert_eq!(&named[2..17], b"bench_noop_0042");
        assert!(with_version(&named, "1.0.0-r0000001").is_ok());
        assert!(with_name(&wasm, "short").is_err());
        let twice = [wasm.clone(), wasm].concat();
        assert!(with_name(&twice, "bench_noop_0042").is_err());
    }
}
