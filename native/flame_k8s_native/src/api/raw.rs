//! HTTP against the API server with JSON in and out, retried within each request's deadline.
//!
//! The transport under the pod and secret operations, and the generic `request/7` NIF's.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::api::client::ClientHandle;
use crate::error::{default_reason, Error, Result};

/// A successful response: its content type and body bytes.
pub struct Response {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Retries of one request at most (client-go's default too): with the server asking for a
/// second each time, the request timeout ends them first anyway.
const MAX_RETRIES: u32 = 10;
/// Delays between retries when the server gives no `Retry-After`: doubling from this...
const RETRY_MIN: Duration = Duration::from_millis(200);
/// ...up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// After which answers a request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Only after 429 (refused before anything was done). For POST and PATCH: after a 503 or
    /// 504, or a connection lost once the request was sent, the server may have done it, and
    /// doing it again is not harmless.
    Refused,
    /// GET, PUT, DELETE: doing them again changes nothing the first one did not. Also after
    /// 503 and 504.
    Idempotent,
    /// A create of a name chosen for it alone: as `Idempotent`, and also after a connection
    /// lost once the request was sent. A repeat that finds the object (409 AlreadyExists)
    /// tells its caller that it exists.
    NamedCreate,
}

impl Repeat {
    /// What an `http::Method` allows.
    pub fn for_method(method: &http::Method) -> Self {
        if method == http::Method::POST || method == http::Method::PATCH {
            Repeat::Refused
        } else {
            Repeat::Idempotent
        }
    }

    fn after_status(self, status: http::StatusCode) -> bool {
        match status {
            http::StatusCode::TOO_MANY_REQUESTS => true,
            http::StatusCode::SERVICE_UNAVAILABLE | http::StatusCode::GATEWAY_TIMEOUT => {
                self != Repeat::Refused
            }
            _ => false,
        }
    }

    fn after_lost(self) -> bool {
        self == Repeat::NamedCreate
    }
}

/// What `send_tracked` did, for a caller that must know whether a request that failed may
/// still take effect: read it after the call returned or was dropped (a timeout).
#[derive(Debug, Default)]
pub struct Sent {
    /// When the last attempt started.
    pub last: Option<Instant>,
    /// An attempt that finished may have taken effect.
    open_before: bool,
    /// An attempt is under way: a call dropped now leaves it open.
    in_flight: bool,
}

impl Sent {
    /// Whether the request may have taken effect although no answer says it did.
    pub fn open(&self) -> bool {
        self.open_before || self.in_flight
    }
}

/// Send a request; a non-2xx status becomes `Error::Api` with the server's message verbatim.
/// Retries as `Repeat::for_method` of its method allows (see `send_tracked`).
pub async fn send(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    deadline: Instant,
) -> Result<Response> {
    let repeat = Repeat::for_method(req.method());
    send_tracked(client, req, deadline, repeat, &mut Sent::default()).await
}

/// One attempt's result short of success.
enum Failed {
    /// The server answered with this status.
    Status {
        status: http::StatusCode,
        retry_after: Option<Duration>,
        error: Error,
    },
    /// No (whole) answer; `went_out`: the request may have reached the server.
    Lost { error: Error, went_out: bool },
}

/// Send a request, recording in `sent` when it went out and whether it may have taken effect.
///
/// 429 Too Many Requests (the server refused the request before doing anything: always safe
/// to repeat) is retried, and so are 503 and 504 unless `repeat` is `Refused` (a POST or a
/// PATCH the server may have done before it answered), and a connection lost after the
/// request went out when `repeat` is `NamedCreate`. A retry waits for the server's
/// `Retry-After` (seconds; with up to a fifth more at random, so that a burst the server
/// pushed back does not return as one burst), else a doubling delay, and is made only while
/// it would still start before `deadline` (the caller's request timeout). Past it, the last
/// answer is the error (`{:api, 429, "TooManyRequests", message}`), at once: a caller learns
/// why rather than waiting out its timeout for a `{:timeout, ms}`.
pub async fn send_tracked(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    deadline: Instant,
    repeat: Repeat,
    sent: &mut Sent,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        sent.last = Some(Instant::now());
        sent.in_flight = true;
        let result = attempt_once(client, &req).await;
        sent.in_flight = false;
        let (error, retry_after, again) = match result {
            Ok(response) => return Ok(response),
            Err(Failed::Status {
                status,
                retry_after,
                error,
            }) => {
                sent.open_before |= leaves_open(status);
                (error, retry_after, repeat.after_status(status))
            }
            Err(Failed::Lost { error, went_out }) => {
                sent.open_before |= went_out;
                (error, None, went_out && repeat.after_lost())
            }
        };
        if !again || attempt >= MAX_RETRIES {
            return Err(error);
        }
        let delay = match retry_after {
            Some(server) => server + jitter(server / 5),
            None => backoff(attempt),
        };
        if Instant::now() + delay >= deadline {
            return Err(error);
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

async fn attempt_once(
    client: &kube::Client,
    req: &http::Request<Vec<u8>>,
) -> std::result::Result<Response, Failed> {
    let res = client
        .send(copy(req).map(kube::client::Body::from))
        .await
        .map_err(|e| Failed::Lost {
            went_out: went_out(&e),
            error: e.into(),
        })?;
    let status = res.status();
    let retry_after = retry_after(res.headers());
    let content_type = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A body cut short: whatever the status said, the answer is not whole.
    let body = match res.into_body().collect_bytes().await {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            return Err(Failed::Lost {
                error: e.into(),
                went_out: true,
            })
        }
    };
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return Ok(Response { content_type, body });
    }
    Err(Failed::Status {
        status,
        retry_after,
        error: api_error(status.as_u16(), &body),
    })
}

/// Answers that leave open whether the server did the request: an error it did not classify
/// (500: etcd's own timeout is one), and what a proxy or the server's deadline says in its
/// place (502, 503, 504).
fn leaves_open(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Whether a request that failed with `err` may have reached the server: anything but a
/// failed connect (TCP, TLS, the connect timeout) or credentials that could not be sent.
fn went_out(err: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return false;
            }
        }
        if e.is::<crate::error::Credentials>() {
            return false;
        }
        source = e.source();
    }
    true
}

