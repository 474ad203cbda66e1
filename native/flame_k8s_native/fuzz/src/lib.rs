//! The NIF crate's pure modules, compiled from its own sources (the crate itself is a cdylib,
//! which a fuzz target cannot link). Nothing here is a copy: edit ../src.
#![allow(dead_code)]

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/api/manifest.rs"]
pub mod manifest;
#[path = "../../src/api/path.rs"]
pub mod path;
#[path = "../../src/watch/readiness.rs"]
pub mod readiness;

/// The crate's `api` module, as far as these modules name it (`crate::api::path`).
pub mod api {
    pub use super::{manifest, path};
}
