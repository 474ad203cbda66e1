//! Bearer tokens read from a file, read again when the server refuses one (401).
//!
//! The files: the in-cluster service account token, a kubeconfig's `tokenFile`. The kubelet
//! rewrites the in-cluster file when it rotates the token, and the old token may be revoked at once (its pod or Secret deleted, a bound token's object gone).
//!
//! kube-rs re-reads such a file at most once a minute, and a request refused with 401 in
//! between stays refused. Here the file is re-read every `REFRESH` as well, and a 401 makes the
//! request re-read it at once: when the file holds another token, the request is sent once more
//! with it. A token the file still holds is never retried, so a revoked token that nothing
//! replaced costs one file read per 401, and its 401 is the answer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::error::Credentials;

/// How long a token read from the file is used before the file is read again (kube-rs and
/// client-go: a minute). A 401 reads it at once.
pub const REFRESH: Duration = Duration::from_secs(60);

/// The token file and the header made of its last reading.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<Reading>,
}

struct Reading {
    /// `Err`: why the file's content cannot be a header (never the content itself).
    header: Result<HeaderValue, Credentials>,
    at: Instant,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads the file now: a file that cannot be read is an error at connect, as with kube-rs.
    pub fn open(path: &Path) -> Result<Self, Credentials> {
        let header = read_header(path)?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: Mutex::new(Reading {
                header,
                at: Instant::now(),
            }),
        })
    }

    /// The header to send: the last reading, or a new one when it is older than `REFRESH`. A
    /// file that cannot be read then keeps the last token (a pod may remove its token file
    /// after start to limit exposure: kubernetes/kubernetes#68164).
    pub fn header(&self) -> Result<HeaderValue, Credentials> {
        let mut state = self.lock();
        if state.at.elapsed() >= REFRESH {
            if let Ok(header) = read_header(&self.path) {
                state.header = header;
            }
            state.at = Instant::now();
        }
        state.header.clone()
    }

    /// After a 401 for `refused`: reads the file again; the new header if the file holds
    /// another token than the refused one, else `None`.
    pub fn reload_after(&self, refused: &HeaderValue) -> Option<HeaderValue> {
        let header = read_header(&self.path).ok()?;
        let mut state = self.lock();
        state.header = header.clone();
        state.at = Instant::now();
        match header {
            Ok(h) if h != refused => Some(h),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Reading> {
        // Nothing panics while holding the lock; a poisoned one still holds a valid reading.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The file's token as a header: `Err(outer)` when the file cannot be read,
/// `Ok(Err(inner))` when its content is no valid header value.
#[allow(clippy::type_complexity)]
fn read_header(path: &Path) -> Result<Result<HeaderValue, Credentials>, Credentials> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Credentials(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    // The kubelet writes the token alone; an editor may add a newline (client-go trims too).
    Ok(bearer(text.trim())
        .map_err(|why| Credentials(format!("the token in {}: {why}", path.display()))))
}

/// `Bearer <token>` as a header value marked sensitive, or why it cannot be one (never saying
/// what the token is).
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    if token.is_empty() {
        return Err("is empty".into());
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "is not a valid HTTP header value (it holds a control character)")?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds the file's token to every request (see the module's documentation).
#[derive(Clone, Debug)]
pub struct TokenFileLayer(pub Arc<TokenFile>);

impl<S> Layer<S> for TokenFileLayer {
    type Service = TokenFileAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenFileAuth {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TokenFileAuth<S> {
    inner: S,
    token: Arc<TokenFile>,
}

impl<S, B> Service<Request<kube::client::Body>> for TokenFileAuth<S>
where
    S: Service<Request<kube::client::Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<B>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<kube::client::Body>) -> Self::Future {
        // The service that was polled ready takes this request; a clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = self.token.clone();
        Box::pin(async move {
            let header = token.header()?;
            // Kube's requests (watches too: a GET) have bodies of bytes, which can be sent again.
            let again = copy(&req);
            req.headers_mut().insert(AUTHORIZATION, header.clone());
            let res = inner.call(req).await.map_err(Into::into)?;
            if res.status() != StatusCode::UNAUTHORIZED {
                return Ok(res);
            }
            let (Some(mut again), Some(fresh)) = (again, token.reload_after(&header)) else {
                return Ok(res);
            };
            again.headers_mut().insert(AUTHORIZATION, fresh);
            inner
                .ready()
                .await
                .map_err(Into::into)?
                .call(again)
                .await
                .map_err(Into::into)
        })
    }
}

/// The request again, when its body can be replayed (`http::Request` is not `Clone`; kube's
/// requests carry no extensions).
fn copy(req: &Request<kube::client::Body>) -> Option<Request<kube::client::Body>> {
    let mut out = Request::new(req.body().try_clone()?);
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn token_file(content: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("flame_k8s_auth_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, content).unwrap();
        path
    }

    /// As the kubelet does: write aside, rename over.
    fn rotate(path: &Path, content: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// A server that accepts only `Bearer <accepted>`; counts requests and remembers the
    /// tokens it saw.
    #[allow(clippy::type_complexity)]
    fn server(
        accepted: &'static str,
    ) -> (
        impl Service<
                Request<kube::client::Body>,
                Response = Response<String>,
                Error = BoxError,
                Future = impl Send,
            > + Clone
            + Send,
        Arc<Mutex<Vec<String>>>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                let auth = req
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                log.lock().unwrap().push(auth.clone());
                let status = if auth == format!("Bearer {accepted}") {
                    200
                } else {
                    401
                };
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .body(String::new())
                        .unwrap(),
                )
            }
        });
        (svc, seen)
    }

    fn get() -> Request<kube::client::Body> {
        Request::get("/api/v1/pods")
            .body(kube::client::Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_401_reads_the_rewritten_file_and_sends_once_more() {
        let path = token_file("old\n");
        let file = Arc::new(TokenFile::open(&path).unwrap());
        let (server, seen) = server("new");
        let mut svc = TokenFileLayer(file).layer(server);

        rotate(&path, "new");
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(*seen.lock().unwrap(), ["Bearer old", "Bearer new"]);

        // The new token is kept: the next request is sent once.
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_401_with_the_token_the_file_still_holds_is_the_answer() {
        let path = token_file("revoked");
        let file = Arc::new(TokenFile::open(&path).unwrap());
        let (server, seen) = server("other");
        let mut svc = TokenFileLayer(file).layer(server);
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(*seen.lock().unwrap(), ["Bearer revoked"]);

        // A file gone after start: the last token is still sent, the 401 still the answer.
        std::fs::remove_file(&path).unwrap();
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_token_no_header_can_hold_is_an_error_that_does_not_show_it() {
        let path = token_file("good");
        let file = Arc::new(TokenFile::open(&path).unwrap());
        let (server, seen) = server("good");
        let mut svc = TokenFileLayer(file.clone()).layer(server);
        rotate(&path, "se\ncret");
        // Refused by the server only after the next read: force it with a 401-free path.
        assert!(file.reload_after(&bearer("good").unwrap()).is_none());
        let err = svc.ready().await.unwrap().call(get()).await.unwrap_err();
        let credentials = err.downcast_ref::<Credentials>().unwrap();
        assert!(
            credentials.0.contains("not a valid HTTP header value"),
            "{err}"
        );
        assert!(!err.to_string().contains("cret"), "{err}");
        assert!(seen.lock().unwrap().is_empty());

        let missing = std::env::temp_dir().join("flame_k8s_auth_missing/token");
        let err = TokenFile::open(&missing).unwrap_err();
        assert!(err.0.starts_with("cannot read the token file"), "{err}");
    }

    #[test]
    fn bearer_headers() {
        assert!(bearer("abc.def").unwrap().is_sensitive());
        for bad in ["", "a\nb", "a\rb", "a\0b", "a\x7fb"] {
            let why = bearer(bad).unwrap_err();
            assert!(!why.contains(bad) || bad.is_empty(), "{why}");
        }
    }
}
