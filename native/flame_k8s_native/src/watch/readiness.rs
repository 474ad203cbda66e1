//! Pure classification of a pod's state while we wait for it to boot.

use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus, Pod};

/// What to do when the scheduler reports the pod Unschedulable (`:fail` or `:wait` in the
/// options of `await_pod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum UnschedulablePolicy {
    /// Fail at once with `{:unschedulable, message}`.
    Fail,
    /// Keep waiting (an autoscaler may add a node); the message is kept for the timeout.
    Wait,
}

/// Which part of the boot we are waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingPhase {
    /// Not bound to a node yet.
    Scheduling,
    /// Bound, containers not all running (or no pod IP yet).
    ContainerStart,
}

/// Why a boot failed: `{:failed, reason}` of an await, encoded as derived (`{:image_pull,
/// %{reason: ..., ...}}`, `{:unschedulable, message}`, `{:pod_phase, phase, message}`,
/// `{:no_scale_up, %{source: ..., message: ..., scheduler: ...}}`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifTaggedEnum), rustler(encode))]
pub enum FailureReason {
    ImagePull {
        reason: String,
        container: String,
        image: String,
        message: String,
    },
    ContainerConfig {
        reason: String,
        container: String,
        message: String,
    },
    ContainerExited {
        container: String,
        exit_code: i32,
        reason: String,
        message: Option<String>,
    },
    Unschedulable(String),
    /// The pod's phase (`Failed` or `Succeeded`) and its message.
    PodPhase(String, Option<String>),
    /// Unschedulable, and the autoscaler (`source`) says no node it can add would take the pod:
    /// its own `message`, and the scheduler's.
    NoScaleUp {
        source: String,
        message: String,
        scheduler: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    Ready,
    Failed(FailureReason),
    /// Being deleted (deletionTimestamp set).
    Deleted,
    Pending {
        phase: PendingPhase,
        /// Scheduling: the last Unschedulable message; ContainerStart: the first waiting
        /// container's `Reason: message`.
        detail: Option<String>,
    },
}

const IMAGE_PULL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const CONTAINER_CONFIG_REASONS: &[&str] = &[
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// Config-error messages the kubelet retries on its own: its per-pod Secret/ConfigMap cache
/// did not sync in time (common when the object was created just before the pod). Treating
/// them as final failed about one boot in twenty on a real node.
const TRANSIENT_CONFIG_MESSAGES: &[&str] = &[
    "failed to sync secret cache",
    "failed to sync configmap cache",
];

pub(crate) fn non_empty(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

/// A terminated container's reason; the kubelet may leave it empty, then its exit code tells.
pub(crate) fn terminated_reason(t: &ContainerStateTerminated) -> String {
    non_empty(t.reason.as_ref()).unwrap_or_else(|| {
        if t.exit_code == 0 {
            "Completed".to_string()
        } else {
            "Error".to_string()
        }
    })
}

/// Classify a pod. The first decisive signal wins, in this order: deletion, a container that
/// cannot start (image pull, config) or has exited, a terminal phase, Unschedulable (with
/// `UnschedulablePolicy::Fail`), ready; otherwise pending.
pub fn classify(pod: &Pod, policy: UnschedulablePolicy) -> Classification {
    if pod.metadata.deletion_timestamp.is_some() {
        return Classification::Deleted;
    }
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let empty: Vec<ContainerStatus> = Vec::new();
    let init_statuses = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .unwrap_or(&empty);
    let statuses = status
        .and_then(|s| s.container_statuses.as_ref())
        .unwrap_or(&empty);
    let no_containers: Vec<Container> = Vec::new();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_ref())
        .unwrap_or(&no_containers);
    let specs = spec.map(|s| &s.containers).unwrap_or(&no_containers);

    for cs in init_statuses {
        if let Some(f) = container_failure(cs, init_specs, true) {
            return Classification::Failed(f);
        }
    }
    for cs in statuses {
        if let Some(f) = container_failure(cs, specs, false) {
            return Classification::Failed(f);
        }
    }

    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    if phase == "Failed" || phase == "Succeeded" {
        let message = status
            .and_then(|s| non_empty(s.message.as_ref()).or_else(|| non_empty(s.reason.as_ref())));
        return Classification::Failed(FailureReason::PodPhase(phase.to_string(), message));
    }

    let conditions = status.and_then(|s| s.conditions.as_ref());
    let scheduled_condition =
        conditions.and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    let unschedulable = scheduled_condition
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
        .map(|c| {
            non_empty(c.message.as_ref()).unwrap_or_else(|| "pod is unschedulable".to_string())
        });
    let node_name = spec.and_then(|s| non_empty(s.node_name.as_ref()));
    let scheduled = node_name.is_some() || scheduled_condition.is_some_and(|c| c.status == "True");

    if !scheduled {
        // A nominated node: the scheduler is evicting lower-priority pods (placeholders) to
        // make room there, and binds this pod once they are gone. Not a failure, even under
        // `Fail`.
        let nominated = status.and_then(|s| non_empty(s.nominated_node_name.as_ref()));
        if let (Some(msg), Some(node)) = (&unschedulable, nominated) {
            return Classification::Pending {
                phase: PendingPhase::Scheduling,
                detail: Some(format!(
                    "preempting lower-priority pods on node {node}: {msg}"
                )),
            };
        }
        if let Some(msg) = unschedulable {
            return match policy {
                UnschedulablePolicy::Fail => {
                    Classification::Failed(FailureReason::Unschedulable(msg))
                }
                UnschedulablePolicy::Wait => Classification::Pending {
                    phase: PendingPhase::Scheduling,
                    detail: Some(msg),
                },
            };
        }
        return Classification::Pending {
            phase: PendingPhase::Scheduling,
            detail: None,
        };
    }

    let pod_ip = status.and_then(|s| non_empty(s.pod_ip.as_ref()));
    let all_running = !specs.is_empty()
        && specs.iter().all(|c| {
            statuses.iter().any(|cs| {
                cs.name == c.name && cs.state.as_ref().is_some_and(|st| st.running.is_some())
            })
        });
    if phase == "Running" && pod_ip.is_some() && all_running {
        return Classification::Ready;
    }

    let waiting = init_statuses.iter().chain(statuses.iter()).find_map(|cs| {
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = non_empty(w.reason.as_ref())?;
        Some(match non_empty(w.message.as_ref()) {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        })
    });
    let detail = waiting.or_else(|| {
        if phase == "Running" && pod_ip.is_none() {
            Some("Running without a pod IP".to_string())
        } else if phase.is_empty() {
            None
        } else {
            Some(format!("phase {phase}"))
        }
    });
    Classification::Pending {
        phase: PendingPhase::ContainerStart,
        detail,
    }
}

fn container_failure(
    cs: &ContainerStatus,
    specs: &[Container],
    init: bool,
) -> Option<FailureReason> {
    let state = cs.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or("");
        let message = w.message.clone().unwrap_or_default();
        if IMAGE_PULL_REASONS.contains(&reason) {
            let image = specs
                .iter()
                .find(|c| c.name == cs.name)
                .and_then(|c| non_empty(c.image.as_ref()))
                .unwrap_or_else(|| cs.image.clone());
            return Some(FailureReason::ImagePull {
                reason: reason.to_string(),
                container: cs.name.clone(),
                image,
                message,
            });
        }
        if CONTAINER_CONFIG_REASONS.contains(&reason)
            && !TRANSIENT_CONFIG_MESSAGES
                .iter()
                .any(|transient| message.contains(transient))
        {
            return Some(FailureReason::ContainerConfig {
                reason: reason.to_string(),
                container: cs.name.clone(),
                message,
            });
        }
        if reason == "CrashLoopBackOff" {
            // The container ran and exited; its last termination says how.
            if let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
                return Some(exited(&cs.name, t));
            }
        }
        return None;
    }
    if let Some(t) = &state.terminated {
        // A successful init container is normal progress.
        if init && t.exit_code == 0 {
            return None;
        }
        return Some(exited(&cs.name, t));
    }
    None
}

