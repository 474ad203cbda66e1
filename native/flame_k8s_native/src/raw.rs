//! HTTP against the API server with JSON in and out: the generic `request/7` NIF and the
//! transport under the pod and secret operations.

use serde_json::Value;

use crate::client::ClientHandle;
use crate::error::{default_reason, Error, Result};

/// A successful response: its content type and body bytes.
pub struct Response {
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Send a request; a non-2xx status becomes `Error::Api` with the server's message verbatim.
pub async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<Response> {
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let status = res.status();
    let content_type = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = res.into_body().collect_bytes().await?.to_vec();
    if status.is_client_error() || status.is_server_error() {
        return Err(api_error(status.as_u16(), &body));
    }
    Ok(Response { content_type, body })
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
pub async fn send_json(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<Value> {
    let res = send(client, req).await?;
    json_body(&res.body)
}

/// Lossy UTF-8 text of a body, for messages.
fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// The methods of `Kube.request/4` (it sends `:get`, `:post`... after checking the name).
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

/// Build the `http::Request` for `request/7`. The path arrives checked by
/// `FLAMEK8sBackend.Kube` (absolute, no fragment, only characters a URI may hold); a path the
/// URI parser still refuses fails here as an error, never a panic.
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
) -> Result<Value> {
    let req = build_request(method, path, body, content_type)?;
    let res = send(handle.client(), req).await?;
    decode_response(res)
}

fn decode_response(res: Response) -> Result<Value> {
    let is_json = res
        .content_type
        .as_deref()
        .is_none_or(|ct| ct.contains("json"));
    match json_body(&res.body) {
        Ok(v) => Ok(v),
        Err(e) if is_json => Err(e),
        Err(_) => match String::from_utf8(res.body) {
            Ok(text) => Ok(Value::String(text)),
            Err(_) => Err(Error::Decode("response body is not UTF-8".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

        // Kube refuses such paths before they get here; if one did, it is an error, not a panic.
        assert!(build_request(Method::Get, "/a b", None, None).is_err());
    }
}
