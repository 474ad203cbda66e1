//! Connection options resolved into a `kube::Config`, reading files but never the network.

use std::fmt;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

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

/// `:in_cluster`, `:kubeconfig` or `:explicit` (`Kube.connect/1` resolves `:auto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum Mode {
    InCluster,
    Kubeconfig,
    Explicit,
}

/// What `connect/2` receives: the map `Kube.connect/1` builds (`nil` = unset). Decoded only, never encoded: the token must not travel back into a term.
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
    /// Creates in flight at once (`DEFAULT_MAX_CONCURRENT_CREATES` when the map leaves it out).
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

pub(crate) fn server_string(uri: &http::Uri) -> String {
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
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn kubeconfig_file(contents: &str) -> (std::path::PathBuf, String) {
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

    pub(crate) const KUBECONFIG: &str = r#"
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

    pub(crate) fn opts(mode: Mode) -> ConnectOptions {
        ConnectOptions {
            mode: Some(mode),
            request_timeout_ms: 5000,
            max_concurrent_creates: 32,
            ..Default::default()
        }
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
