//! Pod and Secret operations, JSON in and out (no lossy round trip through typed structs).
//!
//! Every operation takes the `deadline` of its request (its request timeout, which bounds it as
//! a whole): retries of a pushed-back request (`raw::send`) never start past it.

use std::time::Duration;

use kube::api::{DeleteParams, GetParams, ListParams, PostParams, PropagationPolicy};
use kube::core::Request;
use serde_json::Value;
use tokio::time::Instant;

use crate::api::client::ClientHandle;
use crate::api::manifest::{prepare_pod, prepare_secret};
use crate::api::raw::{json_body, send_json, send_tracked, Repeat, Sent};
use crate::error::{Error, Result};
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

/// Namespaces and names arrive checked (`nif::args` admits only Kubernetes names), so they go
/// into the path as they are. Whatever else could still make the URI unusable fails
/// the request's build, never a panic.
fn collection(namespace: &str, plural: &str) -> Request {
    Request::new(format!("/api/v1/namespaces/{namespace}/{plural}"))
}

fn build_error(e: kube::core::request::Error) -> Error {
    Error::Internal(format!("building request: {e}"))
}

/// A POST of `body` to the collection with `fieldValidation=Strict` (the server refuses
/// unknown and duplicate fields, 400, instead of dropping them) and `timeout`: the server
/// gives the create up once the client would (its own deadline is otherwise 34 s to a minute
/// or more), which bounds when a create whose answer was lost can still be committed.
/// kube-rs's `PostParams` has neither, so they are appended to the built request's URI.
fn create_request(
    collection: &Request,
    body: Vec<u8>,
    server_timeout: Duration,
) -> Result<http::Request<Vec<u8>>> {
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
    // Go's duration syntax (`time.ParseDuration`), as the server reads it.
    uri.push_str(&format!(
        "fieldValidation=Strict&timeout={}ms",
        server_timeout.as_millis().max(1)
    ));
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
            crate::api::manifest::json_type_name(&v)
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

/// What a create made.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// The object as created: a whole pod, or a secret's metadata.
    Object(Value),
    /// An idempotent create found its name taken (409 AlreadyExists): this create, or an
    /// earlier one of the same object whose answer was lost, made it.
    AlreadyExists,
}

