//! The connection: a `kube::Client` for requests and one for watches, built without a request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, ServiceBuilder};

use super::config::{resolve, server_string, ConnectOptions, Resolved};
use crate::api::bound::BoundLayer;
use crate::error::{Error, Result};
use crate::runtime::runtime;

/// How long past the API server's own deadline for a create (the request timeout, sent as its
/// `timeout` parameter) the create may still be committed: a write already handed to etcd when
/// the deadline passed completes within etcd's own request timeout (7 s by default), or a
/// leader election later. Generous, since a create that commits after its follow-up ended is
/// a leak.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(15);

/// The connection: one client for bounded requests (each bounded as a whole by the request
/// timeout) and one for watches (bounded by their own server timeout). Both have a connect
/// timeout only, and separate connection pools. Creates are limited to
/// `max_concurrent_creates` in flight.
pub struct ClientHandle {
    client: kube::Client,
    request_timeout: Duration,
    default_namespace: Option<String>,
    server: String,
    secret: Option<String>,
    creates: Arc<Semaphore>,
    max_concurrent_creates: u32,
    watch_client: kube::Client,
}

impl fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandle")
            .field("server", &self.server)
            .field("default_namespace", &self.default_namespace)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// What `client_info/1` returns (a map with these keys).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifMap), rustler(encode))]
pub struct ClientInfo {
    pub server: String,
    pub default_namespace: Option<String>,
    pub request_timeout_ms: u64,
    pub max_concurrent_creates: u32,
    /// `ClientHandle::create_settle` in milliseconds.
    pub create_settle_ms: u64,
}

