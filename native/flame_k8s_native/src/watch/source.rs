//! The API server as the source of the shared pod watches.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::time::Instant;

use super::hub::{EventStream, Hub, Selection, Source, WatchKey};
use crate::api::client::ClientHandle;
use crate::api::pods;
use crate::error::{Error, Result};
use crate::runtime::with_timeout;

/// Server-side timeout of one watch call; the watcher notices a silently dead connection
/// within this plus a few seconds, then resumes from the last resourceVersion.
pub const WATCH_TIMEOUT_SECS: u32 = 30;

/// The shared pod watches of a connection, for its awaits: watches on its watch client, reads
/// on its request client.
pub fn pod_watches(handle: &ClientHandle) -> Hub {
    Hub::new(Arc::new(KubeSource {
        client: handle.client().clone(),
        watch_client: handle.watch_client().clone(),
        request_timeout: handle.request_timeout(),
    }))
}

/// The API server as the source of the shared watches.
struct KubeSource {
    client: kube::Client,
    watch_client: kube::Client,
    request_timeout: Duration,
}

impl Source for KubeSource {
    /// kube-runtime's watcher: list + watch from the list's resourceVersion, bookmarks, a
    /// relist after 410 Gone. The list is served from the API server's watch cache (`Any`:
    /// `resourceVersion=0`), not read consistently (the default, `MostRecent`: a quorum read
    /// of etcd at each start of the watch); the shared watch does not take a pod missing from
    /// it for gone (see `hub`). Each watch call ends after `WATCH_TIMEOUT_SECS` on the
    /// server's side and resumes from the last resourceVersion.
    fn watch(&self, key: &WatchKey) -> EventStream {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.watch_client.clone(), &key.namespace);
        let mut config = watcher::Config::default()
            .timeout(WATCH_TIMEOUT_SECS)
            .any_semantic();
        // kube-rs leaves `resourceVersion=0` out of a list with a limit (which makes it a
        // consistent read again): the list is one page, the pods of one selector.
        config.page_size = None;
        let config = match &key.selection {
            Selection::Labels(selector) => config.labels(selector),
            Selection::Name(name) => config.fields(&format!("metadata.name={name}")),
        };
        watcher::watcher(api, config).boxed()
    }

    /// A GET bounded by the request timeout, with the requests' retries (429).
    fn get(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<Option<Pod>>> {
        let client = self.client.clone();
        let timeout = self.request_timeout;
        let (namespace, name) = (namespace.to_string(), name.to_string());
        async move {
            let deadline = Instant::now() + timeout;
            let read = async {
                match pods::get_pod_with(&client, &namespace, &name, deadline).await {
                    Ok(v) => serde_json::from_value(v)
                        .map(Some)
                        .map_err(|e| Error::Decode(format!("pod: {e}"))),
                    Err(Error::Api { code: 404, .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            with_timeout(timeout, read).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::connect_blocking;
    use crate::api::config::{ConnectOptions, Mode};
    use crate::watch::await_pod::{await_pod, AwaitOptions, AwaitOutcome, Phase};
    use crate::watch::readiness::UnschedulablePolicy;

    fn explicit(url: &str, request_timeout_ms: u64) -> ConnectOptions {
        ConnectOptions {
            mode: Some(Mode::Explicit),
            url: Some(url.to_string()),
            request_timeout_ms,
            max_concurrent_creates: 32,
            ..Default::default()
        }
    }

    fn ready_pods() -> String {
        let path = format!("{}/tests/fixtures/ready.json", env!("CARGO_MANIFEST_DIR"));
        let pod: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "4212"}, "items": [pod]})
        .to_string()
    }

    const NAME: &str = "flame-runner-7x2kq";

    fn await_options(timeout: Duration) -> AwaitOptions {
        AwaitOptions {
            timeout,
            unschedulable: UnschedulablePolicy::Fail,
            report_ready: true,
        }
    }

    /// A half-open connection (it took the watch's LIST and will never answer) must not hang
    /// the shared watch: the LIST gives up after the request timeout, and the watcher lists
    /// again on a new connection, where the pod is.
    #[tokio::test]
    async fn a_watch_whose_list_is_never_answered_lists_again_on_a_new_connection() {
        use crate::test_server::{start, Conn, Reply};
        let pods = ready_pods();
        let server = start(move |n| match n {
            0 => Conn::Silent,
            _ => {
                let pods = pods.clone();
                Conn::Serve(Arc::new(move |path: &str| {
                    if path.contains("watch=true") {
                        Reply::Open
                    } else {
                        Reply::Json(pods.clone())
                    }
                }))
            }
        })
        .await;
        let h = connect_blocking(&explicit(&server.url, 1000)).unwrap();
        let outcome = await_pod(
            &h,
            &pod_watches(&h),
            "flame",
            NAME,
            Some("excluster=flame"),
            await_options(Duration::from_secs(20)),
            |_| {},
        )
        .await;
        assert!(matches!(outcome, AwaitOutcome::Ready(_)), "{outcome:?}");
        let requests = server.requests();
        assert!(requests.len() >= 2, "{requests:?}");
        assert!(requests
            .iter()
            .all(|r| r.contains("labelSelector=excluster")));
    }

    /// The watch's lists are served from the API server's watch cache (`resourceVersion=0`,
    /// `resourceVersionMatch=NotOlderThan`), not a consistent read (none: a quorum read of
    /// etcd for each watch start), and it watches from the list's resourceVersion.
    #[tokio::test]
    async fn the_watch_lists_from_the_servers_cache() {
        use crate::test_server::{start, Conn, Reply};
        let pods = ready_pods();
        let server = start(move |_| {
            let pods = pods.clone();
            Conn::Serve(Arc::new(move |path: &str| {
                if path.contains("watch=true") {
                    Reply::Open
                } else {
                    Reply::Json(pods.clone())
                }
            }))
        })
        .await;
        let h = connect_blocking(&explicit(&server.url, 5000)).unwrap();
        let outcome = await_pod(
            &h,
            &pod_watches(&h),
            "flame",
            NAME,
            Some("excluster=flame"),
            AwaitOptions {
                report_ready: false,
                ..await_options(Duration::from_secs(1))
            },
            |_| {},
        )
        .await;
        assert!(
            matches!(outcome, AwaitOutcome::Timeout { .. }),
            "{outcome:?}"
        );
        let requests = server.requests();
        let list = requests.first().unwrap();
        assert!(!list.contains("watch=true"), "{requests:?}");
        assert!(list.contains("resourceVersion=0&"), "{list}");
        assert!(list.contains("resourceVersionMatch=NotOlderThan"), "{list}");
        let watch = requests.get(1).unwrap();
        assert!(watch.contains("watch=true"), "{requests:?}");
        assert!(watch.contains("resourceVersion=4212"), "{watch}");
    }

    /// A server that takes every request and answers none: the await's timeout names the
    /// watch's trouble, not just a phase.
    #[tokio::test]
    async fn a_watch_that_is_never_answered_says_why_when_its_await_times_out() {
        use crate::test_server::{start, Conn};
        let server = start(|_| Conn::Silent).await;
        let h = connect_blocking(&explicit(&server.url, 1000)).unwrap();
        let outcome = await_pod(
            &h,
            &pod_watches(&h),
            "flame",
            NAME,
            Some("excluster=flame"),
            await_options(Duration::from_secs(3)),
            |_| {},
        )
        .await;
        match outcome {
            AwaitOutcome::Timeout {
                phase: Phase::Scheduling,
                detail: Some(detail),
                ..
            } => assert!(detail.contains("no answer"), "{detail}"),
            other => panic!("{other:?}"),
        }
        assert!(server.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    }
}
