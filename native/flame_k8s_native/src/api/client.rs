//! Connection options → `kube::Config` → `kube::Client`, without contacting the server.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, ServiceBuilder};

use crate::api::bound::BoundLayer;
use crate::error::{error_chain, Error, Result};
use crate::runtime::runtime;

/// How far the connect timeout of the request client trails the request timeout.
const CONNECTION_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// Creates (pods and secrets) in flight at once per client unless `connect` says otherwise.
/// A burst of boots then reaches the API server as a steady stream instead of hundreds of
/// POSTs at once. Each in-flight request is an HTTP/1.1 connection of its own (TCP + TLS
/// handshake, a socket) and a seat in the server's priority and fairness: by default 600
/// seats in all (--max-requests-inflight 400 + --max-mutating-requests-inflight 200) for the
/// whole cluster, of which a service account's requests share the workload-low level's
/// part. A create is short, so this many in flight keep up with far more creates than runners
/// can boot, while a burst stays within the server's seats instead of being refused with 429.
pub const DEFAULT_MAX_CONCURRENT_CREATES: u32 = 32;

/// How long past the API server's own deadline for a create (the request timeout, sent as its
/// `timeout` parameter) the create may still be committed: a write already handed to etcd when
/// the deadline passed completes within etcd's own request timeout (7 s by default), or a
/// leader election later. Generous, since a create that commits after its follow-up ended is
/// a leak.
pub const SETTLE_MARGIN: Duration = Duration::from_secs(15);

/// `:in_cluster`, `:kubeconfig` or `:explicit` (`Kube.connect/1` resolves `:auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum Mode {
    InCluster,
    Kubeconfig,
    Explicit,
}

/// What `connect/2` receives: the map `Kube.connect/1` builds, every key present (`nil` =
/// unset). Decoded only, never encoded: the token must not travel back into a term.
#[derive(Clone, Default)]
#[cfg_attr(not(test), derive(rustler::NifMap), rustler(decode))]
pub struct ConnectOptions {
    pub mode: Option<Mode>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub url: Option<String>,
    pub ca_cert_pem: Option<String>,
    pub token: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub request_timeout_ms: u64,
    /// Creates in flight at once (`DEFAULT_MAX_CONCURRENT_CREATES` in `Kube.connect/1`).
    pub max_concurrent_creates: u32,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("mode", &self.mode)
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("url", &self.url)
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_concurrent_creates", &self.max_concurrent_creates)
            .finish()
    }
}

