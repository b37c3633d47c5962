//! The only `bindgen!` in Quarry: generated types for `quarry:task@0.1.1`.
//!
//! Nothing outside `runtime/` sees these types; `convert.rs` turns them into domain types.
//! The bindings are for the `granted-task-plugin` world; a plugin built for 0.1.0 (or one that
//! exports only `task`) links too: wasmtime matches `@0.1.0` names to our `@0.1.1` ones
//! (semver-compatible), and the `capabilities` export is looked up on its own, as optional.
//! A future breaking WIT version gets its own module beside this one (`v0_2`), with the
//! unchanged parts aliased, and the loader picks the module by the plugin's version.

/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.1";

/// The WIT package name, without the version.
pub const WIT_PACKAGE: &str = "quarry:task";

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "granted-task-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub(crate) use generated::exports::quarry::task::capabilities::{
    Grants, GuestIndices as CapabilitiesIndices,
};
pub(crate) use generated::exports::quarry::task::task::{
    GuestIndices as TaskIndices, Metadata, Outcome, Status,
};
pub(crate) use generated::quarry::task::host;
