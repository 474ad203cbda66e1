//! Connection options → `kube::Config` → `kube::Client`, without contacting the server.

use std::fmt;
use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::ConfigExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use crate::error::{error_chain, Error, Result};
use crate::runtime::runtime;

/// Server-side timeout of one watch call; the watcher notices a silently dead connection
/// within this plus a few seconds, then resumes from the last resourceVersion.
pub const WATCH_TIMEOUT_SECS: u32 = 30;

/// How far the connect timeout of the request client trails the request timeout.
const CONNECTION_TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

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
/// timeout only, and separate connection pools.
pub struct ClientHandle {
    client: kube::Client,
    watch_client: kube::Client,
    request_timeout: Duration,
    default_namespace: Option<String>,
    server: String,
    secret: Option<String>,
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
}

impl ClientHandle {
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn watch_client(&self) -> &kube::Client {
        &self.watch_client
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn info(&self) -> ClientInfo {
        ClientInfo {
            server: self.server.clone(),
            default_namespace: self.default_namespace.clone(),
            request_timeout_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Scrub secrets from an error before it leaves the crate.
    pub fn scrub(&self, err: Error) -> Error {
        err.redacted(self.secret.as_deref())
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
    // out and the request failed at once with "connection error: timed out" (kube-rs dropped
    // its default read timeout for the same reason). The overall timeout bounds a server
    // that accepts but never answers.
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
    } = resolved;
    let server = server_string(&config.cluster_url);
    // Watches idle for long stretches (the watcher's own server-side timeout and
    // dead-connection detection cover them), but a reconnect to an unreachable server fails
    // within the request timeout and is retried.
    let mut watch_config = config.clone();
    watch_config.connect_timeout = Some(request_timeout);

    let rt = runtime()?;
    let _guard = rt.enter();
    let to_config_error = |e: kube::Error| match Error::from(e) {
        Error::Config(m) | Error::Internal(m) | Error::Connect(m) | Error::Decode(m) => {
            Error::Config(format!("cannot build the client: {m}"))
        }
        other => other,
    };
    let client = make_client(&config).map_err(to_config_error)?;
    let watch_client = make_client(&watch_config).map_err(to_config_error)?;
    Ok(ClientHandle {
        client,
        watch_client,
        request_timeout,
        default_namespace,
        server,
        secret,
    })
}

/// What `kube::Client::try_from(config)` builds (rustls connector, connect timeout, base URI,
/// server retries of 429/503/504, auth with token refresh, extra/impersonation headers),
/// except: TCP_NODELAY on every connection (without it a small request written in two
/// segments on a reused connection waits tens of ms for the server's delayed ACK: Nagle
/// holds the second segment back), and only the connect timeout of `config` is applied, never
/// `read_timeout`/`write_timeout`. Left out: the tracing layer (nothing subscribes) and gzip
/// (the feature is off). A proxy URL goes to kube's own builder, which refuses it (the
/// proxy features are off) with its usual error.
fn make_client(config: &kube::Config) -> std::result::Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config.clone());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    // Bounds TCP connect and TLS handshake together, as kube's builder does.
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
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
                request_timeout_ms: 5000
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