fn exited(name: &str, t: &ContainerStateTerminated) -> FailureReason {
    FailureReason::ContainerExited {
        container: name.to_string(),
        exit_code: t.exit_code,
        reason: terminated_reason(t),
        message: non_empty(t.message.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::test_support::{fixture, pod};
    use serde_json::{json, Value};
    use FailureReason as F;
    use UnschedulablePolicy::{Fail, Wait};

    /// A bound pod with one container `app` (image `runner:1`) in the given state.
    fn with_container(phase: &str, pod_ip: Option<&str>, state: Value) -> Pod {
        let mut status = json!({
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "app", "image": "docker.io/library/runner:1", "imageID": "",
                "ready": false, "restartCount": 0, "state": state
            }]
        });
        if let Some(ip) = pod_ip {
            status["podIP"] = json!(ip);
        }
        pod(json!({
            "metadata": {"name": "runner-x", "namespace": "ns"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "runner:1"}]},
            "status": status
        }))
    }

    #[test]
    fn ready_when_running_with_ip_and_all_containers_running() {
        let p = with_container(
            "Running",
            Some("10.0.0.5"),
            json!({"running": {"startedAt": "2024-01-01T00:00:00Z"}}),
        );
        assert_eq!(classify(&p, Fail), Classification::Ready);
        assert_eq!(classify(&fixture("ready"), Fail), Classification::Ready);
    }

    #[test]
    fn running_without_pod_ip_is_not_ready() {
        let p = with_container("Running", None, json!({"running": {}}));
        assert_eq!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::ContainerStart,
                detail: Some("Running without a pod IP".into())
            }
        );
    }

    #[test]
    fn not_ready_until_every_spec_container_runs() {
        let mut p = with_container("Running", Some("10.0.0.5"), json!({"running": {}}));
        if let Some(spec) = p.spec.as_mut() {
            spec.containers.push(Container {
                name: "sidecar".into(),
                ..Container::default()
            });
        }
        assert!(matches!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::ContainerStart,
                ..
            }
        ));
    }

    #[test]
    fn err_image_pull() {
        let p = with_container(
            "Pending",
            None,
            json!({"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}),
        );
        assert_eq!(
            classify(&p, Wait),
            Classification::Failed(F::ImagePull {
                reason: "ErrImagePull".into(),
                container: "app".into(),
                image: "runner:1".into(),
                message: "pull access denied".into()
            })
        );
    }

    #[test]
    fn image_pull_back_off_fixture() {
        match classify(&fixture("image_pull_backoff"), Wait) {
            Classification::Failed(F::ImagePull {
                reason,
                container,
                image,
                message,
            }) => {
                assert_eq!(reason, "ImagePullBackOff");
                assert_eq!(container, "runner");
                assert_eq!(image, "ghcr.io/example/does-not-exist:latest");
                assert!(message.contains("Back-off pulling image"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_image_name() {
        let p = with_container(
            "Pending",
            None,
            json!({"waiting": {"reason": "InvalidImageName", "message": "couldn't parse image name"}}),
        );
        assert!(matches!(
            classify(&p, Fail),
            Classification::Failed(F::ImagePull { ref reason, .. }) if reason == "InvalidImageName"
        ));
    }

    #[test]
    fn image_from_status_when_spec_lacks_container() {
        let mut p = with_container(
            "Pending",
            None,
            json!({"waiting": {"reason": "ErrImagePull"}}),
        );
        if let Some(spec) = p.spec.as_mut() {
            spec.containers.clear();
        }
        assert!(matches!(
            classify(&p, Fail),
            Classification::Failed(F::ImagePull { ref image, ref message, .. })
                if image == "docker.io/library/runner:1" && message.is_empty()
        ));
    }

    #[test]
    fn create_container_config_error_fixture() {
        assert_eq!(
            classify(&fixture("create_container_config_error"), Wait),
            Classification::Failed(F::ContainerConfig {
                reason: "CreateContainerConfigError".into(),
                container: "runner".into(),
                message: "couldn't find key RELEASE_COOKIE in Secret ns/runner-secret".into()
            })
        );
    }

    #[test]
    fn secret_cache_sync_timeout_is_waiting() {
        let p = fixture("secret_cache_sync_timeout");
        let expected = Classification::Pending {
            phase: PendingPhase::ContainerStart,
            detail: Some(
                "CreateContainerConfigError: failed to sync secret cache: timed out waiting for the condition"
                    .into(),
            ),
        };
        assert_eq!(classify(&p, Fail), expected);
        assert_eq!(classify(&p, Wait), expected);
    }

    #[test]
    fn unschedulable_but_nominated_waits_for_its_preemption_under_either_policy() {
        // The scheduler found lower-priority pods to evict (placeholders) and nominated a
        // node: the pod is scheduled there once they are gone.
        let p = fixture("unschedulable_preempting");
        let expected = Classification::Pending {
            phase: PendingPhase::Scheduling,
            detail: Some(
                "preempting lower-priority pods on node node-a: 0/1 nodes are available: 1 Insufficient cpu."
                    .into(),
            ),
        };
        assert_eq!(classify(&p, Fail), expected);
        assert_eq!(classify(&p, Wait), expected);
    }

    #[test]
    fn unschedulable_fail_and_wait() {
        let p = fixture("unschedulable");
        let msg = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
        assert_eq!(
            classify(&p, Fail),
            Classification::Failed(F::Unschedulable(msg.into()))
        );
        assert_eq!(
            classify(&p, Wait),
            Classification::Pending {
                phase: PendingPhase::Scheduling,
                detail: Some(msg.into())
            }
        );
    }

    #[test]
    fn oom_killed_fixture() {
        assert_eq!(
            classify(&fixture("oom_killed"), Wait),
            Classification::Failed(F::ContainerExited {
                container: "runner".into(),
                exit_code: 137,
                reason: "OOMKilled".into(),
                message: None
            })
        );
    }

    #[test]
    fn non_zero_exit_code() {
        let p = with_container(
            "Running",
            Some("10.0.0.5"),
            json!({"terminated": {"exitCode": 3, "message": "boom"}}),
        );
        assert_eq!(
            classify(&p, Fail),
            Classification::Failed(F::ContainerExited {
                container: "app".into(),
                exit_code: 3,
                reason: "Error".into(),
                message: Some("boom".into())
            })
        );
    }

    #[test]
    fn crash_loop_back_off_uses_last_termination() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": [{
                "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
            }]}
        }));
        assert!(matches!(
            classify(&p, Fail),
            Classification::Failed(F::ContainerExited { exit_code: 1, .. })
        ));
    }

    #[test]
    fn init_containers() {
        let base = |state: Value| {
            pod(json!({
                "metadata": {"name": "p"},
                "spec": {"nodeName": "n",
                         "initContainers": [{"name": "init", "image": "i"}],
                         "containers": [{"name": "app", "image": "i"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [{
                    "name": "init", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": state
                }]}
            }))
        };
        assert!(matches!(
            classify(
                &base(json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
                Fail
            ),
            Classification::Pending {
                phase: PendingPhase::ContainerStart,
                ..
            }
        ));
        assert!(matches!(
            classify(&base(json!({"terminated": {"exitCode": 2, "reason": "Error"}})), Fail),
            Classification::Failed(F::ContainerExited { exit_code: 2, ref container, .. }) if container == "init"
        ));
    }

    #[test]
    fn phase_failed_and_succeeded() {
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Failed", "reason": "Evicted",
                       "message": "The node was low on resource: memory."}
        }));
        assert_eq!(
            classify(&p, Fail),
            Classification::Failed(F::PodPhase(
                "Failed".into(),
                Some("The node was low on resource: memory.".into())
            ))
        );
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Succeeded"}
        }));
        assert_eq!(
            classify(&p, Fail),
            Classification::Failed(F::PodPhase("Succeeded".into(), None))
        );
        // With a terminated container, the container explains it.
        assert!(matches!(
            classify(&fixture("succeeded"), Fail),
            Classification::Failed(F::ContainerExited { exit_code: 0, ref reason, .. }) if reason == "Completed"
        ));
    }

    #[test]
    fn deletion_timestamp_means_deleted() {
        let mut p = with_container("Running", Some("10.0.0.5"), json!({"running": {}}));
        p.metadata.deletion_timestamp = fixture("deleting").metadata.deletion_timestamp;
        assert!(p.metadata.deletion_timestamp.is_some());
        assert_eq!(classify(&p, Fail), Classification::Deleted);
        assert_eq!(
            classify(&fixture("deleting"), Wait),
            Classification::Deleted
        );
    }

    #[test]
    fn pending_phases() {
        // Freshly created: not bound, no conditions.
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Pending"}
        }));
        assert_eq!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::Scheduling,
                detail: None
            }
        );
        // No status at all.
        let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert!(matches!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::Scheduling,
                ..
            }
        ));
        // Bound, container creating.
        let p = with_container(
            "Pending",
            None,
            json!({"waiting": {"reason": "ContainerCreating"}}),
        );
        assert_eq!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::ContainerStart,
                detail: Some("ContainerCreating".into())
            }
        );
        // PodScheduled=True without nodeName in our copy still counts as scheduled.
        let p = pod(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "i"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
        }));
        assert_eq!(
            classify(&p, Fail),
            Classification::Pending {
                phase: PendingPhase::ContainerStart,
                detail: Some("phase Pending".into())
            }
        );
    }
}
