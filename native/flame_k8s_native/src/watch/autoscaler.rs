//! What an autoscaler says about a pod the scheduler cannot place, from the pod's Events.
//!
//! The cluster autoscaler records `TriggeredScaleUp` on a pod it adds a node for and
//! `NotTriggerScaleUp` on one no node group can help; Karpenter records `Nominated` when it
//! has a node (claim) for the pod, and a `FailedScheduling` of its own when no nodepool fits.
//! The last of these events (by time, then by the order the watch showed them) is the
//! autoscaler's current word. Pure, except for `KubeEvents`, the source of the watch.

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::{self, Event};

use crate::api::client::ClientHandle;
use crate::watch::source::WATCH_TIMEOUT_SECS;

pub const CLUSTER_AUTOSCALER: &str = "cluster-autoscaler";
pub const KARPENTER: &str = "karpenter";

/// The autoscaler's word on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A node is being added for it (`TriggeredScaleUp`, Karpenter's `Nominated`).
    ScalingUp { source: String, message: String },
    /// No node it can add would take the pod (`NotTriggerScaleUp`, Karpenter's
    /// `FailedScheduling`).
    NoScaleUp { source: String, message: String },
}

impl Verdict {
    /// `source: message`, how a timeout reports it.
    pub fn describe(&self) -> String {
        match self {
            Verdict::ScalingUp { source, message } | Verdict::NoScaleUp { source, message } => {
                format!("{source}: {message}")
            }
        }
    }
}

fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

/// Who recorded the event: `reportingComponent` (events.k8s.io/v1 recorders, and core/v1
/// recorders of client-go since 1.19), else `source.component`.
fn reporter(event: &CoreEvent) -> Option<&str> {
    non_empty(event.reporting_component.as_ref())
        .or_else(|| non_empty(event.source.as_ref().and_then(|s| s.component.as_ref())))
}

/// What one event says, if it is an autoscaler's word on its pod.
pub fn verdict_of(event: &CoreEvent) -> Option<Verdict> {
    let reason = non_empty(event.reason.as_ref())?;
    let reporter = reporter(event);
    let message = non_empty(event.message.as_ref()).unwrap_or("").to_string();
    // The cluster autoscaler's reasons are its own; the scheduler records `FailedScheduling`
    // too, and only Karpenter's says that no node it can add fits.
    let karpenter = reporter.is_some_and(|r| r.contains(KARPENTER));
    let source = |default: &str| reporter.unwrap_or(default).to_string();
    match reason {
        "TriggeredScaleUp" => Some(Verdict::ScalingUp {
            source: source(CLUSTER_AUTOSCALER),
            message,
        }),
        "NotTriggerScaleUp" => Some(Verdict::NoScaleUp {
            source: source(CLUSTER_AUTOSCALER),
            message,
        }),
        "Nominated" if karpenter || message.starts_with("Pod should schedule on") => {
            Some(Verdict::ScalingUp {
                source: source(KARPENTER),
                message,
            })
        }
        "FailedScheduling" if karpenter => Some(Verdict::NoScaleUp {
            source: source(KARPENTER),
            message,
        }),
        _ => None,
    }
}

/// When the event last happened: the latest of the times it carries (a series' last
/// observation, `lastTimestamp`, `eventTime`, `firstTimestamp`, its creation).
fn last_seen(event: &CoreEvent) -> Option<Timestamp> {
    [
        event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0),
        event.last_timestamp.as_ref().map(|t| t.0),
        event.event_time.as_ref().map(|t| t.0),
        event.first_timestamp.as_ref().map(|t| t.0),
        event.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The autoscaler's current word among `events`, given in the order they were shown (which
/// breaks ties: event times have one-second precision).
pub fn latest(events: &[CoreEvent]) -> Option<Verdict> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| verdict_of(e).map(|v| ((last_seen(e), i), v)))
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, v)| v)
}

/// The scheduler's message while `pod` waits Unschedulable for a node: not bound, and not
/// nominated to one (the scheduler is then preempting lower-priority pods to make room, and
/// no autoscaler is needed).
pub fn unschedulable(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| non_empty(s.node_name.as_ref())).is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if non_empty(status.nominated_node_name.as_ref()).is_some() {
        return None;
    }
    let condition = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    (condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable")).then(
        || {
            non_empty(condition.message.as_ref())
                .unwrap_or("pod is unschedulable")
                .to_string()
        },
    )
}

/// The Events of one pod as its watch shows them: the last list, updated by events since.
#[derive(Debug, Default)]
pub struct PodEvents {
    /// The pod's uid: events of an earlier pod of the same name are not its own.
    pod_uid: Option<String>,
    /// In the order shown (an updated event moves to the end).
    events: Vec<CoreEvent>,
    /// The list in progress.
    relist: Option<Vec<CoreEvent>>,
}

