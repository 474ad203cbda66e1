//! NIF library for `FLAMEK8sBackend.Native`: Kubernetes API access through kube-rs on one
//! Tokio runtime.
//!
//! The NIF layer (`nif`, `term`) only converts terms and starts tasks; everything else is plain
//! Rust with unit tests that need no BEAM. A few core types derive their rustler encoder or
//! decoder where their shape is the Elixir one, only outside `cfg(test)`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod auth;
pub mod await_pod;
pub mod bound;
pub mod client;
pub mod error;
pub mod manifest;
pub mod path;
pub mod pods;
pub mod raw;
pub mod readiness;
pub mod runtime;
pub mod selector;
pub mod task;
#[cfg(test)]
mod test_server;
pub mod watch;

// The NIF layer references `enif_*` symbols that only the BEAM provides, so the unit-test
// executable (which has no BEAM to resolve them) is built without it. `cargo clippy
// --all-targets` still checks it through the library target; ExUnit tests exercise it.
#[cfg(not(test))]
mod nif;
#[cfg(not(test))]
mod term;

#[cfg(not(test))]
rustler::init!("Elixir.FLAMEK8sBackend.Native");
