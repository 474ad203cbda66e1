//! Fixtures and fakes the watch layer's unit tests share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::hub::{Selection, WatchKey};

pub fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("fixture must be a Pod")
}

/// A pod from `tests/fixtures/{name}.json`.
pub fn fixture(name: &str) -> Pod {
    read_fixture(&format!("{name}.json"))
}

/// The JSON file `tests/fixtures/{file}`, as a `T`.
pub fn read_fixture<T: serde::de::DeserializeOwned>(file: &str) -> T {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shared watch of the runners labelled `app=runner` in `ns`.
pub fn runner_key() -> WatchKey {
    WatchKey {
        namespace: "ns".into(),
        selection: Selection::Labels("app=runner".into()),
    }
}

/// `stream`, with `held` set while it is alive: whether its consumer still holds it.
pub fn held_while_alive<T: Send + 'static>(
    stream: BoxStream<'static, T>,
    held: Arc<AtomicBool>,
) -> BoxStream<'static, T> {
    held.store(true, Ordering::SeqCst);
    let guard = Held(held);
    stream
        .map(move |item| {
            let _ = &guard;
            item
        })
        .boxed()
}

/// Clears its flag when dropped with the stream that owns it.
struct Held(Arc<AtomicBool>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
