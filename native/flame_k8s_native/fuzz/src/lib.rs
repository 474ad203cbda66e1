//! The NIF crate's pure modules, compiled from its own sources (the crate itself is a cdylib,
//! which a fuzz target cannot link). Nothing here is a copy: edit ../src.
#![allow(dead_code)]

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/manifest.rs"]
pub mod manifest;
#[path = "../../src/path.rs"]
pub mod path;
#[path = "../../src/readiness.rs"]
pub mod readiness;
