//! Nothing here: the crate exists for its integration-test binary `all` (tests/all/main.rs).
