//! Structural checks of manifests before they are sent to the API server.
//!
//! Only structural errors are ours (wrong JSON types, unknown fields, a conflicting
//! namespace); semantic validation (missing containers, bad names...) is left to the API
//! server, whose 422 comes back as an `Api` error with its own message.
//!
//! The manifest is type-checked by deserializing it into the k8s-openapi type. k8s-openapi
//! ignores unknown fields, so the typed value is serialized back and every key of the input
//! that did not survive the round trip is reported as an unknown field (a misspelled or
//! snake_case field would otherwise be dropped without a word). The original JSON is still
//! what gets sent.

use k8s_openapi::api::core::v1::{Pod, Secret};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::path::Path;
use crate::error::{Error, Result};

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
    K: DeserializeOwned + Serialize + k8s_openapi::Resource,
{
    let kind = json_type_name(&manifest);
    let obj = manifest
        .as_object_mut()
        .ok_or_else(|| Error::InvalidManifest(format!("manifest: expected a map, got {kind}")))?;
    pin_string_field(obj, "apiVersion", K::API_VERSION)?;
    pin_string_field(obj, "kind", K::KIND)?;
    pin_namespace(obj, namespace)?;

    let typed = typecheck::<K>(&manifest)?;
    check_unknown_fields(&manifest, &typed)?;
    Ok(manifest)
}

/// Refuse keys of `input` that `typed` (deserialized from it) does not have: unknown fields.
///
/// All of them are reported, joined with `"; "`, in a deterministic order (depth first, keys
/// of an object sorted, list elements by index): `spec.node_selector: unknown field`.
///
/// Only missing keys count, never changed values (an `IntOrString` or a `Quantity` may come
/// back in another form). A key whose input value is `null`, `{}` or `[]` may vanish: the typed
/// value does not distinguish such a field from an absent one.
pub fn check_unknown_fields<K: Serialize>(input: &Value, typed: &K) -> Result<()> {
    let output = serde_json::to_value(typed)
        .map_err(|e| Error::Internal(format!("re-serializing the manifest: {e}")))?;
    let mut found = Vec::new();
    missing_keys(input, &output, &mut Path::new(), &mut found);
    if found.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidManifest(found.join("; ")))
    }
}

fn missing_keys(input: &Value, output: &Value, path: &mut Path, found: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(input), Value::Object(output)) => {
            let mut keys: Vec<&String> = input.keys().collect();
            keys.sort();
            for key in keys {
                let value = &input[key];
                path.push_key(key);
                match output.get(key) {
                    Some(out) => missing_keys(value, out, path, found),
                    None if is_vacuous(value) => {}
                    None => found.push(format!("{path}: unknown field")),
                }
                path.pop();
            }
        }
        (Value::Array(input), Value::Array(output)) => {
            for (i, (value, out)) in input.iter().zip(output).enumerate() {
                path.push_index(i);
                missing_keys(value, out, path, found);
                path.pop();
            }
        }
        // A scalar, or a value whose shape changed in the round trip: only keys are compared.
        _ => {}
    }
}

