//! Helpers shared by the integration tests. Each test file that says `mod support;` compiles
//! its own copy of this module and uses only part of it.

#![allow(
    dead_code,
    reason = "each test crate compiles this module on its own and uses only some helpers"
)]

pub mod fs;
pub mod ledger;
pub mod native;
pub mod seccomp;
pub mod server;
pub mod wire;