fn same(a: &CoreEvent, b: &CoreEvent) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.metadata.name == b.metadata.name,
    }
}

impl PodEvents {
    pub fn new(pod_uid: Option<String>) -> Self {
        PodEvents {
            pod_uid: pod_uid.filter(|u| !u.is_empty()),
            ..Default::default()
        }
    }

    fn ours(&self, event: &CoreEvent) -> bool {
        match (&self.pod_uid, non_empty(event.involved_object.uid.as_ref())) {
            (Some(pod), Some(involved)) => pod == involved,
            _ => true,
        }
    }

    pub fn apply(&mut self, event: Event<CoreEvent>) {
        match event {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(e) => {
                if self.ours(&e) {
                    self.relist.get_or_insert_with(Vec::new).push(e);
                }
            }
            Event::InitDone => self.events = self.relist.take().unwrap_or_default(),
            Event::Apply(e) => {
                if self.ours(&e) {
                    self.events.retain(|x| !same(x, &e));
                    self.events.push(e);
                }
            }
            Event::Delete(e) => self.events.retain(|x| !same(x, &e)),
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        latest(&self.events)
    }
}

/// One item of a pod's Events' watch.
pub type EventItem = Result<Event<CoreEvent>, watcher::Error>;

pub type PodEventStream = BoxStream<'static, EventItem>;

/// Where a pod's Events come from: the API server, or a test's synthetic streams.
pub trait EventSource: Send + Sync {
    /// The watcher stream of the Events of pod `namespace/name`, without backoff.
    fn watch(&self, namespace: &str, name: &str) -> PodEventStream;
}

/// The API server: kube-runtime's watcher of the core/v1 Events whose involved object is the
/// pod (`fieldSelector`), listed from the watch cache like the pod watches (`source`).
pub struct KubeEvents {
    client: kube::Client,
}

impl KubeEvents {
    pub fn new(handle: &ClientHandle) -> Self {
        KubeEvents {
            client: handle.watch_client().clone(),
        }
    }
}

/// The field selector of the Events about pod `name`.
pub fn field_selector(name: &str) -> String {
    format!("involvedObject.kind=Pod,involvedObject.name={name}")
}

impl EventSource for KubeEvents {
    fn watch(&self, namespace: &str, name: &str) -> PodEventStream {
        let api: kube::Api<CoreEvent> = kube::Api::namespaced(self.client.clone(), namespace);
        let mut config = watcher::Config::default()
            .timeout(WATCH_TIMEOUT_SECS)
            .any_semantic()
            .fields(&field_selector(name));
        // As for the pod watches: a limit would make the list a consistent read again.
        config.page_size = None;
        watcher::watcher(api, config).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::test_support::{pod, read_fixture};
    use serde_json::{json, Value};

    fn fixture(name: &str) -> CoreEvent {
        read_fixture(&format!("events/{name}.json"))
    }

    /// `fixture` with its times set to `at` (and a name and uid of its own).
    fn at(name: &str, at: &str) -> CoreEvent {
        let mut v: Value = serde_json::to_value(fixture(name)).unwrap();
        v["firstTimestamp"] = json!(at);
        v["lastTimestamp"] = json!(at);
        v["metadata"]["creationTimestamp"] = json!(at);
        v["metadata"]["uid"] = json!(format!("{name}-{at}"));
        v["metadata"]["name"] = json!(format!("{name}-{at}"));
        serde_json::from_value(v).unwrap()
    }

    fn scaling_up(source: &str, message: &str) -> Option<Verdict> {
        Some(Verdict::ScalingUp {
            source: source.into(),
            message: message.into(),
        })
    }

    fn no_scale_up(source: &str, message: &str) -> Option<Verdict> {
        Some(Verdict::NoScaleUp {
            source: source.into(),
            message: message.into(),
        })
    }

    #[test]
    fn the_cluster_autoscalers_events() {
        assert_eq!(
            verdict_of(&fixture("triggered_scale_up")),
            scaling_up(
                "cluster-autoscaler",
                "pod triggered scale-up: [{eks-runners-2ac4b5e1-7d1f-9a3c-8e55-0b6d4f2c1a97 0->1 (max: 5)}]"
            )
        );
        assert_eq!(
            verdict_of(&fixture("not_trigger_scale_up")),
            no_scale_up(
                "cluster-autoscaler",
                "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector, 2 max node group size reached"
            )
        );
    }

    #[test]
    fn karpenters_events() {
        assert_eq!(
            verdict_of(&fixture("karpenter_nominated")),
            scaling_up(
                "karpenter",
                "Pod should schedule on: nodeclaim/default-cvkcv"
            )
        );
        match verdict_of(&fixture("karpenter_failed_scheduling")) {
            Some(Verdict::NoScaleUp { source, message }) => {
                assert_eq!(source, "karpenter");
                assert!(
                    message.starts_with("Failed to schedule pod, incompatible with nodepool"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_schedulers_failed_scheduling_is_no_autoscalers_word() {
        assert_eq!(verdict_of(&fixture("scheduler_failed_scheduling")), None);
        assert_eq!(latest(&[fixture("scheduler_failed_scheduling")]), None);
    }

    /// Events recorded with only `source.component` (older recorders), or only
    /// `reportingComponent` (events.k8s.io/v1).
    #[test]
    fn the_reporter_is_either_field() {
        let mut e = fixture("karpenter_failed_scheduling");
        e.reporting_component = None;
        assert!(matches!(verdict_of(&e), Some(Verdict::NoScaleUp { .. })));
        e.reporting_component = Some("karpenter".into());
        e.source = None;
        assert!(matches!(verdict_of(&e), Some(Verdict::NoScaleUp { .. })));
        e.reporting_component = Some(String::new());
        assert_eq!(verdict_of(&e), None);
    }

    #[test]
    fn the_latest_word_wins() {
        let up = at("triggered_scale_up", "2026-03-02T10:15:24Z");
        let no = at("not_trigger_scale_up", "2026-03-02T10:16:40Z");
        assert!(matches!(
            latest(&[up.clone(), no.clone()]),
            Some(Verdict::NoScaleUp { .. })
        ));
        // By time, not by the order shown.
        assert!(matches!(
            latest(&[no, up.clone()]),
            Some(Verdict::NoScaleUp { .. })
        ));
        // A later scheduler message changes nothing.
        let sched = fixture("scheduler_failed_scheduling");
        assert!(matches!(
            latest(&[up, sched]),
            Some(Verdict::ScalingUp { .. })
        ));
    }

    #[test]
    fn in_the_same_second_the_one_shown_last_wins() {
        let nominated = at("karpenter_nominated", "2026-03-02T10:15:23Z");
        let failed = at("karpenter_failed_scheduling", "2026-03-02T10:15:23Z");
        assert!(matches!(
            latest(&[nominated.clone(), failed.clone()]),
            Some(Verdict::NoScaleUp { .. })
        ));
        assert!(matches!(
            latest(&[failed, nominated]),
            Some(Verdict::ScalingUp { .. })
        ));
    }

    /// A series' last observation is when the event last happened.
    #[test]
    fn a_series_counts_from_its_last_observation() {
        let mut v: Value = serde_json::to_value(fixture("karpenter_failed_scheduling")).unwrap();
        for k in ["firstTimestamp", "lastTimestamp"] {
            v[k] = Value::Null;
        }
        v["eventTime"] = json!("2026-03-02T10:15:00.000000Z");
        v["series"] = json!({"count": 3, "lastObservedTime": "2026-03-02T10:17:00.000000Z"});
        v["metadata"]["creationTimestamp"] = json!("2026-03-02T10:15:00Z");
        let failed: CoreEvent = serde_json::from_value(v).unwrap();
        let nominated = at("karpenter_nominated", "2026-03-02T10:16:00Z");
        assert!(matches!(
            latest(&[failed, nominated]),
            Some(Verdict::NoScaleUp { .. })
        ));
    }

    #[test]
    fn unknown_and_malformed_events_say_nothing() {
        let e: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": "x"}, "involvedObject": {}
        }))
        .unwrap();
        assert_eq!(verdict_of(&e), None);
        let mut scheduled = fixture("triggered_scale_up");
        scheduled.reason = Some("Scheduled".into());
        assert_eq!(verdict_of(&scheduled), None);
        // A Nominated event of someone else's is not Karpenter's.
        let mut nominated = fixture("karpenter_nominated");
        nominated.reporting_component = Some("my-operator".into());
        nominated.message = Some("picked".into());
        assert_eq!(verdict_of(&nominated), None);
    }

    #[test]
    fn unschedulable_pods() {
        let waiting = |extra: Value| {
            let mut status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]});
            if let (Some(s), Some(e)) = (status.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": status}))
        };
        assert_eq!(
            unschedulable(&waiting(json!({}))),
            Some("0/3 nodes are available".into())
        );
        assert_eq!(
            unschedulable(&waiting(json!({"nominatedNodeName": "n1"}))),
            None
        );
        let bound = pod(json!({"metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Pending"}}));
        assert_eq!(unschedulable(&bound), None);
        let new = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}));
        assert_eq!(unschedulable(&new), None);
    }

    #[test]
    fn pod_events_follow_the_watch() {
        let uid = "7a8d1128-c62b-41e8-9f1f-066d51fa4852";
        let mut events = PodEvents::new(Some(uid.into()));
        let up = at("triggered_scale_up", "2026-03-02T10:15:24Z");
        events.apply(Event::Init);
        events.apply(Event::InitApply(up.clone()));
        assert_eq!(events.verdict(), None, "a list counts once it is done");
        events.apply(Event::InitDone);
        assert!(matches!(events.verdict(), Some(Verdict::ScalingUp { .. })));

        // An earlier pod's event of the same name is not this pod's.
        let mut other = at("not_trigger_scale_up", "2026-03-02T10:16:00Z");
        other.involved_object.uid = Some("0000".into());
        events.apply(Event::Apply(other));
        assert!(matches!(events.verdict(), Some(Verdict::ScalingUp { .. })));

        // The same event again (its count went up): once, and shown last.
        let nominated = at("karpenter_nominated", "2026-03-02T10:15:24Z");
        events.apply(Event::Apply(nominated.clone()));
        assert!(
            matches!(events.verdict(), Some(Verdict::ScalingUp { ref source, .. }) if source == "karpenter")
        );
        events.apply(Event::Apply(up.clone()));
        assert!(
            matches!(events.verdict(), Some(Verdict::ScalingUp { ref source, .. }) if source == "cluster-autoscaler")
        );
        assert_eq!(events.events.len(), 2);

        events.apply(Event::Delete(up));
        events.apply(Event::Delete(nominated));
        assert_eq!(events.verdict(), None);

        // A relist replaces what was shown.
        events.apply(Event::Apply(at(
            "karpenter_failed_scheduling",
            "2026-03-02T10:15:30Z",
        )));
        events.apply(Event::Init);
        events.apply(Event::InitDone);
        assert_eq!(events.verdict(), None);
    }

    /// Through the API server: the pod's watch shows it Unschedulable, the Events' list (of
    /// this pod's Events, from the watch cache) has the scale-up, and the timeout says so.
    #[tokio::test]
    async fn an_await_reads_the_pods_events_from_the_api_server() {
        use crate::api::client::connect_blocking;
        use crate::api::config::{ConnectOptions, Mode};
        use crate::test_server::{start, Conn, Reply};
        use crate::watch::await_pod::{await_pod, AwaitOptions, AwaitOutcome, Phase};
        use crate::watch::readiness::UnschedulablePolicy;
        use std::sync::Arc;
        use std::time::Duration;

        let pod = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "web-flame-x7k2p", "namespace": "prod",
                         "uid": "7a8d1128-c62b-41e8-9f1f-066d51fa4852",
                         "labels": {"excluster": "flame"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."}]}});
        let pods = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "481190"}, "items": [pod]})
        .to_string();
        let events = json!({"kind": "EventList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "481203"},
            "items": [fixture("scheduler_failed_scheduling"), fixture("triggered_scale_up")]})
        .to_string();
        let server = start(move |_| {
            let (pods, events) = (pods.clone(), events.clone());
            Conn::Serve(Arc::new(move |path: &str| {
                if path.contains("watch=true") {
                    Reply::Open
                } else if path.contains("/events") {
                    Reply::Json(events.clone())
                } else {
                    Reply::Json(pods.clone())
                }
            }))
        })
        .await;
        let options = ConnectOptions {
            mode: Some(Mode::Explicit),
            url: Some(server.url.clone()),
            request_timeout_ms: 5_000,
            max_concurrent_creates: 32,
            ..Default::default()
        };
        let h = connect_blocking(&options).unwrap();
        let outcome = await_pod(
            &h,
            &crate::watch::source::pod_watches(&h),
            "prod",
            "web-flame-x7k2p",
            Some("excluster=flame"),
            AwaitOptions {
                timeout: Duration::from_secs(1),
                unschedulable: UnschedulablePolicy::Wait,
                report_ready: false,
            },
            |_| {},
        )
        .await;
        match outcome {
            AwaitOutcome::Timeout {
                phase: Phase::ScalingUp,
                detail: Some(d),
                ..
            } => assert!(
                d.starts_with("cluster-autoscaler: pod triggered scale-up"),
                "{d}"
            ),
            other => panic!("{other:?}"),
        }
        let requests = server.requests();
        let list = requests
            .iter()
            .find(|r| r.contains("/api/v1/namespaces/prod/events?") && !r.contains("watch=true"))
            .unwrap_or_else(|| panic!("{requests:?}"));
        assert!(
            list.contains(
                "fieldSelector=involvedObject.kind%3DPod%2CinvolvedObject.name%3Dweb-flame-x7k2p"
            ),
            "{list}"
        );
        assert!(list.contains("resourceVersion=0&"), "{list}");
    }

    #[test]
    fn the_field_selector_names_the_pod() {
        assert_eq!(
            field_selector("web-flame-x7k2p"),
            "involvedObject.kind=Pod,involvedObject.name=web-flame-x7k2p"
        );
    }
}