/// `Retry-After` in seconds, as the API server sends it (an HTTP date is not understood and
/// falls back to the doubling delay).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A year is "never" for a request; also keeps `Instant + delay` from overflowing.
    Some(Duration::from_secs(secs.min(365 * 24 * 3600)))
}

fn backoff(attempt: u32) -> Duration {
    let d = RETRY_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_MAX);
    d / 2 + jitter(d / 2)
}

/// A random duration in `0..=max` (std's per-map random keys: no dependency for this).
fn jitter(max: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.saturating_add(1))
}

/// The request again, for a retry (`http::Request` is not `Clone`; ours carry no extensions).
fn copy(req: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut out = http::Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}

/// `Error::Api` from an error response: a `Status` object if the body is one, else its text.
pub fn api_error(code: u16, body: &[u8]) -> Error {
    if let Ok(status) = serde_json::from_slice::<kube::core::Status>(body) {
        if !status.message.is_empty() || !status.reason.is_empty() {
            let reason = if status.reason.is_empty() {
                default_reason(code).to_string()
            } else {
                status.reason
            };
            return Error::Api {
                code,
                reason,
                message: status.message,
            };
        }
    }
    Error::Api {
        code,
        reason: default_reason(code).to_string(),
        message: body_text(body).trim().to_string(),
    }
}

/// Decode a JSON body; an empty body is `null`.
pub fn json_body(body: &[u8]) -> Result<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::Decode(format!(
            "response is not JSON ({e}): {}",
            preview(&body_text(body))
        ))
    })
}

fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Send and decode a JSON response.
pub async fn send_json(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
    deadline: Instant,
) -> Result<Value> {
    let res = send(client, req, deadline).await?;
    json_body(&res.body)
}

/// Lossy UTF-8 text of a body, for messages.
fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The methods of `Kube.request/4` (`:get`, `:post`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl From<Method> for http::Method {
    fn from(m: Method) -> Self {
        match m {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
        }
    }
}

/// The content type used for a body when none is given.
pub fn default_content_type(method: &http::Method) -> &'static str {
    if method == http::Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    }
}