/// Create a pod or a secret from a manifest (checked first, see `manifest`). A pod comes back
/// whole; of a secret only its metadata comes back (never `data`/`stringData`). Waits for one
/// of the client's create slots first (`ClientHandle::create_permit`), until `slot_deadline`,
/// and holds it through the server's push-back (429 and its `Retry-After`): a server that asks
/// for less gets less. The request itself then has the client's request timeout.
///
/// `idempotent`: the manifest's `metadata.name` was chosen for this object alone, so that
/// sending it again is harmless. It is then sent again after an answer that leaves its
/// outcome open (503, 504, a connection lost once it went out), and a 409 AlreadyExists
/// means that it, or an earlier attempt whose answer was lost, created the object
/// (`Created::AlreadyExists`). A create that went out and may still take effect is
/// `Error::OutcomeUnknown`, with the time the server's deadline for it (and
/// `client::SETTLE_MARGIN`) has passed.
pub async fn create(
    h: &ClientHandle,
    kind: Kind,
    namespace: &str,
    manifest: Value,
    slot_deadline: Instant,
    idempotent: bool,
) -> Result<Created> {
    let body = match kind {
        Kind::Pod => prepare_pod(namespace, manifest)?,
        Kind::Secret => prepare_secret(namespace, manifest)?,
    };
    let named = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if idempotent && !named {
        return Err(Error::InvalidManifest(
            "metadata.name: an idempotent create needs a name of its own (generateName picks \
             a new one for each request)"
                .into(),
        ));
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::InvalidManifest(e.to_string()))?;
    let timeout = h.request_timeout();
    let req = create_request(&collection(namespace, kind.plural()), bytes, timeout)?;
    let queued = Instant::now();
    let _slot = tokio::time::timeout_at(slot_deadline, h.create_permit())
        .await
        .map_err(|_| {
            Error::Timeout(u64::try_from(queued.elapsed().as_millis()).unwrap_or(u64::MAX))
        })??;
    // The request's own timeout starts once it may go: in a burst, the wait for a slot is
    // the queue's part, bounded by `slot_deadline` (the boot's deadline for the backend).
    let deadline = Instant::now() + timeout;
    let repeat = if idempotent {
        Repeat::NamedCreate
    } else {
        Repeat::Refused
    };
    let mut sent = Sent::default();
    let sending = send_tracked(h.client(), req, deadline, repeat, &mut sent);
    let result = with_timeout(timeout, sending).await;
    let unknown = |cause: Error, settled_at: Instant| Error::OutcomeUnknown {
        cause: Box::new(cause),
        settled_at,
    };
    match result {
        Ok(response) => {
            let object = json_body(&response.body).and_then(|v| match kind {
                Kind::Pod => expect_object(v, "Pod"),
                Kind::Secret => metadata_only(v),
            });
            // Created, but its answer is unusable: there is nothing left to wait for.
            object
                .map(Created::Object)
                .map_err(|e| unknown(e, Instant::now()))
        }
        Err(Error::Api {
            code: 409, reason, ..
        }) if idempotent && reason == "AlreadyExists" => Ok(Created::AlreadyExists),
        Err(e) if sent.open() => {
            let last = sent.last.unwrap_or_else(Instant::now);
            Err(unknown(e, last + h.create_settle()))
        }
        Err(e) => Err(e),
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
                crate::api::manifest::json_type_name(&other)
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
            crate::api::manifest::json_type_name(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::{ClientHandle, SETTLE_MARGIN};
    use crate::api::raw::fake::{self, Answer, TOO_MANY};
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

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
                create(&h, Kind::Pod, "d", pod(&format!("p{i}")), deadline, false).await
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
            create(&h, Kind::Pod, "d", pod("a"), deadline, false),
            create(
                &h,
                Kind::Secret,
                "d",
                json!({"metadata": {"name": "b"}}),
                deadline,
                false
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
            create(&h, Kind::Pod, "d", pod("a"), queue, false),
            create(&h, Kind::Pod, "d", pod("b"), queue, false),
            create(&h, Kind::Pod, "d", pod("c"), queue, false),
            create(
                &h,
                Kind::Pod,
                "d",
                pod("late"),
                t0 + Duration::from_secs(6),
                false
            ),
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
        assert!(matches!(late, Err(Error::Timeout(6000))), "{late:?}");
        assert_eq!(seen.requests.load(Ordering::SeqCst), 3);
        assert_eq!(t0.elapsed(), Duration::from_secs(12));
    }

    /// A long queue bound does not stretch the request itself: a server that does not answer
    /// times the create out after the request timeout, and the create may still be done.
    #[tokio::test(start_paused = true)]
    async fn a_create_sent_has_the_request_timeout() {
        let created = pod("p").to_string();
        let (client, _seen) =
            fake::client(move |_| Answer::new(201, &created).after(Duration::from_secs(60)));
        let h = ClientHandle::new(client.clone(), client, Duration::from_secs(5), 1);
        let t0 = Instant::now();
        let r = create(
            &h,
            Kind::Pod,
            "d",
            pod("a"),
            t0 + Duration::from_secs(30),
            false,
        )
        .await;
        assert_eq!(
            r,
            Err(Error::OutcomeUnknown {
                cause: Box::new(Error::Timeout(5000)),
                settled_at: t0 + Duration::from_secs(5) + SETTLE_MARGIN,
            })
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    const EXISTS: &str = r#"{"kind":"Status","status":"Failure","message":"pods \"a\" already exists","reason":"AlreadyExists","code":409}"#;

    fn handle(client: kube::Client) -> ClientHandle {
        ClientHandle::new(client.clone(), client, Duration::from_secs(15), 4)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// The name was chosen for this object alone: when it is taken, the object exists, made by
    /// this create or an earlier one whose answer was lost. Without `idempotent` the name may
    /// be anybody's, and the 409 is the answer.
    #[tokio::test(start_paused = true)]
    async fn an_idempotent_create_that_finds_its_name_taken_counts_as_created() {
        let (client, _seen) = fake::client(|_| Answer::new(409, EXISTS));
        let h = handle(client);
        let r = create(&h, Kind::Pod, "d", pod("a"), far(), true).await;
        assert_eq!(r, Ok(Created::AlreadyExists));
        let secret = json!({"metadata": {"name": "a"}});
        let r = create(&h, Kind::Secret, "d", secret, far(), true).await;
        assert_eq!(r, Ok(Created::AlreadyExists));
        let r = create(&h, Kind::Pod, "d", pod("a"), far(), false).await;
        assert!(matches!(r, Err(Error::Api { code: 409, .. })), "{r:?}");
        // Another conflict is not the object's existence.
        let conflict = r#"{"kind":"Status","reason":"Conflict","message":"x","code":409}"#;
        let (client, _seen) = fake::client(move |_| Answer::new(409, conflict));
        let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), true).await;
        assert!(matches!(r, Err(Error::Api { code: 409, .. })), "{r:?}");
    }

    /// An idempotent create goes again after an answer that leaves it open (504, a lost
    /// connection), and its 409 or 201 then settles it.
    #[tokio::test(start_paused = true)]
    async fn an_idempotent_create_goes_again_after_504_or_a_lost_connection() {
        let created = pod("a").to_string();
        for first in [
            Answer::new(504, "{}").retry_after("1"),
            Answer::new(503, "{}").retry_after("1"),
            Answer::lost(),
        ] {
            let first = std::sync::Mutex::new(Some(first));
            let (client, seen) = fake::client(move |n| match n {
                0 => first.lock().unwrap().take().unwrap(),
                _ => Answer::new(409, EXISTS),
            });
            let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), true).await;
            assert_eq!(r, Ok(Created::AlreadyExists));
            assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
        }
        let ok = created.clone();
        let (client, seen) = fake::client(move |n| match n {
            0 => Answer::lost(),
            _ => Answer::new(201, &ok),
        });
        let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), true).await;
        assert_eq!(r, Ok(Created::Object(pod("a"))));
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    }

    /// A create without a name of its own is sent once after an answer that leaves it open,
    /// and reported as such, with the time by which the server can no longer commit it: the
    /// request timeout (its server-side `timeout`) past its last attempt, plus the margin.
    #[tokio::test(start_paused = true)]
    async fn a_create_that_may_have_been_done_is_an_outcome_unknown() {
        for (answer, cause) in [
            (
                Answer::new(
                    504,
                    r#"{"kind":"Status","reason":"Timeout","message":"slow","code":504}"#,
                ),
                Error::Api {
                    code: 504,
                    reason: "Timeout".into(),
                    message: "slow".into(),
                },
            ),
            (
                Answer::new(
                    500,
                    r#"{"kind":"Status","reason":"InternalError","message":"etcd","code":500}"#,
                ),
                Error::Api {
                    code: 500,
                    reason: "InternalError".into(),
                    message: "etcd".into(),
                },
            ),
            (
                Answer::lost(),
                Error::Connect("connection reset by peer".into()),
            ),
        ] {
            let answer = std::sync::Mutex::new(Some(answer));
            let (client, seen) = fake::client(move |_| answer.lock().unwrap().take().unwrap());
            let t0 = Instant::now();
            let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), false).await;
            assert_eq!(
                r,
                Err(Error::OutcomeUnknown {
                    cause: Box::new(cause),
                    settled_at: t0 + Duration::from_secs(15) + SETTLE_MARGIN,
                })
            );
            assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
        }

        // Idempotent, answered 504 every time: open since its first attempt, settled a request
        // timeout after its last one.
        let (client, seen) = fake::client(|_| Answer::new(504, "{}").retry_after("4"));
        let t0 = Instant::now();
        let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), true).await;
        let n = seen.requests.load(Ordering::SeqCst);
        assert!(n >= 3, "{n} attempts");
        match r {
            Err(Error::OutcomeUnknown { cause, settled_at }) => {
                assert!(matches!(*cause, Error::Api { code: 504, .. }));
                let last = settled_at - Duration::from_secs(15) - SETTLE_MARGIN;
                assert!(last > t0 + Duration::from_secs(8), "{:?}", last - t0);
                assert!(last < t0 + Duration::from_secs(15), "{:?}", last - t0);
            }
            other => panic!("{other:?}"),
        }
    }

    /// Answers that say the create was not done stay what they are.
    #[tokio::test(start_paused = true)]
    async fn a_create_refused_is_a_plain_error() {
        let forbidden = r#"{"kind":"Status","reason":"Forbidden","message":"no","code":403}"#;
        let invalid = r#"{"kind":"Status","reason":"Invalid","message":"bad","code":422}"#;
        for (status, body) in [(403, forbidden), (422, invalid), (429, TOO_MANY)] {
            for idempotent in [false, true] {
                let (client, _seen) =
                    fake::client(move |_| Answer::new(status, body).retry_after("30"));
                let r = create(&handle(client), Kind::Pod, "d", pod("a"), far(), idempotent).await;
                assert!(
                    matches!(r, Err(Error::Api { code, .. }) if code == status),
                    "{status} {idempotent}: {r:?}"
                );
            }
        }
        // Never sent: still waiting for a slot when its queue bound ended.
        let (client, seen) =
            fake::client(|_| Answer::new(201, "{}").after(Duration::from_secs(60)));
        let h = Arc::new(ClientHandle::new(
            client.clone(),
            client,
            Duration::from_secs(90),
            1,
        ));
        let busy = h.clone();
        tokio::spawn(async move { create(&busy, Kind::Pod, "d", pod("a"), far(), false).await });
        tokio::task::yield_now().await;
        let t0 = Instant::now();
        let r = create(
            &h,
            Kind::Pod,
            "d",
            pod("b"),
            t0 + Duration::from_secs(2),
            true,
        )
        .await;
        assert_eq!(r, Err(Error::Timeout(2000)));
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
    }

    /// A create refused before it went out (nothing listens: the connect fails) is a plain
    /// connection error: there is nothing to follow up.
    #[test]
    fn a_create_that_could_not_connect_is_a_plain_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let opts = crate::api::config::ConnectOptions {
            mode: Some(crate::api::config::Mode::Explicit),
            url: Some(format!("http://127.0.0.1:{port}")),
            request_timeout_ms: 5000,
            max_concurrent_creates: 4,
            ..Default::default()
        };
        let h = crate::api::client::connect_blocking(&opts).unwrap();
        let rt = crate::runtime::runtime().unwrap();
        for idempotent in [false, true] {
            let r = rt.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(5);
                create(&h, Kind::Pod, "d", pod("a"), deadline, idempotent).await
            });
            assert!(matches!(r, Err(Error::Connect(_))), "{r:?}");
        }
    }

    /// The server is told the request timeout, so that it gives the create up when its client
    /// does, and the time by which it has settled is known.
    #[tokio::test(start_paused = true)]
    async fn creates_tell_the_server_their_timeout() {
        let created = pod("a").to_string();
        let (client, seen) = fake::client(move |_| Answer::new(201, &created));
        let h = ClientHandle::new(client.clone(), client, Duration::from_millis(2500), 4);
        create(&h, Kind::Pod, "d", pod("a"), far(), true)
            .await
            .unwrap();
        assert_eq!(
            seen.uris(),
            vec!["POST /api/v1/namespaces/d/pods?fieldValidation=Strict&timeout=2500ms"]
        );
        assert_eq!(
            h.create_settle(),
            Duration::from_millis(2500) + SETTLE_MARGIN
        );
    }

    /// `generateName` picks a new name per request: such a create cannot be idempotent.
    #[tokio::test(start_paused = true)]
    async fn an_idempotent_create_needs_a_name_of_its_own() {
        let (client, seen) = fake::client(|_| Answer::new(201, "{}"));
        let generated = json!({"metadata": {"generateName": "p-"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let r = create(&handle(client), Kind::Pod, "d", generated, far(), true).await;
        assert!(
            matches!(r, Err(Error::InvalidManifest(ref m)) if m.contains("metadata.name")),
            "{r:?}"
        );
        assert_eq!(seen.requests.load(Ordering::SeqCst), 0);
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
            let req = create_request(
                &collection("ns", plural),
                b"{}".to_vec(),
                Duration::from_secs(15),
            )
            .unwrap();
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(
                req.uri().path(),
                format!("/api/v1/namespaces/ns/{plural}").as_str()
            );
            assert_eq!(
                req.uri().query(),
                Some("fieldValidation=Strict&timeout=15000ms")
            );
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