/// `null`, `{}` or `[]`: a value the typed round trip may legitimately drop.
fn is_vacuous(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
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
    fn unknown_top_level_field() {
        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"}, "specs": {"containers": []}}),
        ));
        assert_eq!(m, "specs: unknown field");
    }

    #[test]
    fn unknown_nested_field() {
        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c", "image": "i"}],
                            "node_selector": {"disk": "ssd"}}}),
        ));
        assert_eq!(m, "spec.node_selector: unknown field");

        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"},
                   "spec": {"serviceAcountName": "sa", "containers": [{"name": "c"}]}}),
        ));
        assert_eq!(m, "spec.serviceAcountName: unknown field");
    }

    #[test]
    fn unknown_field_in_a_list_element() {
        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"},
                   "spec": {"containers": [{
                       "name": "c", "image": "i",
                       "env": [{"name": "A",
                                "value_from": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}}),
        ));
        assert_eq!(m, "spec.containers[0].env[0].value_from: unknown field");
    }

    #[test]
    fn unknown_fields_are_all_reported_in_order() {
        let m = msg(prepare_pod(
            "ns",
            json!({"zzz": 1,
                   "metadata": {"name": "p", "label": {"a": "b"}},
                   "spec": {"containers": [
                       {"name": "a", "image": "i"},
                       {"name": "b", "image": "i", "image_pull_policy": "Always",
                        "ports": [{"containerPort": 80, "host": "x"}]}]}}),
        ));
        assert_eq!(
            m,
            "metadata.label: unknown field; \
             spec.containers[1].image_pull_policy: unknown field; \
             spec.containers[1].ports[0].host: unknown field; \
             zzz: unknown field"
        );
    }

    #[test]
    fn unknown_keys_are_quoted_like_type_errors() {
        let m = msg(prepare_pod(
            "ns",
            json!({"metadata": {"name": "p"}, "spec": {"node.selector": "x"}}),
        ));
        assert_eq!(m, r#"spec["node.selector"]: unknown field"#);
    }

    #[test]
    fn round_trip_differences_are_not_unknown_fields() {
        let pod = json!({
            "metadata": {
                "name": "p",
                "labels": {},
                "annotations": {"a/b": "c"},
                "creationTimestamp": "2024-01-02T03:04:05.000Z",
                "deletionTimestamp": null,
                "finalizers": []
            },
            "spec": {
                "nodeSelector": {},
                "tolerations": [],
                "containers": [{
                    "name": "c",
                    "image": "i",
                    "args": [],
                    "command": ["run"],
                    "env": [{"name": "A", "value": "1"},
                            {"name": "B",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "envFrom": [],
                    "ports": [{"containerPort": 4369, "name": "epmd"}],
                    "resources": {
                        "limits": {"memory": "1.5Gi", "cpu": "1000m"},
                        "requests": {"memory": "512Mi", "cpu": "0.5", "ephemeral-storage": "1e3"}
                    },
                    "readinessProbe": {"tcpSocket": {"port": "epmd"},
                                       "periodSeconds": 1},
                    "livenessProbe": {"httpGet": {"port": 8080, "path": "/"}},
                    "securityContext": {}
                }],
                "volumes": null
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True",
                                "lastTransitionTime": "2024-01-02T03:04:05Z"}],
                "containerStatuses": []
            }
        });
        let v = prepare_pod("ns", pod.clone()).unwrap();
        // The original is what gets sent, not the round-tripped value.
        assert_eq!(
            v["spec"]["containers"][0]["resources"],
            pod["spec"]["containers"][0]["resources"]
        );
        assert_eq!(
            v["metadata"]["creationTimestamp"],
            "2024-01-02T03:04:05.000Z"
        );
    }

    #[test]
    fn vacuous_values_may_vanish_others_may_not() {
        let mut found = Vec::new();
        missing_keys(
            &json!({"a": null, "b": {}, "c": [], "d": 0, "e": "", "f": {"x": 1}, "g": [1]}),
            &json!({}),
            &mut Path::new(),
            &mut found,
        );
        assert_eq!(
            found,
            [
                "d: unknown field",
                "e: unknown field",
                "f: unknown field",
                "g: unknown field"
            ]
        );
        // Changed values and shapes are not compared.
        let mut found = Vec::new();
        missing_keys(
            &json!({"port": "80", "q": {"x": 1}, "l": [{"k": 1}, {"k": 2}]}),
            &json!({"port": 80, "q": "x", "l": [{"k": 1}]}),
            &mut Path::new(),
            &mut found,
        );
        assert!(found.is_empty(), "{found:?}");
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

        let m = msg(prepare_secret(
            "ns",
            json!({"metadata": {"name": "s"}, "string_data": {"RELEASE_COOKIE": "c"}}),
        ));
        assert_eq!(m, "string_data: unknown field");
        let m = msg(prepare_secret(
            "ns",
            json!({"metadata": {"name": "s", "generate_name": "s-"}, "type": "Opaque",
                   "immutable": true, "data": {"k": "c2VjcmV0"}}),
        ));
        assert_eq!(m, "metadata.generate_name: unknown field");
        assert!(prepare_secret(
            "ns",
            json!({"metadata": {"name": "s", "labels": {}}, "type": "Opaque", "immutable": true,
                   "data": {"k": "c2VjcmV0"}, "stringData": {}}),
        )
        .is_ok());
    }
}