/// Build the `http::Request` for `request/7`. A path the URI parser refuses (not absolute, a
/// character a URI may not hold) fails here as an error, never a panic.
pub fn build_request(
    method: Method,
    path: &str,
    body: Option<&Value>,
    content_type: Option<&str>,
) -> Result<http::Request<Vec<u8>>> {
    let method = http::Method::from(method);
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::ACCEPT, "application/json");
    let bytes = match body {
        Some(v) => {
            let ct = content_type
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| default_content_type(&method));
            builder = builder.header(http::header::CONTENT_TYPE, ct);
            serde_json::to_vec(v).map_err(|e| Error::InvalidManifest(format!("body: {e}")))?
        }
        None => {
            if let Some(ct) = content_type.filter(|c| !c.is_empty()) {
                builder = builder.header(http::header::CONTENT_TYPE, ct);
            }
            Vec::new()
        }
    };
    builder
        .body(bytes)
        .map_err(|e| Error::InvalidManifest(format!("request: {e}")))
}

/// The generic request: JSON in, JSON out. A non-JSON success body (e.g. `/readyz` → `ok`)
/// comes back as a string; an empty body as `null`.
pub async fn request(
    handle: &ClientHandle,
    method: Method,
    path: &str,
    body: Option<&Value>,
    content_type: Option<&str>,
    deadline: Instant,
) -> Result<Value> {
    let req = build_request(method, path, body, content_type)?;
    let res = send(handle.client(), req, deadline).await?;
    decode_response(res)
}

fn decode_response(res: Response) -> Result<Value> {
    let is_json = res
        .content_type
        .as_deref()
        .is_none_or(|ct| ct.contains("json"));
    if is_json {
        return json_body(&res.body);
    }
    // Text as it came (pods/log, /readyz), even a log line that happens to parse as JSON; a
    // log's bytes need not be UTF-8, and a lossy line is more use than an error.
    Ok(Value::String(
        String::from_utf8_lossy(&res.body).into_owned(),
    ))
}

/// A fake API server for unit tests: a `kube::Client` whose every request is answered by a
/// function of the request's sequence number (from 0), after the delay that function gives.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    pub struct Answer {
        pub status: u16,
        pub retry_after: Option<&'static str>,
        pub body: String,
        pub after: Duration,
        /// No answer: the connection is lost after the request went out.
        pub lost: bool,
    }

    impl Answer {
        pub fn new(status: u16, body: &str) -> Self {
            Answer {
                status,
                retry_after: None,
                body: body.to_string(),
                after: Duration::ZERO,
                lost: false,
            }
        }

        /// The connection breaks once the request is sent (after the delay).
        pub fn lost() -> Self {
            Answer {
                lost: true,
                ..Answer::new(0, "")
            }
        }

        pub fn retry_after(mut self, secs: &'static str) -> Self {
            self.retry_after = Some(secs);
            self
        }

        pub fn after(mut self, d: Duration) -> Self {
            self.after = d;
            self
        }
    }

    /// Requests seen (method and path with query, in order), and the most in flight at once.
    #[derive(Default)]
    pub struct Seen {
        pub requests: AtomicUsize,
        pub in_flight: AtomicUsize,
        pub max_in_flight: AtomicUsize,
        pub uris: Mutex<Vec<String>>,
    }

    impl Seen {
        pub fn uris(&self) -> Vec<String> {
            self.uris.lock().unwrap().clone()
        }
    }

    pub fn client<F>(answer: F) -> (kube::Client, Arc<Seen>)
    where
        F: Fn(usize) -> Answer + Send + Sync + 'static,
    {
        let seen = Arc::new(Seen::default());
        let answer = Arc::new(answer);
        let counters = seen.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (answer, seen) = (answer.clone(), counters.clone());
            seen.uris
                .lock()
                .unwrap()
                .push(format!("{} {}", req.method(), req.uri()));
            async move {
                let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
                let a = answer(n);
                tokio::time::sleep(a.after).await;
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                if a.lost {
                    let reset = std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "connection reset by peer",
                    );
                    return Err(tower::BoxError::from(reset));
                }
                let mut res = http::Response::builder()
                    .status(a.status)
                    .header(http::header::CONTENT_TYPE, "application/json");
                if let Some(secs) = a.retry_after {
                    res = res.header(http::header::RETRY_AFTER, secs);
                }
                Ok(res.body(kube::client::Body::from(a.body.into_bytes()))?)
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    pub const TOO_MANY: &str = r#"{"kind":"Status","status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","code":429}"#;
}

#[cfg(test)]
mod tests {
    use super::fake::{self, Answer, TOO_MANY};
    use super::*;
    use serde_json::json;
    use std::sync::atomic::Ordering;

