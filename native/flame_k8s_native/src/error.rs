//! One error type for the whole crate and its mapping from kube-rs errors.
//!
//! Every variant maps to one stable Elixir term (`nif::reply::Reason` encodes it):
//!
//! | variant            | Elixir term                                   |
//! |--------------------|-----------------------------------------------|
//! | `Api`              | `{:api, status, reason, message}`             |
//! | `Connect`          | `{:connect, message}`                         |
//! | `Timeout`          | `{:timeout, ms}`                              |
//! | `InvalidManifest`  | `{:invalid_manifest, message}`                |
//! | `Config`           | `{:config, message}`                          |
//! | `Decode`           | `{:decode, message}`                          |
//! | `Internal`         | `{:internal, message}`                        |
//! | `OutcomeUnknown`   | `{:outcome_unknown, %{reason: reason, settle_ms: ms}}` |

use std::fmt;

use tokio::time::Instant;

/// Errors surfaced to Elixir as `{:error, reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The API server answered with a non-2xx status. `message` is the server's, verbatim.
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// The API server could not be reached (DNS, TCP, TLS, connection reset, read timeout).
    Connect(String),
    /// The request timeout (milliseconds) elapsed.
    Timeout(u64),
    /// The manifest (or request body) is not structurally valid.
    InvalidManifest(String),
    /// Connection options, kubeconfig or in-cluster environment are unusable.
    Config(String),
    /// A response body had an unexpected shape.
    Decode(String),
    /// A bug: a caught panic or an impossible state.
    Internal(String),
    /// A create that went out and may still take effect on the server: its answer was lost
    /// (the request timeout, a connection lost after the request was sent) or says nothing
    /// either way (500, 502, 503, 504). `cause` is what the client saw. From `settled_at` on,
    /// the API server can no longer commit it (its own deadline for the request has passed):
    /// only then does a read or delete that finds nothing prove it will not appear.
    OutcomeUnknown {
        cause: Box<Error>,
        settled_at: Instant,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Credentials that cannot be sent (a token file that cannot be read, a token no HTTP header
/// can hold), raised inside a client's service stack: `Error::Config` once it comes out of
/// kube. The message never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials(pub String);

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Credentials {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api {
                code,
                reason,
                message,
            } => write!(f, "API error {code} {reason}: {message}"),
            Error::Connect(m) => write!(f, "connection error: {m}"),
            Error::Timeout(ms) => write!(f, "request timed out after {ms} ms"),
            Error::InvalidManifest(m) => write!(f, "invalid manifest: {m}"),
            Error::Config(m) => write!(f, "configuration error: {m}"),
            Error::Decode(m) => write!(f, "unexpected response: {m}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
            Error::OutcomeUnknown { cause, .. } => {
                write!(
                    f,
                    "outcome unknown (the request may still take effect): {cause}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Replace every occurrence of `secret` (and anything following `Bearer `) in the message.
    pub fn redacted(self, secret: Option<&str>) -> Error {
        let f = |m: String| redact(&m, secret);
        match self {
            Error::Api {
                code,
                reason,
                message,
            } => Error::Api {
                code,
                reason: f(reason),
                message: f(message),
            },
            Error::Connect(m) => Error::Connect(f(m)),
            Error::Timeout(ms) => Error::Timeout(ms),
            Error::InvalidManifest(m) => Error::InvalidManifest(f(m)),
            Error::Config(m) => Error::Config(f(m)),
            Error::Decode(m) => Error::Decode(f(m)),
            Error::Internal(m) => Error::Internal(f(m)),
            Error::OutcomeUnknown { cause, settled_at } => Error::OutcomeUnknown {
                cause: Box::new(cause.redacted(secret)),
                settled_at,
            },
        }
    }

    /// The message without the kind prefix of `Display` (for details inside other results).
    pub fn message(&self) -> String {
        match self {
            Error::Api {
                code,
                reason,
                message,
            } => format!("{code} {reason}: {message}"),
            Error::Timeout(ms) => format!("request timed out after {ms} ms"),
            Error::Connect(m)
            | Error::InvalidManifest(m)
            | Error::Config(m)
            | Error::Decode(m)
            | Error::Internal(m) => m.clone(),
            Error::OutcomeUnknown { cause, .. } => {
                format!(
                    "outcome unknown (the request may still take effect): {}",
                    cause.message()
                )
            }
        }
    }

    /// Milliseconds from now until `settled_at` of an `OutcomeUnknown` (0 once it has passed).
    pub fn settle_ms(settled_at: Instant) -> u64 {
        let left = settled_at.saturating_duration_since(Instant::now());
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    }

    /// The message of a caught panic payload.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        Error::Internal(format!("panic: {}", redact(&msg, None)))
    }
}

/// A secret this long is replaced wherever it occurs. A shorter one (a test cluster's static
/// token, say "t") is replaced only where it stands alone, not inside a word: replacing every
/// "t" would garble every message, and a short string inside a word is no sign of a leak.
pub const MIN_REDACTED_LEN: usize = 8;

/// Remove a known secret and any `Bearer <token>` from a message.
pub fn redact(message: &str, secret: Option<&str>) -> String {
    let mut out = match secret {
        Some(s) if s.len() >= MIN_REDACTED_LEN => message.replace(s, "[REDACTED]"),
        Some(s) if !s.is_empty() => replace_standalone(message, s),
        _ => message.to_string(),
    };
    let mut search_from = 0;
    while let Some(rel) = out
        .get(search_from..)
        .and_then(|rest| find_ascii_case_insensitive(rest, "bearer "))
    {
        let start = search_from + rel + "bearer ".len();
        let rest = out.get(start..).unwrap_or("");
        let end = start
            + rest
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
                .unwrap_or(rest.len());
        if end > start && out.get(start..end) != Some("[REDACTED]") {
            out.replace_range(start..end, "[REDACTED]");
            search_from = start + "[REDACTED]".len();
        } else {
            search_from = start;
        }
    }
    out
}

/// `message` with each occurrence of `secret` that is not glued to a letter or digit on either
/// side replaced.
fn replace_standalone(message: &str, secret: &str) -> String {
    let glued = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(secret) {
        let (before, from) = rest.split_at(at);
        let after = from.get(secret.len()..).unwrap_or("");
        // The character before is the last of `before`, or the last one copied out already.
        let prev = before
            .chars()
            .next_back()
            .or_else(|| out.chars().next_back());
        out.push_str(before);
        if glued(prev) || glued(after.chars().next()) {
            // Not this one: step over its first character only (occurrences may overlap).
            let step = from.chars().next().map_or(1, char::len_utf8);
            out.push_str(from.get(..step).unwrap_or(""));
            rest = from.get(step..).unwrap_or("");
        } else {
            out.push_str("[REDACTED]");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    let h = haystack.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| {
        h.get(i..i + n.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(n))
    })
}

/// Display an error followed by its sources, skipping sources whose text the outer message
/// already contains (kube and hyper often repeat their source in their own Display).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        use kube::Error as K;
        match err {
            K::Api(status) => {
                let code = status.code;
                let reason = if status.reason.is_empty() {
                    default_reason(code).to_string()
                } else {
                    status.reason.clone()
                };
                Error::Api {
                    code,
                    reason,
                    message: status.message.clone(),
                }
            }
            // Leave out kube's "ServiceError:"/"HyperError:" prefixes; the chain says it all.
            K::HyperError(e) => Error::Connect(error_chain(&e)),
            K::Service(e) => match e.downcast_ref::<Credentials>() {
                Some(c) => Error::Config(c.0.clone()),
                None => Error::Connect(error_chain(e.as_ref())),
            },
            K::ReadEvents(e) => Error::Connect(format!("reading the response: {e}")),
            K::SerdeError(_) | K::FromUtf8(_) | K::LinesCodecMaxLineLengthExceeded => {
                Error::Decode(error_chain(&err))
            }
            K::Auth(_)
            | K::RustlsTls(_)
            | K::TlsRequired
            | K::InferConfig(_)
            | K::InferKubeconfig(_)
            | K::ProxyProtocolUnsupported { .. }
            | K::ProxyProtocolDisabled { .. } => Error::Config(error_chain(&err)),
            K::HttpError(_) | K::BuildRequest(_) | K::Discovery(_) => {
                Error::Internal(error_chain(&err))
            }
            #[allow(unreachable_patterns)]
            _ => Error::Internal(error_chain(&err)),
        }
    }
}

impl From<kube::runtime::watcher::Error> for Error {
    fn from(err: kube::runtime::watcher::Error) -> Self {
        use kube::runtime::watcher::Error as W;
        match err {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => e.into(),
            W::WatchError(status) => kube::Error::Api(status).into(),
            W::NoResourceVersion => Error::Decode(W::NoResourceVersion.to_string()),
        }
    }
}

/// Is this error worth retrying (a watch that failed this way may succeed later)?
/// Authorization, authentication, missing resources and malformed requests are not.
pub fn is_retriable(err: &Error) -> bool {
    match err {
        Error::Api { code, .. } => !matches!(code, 400 | 401 | 403 | 404 | 405 | 406 | 415 | 422),
        Error::Connect(_) | Error::Timeout(_) | Error::Decode(_) => true,
        Error::InvalidManifest(_) | Error::Config(_) | Error::Internal(_) => false,
        Error::OutcomeUnknown { cause, .. } => is_retriable(cause),
    }
}

pub fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut s = Status::failure(message, reason);
        s.code = code;
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn api_403_keeps_server_message_verbatim() {
        let msg = "pods is forbidden: User \"system:serviceaccount:t:runner\" cannot create resource \"pods\" in API group \"\" in the namespace \"t\"";
        let e: Error = api(403, "Forbidden", msg).into();
        assert_eq!(
            e,
            Error::Api {
                code: 403,
                reason: "Forbidden".into(),
                message: msg.into()
            }
        );
    }

    #[test]
    fn api_404() {
        let e: Error = api(404, "NotFound", "pods \"x\" not found").into();
        assert!(matches!(e, Error::Api { code: 404, ref reason, .. } if reason == "NotFound"));
    }

    #[test]
    fn api_without_reason_gets_a_default_one() {
        let e: Error = api(404, "", "404 page not found").into();
        assert!(
            matches!(e, Error::Api { code: 404, ref reason, ref message }
            if reason == "NotFound" && message == "404 page not found")
        );
    }

    #[test]
    fn transport_errors_become_connect_with_their_text() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e: Error = kube::Error::Service(Box::new(io)).into();
        match e {
            Error::Connect(m) => assert_eq!(m, "Connection refused"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn read_events_is_connect() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof");
        let e: Error = kube::Error::ReadEvents(io).into();
        assert_eq!(e, Error::Connect("reading the response: early eof".into()));
        assert_eq!(e.message(), "reading the response: early eof");
    }

    #[test]
    fn serde_errors_are_decode() {
        let Err(se) = serde_json::from_str::<serde_json::Value>("{") else {
            panic!("expected a parse error")
        };
        let e: Error = kube::Error::SerdeError(se).into();
        assert!(matches!(e, Error::Decode(_)));
    }

    #[test]
    fn watcher_errors_unwrap_to_api_errors() {
        let e: Error = kube::runtime::watcher::Error::InitialListFailed(api(
            403,
            "Forbidden",
            "pods is forbidden: cannot watch",
        ))
        .into();
        assert!(matches!(e, Error::Api { code: 403, .. }));
        assert!(!is_retriable(&e));
        let gone: Error = api(410, "Expired", "too old resource version").into();
        assert!(is_retriable(&gone));
        assert!(is_retriable(&Error::Connect("refused".into())));
        assert!(!is_retriable(&Error::Api {
            code: 401,
            reason: "Unauthorized".into(),
            message: "Unauthorized".into()
        }));
    }

    #[test]
    fn timeout_display() {
        assert_eq!(
            Error::Timeout(1500).to_string(),
            "request timed out after 1500 ms"
        );
    }

    #[test]
    fn redaction_removes_secret_and_bearer_tokens() {
        let m = redact(
            "failed with Authorization: Bearer abc.def-ghi, and token abc.def-ghi again",
            Some("abc.def-ghi"),
        );
        assert!(!m.contains("abc.def-ghi"), "{m}");
        let m = redact("header bearer s3cr3t\nnext", None);
        assert_eq!(m, "header bearer [REDACTED]\nnext");
        let m = redact("Bearer ", None);
        assert_eq!(m, "Bearer ");
        let e = Error::Connect("x tok123 y".into()).redacted(Some("tok123"));
        assert_eq!(e, Error::Connect("x [REDACTED] y".into()));
    }

    #[test]
    fn short_secrets_are_redacted_where_they_stand_alone_only() {
        let m = "client error (Connect): tcp connect error: Connection refused (os error 111)";
        for token in ["t", "e", "on", "err", "tcp ", "o", "Conn", "1"] {
            assert_eq!(redact(m, Some(token)), m, "{token:?}");
        }
        assert_eq!(
            redact("token t was refused: t", Some("t")),
            "token [REDACTED] was refused: [REDACTED]"
        );
        assert_eq!(redact("\"ab\",ab", Some("ab")), "\"[REDACTED]\",[REDACTED]");
        assert_eq!(redact("aab ab", Some("ab")), "aab [REDACTED]");
        assert_eq!(redact("é-t-é", Some("t")), "é-[REDACTED]-é");
        assert_eq!(redact("éte t", Some("t")), "éte [REDACTED]");
        // Overlapping occurrences: "aa" in "aaa" is glued either way.
        assert_eq!(redact("aaa aa", Some("aa")), "aaa [REDACTED]");
        // From MIN_REDACTED_LEN on, everywhere.
        let long = "k".repeat(MIN_REDACTED_LEN);
        assert_eq!(redact(&format!("x{long}y"), Some(&long)), "x[REDACTED]y");
    }

    #[test]
    fn credentials_errors_from_the_service_stack_are_config_errors() {
        let e: Error =
            kube::Error::Service(Box::new(Credentials("the token in /t: is empty".into()))).into();
        assert_eq!(e, Error::Config("the token in /t: is empty".into()));
    }

    #[test]
    fn error_chain_skips_repeated_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "outer")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }

    #[test]
    fn panic_payloads() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(
            Error::from_panic(p.as_ref()),
            Error::Internal("panic: boom".into())
        );
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(
            Error::from_panic(p.as_ref()),
            Error::Internal("panic: bang".into())
        );
    }
}
