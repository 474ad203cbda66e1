//! Pure classification of a runner pod's end: Kubernetes taking it away (a `DisruptionTarget`
//! condition, an eviction by the kubelet, a lost node), its deletion, its containers ending.
//!
//! Two users: a boot's await, which must tell "taken away by Kubernetes" (a new pod may help)
//! from the runner's own faults and from a deletion by someone else (`taken_away`); and a
//! booted runner's follow (`Follow`), which forwards each of these changes once, in the order
//! the watch shows them, so that the parent can say why its runner went.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

use super::readiness::{non_empty, terminated_reason};

/// The condition Kubernetes (≥ 1.26) sets on a pod it is about to terminate: reasons
/// `PreemptionByScheduler`, `EvictionByEvictionAPI`, `DeletionByTaintManager`,
/// `DeletionByPodGC`, `TerminationByKubelet`.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// `status.reason` of a `Failed` pod that Kubernetes took away: the kubelet's eviction under
/// node pressure, a preemption by the kubelet for a critical pod, a lost node, a node shutdown.
const TAKEN_AWAY_REASONS: &[&str] = &[
    "Evicted",
    "Preempting",
    "NodeLost",
    "NodeShutdown",
    "Terminated",
];

/// Kubernetes is taking the pod away (or has): its reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifMap))]
pub struct Disruption {
    pub reason: String,
    pub message: Option<String>,
}

/// The pod's containers (or the pod) ended: Kubernetes' reason (the pod's `status.reason`,
/// e.g. `Evicted`, else the container's, e.g. `OOMKilled`, `Error`, `Completed`), the exit code
/// when a container says one, and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifMap))]
pub struct Termination {
    pub reason: String,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

/// A change of a followed pod, each reported at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifTaggedEnum), rustler(encode))]
pub enum Change {
    /// `{:disruption, %{reason:, message:}}`: a `DisruptionTarget` condition appeared.
    Disruption(Disruption),
    /// `:deleting`: the pod is being deleted (`deletionTimestamp` set).
    Deleting,
    /// `{:terminated, %{reason:, exit_code:, message:}}`: a container terminated, or the pod
    /// reached `Failed` or `Succeeded`.
    Terminated(Termination),
}

/// The pod's `DisruptionTarget` condition, when its status is `True`.
pub fn disruption(pod: &Pod) -> Option<Disruption> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == DISRUPTION_TARGET && c.status == "True")?;
    Some(Disruption {
        reason: non_empty(condition.reason.as_ref())
            .unwrap_or_else(|| DISRUPTION_TARGET.to_string()),
        message: non_empty(condition.message.as_ref()),
    })
}

/// Whether Kubernetes is taking the pod away, for reasons of its own, not the runner's: a
/// `DisruptionTarget` condition, or phase `Failed` with a reason of `TAKEN_AWAY_REASONS`. A pod
/// that failed on its own (a crash, a bad image) or was deleted by someone is not.
pub fn taken_away(pod: &Pod) -> Option<Disruption> {
    if let Some(d) = disruption(pod) {
        return Some(d);
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let reason = non_empty(status.reason.as_ref())?;
    TAKEN_AWAY_REASONS
        .contains(&reason.as_str())
        .then(|| Disruption {
            reason,
            message: non_empty(status.message.as_ref()),
        })
}

/// Whether the pod is being deleted.
pub fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// How the pod ended, if it has: a terminated container (a failed one first; init containers
/// that succeeded are progress, not an end), or a terminal phase.
pub fn termination(pod: &Pod) -> Option<Termination> {
    let status = pod.status.as_ref()?;
    let terminated = |statuses: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                      init: bool| {
        statuses
            .into_iter()
            .flatten()
            .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref())
            .filter(|t| !(init && t.exit_code == 0))
            .cloned()
            .collect::<Vec<ContainerStateTerminated>>()
    };
    let mut ended = terminated(status.init_container_statuses.as_ref(), true);
    ended.extend(terminated(status.container_statuses.as_ref(), false));
    let container = ended
        .iter()
        .find(|t| t.exit_code != 0)
        .or_else(|| ended.first());
    let phase = status.phase.as_deref().unwrap_or("");
    let terminal = phase == "Failed" || phase == "Succeeded";
    if container.is_none() && !terminal {
        return None;
    }
    let pod_reason = non_empty(status.reason.as_ref()).filter(|_| terminal);
    let container_reason = container.map(terminated_reason);
    let reason = pod_reason
        .or(container_reason)
        .unwrap_or_else(|| phase.to_string());
    let message = non_empty(status.message.as_ref())
        .filter(|_| terminal)
        .or_else(|| container.and_then(|t| non_empty(t.message.as_ref())));
    Some(Termination {
        reason,
        exit_code: container.map(|t| t.exit_code),
        message,
    })
}

