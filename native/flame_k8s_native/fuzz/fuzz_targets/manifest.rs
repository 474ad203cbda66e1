//! Manifest conversion (`manifest::prepare_pod` / `prepare_secret`) on any JSON document and
//! any namespace: never a panic; a manifest that passes is pinned to the namespace, its
//! apiVersion and kind; one that fails is an `InvalidManifest` error with a message, never an
//! `Internal` one.
//!
//! Input: `namespace \0 json`. Only documents serde_json accepts are tried (its own recursion
//! limit of 128 is what the NIF's term conversion, with its limit of 64, stays below).
#![no_main]

use flame_k8s_native_fuzz::error::Error;
use flame_k8s_native_fuzz::manifest::{prepare_pod, prepare_secret};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (namespace, json) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"default"[..], data),
    };
    let Ok(namespace) = std::str::from_utf8(namespace) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    check(
        namespace,
        prepare_pod(namespace, value.clone()),
        "v1",
        "Pod",
    );
    check(namespace, prepare_secret(namespace, value), "v1", "Secret");
});

fn check(namespace: &str, result: Result<Value, Error>, api_version: &str, kind: &str) {
    match result {
        Ok(m) => {
            assert_eq!(m["apiVersion"], api_version, "{m}");
            assert_eq!(m["kind"], kind, "{m}");
            assert_eq!(m["metadata"]["namespace"], namespace, "{m}");
        }
        Err(Error::InvalidManifest(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("not an InvalidManifest error: {other:?}"),
    }
}