/// A resolved configuration, before any client exists.
pub struct Resolved {
    /// The configuration of the request client; the watch client derives from it.
    pub config: kube::Config,
    /// Bounds each request as a whole (connect, TLS, send, response): `{:timeout, ms}`.
    pub request_timeout: Duration,
    pub default_namespace: Option<String>,
    /// A secret to scrub from error messages (the explicit bearer token).
    pub secret: Option<String>,
    pub max_concurrent_creates: u32,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("server", &server_string(&self.config.cluster_url))
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

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

/// Resolve options into a `kube::Config`. Reads files (kubeconfig, in-cluster token
/// directory) but never contacts the API server.
pub fn resolve(opts: &ConnectOptions) -> Result<Resolved> {
    if opts.request_timeout_ms == 0 {
        return Err(Error::Config(
            "request_timeout_ms must be a positive integer".into(),
        ));
    }
    let timeout = Duration::from_millis(opts.request_timeout_ms);
    let mut resolved = match opts.mode {
        Some(Mode::InCluster) => resolve_incluster()?,
        Some(Mode::Kubeconfig) => {
            resolve_kubeconfig(opts.kubeconfig.as_deref(), opts.context.as_deref())?
        }
        Some(Mode::Explicit) => resolve_explicit(opts)?,
        None => {
            return Err(Error::Config(
                "mode must be :in_cluster, :kubeconfig or :explicit".into(),
            ))
        }
    };
    if opts.insecure_skip_tls_verify {
        resolved.config.accept_invalid_certs = true;
    }
    // The overall request timeout (applied around each request) is what callers see; the
    // connect timeout is a backstop a little behind it, so a stuck connect is reported as
    // `{:timeout, ms}` rather than racing it as a connect error. No per-connection read or
    // write timeouts: the pending read of an idle pooled connection counts against a read
    // timeout, so a connection idle for about that long could be handed out just as it timed
    // out and the request failed at once with "connection error: timed out" (kube-rs sets no
    // default read timeout for the same reason). The overall timeout bounds a server
    // that accepts but never answers.
    if opts.max_concurrent_creates == 0 {
        return Err(Error::Config(
            "max_concurrent_creates must be a positive integer".into(),
        ));
    }
    check_token(&resolved.config)?;
    check_cleartext(&resolved.config)?;
    resolved.max_concurrent_creates = opts.max_concurrent_creates;
    resolved.request_timeout = timeout;
    resolved.config.connect_timeout = Some(timeout + CONNECTION_TIMEOUT_MARGIN);
    resolved.config.read_timeout = None;
    resolved.config.write_timeout = None;
    Ok(resolved)
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

/// A token given as such (`:token`, a kubeconfig's `token`) must fit in the Authorization
/// header: kube's auth layer panics on one that does not (a control character), so it is a
/// configuration error here, which says what is wrong but never what the token is.
fn check_token(config: &kube::Config) -> Result<()> {
    if config.auth_info.token.is_none() {
        return Ok(());
    }
    // kube's `SecretString` shows its value only to the `secrecy` crate's trait (not a
    // dependency here) or to kube's own serializer of `AuthInfo`: the latter it is. The copy
    // lives for this check only.
    let info = serde_json::to_value(&config.auth_info)
        .map_err(|_| Error::Config("token: cannot be read".into()))?;
    match info.get("token").and_then(serde_json::Value::as_str) {
        Some(token) => crate::api::auth::bearer(token)
            .map(drop)
            .map_err(|why| Error::Config(format!("token: {why}"))),
        None => Ok(()),
    }
}

/// Credentials never travel in cleartext over a network: a server reached over plain
/// `http://` gets none, in any mode (an explicit `:url` and `:token`, a kubeconfig's server and
/// user), unless it is a loopback address written as such (`127.0.0.1`, `[::1]`), where the
/// connection never leaves the host (a local proxy, a test's fake server). The message names
/// the URL and which credential, never its value. Plain http without credentials (a `kubectl
/// proxy`) is left alone: it sends nothing secret.
fn check_cleartext(config: &kube::Config) -> Result<()> {
    let url = &config.cluster_url;
    let plain = url
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"));
    let loopback = url
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    if !plain || loopback {
        return Ok(());
    }
    let auth = &config.auth_info;
    let credential = if auth.token.is_some() {
        Some("a bearer token")
    } else if auth.token_file.is_some() {
        Some("a bearer token (from a token file)")
    } else if auth.password.is_some() {
        Some("a password")
    } else if auth.exec.is_some() || auth.auth_provider.is_some() {
        Some("a token from an exec or auth-provider plugin")
    } else {
        None
    };
    match credential {
        None => Ok(()),
        Some(what) => Err(Error::Config(format!(
            "server {:?} is plain http: {what} would be sent in cleartext, which is never \
             done; use the server's https:// URL",
            server_string(url)
        ))),
    }
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

fn server_string(uri: &http::Uri) -> String {
    let s = uri.to_string();
    match s.strip_suffix('/') {
        Some(stripped) if uri.path() == "/" => stripped.to_string(),
        _ => s,
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn resolve_incluster() -> Result<Resolved> {
    for var in ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"] {
        if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
            return Err(Error::Config(format!(
                "in-cluster config: {var} is not set"
            )));
        }
    }
    let config = kube::Config::incluster()
        .map_err(|e| Error::Config(format!("in-cluster config: {}", error_chain(&e))))?;
    let ns = Some(config.default_namespace.clone()).filter(|n| !n.is_empty());
    Ok(Resolved {
        config,
        request_timeout: Duration::ZERO,
        max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
        default_namespace: ns,
        secret: None,
    })
}

/// Read a kubeconfig: the given path, else `KUBECONFIG` (several paths merged), else
/// `~/.kube/config`. Returns it with a description of where it came from.
fn read_kubeconfig(path: Option<&str>) -> Result<(Kubeconfig, String)> {
    let read_one = |p: &std::path::Path| {
        Kubeconfig::read_from(p).map_err(|e| {
            use kube::config::KubeconfigError as E;
            let detail = match &e {
                E::ReadConfig(io, _) => io.to_string(),
                _ => error_chain(&e),
            };
            Error::Config(format!("kubeconfig {}: {detail}", p.display()))
        })
    };
    if let Some(p) = non_empty(path) {
        let kc = read_one(std::path::Path::new(p))?;
        return Ok((kc, p.to_string()));
    }
    if let Some(value) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<_> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.is_empty() {
            let mut merged = Kubeconfig::default();
            for p in &paths {
                let next = read_one(p)?;
                merged = merged.merge(next).map_err(|e| {
                    Error::Config(format!("kubeconfig {}: {}", p.display(), error_chain(&e)))
                })?;
            }
            let desc = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            return Ok((merged, desc));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::Config(
                "kubeconfig: no path given, KUBECONFIG is not set and HOME is unknown".into(),
            )
        })?;
    let p = std::path::Path::new(&home).join(".kube").join("config");
    let kc = read_one(&p)?;
    Ok((kc, p.display().to_string()))
}

fn resolve_kubeconfig(path: Option<&str>, context: Option<&str>) -> Result<Resolved> {
    let (kc, desc) = read_kubeconfig(path)?;
    let context = non_empty(context);
    let context_name = match context {
        Some(name) => {
            if !kc.contexts.iter().any(|c| c.name == name) {
                return Err(Error::Config(format!(
                    "context {name:?} not found in kubeconfig {desc}"
                )));
            }
            Some(name.to_string())
        }
        None => kc.current_context.clone().filter(|c| !c.is_empty()),
    };
    let Some(context_name) = context_name else {
        return Err(Error::Config(format!(
            "kubeconfig {desc}: no current-context set and no context given"
        )));
    };
    let namespace = kc
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.namespace.clone())
        .filter(|n| !n.is_empty());
    let options = KubeConfigOptions {
        context: Some(context_name.clone()),
        cluster: None,
        user: None,
    };
    let rt = runtime()?;
    let config = rt
        .block_on(kube::Config::from_custom_kubeconfig(kc, &options))
        .map_err(|e| {
            Error::Config(format!(
                "kubeconfig {desc}, context {context_name:?}: {}",
                error_chain(&e)
            ))
        })?;
    Ok(Resolved {
        config,
        request_timeout: Duration::ZERO,
        max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
        default_namespace: namespace,
        secret: None,
    })
}

fn resolve_explicit(opts: &ConnectOptions) -> Result<Resolved> {
    let url = non_empty(opts.url.as_deref())
        .ok_or_else(|| Error::Config("explicit mode: url is required".into()))?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("url {url:?}: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("https" | "http"), Some(_)) => {}
        _ => {
            return Err(Error::Config(format!(
                "url {url:?}: expected https://host[:port]"
            )))
        }
    }
    let mut config = kube::Config::new(uri);
    if let Some(pem) = non_empty(opts.ca_cert_pem.as_deref()) {
        config.root_cert = Some(parse_pem_certificates(pem)?);
    }
    let token = non_empty(opts.token.as_deref()).map(str::to_string);
    if let Some(t) = &token {
        config.auth_info.token = Some(t.clone().into());
    }
    Ok(Resolved {
        config,
        request_timeout: Duration::ZERO,
        max_concurrent_creates: DEFAULT_MAX_CONCURRENT_CREATES,
        default_namespace: None,
        secret: token,
    })
}

/// DER certificates from a PEM bundle; at least one `CERTIFICATE` block is required.
pub fn parse_pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    let blocks =
        pem::parse_many(pem.as_bytes()).map_err(|e| Error::Config(format!("ca_cert_pem: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(Error::Config(
            "ca_cert_pem: no PEM CERTIFICATE block found".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kubeconfig_file(contents: &str) -> (std::path::PathBuf, String) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("flame_k8s_native_test_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        let s = path.display().to_string();
        (path, s)
    }

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
- name: other
  cluster:
    server: https://10.0.0.1:443
contexts:
- name: admin
  context: {cluster: local, user: admin, namespace: flame}
- name: plain
  context: {cluster: other, user: admin}
current-context: admin
users:
- name: admin
  user: {token: super-secret-token}
"#;

    fn opts(mode: Mode) -> ConnectOptions {
        ConnectOptions {
            mode: Some(mode),
            request_timeout_ms: 5000,
            max_concurrent_creates: 32,
            ..Default::default()
        }
    }

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
    fn kubeconfig_with_explicit_context_without_namespace() {
        let (_p, path) = kubeconfig_file(KUBECONFIG);
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path);
        o.context = Some("plain".into());
        let r = resolve(&o).unwrap();
        assert_eq!(r.default_namespace, None);
        assert_eq!(server_string(&r.config.cluster_url), "https://10.0.0.1:443");
        assert_eq!(r.request_timeout, Duration::from_millis(5000));
        assert_eq!(r.config.read_timeout, None);
        assert_eq!(r.config.write_timeout, None);
        assert_eq!(r.config.connect_timeout, Some(Duration::from_millis(6000)));
    }

    #[test]
    fn kubeconfig_errors() {
        let (_p, path) = kubeconfig_file(KUBECONFIG);
        let mut o = opts(Mode::Kubeconfig);
        o.kubeconfig = Some(path.clone());
        o.context = Some("foo".into());
        assert_eq!(
            resolve(&o).unwrap_err(),
            Error::Config(format!("context \"foo\" not found in kubeconfig {path}"))
        );
        o.kubeconfig = Some("/nonexistent/kubeconfig".into());
        match resolve(&o).unwrap_err() {
            Error::Config(m) => {
                assert!(
                    m.starts_with("kubeconfig /nonexistent/kubeconfig: No such file"),
                    "{m}"
                )
            }
            e => panic!("{e:?}"),
        }
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
    fn explicit_mode_errors() {
        let mut o = opts(Mode::Explicit);
        assert_eq!(
            resolve(&o).unwrap_err(),
            Error::Config("explicit mode: url is required".into())
        );
        o.url = Some("not a url".into());
        assert!(
            matches!(resolve(&o).unwrap_err(), Error::Config(m) if m.starts_with("url \"not a url\""))
        );
        o.url = Some("https://127.0.0.1:6443".into());
        o.ca_cert_pem = Some("garbage".into());
        assert!(
            matches!(resolve(&o).unwrap_err(), Error::Config(m) if m.starts_with("ca_cert_pem:"))
        );
        o.ca_cert_pem = None;
        o.request_timeout_ms = 0;
        assert!(matches!(resolve(&o).unwrap_err(), Error::Config(_)));
    }

    /// A bearer token (or any credential) over plain http would travel in cleartext: refused
    /// at resolve, naming the URL and never the token, in explicit mode and from a kubeconfig,
    /// unless the server is a loopback address. Without credentials plain http stays possible
    /// (`kubectl proxy`).
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
    fn in_cluster_needs_the_service_env() {
        // The test environment is not a pod.
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert_eq!(
                resolve(&opts(Mode::InCluster)).unwrap_err(),
                Error::Config("in-cluster config: KUBERNETES_SERVICE_HOST is not set".into())
            );
        }
    }

    #[test]
    fn pem_parsing() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        assert_eq!(parse_pem_certificates(pem).unwrap(), vec![vec![0u8, 1, 2]]);
        let key = "-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----\n";
        assert!(parse_pem_certificates(key).is_err());
    }
}