    fn get() -> http::Request<Vec<u8>> {
        build_request(Method::Get, "/api/v1/namespaces/d/pods/p", None, None).unwrap()
    }

    fn too_many() -> Error {
        Error::Api {
            code: 429,
            reason: "TooManyRequests".into(),
            message: "Too many requests, please try again later.".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_retried_after_its_retry_after() {
        let (client, seen) = fake::client(|n| match n {
            0 => Answer::new(429, TOO_MANY).retry_after("2"),
            _ => Answer::new(200, r#"{"kind":"Pod"}"#),
        });
        let t0 = Instant::now();
        let v = send_json(&client, get(), t0 + Duration::from_secs(15)).await;
        assert_eq!(v, Ok(json!({"kind": "Pod"})));
        let waited = t0.elapsed();
        // Retry-After plus at most a fifth of it.
        assert!(
            waited >= Duration::from_secs(2) && waited <= Duration::from_millis(2400),
            "{waited:?}"
        );
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_that_would_end_past_the_deadline_is_the_servers_answer_at_once() {
        let (client, seen) = fake::client(|_| Answer::new(429, TOO_MANY).retry_after("30"));
        let t0 = Instant::now();
        let r = send(&client, get(), t0 + Duration::from_secs(15)).await;
        assert_eq!(r.err(), Some(too_many()));
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);

        // Retries while they fit: Retry-After 1 (up to 1.2 s) four times in a 5 s budget, then
        // the fifth would end past it.
        let (client, seen) = fake::client(|_| Answer::new(429, TOO_MANY).retry_after("1"));
        let t0 = Instant::now();
        let r = send(&client, get(), t0 + Duration::from_secs(5)).await;
        assert_eq!(r.err(), Some(too_many()));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let n = seen.requests.load(Ordering::SeqCst);
        assert!((4..=5).contains(&n), "{n} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_the_delays_double() {
        let (client, seen) = fake::client(|_| Answer::new(503, "{}"));
        let t0 = Instant::now();
        let r = send(&client, get(), t0 + Duration::from_secs(600)).await;
        assert!(matches!(r, Err(Error::Api { code: 503, .. })));
        // 1 + MAX_RETRIES attempts; delays of 0.1-0.2, 0.2-0.4, ... capped at 2.5-5 s.
        assert_eq!(seen.requests.load(Ordering::SeqCst), 11);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(1500 + 6 * 2500) && waited <= Duration::from_secs(34),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let forbidden =
            r#"{"kind":"Status","message":"pods is forbidden","reason":"Forbidden","code":403}"#;
        for (status, body) in [(403, forbidden), (409, "{}"), (500, "{}"), (404, "{}")] {
            let (client, seen) = fake::client(move |_| Answer::new(status, body).retry_after("1"));
            let r = send(&client, get(), Instant::now() + Duration::from_secs(15)).await;
            assert!(matches!(r, Err(Error::Api { code, .. }) if code == status));
            assert_eq!(seen.requests.load(Ordering::SeqCst), 1);
        }
    }

    fn post() -> http::Request<Vec<u8>> {
        build_request(
            Method::Post,
            "/api/v1/namespaces/d/pods",
            Some(&json!({})),
            None,
        )
        .unwrap()
    }

    fn patch() -> http::Request<Vec<u8>> {
        build_request(
            Method::Patch,
            "/api/v1/namespaces/d/pods/p",
            Some(&json!({})),
            None,
        )
        .unwrap()
    }

    /// A 503 or 504 may come after the server did what was asked: a POST or PATCH sent again
    /// would do it twice (or get a 409 for what the first one created).
    #[tokio::test(start_paused = true)]
    async fn posts_and_patches_are_not_sent_again_after_503_or_504() {
        for (name, req) in [("POST", post as fn() -> _), ("PATCH", patch)] {
            for status in [503, 504] {
                let (client, seen) =
                    fake::client(move |_| Answer::new(status, "{}").retry_after("1"));
                let r = send(&client, req(), Instant::now() + Duration::from_secs(15)).await;
                assert!(
                    matches!(r, Err(Error::Api { code, .. }) if code == status),
                    "{name} {status}"
                );
                assert_eq!(seen.requests.load(Ordering::SeqCst), 1, "{name} {status}");
            }
        }
    }

    /// A 429 is the server refusing before it did anything: any request may go again.
    #[tokio::test(start_paused = true)]
    async fn posts_and_patches_are_sent_again_after_429() {
        for req in [post as fn() -> _, patch] {
            let (client, seen) = fake::client(|n| match n {
                0 => Answer::new(429, TOO_MANY).retry_after("1"),
                _ => Answer::new(201, "{}"),
            });
            let r = send(&client, req(), Instant::now() + Duration::from_secs(15)).await;
            assert!(r.is_ok());
            assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
        }
    }

    /// GET, PUT and DELETE change nothing the first time did not: they go again after 503/504.
    #[tokio::test(start_paused = true)]
    async fn idempotent_methods_are_sent_again_after_503_and_504() {
        for method in [Method::Get, Method::Put, Method::Delete] {
            let (client, seen) = fake::client(|n| match n {
                0 => Answer::new(503, "{}").retry_after("1"),
                1 => Answer::new(504, "{}").retry_after("1"),
                _ => Answer::new(200, "{}"),
            });
            let req = build_request(method, "/api/v1/namespaces/d/pods/p", None, None).unwrap();
            let r = send(&client, req, Instant::now() + Duration::from_secs(15)).await;
            assert!(r.is_ok(), "{method:?}");
            assert_eq!(seen.requests.load(Ordering::SeqCst), 3, "{method:?}");
        }
    }

    /// What `Sent` says after each kind of failure: whether the request may have taken effect.
    #[tokio::test(start_paused = true)]
    async fn sent_tells_whether_a_failed_request_may_have_taken_effect() {
        let cases: Vec<(Repeat, Vec<u16>, bool)> = vec![
            // Answers that say it was not done.
            (Repeat::Refused, vec![403], false),
            (Repeat::Refused, vec![422], false),
            (Repeat::Refused, vec![409], false),
            // Answers that say nothing either way.
            (Repeat::Refused, vec![500], true),
            (Repeat::Refused, vec![502], true),
            (Repeat::Refused, vec![503], true),
            (Repeat::Refused, vec![504], true),
            // A later refusal does not undo an earlier attempt that may have been done.
            (Repeat::NamedCreate, vec![504, 403], true),
            (Repeat::NamedCreate, vec![429, 403], false),
        ];
        for (repeat, statuses, open) in cases {
            let answers = statuses.clone();
            let (client, seen) = fake::client(move |n| {
                let status = answers[n.min(answers.len() - 1)];
                Answer::new(status, "{}").retry_after("1")
            });
            let mut sent = Sent::default();
            let t0 = Instant::now();
            let r = send_tracked(
                &client,
                post(),
                t0 + Duration::from_secs(15),
                repeat,
                &mut sent,
            )
            .await;
            assert!(r.is_err());
            assert_eq!(
                seen.requests.load(Ordering::SeqCst),
                statuses.len(),
                "{statuses:?}"
            );
            assert_eq!(sent.open(), open, "{repeat:?} {statuses:?}");
            assert!(sent.last.is_some_and(|at| at >= t0), "{statuses:?}");
        }
    }

    /// A connection lost once the request went out: it may have been done. A create of a name
    /// of its own goes again (a 409 then tells it exists); a POST otherwise does not.
    #[tokio::test(start_paused = true)]
    async fn a_connection_lost_after_sending_leaves_the_outcome_open() {
        let (client, seen) = fake::client(|_| Answer::lost());
        let mut sent = Sent::default();
        let deadline = Instant::now() + Duration::from_secs(15);
        let r = send_tracked(&client, post(), deadline, Repeat::Refused, &mut sent).await;
        assert!(
            matches!(r, Err(Error::Connect(ref m)) if m.contains("reset")),
            "{:?}",
            r.err()
        );
        assert!(sent.open());
        assert_eq!(seen.requests.load(Ordering::SeqCst), 1);

        let (client, seen) = fake::client(|n| match n {
            0 => Answer::lost(),
            _ => Answer::new(
                409,
                r#"{"kind":"Status","reason":"AlreadyExists","code":409}"#,
            ),
        });
        let mut sent = Sent::default();
        let r = send_tracked(&client, post(), deadline, Repeat::NamedCreate, &mut sent).await;
        assert!(
            matches!(r, Err(Error::Api { code: 409, .. })),
            "{:?}",
            r.err()
        );
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
    }

    /// A request dropped while it waits for its answer (the caller's timeout) may have been
    /// done; one dropped before it went out was not.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_in_flight_leaves_the_outcome_open() {
        let (client, _seen) =
            fake::client(|_| Answer::new(201, "{}").after(Duration::from_secs(60)));
        let mut sent = Sent::default();
        let deadline = Instant::now() + Duration::from_secs(15);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            send_tracked(&client, post(), deadline, Repeat::Refused, &mut sent),
        )
        .await;
        assert!(r.is_err());
        assert!(sent.open());
        assert!(!Sent::default().open());
    }

    #[test]
    fn retry_after_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, " 3 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            u64::MAX.to_string().parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(365 * 24 * 3600)));
    }

    #[test]
    fn api_error_from_status_body() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"x\" is forbidden: User \"u\" cannot get resource \"pods\"","reason":"Forbidden","code":403}"#;
        assert_eq!(
            api_error(403, body),
            Error::Api {
                code: 403,
                reason: "Forbidden".into(),
                message: "pods \"x\" is forbidden: User \"u\" cannot get resource \"pods\"".into()
            }
        );
    }

    #[test]
    fn api_error_from_text_body() {
        assert_eq!(
            api_error(404, b"404 page not found\n"),
            Error::Api {
                code: 404,
                reason: "NotFound".into(),
                message: "404 page not found".into()
            }
        );
        assert_eq!(
            api_error(401, br#"{"kind":"Status","code":401}"#),
            Error::Api {
                code: 401,
                reason: "Unauthorized".into(),
                message: r#"{"kind":"Status","code":401}"#.into()
            }
        );
    }

    #[test]
    fn json_bodies() {
        assert_eq!(json_body(b"").unwrap(), Value::Null);
        assert_eq!(json_body(b" \n").unwrap(), Value::Null);
        assert_eq!(json_body(br#"{"a":1}"#).unwrap(), json!({"a": 1}));
        assert!(matches!(json_body(b"<html>"), Err(Error::Decode(m)) if m.contains("<html>")));
    }

    #[test]
    fn text_bodies_are_strings_unless_declared_json() {
        let text = Response {
            content_type: Some("text/plain; charset=utf-8".into()),
            body: b"ok".to_vec(),
        };
        assert_eq!(decode_response(text).unwrap(), json!("ok"));
        let bad = Response {
            content_type: Some("application/json".into()),
            body: b"ok".to_vec(),
        };
        assert!(matches!(decode_response(bad), Err(Error::Decode(_))));
        // A pods/log line that parses as JSON stays the text it is; bytes that are not UTF-8
        // do not lose the rest of the log.
        let log = Response {
            content_type: Some("text/plain".into()),
            body: b"{\"msg\":\"booted\"}\n\xff".to_vec(),
        };
        assert_eq!(
            decode_response(log).unwrap(),
            json!("{\"msg\":\"booted\"}\n\u{fffd}")
        );
    }

    #[test]
    fn building_requests() {
        let r = build_request(
            Method::Patch,
            "/api/v1/namespaces/a/pods/p/status",
            Some(&json!({"a": 1})),
            None,
        )
        .unwrap();
        assert_eq!(r.method(), http::Method::PATCH);
        assert_eq!(
            r.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/merge-patch+json"
        );
        assert_eq!(r.body(), br#"{"a":1}"#);

        let r = build_request(
            Method::Post,
            "/api/v1/namespaces?dryRun=All",
            Some(&json!({})),
            None,
        )
        .unwrap();
        assert_eq!(r.uri().query(), Some("dryRun=All"));
        assert_eq!(
            r.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/json"
        );

        let r = build_request(
            Method::Patch,
            "/api/v1/x",
            Some(&json!([])),
            Some("application/json-patch+json"),
        )
        .unwrap();
        assert_eq!(
            r.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/json-patch+json"
        );

        let r = build_request(Method::Get, "/version", None, None).unwrap();
        assert_eq!(r.method(), http::Method::GET);
        assert!(r.body().is_empty());
        assert_eq!(
            build_request(Method::Delete, "/x", None, None)
                .unwrap()
                .method(),
            http::Method::DELETE
        );
        assert_eq!(
            build_request(Method::Put, "/x", None, None)
                .unwrap()
                .method(),
            http::Method::PUT
        );

        // A path no URI may hold is an error, not a panic.
        assert!(build_request(Method::Get, "/a b", None, None).is_err());
    }
}
