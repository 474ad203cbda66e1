//! Structural checks of manifests before they are sent to the API server.
//!
//! Only structural errors are ours (wrong JSON types, a conflicting namespace); semantic
//! validation (missing containers, bad names...) is left to the API server, whose 422 comes
//! back as an `Api` error with its own message.
//!
//! The manifest is type-checked by deserializing it into the k8s-openapi type, but the original
//! JSON is what gets sent, so fields newer than our k8s-openapi version are not dropped.

use k8s_openapi::api::core::v1::{Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::path::Path;

/// Check a pod manifest and pin it to `namespace`; fills in `apiVersion`/`kind` if absent.
pub fn prepare_pod(namespace: &str, manifest: Value) -> Result<Value> {
    prepare::<Pod>(namespace, manifest)
}

/// Check a secret manifest and pin it to `namespace`; fills in `apiVersion`/`kind` if absent.
pub fn prepare_secret(namespace: &str, manifest: Value) -> Result<Value> {
    prepare::<Secret>(namespace, manifest)
}

fn prepare<K>(namespace: &str, mut manifest: Value) -> Result<Value>
where
    K: DeserializeOwned + k8s_openapi::Resource,
{
    let kind = json_type_name(&manifest);
    let obj = manifest
        .as_object_mut()
        .ok_or_else(|| Error::InvalidManifest(format!("manifest: expected a map, got {kind}")))?;
    pin_string_field(obj, "apiVersion", K::API_VERSION)?;
    pin_string_field(obj, "kind", K::KIND)?;
    pin_namespace(obj, namespace)?;

    typecheck::<K>(&manifest)?;
    Ok(manifest)
}

/// Deserialize into `K` only to find type errors, reported with the path of the bad field.
pub fn typecheck<K: DeserializeOwned>(value: &Value) -> Result<K> {
    serde_path_to_error::deserialize::<_, K>(value).map_err(|e| {
        let path = Path::from(e.path());
        let path = if path.is_empty() {
            "manifest".to_string()
        } else {
            path.to_string()
        };
        Error::InvalidManifest(format!("{path}: {}", e.inner()))
    })
}

fn pin_string_field(obj: &mut Map<String, Value>, key: &str, expected: &str) -> Result<()> {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), Value::String(expected.to_string()));
            Ok(())
        }
        Some(Value::String(s)) if s == expected => Ok(()),
        Some(Value::String(s)) => Err(Error::InvalidManifest(format!(
            "{key}: expected {expected:?}, got {s:?}"
        ))),
        Some(other) => Err(Error::InvalidManifest(format!(
            "{key}: expected a string, got {}",
            json_type_name(other)
        ))),
    }
}

fn pin_namespace(obj: &mut Map<String, Value>, namespace: &str) -> Result<()> {
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if meta.is_null() {
        *meta = Value::Object(Map::new());
    }
    let kind = json_type_name(meta);
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| Error::InvalidManifest(format!("metadata: expected a map, got {kind}")))?;
    match meta.get("namespace") {
        None | Some(Value::Null) => {
            meta.insert(
                "namespace".to_string(),
                Value::String(namespace.to_string()),
            );
            Ok(())
        }
        Some(Value::String(s)) if s == namespace => Ok(()),
        Some(Value::String(s)) => Err(Error::InvalidManifest(format!(
            "metadata.namespace {s:?} differs from namespace {namespace:?}"
        ))),
        Some(other) => Err(Error::InvalidManifest(format!(
            "metadata.namespace: expected a string, got {}",
            json_type_name(other)
        ))),
    }
}

