//! The only `bindgen!` in Quarry: generated types for `quarry:task@0.1.0`.
//!
//! Nothing outside `runtime/` sees these types; `convert.rs` turns them into domain types.
//! A future breaking WIT version gets its own module beside this one (`v0_2`), with the
//! unchanged parts aliased, and the loader picks the module by the plugin's version.

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";

/// The WIT package name, without the version.
pub const WIT_PACKAGE: &str = "quarry:task";

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use generated::TaskPluginPre;
pub(crate) use generated::exports::quarry::task::task::{Metadata, Outcome, Status};
pub(crate) use generated::quarry::task::host;
