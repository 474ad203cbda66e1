//! The Kubernetes API layer: configuration, clients, auth, requests, pod and secret operations.

pub mod auth;
pub mod bound;
pub mod client;
pub mod config;
pub mod manifest;
pub mod path;
pub mod pods;
pub mod raw;
