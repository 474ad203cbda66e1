//! The rustler boundary: NIF entry points, arguments, replies, and tasks that answer by message.
//!
//! Only `task` is plain Rust; the rest references `enif_*` symbols that only the BEAM provides,
//! so the unit-test executable (which has no BEAM to resolve them) is built without it. `cargo
//! clippy --all-targets` still checks it through the library target; ExUnit tests exercise it.

pub mod task;

#[cfg(not(test))]
mod args;
#[cfg(not(test))]
mod entry;
#[cfg(not(test))]
mod reply;
#[cfg(not(test))]
mod tasks;
#[cfg(not(test))]
mod term;
