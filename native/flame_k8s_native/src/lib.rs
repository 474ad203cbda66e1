//! NIF library for `FLAMEK8sBackend.Native`: Kubernetes API access through kube-rs on one runtime.
//!
//! Three layers, each using only those below it: `nif` (the rustler boundary: arguments, replies,
//! tasks) over `watch` (shared pod watches, awaits, readiness) over `api` (configuration, clients,
//! requests), with `runtime` and `error` shared by all. Everything but the NIF entry points is
//! plain Rust with unit tests that need no BEAM. A few core types derive their rustler encoder or
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

pub mod api;
pub mod error;
pub mod nif;
pub mod runtime;
#[cfg(test)]
mod test_server;
pub mod watch;

#[cfg(not(test))]
rustler::init!("Elixir.FLAMEK8sBackend.Native");