/// "a map", "a list", ... for messages.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Validate a namespace or object name used as a URL path segment.
/// Kubernetes names are DNS labels/subdomains; we only reject what could change the URL.
pub fn check_path_segment(what: &str, value: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what}: must not be empty"));
    }
    if value.len() > 253 {
        return Err(format!("{what}: longer than 253 characters"));
    }
    if value == "." || value == ".." {
        return Err(format!("{what}: {value:?} is not a valid name"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(format!(
            "{what}: {value:?} is not a valid name (character {c:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(r: Result<Value>) -> String {
        match r {
            Err(Error::InvalidManifest(m)) => m,
            other => panic!("expected InvalidManifest, got {other:?}"),
        }
    }

    #[test]
    fn pod_gets_namespace_kind_and_api_version() {
        let v = prepare_pod(
            "ns1",
            json!({"metadata": {"generateName": "runner-"},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        )
        .unwrap();
        assert_eq!(v["metadata"]["namespace"], "ns1");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["generateName"], "runner-");
    }

    #[test]
    fn same_namespace_is_fine_different_is_an_error() {
        let ok = prepare_pod("a", json!({"metadata": {"name": "p", "namespace": "a"}}));
        assert!(ok.is_ok());
        let m = msg(prepare_pod(
            "b",
            json!({"metadata": {"name": "p", "namespace": "a"}}),
        ));
        assert_eq!(m, r#"metadata.namespace "a" differs from namespace "b""#);
    }

    #[test]
    fn type_errors_name_the_path() {
        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"},
                   "spec": {"containers": [{"name": 1, "image": "i"}]}}),
        ));
        assert!(
            m.starts_with("spec.containers[0].name: invalid type: integer `1`"),
            "{m}"
        );

        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p", "labels": {"app": ["x"]}}}),
        ));
        assert!(
            m.starts_with("metadata.labels.app: invalid type: sequence"),
            "{m}"
        );

        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p", "labels": {"app.kubernetes.io/name": 5}}}),
        ));
        assert!(
            m.starts_with(r#"metadata.labels["app.kubernetes.io/name"]: invalid type"#),
            "{m}"
        );
    }

    #[test]
    fn unknown_fields_are_kept_for_the_server() {
        let v = prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "i"}], "futureField": {"x": 1}}}),
        )
        .unwrap();
        assert_eq!(v["spec"]["futureField"]["x"], 1);
    }

    #[test]
    fn incomplete_manifests_are_left_to_the_server() {
        // No containers, no name: the API server will answer 422.
        assert!(prepare_pod("ns", json!({})).is_ok());
        assert!(prepare_pod("ns", json!({"metadata": null})).is_ok());
    }

    #[test]
    fn wrong_kind_or_shape() {
        let m = msg(prepare_pod("ns", json!({"kind": "Secret"})));
        assert_eq!(m, r#"kind: expected "Pod", got "Secret""#);
        let m = msg(prepare_pod("ns", json!({"apiVersion": "apps/v1"})));
        assert_eq!(m, r#"apiVersion: expected "v1", got "apps/v1""#);
        let m = msg(prepare_pod("ns", json!([1])));
        assert_eq!(m, "manifest: expected a map, got a list");
        let m = msg(prepare_pod("ns", json!({"metadata": "x"})));
        assert_eq!(m, "metadata: expected a map, got a string");
        let m = msg(prepare_pod("ns", json!({"metadata": {"namespace": 3}})));
        assert_eq!(m, "metadata.namespace: expected a string, got a number");
    }

    #[test]
    fn secrets() {
        let v = prepare_secret(
            "ns",
            json!({"metadata": {"generateName": "s-"}, "stringData": {"RELEASE_COOKIE": "c"}}),
        )
        .unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["namespace"], "ns");
        let m = msg(prepare_secret(
            "ns",
            json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}}),
        ));
        assert!(m.starts_with("data.k: "), "{m}");
    }

    #[test]
    fn path_segments() {
        assert!(check_path_segment("name", "runner-abc.1").is_ok());
        assert!(check_path_segment("name", "").is_err());
        assert!(check_path_segment("name", "..").is_err());
        assert!(check_path_segment("name", "a/b").is_err());
        assert!(check_path_segment("name", "a?b").is_err());
        assert!(check_path_segment("name", "a b").is_err());
        assert_eq!(
            check_path_segment("namespace", "a/b").unwrap_err(),
            r#"namespace: "a/b" is not a valid name (character '/')"#
        );
    }
}