impl ClientHandle {
    /// A handle over given clients (the connection's, or a test's over a fake server).
    pub fn new(
        client: kube::Client,
        watch_client: kube::Client,
        request_timeout: Duration,
        max_concurrent_creates: u32,
    ) -> Self {
        ClientHandle {
            client,
            request_timeout,
            default_namespace: None,
            server: String::new(),
            secret: None,
            creates: Arc::new(Semaphore::new(max_concurrent_creates as usize)),
            max_concurrent_creates,
            watch_client,
        }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long after it was sent a create on this connection may still take effect on the
    /// server (see `SETTLE_MARGIN`).
    pub fn create_settle(&self) -> Duration {
        self.request_timeout + SETTLE_MARGIN
    }

    /// The client for watches: no overall request timeout, each response bounded by
    /// `bound::Bound` instead.
    pub fn watch_client(&self) -> &kube::Client {
        &self.watch_client
    }

    /// A slot for one create; waits while `max_concurrent_creates` are in flight (the caller's
    /// request timeout bounds the wait like the rest of the request).
    pub async fn create_permit(&self) -> Result<OwnedSemaphorePermit> {
        self.creates
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("create slots: {e}")))
    }

    pub fn info(&self) -> ClientInfo {
        ClientInfo {
            server: self.server.clone(),
            default_namespace: self.default_namespace.clone(),
            request_timeout_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
            max_concurrent_creates: self.max_concurrent_creates,
            create_settle_ms: u64::try_from(self.create_settle().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Scrub secrets from an error before it leaves the crate.
    pub fn scrub(&self, err: Error) -> Error {
        err.redacted(self.secret.as_deref())
    }

    /// Scrub secrets from a message before it leaves the crate.
    pub fn redact(&self, message: &str) -> String {
        crate::error::redact(message, self.secret.as_deref())
    }
}

/// Resolve the options and build the clients, on Tokio's blocking pool: reading a kubeconfig or
/// the in-cluster files is blocking file I/O, which must hold neither a runtime worker nor (the
/// NIF being asynchronous) a BEAM scheduler. Nothing is sent to the server. The blocking part
/// cannot be interrupted; if the caller gives up, it finishes and its result is dropped.
pub async fn connect(opts: ConnectOptions) -> Result<ClientHandle> {
    match tokio::task::spawn_blocking(move || connect_blocking(&opts)).await {
        Ok(r) => r,
        Err(e) => Err(match e.try_into_panic() {
            Ok(payload) => Error::from_panic(payload.as_ref()),
            Err(e) => Error::Internal(format!("connect: {e}")),
        }),
    }
}

/// `connect` on the calling thread, which must not be a runtime worker (the kubeconfig is
/// resolved with `block_on`).
pub fn connect_blocking(opts: &ConnectOptions) -> Result<ClientHandle> {
    let resolved = resolve(opts)?;
    let secret = resolved.secret.clone();
    build(resolved).map_err(|e| e.redacted(secret.as_deref()))
}

fn build(resolved: Resolved) -> Result<ClientHandle> {
    let Resolved {
        config,
        request_timeout,
        default_namespace,
        secret,
        max_concurrent_creates,
    } = resolved;
    let server = server_string(&config.cluster_url);
    // Watches idle for long stretches (the watcher's own server-side timeout and
    // dead-connection detection cover them), but a reconnect to an unreachable server fails
    // within the request timeout and is retried.
    let mut watch_config = config.clone();
    watch_config.connect_timeout = Some(request_timeout);

    let rt = runtime()?;
    let _guard = rt.enter();
    let to_config_error = |e: Error| match e {
        Error::Config(m) | Error::Internal(m) | Error::Connect(m) | Error::Decode(m) => {
            Error::Config(format!("cannot build the client: {m}"))
        }
        other => other,
    };
    let client = make_client(&config, None).map_err(to_config_error)?;
    let watch_client =
        make_client(&watch_config, Some(request_timeout)).map_err(to_config_error)?;
    let mut handle = ClientHandle::new(
        client,
        watch_client,
        request_timeout,
        max_concurrent_creates,
    );
    handle.default_namespace = default_namespace;
    handle.server = server;
    handle.secret = secret;
    Ok(handle)
}

/// The token file kube would read for `config` (a kubeconfig's `tokenFile`, the in-cluster
/// token), opened here instead: `auth::TokenFileLayer` re-reads it on a 401. Credentials that
/// take precedence over a token file in kube (an auth provider, basic auth, a token) leave it
/// to kube.
fn token_file(config: &kube::Config) -> Result<Option<crate::api::auth::TokenFileLayer>> {
    let auth = &config.auth_info;
    let basic = auth.username.is_some() && auth.password.is_some();
    match &auth.token_file {
        Some(path) if auth.auth_provider.is_none() && !basic && auth.token.is_none() => {
            let file = crate::api::auth::TokenFile::open(std::path::Path::new(path))
                .map_err(|e| Error::Config(e.0))?;
            Ok(Some(crate::api::auth::TokenFileLayer(Arc::new(file))))
        }
        _ => Ok(None),
    }
}

/// What `kube::Client::try_from(config)` builds (rustls connector, connect timeout, base URI,
/// auth with token refresh, extra/impersonation headers), except: TCP_NODELAY on every
/// connection (without it a small request written in two segments on a reused connection
/// waits for the server's delayed ACK: Nagle holds the second segment back), and
/// only the connect timeout of `config` is applied, never `read_timeout`/`write_timeout`.
/// Left out: the tracing layer (nothing subscribes), gzip (the feature is off), and kube's
/// retry layer: its retries of 429/503/504 (15 of them, up to minutes apart) know nothing of
/// the request timeout, which then cut them off as `{:timeout, ms}`, hiding the server's
/// answer. Requests retry in `raw::send` instead, within their deadline; watches back off in
/// the watcher. A token file is read by `auth::TokenFileLayer` instead of kube's auth layer
/// (which re-reads it at most once a minute, and not on a 401). A proxy URL goes to kube's own
/// builder, which refuses it (the proxy features are off) with its usual error.
///
/// `bound`: each request must be answered within it (`bound::Bound`); the watch client's, whose
/// requests the watcher makes itself. The request client's are bounded as a whole by their
/// callers (`runtime::with_timeout`).
fn make_client(config: &kube::Config, bound: Option<Duration>) -> Result<kube::Client> {
    if config.proxy_url.is_some() {
        return Ok(kube::Client::try_from(config.clone())?);
    }
    let file_auth = token_file(config)?;
    let kube_auth = match file_auth {
        Some(_) => None,
        None => config.auth_layer()?,
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    // Bounds TCP connect and TLS handshake together, as kube's builder does.
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let stack = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(kube_auth)
        .option_layer(file_auth)
        .layer(config.extra_headers_layer()?);
    let namespace = config.default_namespace.clone();
    Ok(match bound {
        Some(limit) => kube::Client::new(
            stack
                .map_err(BoxError::from)
                .layer(BoundLayer(limit))
                .service(http_client),
            namespace,
        ),
        None => kube::Client::new(
            stack.map_err(BoxError::from).service(http_client),
            namespace,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::tests::{kubeconfig_file, opts, KUBECONFIG};
    use crate::api::config::{resolve, Mode};

    #[test]
    fn kubeconfig_with_current_context() {
        let (_p, path) = kubeconfig_file(KUBECONFIG);
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path);
        let h = connect_blocking(&o).unwrap();
        assert_eq!(
            h.info(),
            ClientInfo {
                server: "https://127.0.0.1:6443".into(),
                default_namespace: Some("flame".into()),
                request_timeout_ms: 5000,
                max_concurrent_creates: 32,
                create_settle_ms: 20_000,
            }
        );
        let dbg = format!("{h:?}");
        assert!(!dbg.contains("super-secret-token"), "{dbg}");
    }

    // The NIF's path: from a runtime task, the kubeconfig's `block_on` runs on the blocking
    // pool (on a worker it would panic: a runtime cannot block on itself).

    #[test]
    fn connect_from_a_task() {
        let (_p, path) = kubeconfig_file(KUBECONFIG);
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path);
        let rt = runtime().unwrap();
        let h = rt
            .block_on(async { rt.spawn(connect(o)).await })
            .unwrap()
            .unwrap();
        assert_eq!(h.info().default_namespace.as_deref(), Some("flame"));
        let mut bad = opts(Mode::Kubeconfig);
        bad.kubeconfig = Some("/nonexistent/kubeconfig".into());
        assert!(matches!(
            rt.block_on(connect(bad)),
            Err(Error::Config(m)) if m.contains("/nonexistent/kubeconfig")
        ));
    }

    #[test]
    fn explicit_mode() {
        let mut o = opts(Mode::Explicit);
        o.url = Some("https://127.0.0.1:6443".into());
        o.token = Some("tok-123".into());
        o.insecure_skip_tls_verify = true;
        let h = connect_blocking(&o).unwrap();
        let info = h.info();
        assert_eq!(info.server, "https://127.0.0.1:6443");
        assert_eq!(info.default_namespace, None);
        assert!(!format!("{h:?}").contains("tok-123"));
        assert!(!format!("{o:?}").contains("tok-123"));
        assert_eq!(
            h.scrub(Error::Connect("sent tok-123".into())),
            Error::Connect("sent [REDACTED]".into())
        );
    }

    #[test]
    fn a_token_no_header_can_hold_is_a_config_error_without_the_token() {
        for token in ["se\ncret", "se\rcret", "se\0cret", "se\x7fcret"] {
            let mut o = opts(Mode::Explicit);
            o.url = Some("https://127.0.0.1:6443".into());
            o.token = Some(token.into());
            match connect_blocking(&o).unwrap_err() {
                Error::Config(m) => {
                    assert!(
                        m.starts_with("token: is not a valid HTTP header value"),
                        "{m}"
                    );
                    assert!(!m.contains("cret"), "{m}");
                }
                e => panic!("{e:?}"),
            }
        }
        let (_p, path) = kubeconfig_file(&KUBECONFIG.replace(
            "user: {token: super-secret-token}",
            "user: {token: \"super\\nsecret\"}",
        ));
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path);
        assert!(matches!(
            connect_blocking(&o).unwrap_err(),
            Error::Config(m) if m.starts_with("token: ") && !m.contains("secret")
        ));
    }

    #[test]
    fn a_token_file_is_read_at_connect() {
        let (token, token_path) = kubeconfig_file("file-token\n");
        let (_p, path) = kubeconfig_file(&KUBECONFIG.replace(
            "{token: super-secret-token}",
            &format!("{{tokenFile: {token_path}}}"),
        ));
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path);
        assert!(token_file(&resolve(&o).unwrap().config).unwrap().is_some());
        assert!(connect_blocking(&o).is_ok());
        std::fs::remove_file(token).unwrap();
        match connect_blocking(&o).unwrap_err() {
            Error::Config(m) => assert!(m.contains("cannot read the token file"), "{m}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn credentials_are_never_sent_over_plain_http() {
        let mut o = opts(Mode::Explicit);
        o.url = Some("http://10.0.0.1:8080".into());
        o.token = Some("tok-123456789".into());
        match resolve(&o) {
            Err(Error::Config(m)) => {
                assert!(m.contains("\"http://10.0.0.1:8080\""), "{m}");
                assert!(m.contains("https://"), "{m}");
                assert!(!m.contains("tok-123456789"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(connect_blocking(&o).is_err());
        o.url = Some("HTTP://10.0.0.1:8080".into());
        assert!(matches!(resolve(&o), Err(Error::Config(_))));
        // A name is not an address: it may resolve anywhere.
        o.url = Some("http://localhost:8080".into());
        assert!(matches!(resolve(&o), Err(Error::Config(_))));
        // Loopback: the token never leaves the host.
        for url in [
            "http://127.0.0.1:8001",
            "http://127.9.9.9:8001",
            "http://[::1]:8001",
        ] {
            o.url = Some(url.into());
            assert!(resolve(&o).is_ok(), "{url}");
        }
        o.token = None;
        o.url = Some("http://10.0.0.1:8001".into());
        assert!(resolve(&o).is_ok());

        for user in [
            "{token: super-secret-token}",
            "{tokenFile: /var/run/secrets/token}",
            "{username: u, password: super-secret-pw}",
        ] {
            let (_p, path) = kubeconfig_file(
                &KUBECONFIG
                    .replace("https://127.0.0.1:6443", "http://10.1.1.1:8080")
                    .replace("{token: super-secret-token}", user),
            );
            let mut o = opts(Mode::Kubeconfig);
            o.kubeconfig = Some(path);
            match resolve(&o) {
                Err(Error::Config(m)) => {
                    assert!(m.contains("\"http://10.1.1.1:8080\""), "{m}");
                    assert!(!m.contains("super-secret"), "{m}");
                }
                Ok(_) => panic!("{user}: resolved"),
                Err(e) => panic!("{user}: {e:?}"),
            }
        }
    }

    // kube's auth layer panics on a token no header can hold: refused before it is built.
}
