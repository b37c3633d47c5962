//! The two test tiers.
//!
//! - **Hermetic** (always): tests that need nothing beyond the Rust toolchain, the wasm target
//!   and this machine's `/bin/sh` and coreutils: the `local` worker, the testkit's fake workers
//!   and simulated rocklet, hand-made HTTP servers on loopback ports.
//! - **Real parts** (only when [`ENV_VAR`] is set, as scripts/test.sh does): tests that start a
//!   real rocklet, or use the private dockerd, the registry, Ray, docuum or the examples'
//!   toolchains. Without the variable they return at once and print why (to the terminal, past
//!   the test harness's output capture); with it, a missing part fails the test.

use std::io::Write as _;

/// Set (to anything but `0` or empty) to run the real-parts tier.
pub const ENV_VAR: &str = "QUARRY_TEST_REAL_PARTS";

/// Whether the real-parts tier runs.
pub fn enabled() -> bool {
    std::env::var_os(ENV_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether the calling test may use `parts`; when not, prints that it is skipped and why.
pub fn available(parts: &str) -> bool {
    available_for("", parts)
}

/// Like [`available`], for one part of the calling test (`what`, e.g. "its C case").
pub fn available_for(what: &str, parts: &str) -> bool {
    if enabled() {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let skipped = if what.is_empty() {
        test.to_string()
    } else {
        format!("{what} of {test}")
    };
    // Straight to stderr: the harness captures print!/eprint! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {skipped}: needs {parts} (set {ENV_VAR}=1, as scripts/test.sh does)"
    );
    false
}

/// Skips the rest of the calling test unless the real-parts tier runs:
/// `needs_real_parts!("a rocklet");`.
macro_rules! needs_real_parts {
    ($parts:expr) => {
        if !$crate::support::real_parts::available($parts) {
            return;
        }
    };
}

pub(crate) use needs_real_parts;
