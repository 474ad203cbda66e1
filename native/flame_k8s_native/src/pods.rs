//! Pod and Secret operations, JSON in and out (no lossy round trip through typed structs).
//!
//! Every operation takes the `deadline` of its request (its request timeout, which bounds it as
//! a whole): retries of a pushed-back request (`raw::send`) never start past it.

use kube::api::{DeleteParams, GetParams, ListParams, PostParams, PropagationPolicy};
use kube::core::Request;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::ClientHandle;
use crate::error::{Error, Result};
use crate::manifest::{prepare_pod, prepare_secret};
use crate::raw::send_json;
use crate::runtime::with_timeout;

/// The kinds of object the backend creates and deletes: the runner pod and its secret. Both take
/// the same path through here; they differ in their manifest check and in what comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum Kind {
    Pod,
    Secret,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }
}

/// Namespaces and names arrive checked (`FLAMEK8sBackend.Kube` validates every argument, once),
/// so they go into the path as they are. Whatever else could still make the URI unusable fails
/// the request's build, never a panic.
fn collection(namespace: &str, plural: &str) -> Request {
    Request::new(format!("/api/v1/namespaces/{namespace}/{plural}"))
}

fn build_error(e: kube::core::request::Error) -> Error {
    Error::Internal(format!("building request: {e}"))
}

/// A POST of `body` to the collection with `fieldValidation=Strict`: the server refuses
/// unknown and duplicate fields (400) instead of dropping them. kube-rs's `PostParams` has no
/// field for it, so the parameter is appended to the built request's URI.
fn create_strict(collection: &Request, body: Vec<u8>) -> Result<http::Request<Vec<u8>>> {
    let mut req = collection
        .create(&PostParams::default(), body)
        .map_err(build_error)?;
    let mut uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    if !uri.contains('?') {
        uri.push('?');
    } else if !(uri.ends_with('?') || uri.ends_with('&')) {
        uri.push('&');
    }
    uri.push_str("fieldValidation=Strict");
    *req.uri_mut() = uri
        .parse()
        .map_err(|e| Error::Internal(format!("building request URI {uri:?}: {e}")))?;
    Ok(req)
}

fn expect_object(v: Value, what: &str) -> Result<Value> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(Error::Decode(format!(
            "expected a {what} object, got {}",
            crate::manifest::json_type_name(&v)
        )))
    }
}