/// What a follow has reported so far: each change once.
#[derive(Debug, Default)]
pub struct Follow {
    disruption: bool,
    deleting: bool,
    terminated: bool,
}

impl Follow {
    /// The changes `pod` shows that were not reported yet, in this order: the disruption (what
    /// Kubernetes announces first), the deletion (which, seen with a termination in the same
    /// state, most likely caused it), the termination.
    pub fn changes(&mut self, pod: &Pod) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.disruption {
            if let Some(d) = disruption(pod) {
                self.disruption = true;
                changes.push(Change::Disruption(d));
            }
        }
        if !self.deleting && deleting(pod) {
            self.deleting = true;
            changes.push(Change::Deleting);
        }
        if !self.terminated {
            if let Some(t) = termination(pod) {
                self.terminated = true;
                changes.push(Change::Terminated(t));
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::test_support::{fixture, pod};
    use serde_json::{json, Value};

    fn running() -> Value {
        json!({
            "metadata": {"name": "runner-x", "namespace": "ns"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "runner:1"}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.5",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "runner:1", "imageID": "",
                    "ready": true, "restartCount": 0, "state": {"running": {}}}]
            }
        })
    }

    fn with_condition(mut v: Value, status: &str, reason: &str, message: &str) -> Value {
        v["status"]["conditions"].as_array_mut().unwrap().push(
            json!({"type": "DisruptionTarget", "status": status, "reason": reason,
                "message": message}),
        );
        v
    }

    fn terminated(mut v: Value, phase: &str, state: Value) -> Value {
        v["status"]["phase"] = json!(phase);
        v["status"]["containerStatuses"][0]["state"] = json!({"terminated": state});
        v
    }

    fn deleted(mut v: Value) -> Value {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        v
    }

    #[test]
    fn a_running_pod_is_neither_taken_away_nor_ended() {
        let p = pod(running());
        assert_eq!(disruption(&p), None);
        assert_eq!(taken_away(&p), None);
        assert_eq!(termination(&p), None);
        assert!(!deleting(&p));
        assert_eq!(Follow::default().changes(&p), vec![]);
    }

    #[test]
    fn every_disruption_target_reason_is_taken_away() {
        for reason in [
            "PreemptionByScheduler",
            "EvictionByEvictionAPI",
            "DeletionByTaintManager",
            "DeletionByPodGC",
            "TerminationByKubelet",
        ] {
            let p = pod(with_condition(running(), "True", reason, "m"));
            let expected = Disruption {
                reason: reason.into(),
                message: Some("m".into()),
            };
            assert_eq!(disruption(&p), Some(expected.clone()));
            assert_eq!(taken_away(&p), Some(expected));
        }
        // A condition that is not (or no longer) true says nothing.
        let p = pod(with_condition(
            running(),
            "False",
            "PreemptionByScheduler",
            "m",
        ));
        assert_eq!(taken_away(&p), None);
    }

    #[test]
    fn the_api_servers_eviction_fixture() {
        let p = fixture("evicted_by_api");
        assert_eq!(
            taken_away(&p),
            Some(Disruption {
                reason: "EvictionByEvictionAPI".into(),
                message: Some("Eviction API: evicting".into()),
            })
        );
        assert!(deleting(&p));
    }

    #[test]
    fn the_kubelets_eviction_fixture() {
        let p = fixture("evicted_by_kubelet");
        // The condition is what Kubernetes announced first; the phase says the same.
        assert_eq!(taken_away(&p).unwrap().reason, "TerminationByKubelet");
        assert_eq!(
            termination(&p),
            Some(Termination {
                reason: "Evicted".into(),
                exit_code: Some(137),
                message: Some("The node was low on resource: memory.".into()),
            })
        );
    }

    #[test]
    fn a_failed_phase_with_a_kubernetes_reason_is_taken_away() {
        for reason in ["Evicted", "Preempting", "NodeLost", "Terminated"] {
            let mut v = running();
            v["status"]["phase"] = json!("Failed");
            v["status"]["reason"] = json!(reason);
            v["status"]["message"] = json!("why");
            assert_eq!(
                taken_away(&pod(v)),
                Some(Disruption {
                    reason: reason.into(),
                    message: Some("why".into())
                })
            );
        }
    }

    #[test]
    fn the_runners_own_faults_are_not_taken_away() {
        let crashed = terminated(
            running(),
            "Failed",
            json!({"exitCode": 1, "reason": "Error"}),
        );
        let oom = terminated(
            running(),
            "Failed",
            json!({"exitCode": 137, "reason": "OOMKilled"}),
        );
        let mut bad_image = running();
        bad_image["status"]["phase"] = json!("Pending");
        bad_image["status"]["containerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "ErrImagePull"}});
        for v in [crashed, oom, bad_image, deleted(running())] {
            assert_eq!(taken_away(&pod(v)), None);
        }
        let mut unknown = running();
        unknown["status"]["phase"] = json!("Failed");
        unknown["status"]["reason"] = json!("UnexpectedAdmissionError");
        assert_eq!(taken_away(&pod(unknown)), None);
    }

    #[test]
    fn termination_says_reason_exit_code_and_message() {
        let oom = pod(terminated(
            running(),
            "Failed",
            json!({"exitCode": 137, "reason": "OOMKilled"}),
        ));
        assert_eq!(
            termination(&oom),
            Some(Termination {
                reason: "OOMKilled".into(),
                exit_code: Some(137),
                message: None
            })
        );
        // Still Running while the kubelet has not written the phase yet; no reason given.
        let crashed = pod(terminated(
            running(),
            "Running",
            json!({"exitCode": 3, "message": "boom"}),
        ));
        assert_eq!(
            termination(&crashed),
            Some(Termination {
                reason: "Error".into(),
                exit_code: Some(3),
                message: Some("boom".into())
            })
        );
        let done = pod(terminated(running(), "Succeeded", json!({"exitCode": 0})));
        assert_eq!(termination(&done).unwrap().reason, "Completed");
        // A terminal phase without container statuses (a lost node's pod).
        let mut lost = running();
        lost["status"] = json!({"phase": "Failed", "reason": "NodeLost", "message": "gone"});
        assert_eq!(
            termination(&pod(lost)),
            Some(Termination {
                reason: "NodeLost".into(),
                exit_code: None,
                message: Some("gone".into())
            })
        );
    }

    #[test]
    fn a_successful_init_container_is_no_termination() {
        let mut v = running();
        v["status"]["initContainerStatuses"] = json!([{"name": "init", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
        assert_eq!(termination(&pod(v)), None);
    }

    #[test]
    fn a_follow_reports_each_change_once_in_order() {
        let mut follow = Follow::default();
        let d = with_condition(running(), "True", "EvictionByEvictionAPI", "evicting");
        let disruption = Disruption {
            reason: "EvictionByEvictionAPI".into(),
            message: Some("evicting".into()),
        };
        assert_eq!(
            follow.changes(&pod(d.clone())),
            vec![Change::Disruption(disruption)]
        );
        assert_eq!(follow.changes(&pod(d.clone())), vec![]);
        let gone = terminated(deleted(d), "Failed", json!({"exitCode": 143}));
        assert_eq!(
            follow.changes(&pod(gone.clone())),
            vec![
                Change::Deleting,
                Change::Terminated(Termination {
                    reason: "Error".into(),
                    exit_code: Some(143),
                    message: None
                })
            ]
        );
        assert_eq!(follow.changes(&pod(gone)), vec![]);
    }

    #[test]
    fn hostile_pods_classify_without_panicking() {
        for v in [
            json!({}),
            json!({"metadata": {}}),
            json!({"status": {}}),
            json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}),
            json!({"status": {"phase": "Failed"}}),
            json!({"status": {"phase": "Failed", "reason": ""}}),
            json!({"status": {"containerStatuses": [{"name": "", "image": "", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": -1}}}]}}),
        ] {
            let p = pod(v);
            let _ = (taken_away(&p), termination(&p), deleting(&p));
            let _ = Follow::default().changes(&p);
        }
        let bare = pod(
            json!({"status": {"conditions": [{"type": "DisruptionTarget",
            "status": "True"}]}}),
        );
        assert_eq!(disruption(&bare).unwrap().reason, "DisruptionTarget");
    }
}