/// Treat 404 as success (the object is already gone).
fn ignore_not_found(r: Result<Value>) -> Result<()> {
    match r {
        Ok(_) | Err(Error::Api { code: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn delete_params(grace_period_seconds: Option<u32>) -> DeleteParams {
    DeleteParams {
        grace_period_seconds,
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

pub async fn get_pod(
    h: &ClientHandle,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<Value> {
    get_pod_with(h.client(), namespace, name, deadline).await
}

pub async fn get_pod_with(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<Value> {
    let req = collection(namespace, "pods")
        .get(name, &GetParams::default())
        .map_err(build_error)?;
    expect_object(send_json(client, req, deadline).await?, "Pod")
}

/// Create a pod or a secret from a manifest (checked first, see `manifest`). A pod comes back
/// whole; of a secret only its metadata comes back (never `data`/`stringData`). Waits for one
/// of the client's create slots first (`ClientHandle::create_permit`), until `slot_deadline`,
/// and holds it through the server's push-back (429 and its `Retry-After`): a server that asks
/// for less gets less. The request itself then has the client's request timeout.
pub async fn create(
    h: &ClientHandle,
    kind: Kind,
    namespace: &str,
    manifest: Value,
    slot_deadline: Instant,
) -> Result<Value> {
    let body = match kind {
        Kind::Pod => prepare_pod(namespace, manifest)?,
        Kind::Secret => prepare_secret(namespace, manifest)?,
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::InvalidManifest(e.to_string()))?;
    let req = create_strict(&collection(namespace, kind.plural()), bytes)?;
    let queued = Instant::now();
    let _slot = tokio::time::timeout_at(slot_deadline, h.create_permit())
        .await
        .map_err(|_| {
            Error::Timeout(u64::try_from(queued.elapsed().as_millis()).unwrap_or(u64::MAX))
        })??;
    // The request's own timeout starts once it may go: in a burst, the wait for a slot is
    // the queue's part, bounded by `slot_deadline` (the boot's deadline for the backend).
    let deadline = Instant::now() + h.request_timeout();
    let created = with_timeout(h.request_timeout(), send_json(h.client(), req, deadline)).await?;
    match kind {
        Kind::Pod => expect_object(created, "Pod"),
        Kind::Secret => metadata_only(created),
    }
}

/// Delete with background propagation; an object that is already gone counts as deleted.
/// `grace_period_seconds: None` leaves the object's own grace period.
pub async fn delete(
    h: &ClientHandle,
    kind: Kind,
    namespace: &str,
    name: &str,
    grace_period_seconds: Option<u32>,
    deadline: Instant,
) -> Result<()> {
    let req = collection(namespace, kind.plural())
        .delete(name, &delete_params(grace_period_seconds))
        .map_err(build_error)?;
    ignore_not_found(send_json(h.client(), req, deadline).await)
}

pub async fn list_pods(
    h: &ClientHandle,
    namespace: &str,
    label_selector: &str,
    deadline: Instant,
) -> Result<Vec<Value>> {
    let mut lp = ListParams::default();
    if !label_selector.is_empty() {
        lp = lp.labels(label_selector);
    }
    let req = collection(namespace, "pods")
        .list(&lp)
        .map_err(build_error)?;
    let list = send_json(h.client(), req, deadline).await?;
    list_items(list, "Pod")
}

/// The `items` of a list response, each given the `apiVersion`/`kind` lists leave out.
pub fn list_items(list: Value, kind: &str) -> Result<Vec<Value>> {
    let Value::Object(mut obj) = list else {
        return Err(Error::Decode(format!("expected a {kind}List object")));
    };
    let items = match obj.remove("items") {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            return Err(Error::Decode(format!(
                "{kind}List items: expected a list, got {}",
                crate::manifest::json_type_name(&other)
            )))
        }
    };
    Ok(items
        .into_iter()
        .map(|mut item| {
            if let Some(o) = item.as_object_mut() {
                o.entry("apiVersion")
                    .or_insert_with(|| Value::String("v1".into()));
                o.entry("kind")
                    .or_insert_with(|| Value::String(kind.into()));
            }
            item
        })
        .collect())
}

pub fn metadata_only(obj: Value) -> Result<Value> {
    match obj {
        Value::Object(mut o) => match o.remove("metadata") {
            Some(m @ Value::Object(_)) => Ok(m),
            _ => Err(Error::Decode("created object has no metadata".into())),
        },
        other => Err(Error::Decode(format!(
            "expected a Secret object, got {}",
            crate::manifest::json_type_name(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientHandle;
    use crate::raw::fake::{self, Answer, TOO_MANY};
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    /// A burst of creates reaches the server `max_concurrent_creates` at a time, each waiting
    /// for a slot within its own deadline.
    #[tokio::test(start_paused = true)]
    async fn creates_are_limited_per_client() {
        let created = pod("p").to_string();
        let (client, seen) =
            fake::client(move |_| Answer::new(201, &created).after(Duration::from_secs(1)));
        let h = Arc::new(ClientHandle::new(
            client.clone(),
            client,
            Duration::from_secs(15),
            3,
        ));
        let t0 = Instant::now();
        let creates = (0..10).map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(15);
                create(&h, Kind::Pod, "d", pod(&format!("p{i}")), deadline).await
            })
        });
        for r in futures::future::join_all(creates).await {
            assert!(r.unwrap().is_ok());
        }
        assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 3);
        assert_eq!(seen.requests.load(Ordering::SeqCst), 10);
        // 10 creates of 1 s, 3 at a time.
        assert_eq!(t0.elapsed(), Duration::from_secs(4));
    }

    /// A create the server pushes back keeps its slot while it waits: the server gets less.
    #[tokio::test(start_paused = true)]
    async fn a_pushed_back_create_holds_its_slot() {
        let created = pod("p").to_string();
        let (client, seen) = fake::client(move |n| match n {
            0 => Answer::new(429, TOO_MANY).retry_after("2"),
            _ => Answer::new(201, &created),
        });
        let h = Arc::new(ClientHandle::new(
            client.clone(),
            client,
            Duration::from_secs(15),
            1,
        ));
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(15);
        let (a, b) = tokio::join!(
            create(&h, Kind::Pod, "d", pod("a"), deadline),
            create(
                &h,
                Kind::Secret,
                "d",
                json!({"metadata": {"name": "b"}}),
                deadline
            )
        );
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(seen.max_in_flight.load(Ordering::SeqCst), 1);
        assert!(t0.elapsed() >= Duration::from_secs(2));
    }

    /// The wait for a slot is the queue's, not the request's: with creates of 4 s, one slot
    /// and a 5 s request timeout, the third create is sent after 8 s in the queue and still
    /// succeeds; one whose queue bound ends first times out there, without being sent.
    #[tokio::test(start_paused = true)]
    async fn the_slot_wait_is_bounded_by_the_slot_deadline_not_the_request_timeout() {
        let created = pod("p").to_string();
        let (client, seen) =
            fake::client(move |_| Answer::new(201, &created).after(Duration::from_secs(4)));
        let h = Arc::new(ClientHandle::new(
            client.clone(),
            client,
            Duration::from_secs(5),
            1,
        ));
        let t0 = Instant::now();
        let queue = t0 + Duration::from_secs(30);
        let (a, b, c, late) = tokio::join!(
            create(&h, Kind::Pod, "d", pod("a"), queue),
            create(&h, Kind::Pod, "d", pod("b"), queue),
            create(&h, Kind::Pod, "d", pod("c"), queue),
            create(&h, Kind::Pod, "d", pod("late"), t0 + Duration::from_secs(6)),
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
        assert!(matches!(late, Err(Error::Timeout(6000))), "{late:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(t0.elapsed(), Duration::from_secs(12));
    }

    /// A long queue bound does not stretch the request itself: a server that does not answer
    /// times the create out after the request timeout.
    #[tokio::test(start_paused = true)]
    async fn a_create_sent_has_the_request_timeout() {
        let created = pod("p").to_string();
        let (client, _seen) =
            fake::client(move |_| Answer::new(201, &created).after(Duration::from_secs(60)));
        let h = ClientHandle::new(client.clone(), client, Duration::from_secs(5), 1);
        let t0 = Instant::now();
        let r = create(&h, Kind::Pod, "d", pod("a"), t0 + Duration::from_secs(30)).await;
        assert!(matches!(r, Err(Error::Timeout(5000))), "{r:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn list_items_fill_kind() {
        let items = list_items(
            json!({"kind": "PodList", "items": [{"metadata": {"name": "a"}}]}),
            "Pod",
        )
        .unwrap();
        assert_eq!(
            items,
            vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}})]
        );
        assert_eq!(
            list_items(json!({"items": null}), "Pod").unwrap(),
            Vec::<Value>::new()
        );
        assert!(list_items(json!([]), "Pod").is_err());
    }

    #[test]
    fn secret_metadata_only() {
        let m =
            metadata_only(json!({"metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}})).unwrap();
        assert_eq!(m, json!({"name": "s"}));
        assert!(metadata_only(json!({"data": {}})).is_err());
    }

    #[test]
    fn not_found_is_fine_for_deletes() {
        assert!(ignore_not_found(Err(Error::Api {
            code: 404,
            reason: "NotFound".into(),
            message: "x".into()
        }))
        .is_ok());
        assert!(ignore_not_found(Err(Error::Api {
            code: 403,
            reason: "Forbidden".into(),
            message: "x".into()
        }))
        .is_err());
    }

    #[test]
    fn delete_request_shape() {
        let req = collection("ns", "pods")
            .delete("p", &delete_params(Some(0)))
            .unwrap();
        assert_eq!(req.method(), http::Method::DELETE);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/ns/pods/p");
        let body: Value = serde_json::from_slice(req.body()).unwrap();
        assert_eq!(body["propagationPolicy"], "Background");
        assert_eq!(body["gracePeriodSeconds"], 0);
    }

    #[test]
    fn create_requests_ask_for_strict_field_validation() {
        for plural in [Kind::Pod.plural(), Kind::Secret.plural()] {
            let req = create_strict(&collection("ns", plural), b"{}".to_vec()).unwrap();
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(
                req.uri().path(),
                format!("/api/v1/namespaces/ns/{plural}").as_str()
            );
            assert_eq!(req.uri().query(), Some("fieldValidation=Strict"));
            assert_eq!(req.body(), b"{}");
            assert_eq!(
                req.headers()[http::header::CONTENT_TYPE],
                "application/json"
            );
        }
    }

    #[test]
    fn list_request_shape() {
        let req = collection("ns", "pods")
            .list(&ListParams::default().labels("a=b,c"))
            .unwrap();
        assert_eq!(req.uri().query(), Some("&labelSelector=a%3Db%2Cc"));
    }
}
