//! Wait for one pod until it is ready, fails, disappears, or the time is up.
//!
//! The updates come from a shared watch (`hub`); the classification of each state is
//! `readiness`'s. While the pod waits Unschedulable under `UnschedulablePolicy::Wait`, a watch
//! of its Events tells what an autoscaler does about it (`autoscaler`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::SelectorExt;
use kube::runtime::WatchStreamExt;
use serde_json::Value;
use tokio::time::Instant;

use super::autoscaler::{
    self, EventItem, EventSource, KubeEvents, PodEventStream, PodEvents, Verdict,
};
use super::hub::{Hub, Selection, Subscription, Update, WatchKey};
use crate::api::client::ClientHandle;
use crate::error::{is_retriable, Error};
use crate::watch::readiness::{
    classify, Classification, FailureReason, PendingPhase, UnschedulablePolicy,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AwaitOptions {
    pub timeout: Duration,
    pub unschedulable: UnschedulablePolicy,
    /// `false`: a ready pod is not the outcome; the first time it is ready the `on_running`
    /// callback gets it (once), and the watch goes on reporting failures (a container that
    /// exits, deletion) until cancelled or timed out (then `Phase::Running`).
    pub report_ready: bool,
}

/// The phase a timeout is reported in (`:scheduling`, `:container_start`, `:running`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), derive(rustler::NifUnitEnum))]
pub enum Phase {
    Scheduling,
    ContainerStart,
    /// The pod was ready when the time ran out (only with `report_ready: false`).
    Running,
    /// Unschedulable, and an autoscaler said it is adding a node for it (`:scaling_up`).
    ScalingUp,
}

impl From<PendingPhase> for Phase {
    fn from(p: PendingPhase) -> Self {
        match p {
            PendingPhase::Scheduling => Phase::Scheduling,
            PendingPhase::ContainerStart => Phase::ContainerStart,
        }
    }
}

/// The one result an await reports.
#[derive(Clone, Debug, PartialEq)]
pub enum AwaitOutcome {
    Ready(Value),
    Failed(FailureReason),
    Deleted(String),
    /// Kubernetes is taking the pod away (`runner_state::taken_away`): a new pod may boot.
    Disrupted(crate::watch::runner_state::Disruption),
    Timeout {
        phase: Phase,
        waited_ms: u64,
        detail: Option<String>,
    },
    Error(Error),
}

/// What we know so far, for the timeout report.
#[derive(Debug)]
struct Progress {
    phase: Phase,
    detail: Option<String>,
    /// The watch's trouble when the time ran out (it clears with its next successful event).
    transport_error: Option<String>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            phase: Phase::Scheduling,
            detail: None,
            transport_error: None,
        }
    }

    fn timeout(&self, waited: Duration) -> AwaitOutcome {
        AwaitOutcome::Timeout {
            phase: self.phase,
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            detail: self.transport_error.clone().or_else(|| self.detail.clone()),
        }
    }
}

/// How long an await whose pod the shared watch has not shown (or a list no longer showed)
/// waits for it before reading it once. The watch's lists come from the API server's cache
/// and may be behind, so they settle nothing: a pod created just before the list, or after it,
/// is normally shown within milliseconds by its own event. The read settles the rest: a pod
/// deleted before the watch showed it, or while it was away (gone), and a pod whose labels the
/// watch's selector does not match (an error: the watch would never show it). Long enough that
/// a watch lagging under a burst does not turn into a read per boot.
pub const CONFIRM_UNSEEN_AFTER: Duration = Duration::from_secs(5);

/// When a subscriber reads the pod the shared watch has not shown (`CONFIRM_UNSEEN_AFTER`),
/// for an await and a follow alike.
pub(crate) struct Confirm {
    delay: Duration,
    at: Option<Instant>,
}

/// What a read found.
pub(crate) enum Confirmed {
    Gone,
    /// In an `Arc`, as the watch's updates carry it: a pod is large.
    Pod(Arc<Pod>),
    /// Nothing: the read failed, and is due again later or, with no right to read, never.
    Unsettled,
}

impl Confirm {
    /// Due from the start when no list will prove the pod gone (`registered_after_a_list`).
    pub(crate) fn new(sub: &Subscription) -> Self {
        let delay = CONFIRM_UNSEEN_AFTER;
        Confirm {
            delay,
            at: sub
                .registered_after_a_list()
                .then(|| Instant::now() + delay),
        }
    }

    /// A list lacked the pod (`Update::Unlisted`): read it unless its own event comes first. A
    /// read already due keeps its time, so that repeated lists do not put it off.
    pub(crate) fn unlisted(&mut self) {
        let delay = self.delay;
        self.at.get_or_insert_with(|| Instant::now() + delay);
    }

    /// The watch (or the read) showed the pod: nothing to settle.
    pub(crate) fn seen(&mut self) {
        self.at = None;
    }

    /// Resolves when the read is due; never when none is.
    pub(crate) async fn due(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Reads the pod. A failed read is due again after twice the delay; one that may not read
    /// it never is (the watch needs no such right): the watch alone will have to tell.
    pub(crate) async fn read(&mut self, sub: &Subscription) -> Confirmed {
        match sub.get().await {
            Ok(None) => Confirmed::Gone,
            Ok(Some(pod)) => Confirmed::Pod(Arc::new(pod)),
            Err(e) if !is_retriable(&e) => {
                self.at = None;
                Confirmed::Unsettled
            }
            Err(_) => {
                self.delay = self.delay.saturating_mul(2);
                self.at = Some(Instant::now() + self.delay);
                Confirmed::Unsettled
            }
        }
    }
}

/// Watch `namespace/name` until a decisive event or `opts.timeout`. With a label selector (that
/// the pod matches) the watch is the one this client shares for that namespace and selector;
/// without, it watches this pod alone. With `opts.report_ready == false`, `on_running` is
/// called with the pod (as sent for `Ready`) the first time it is ready, at most once;
/// otherwise never.
pub async fn await_pod<F>(
    handle: &ClientHandle,
    watches: &Hub,
    namespace: &str,
    name: &str,
    label_selector: Option<&str>,
    opts: AwaitOptions,
    on_running: F,
) -> AwaitOutcome
where
    F: FnMut(&Value) + Send,
{
    let key = WatchKey::for_pod(namespace, name, label_selector);
    let events = KubeEvents::new(handle);
    let outcome = match watches.subscribe(key, name) {
        Ok(subscription) => {
            await_with_events(subscription, Some(&events), name, opts, on_running).await
        }
        Err(e) => AwaitOutcome::Error(e),
    };
    match outcome {
        AwaitOutcome::Error(e) => AwaitOutcome::Error(handle.scrub(e)),
        AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail,
        } => AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail: detail.map(|d| handle.redact(&d)),
        },
        other => other,
    }
}

/// The await over a subscription (unit-testable with synthetic watches), with no Events.
pub async fn await_subscription<F>(
    subscription: Subscription,
    name: &str,
    opts: AwaitOptions,
    on_running: F,
) -> AwaitOutcome
where
    F: FnMut(&Value),
{
    await_with_events(subscription, None, name, opts, on_running).await
}

/// The await over a subscription, with the pod's Events from `events` once it is seen
/// Unschedulable under `UnschedulablePolicy::Wait`.
pub async fn await_with_events<F>(
    mut subscription: Subscription,
    events: Option<&dyn EventSource>,
    name: &str,
    opts: AwaitOptions,
    on_running: F,
) -> AwaitOutcome
where
    F: FnMut(&Value),
{
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut autoscaling = Autoscaling::new(events);
    let watch = follow(
        &mut subscription,
        name,
        opts,
        &mut progress,
        &mut autoscaling,
        on_running,
    );
    match tokio::time::timeout(opts.timeout, watch).await {
        Ok(o) => o,
        Err(_elapsed) => {
            progress.transport_error = subscription.transport_error();
            progress.timeout(started.elapsed())
        }
    }
}

enum Next {
    Update(Option<Update>),
    Confirm,
    /// Boxed: an Event is large, and most items are pod updates.
    Events(Option<Box<EventItem>>),
}

/// What the pod's Events say about an autoscaler, for an await under
/// `UnschedulablePolicy::Wait`. Their watch starts the first time the pod is seen
/// Unschedulable (a boot that gets a node at once never opens it) and ends with the await, or
/// once the pod is bound. It is never started again: a watch refused (no `list` or `watch` on
/// `events`) leaves the await as it would be without it.
struct Autoscaling<'s> {
    source: Option<&'s dyn EventSource>,
    stream: Option<PodEventStream>,
    started: bool,
    events: PodEvents,
    /// The scheduler's message while the pod waits Unschedulable.
    unschedulable: Option<String>,
}

impl<'s> Autoscaling<'s> {
    fn new(source: Option<&'s dyn EventSource>) -> Self {
        Autoscaling {
            source,
            stream: None,
            started: false,
            events: PodEvents::default(),
            unschedulable: None,
        }
    }

    /// The pod's next Event, or never when none are watched.
    async fn next(&mut self) -> Option<EventItem> {
        match self.stream.as_mut() {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }

    /// A new state of the pod (after `step`, which set `progress` from it).
    fn on_pod(
        &mut self,
        pod: &Pod,
        namespace: &str,
        name: &str,
        opts: AwaitOptions,
        progress: &mut Progress,
    ) -> Option<AwaitOutcome> {
        if opts.unschedulable != UnschedulablePolicy::Wait {
            return None;
        }
        if progress.phase != Phase::Scheduling {
            // Bound to a node: nothing is left for an autoscaler to do.
            self.stream = None;
            self.unschedulable = None;
            return None;
        }
        self.unschedulable = autoscaler::unschedulable(pod);
        if self.unschedulable.is_some() && !self.started {
            self.started = true;
            if let Some(source) = self.source {
                self.events = PodEvents::new(pod.metadata.uid.clone());
                self.stream = Some(source.watch(namespace, name).default_backoff().boxed());
            }
        }
        self.judge(progress)
    }

    /// An item of the Events' watch.
    fn on_event(
        &mut self,
        item: Option<EventItem>,
        progress: &mut Progress,
    ) -> Option<AwaitOutcome> {
        match item {
            Some(Ok(event)) => {
                self.events.apply(event);
                self.judge(progress)
            }
            // Retried by the backoff (the pod's own watch reports the transport's trouble);
            // refused (403: no `list` or `watch` on `events`): no more to learn.
            Some(Err(e)) => {
                if !is_retriable(&Error::from(e)) {
                    self.stream = None;
                }
                None
            }
            None => {
                self.stream = None;
                None
            }
        }
    }

    /// While the pod waits Unschedulable: the autoscaler adding a node makes the phase
    /// `ScalingUp`; one that cannot help ends the await.
    fn judge(&self, progress: &mut Progress) -> Option<AwaitOutcome> {
        let scheduler = self.unschedulable.as_ref()?;
        match self.events.verdict()? {
            verdict @ Verdict::ScalingUp { .. } => {
                progress.phase = Phase::ScalingUp;
                progress.detail = Some(verdict.describe());
                None
            }
            Verdict::NoScaleUp { source, message } => {
                Some(AwaitOutcome::Failed(FailureReason::NoScaleUp {
                    source,
                    message,
                    scheduler: scheduler.clone(),
                }))
            }
        }
    }
}

async fn follow<F>(
    sub: &mut Subscription,
    name: &str,
    opts: AwaitOptions,
    progress: &mut Progress,
    autoscaling: &mut Autoscaling<'_>,
    mut on_running: F,
) -> AwaitOutcome
where
    F: FnMut(&Value),
{
    // `on_running` was called (at most once per await, even if the pod stops being ready and
    // becomes ready again).
    let mut running_reported = false;
    let mut confirm = Confirm::new(sub);
    loop {
        let next = tokio::select! {
            biased;
            u = sub.next() => Next::Update(u),
            e = autoscaling.next() => Next::Events(e.map(Box::new)),
            () = confirm.due() => Next::Confirm,
        };
        let pod = match next {
            Next::Events(item) => {
                if let Some(outcome) = autoscaling.on_event(item.map(|i| *i), progress) {
                    return outcome;
                }
                continue;
            }
            Next::Update(None) => {
                return AwaitOutcome::Error(Error::Internal("the shared watch ended".into()))
            }
            Next::Update(Some(Update::Failed(e))) => return AwaitOutcome::Error(e),
            Next::Update(Some(Update::Gone)) => return AwaitOutcome::Deleted(name.to_string()),
            // A list that lacks the pod proves nothing (see `hub`): its own event settles
            // it, or the read.
            Next::Update(Some(Update::Unlisted)) => {
                confirm.unlisted();
                continue;
            }
            Next::Update(Some(Update::Pod(pod))) => pod,
            Next::Confirm => match confirm.read(sub).await {
                Confirmed::Gone => return AwaitOutcome::Deleted(name.to_string()),
                Confirmed::Pod(pod) => {
                    if let Selection::Labels(selector) = &sub.key().selection {
                        let empty = Default::default();
                        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
                        // A selector not read here gets no verdict: the API server judges it.
                        let selected = super::selector::parse(selector).map(|s| s.matches(labels));
                        if selected == Ok(false) {
                            let ns = &sub.key().namespace;
                            return AwaitOutcome::Error(Error::Config(format!(
                                "pod {ns}/{name} does not match the await's label selector \
                                 {selector:?}: its watch cannot see it"
                            )));
                        }
                    }
                    pod
                }
                Confirmed::Unsettled => continue,
            },
        };
        confirm.seen();
        if let Some(outcome) = step(
            &pod,
            name,
            opts,
            progress,
            &mut running_reported,
            &mut on_running,
        ) {
            return outcome;
        }
        let namespace = &sub.key().namespace;
        if let Some(outcome) = autoscaling.on_pod(&pod, namespace, name, opts, progress) {
            return outcome;
        }
    }
}

/// One state of the pod: the outcome if it is decisive, else the progress it shows.
fn step<F>(
    pod: &Pod,
    name: &str,
    opts: AwaitOptions,
    progress: &mut Progress,
    running_reported: &mut bool,
    on_running: &mut F,
) -> Option<AwaitOutcome>
where
    F: FnMut(&Value),
{
    // Before `classify`, which reads such a pod as deleted or failed like any other.
    if let Some(d) = crate::watch::runner_state::taken_away(pod) {
        return Some(AwaitOutcome::Disrupted(d));
    }
    match classify(pod, opts.unschedulable) {
        Classification::Ready if !opts.report_ready => {
            if !*running_reported {
                match serde_json::to_value(pod) {
                    Ok(v) => on_running(&v),
                    Err(e) => return Some(AwaitOutcome::Error(Error::Decode(format!("pod: {e}")))),
                }
                *running_reported = true;
            }
            progress.phase = Phase::Running;
            progress.detail = None;
            None
        }
        Classification::Ready => Some(match serde_json::to_value(pod) {
            Ok(v) => AwaitOutcome::Ready(v),
            Err(e) => AwaitOutcome::Error(Error::Decode(format!("pod: {e}"))),
        }),
        Classification::Failed(reason) => Some(AwaitOutcome::Failed(reason)),
        Classification::Deleted => Some(AwaitOutcome::Deleted(name.to_string())),
        Classification::Pending { phase, detail } => {
            progress.phase = phase.into();
            progress.detail = detail;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::hub::tests::{channel, unlisted_at_start, Script};
    use crate::watch::hub::{EventStream, Hub};
    use crate::watch::test_support::{held_while_alive, pod, runner_key as key};
    use futures::{stream, Stream, StreamExt};
    use kube::core::Status;
    use kube::runtime::watcher::{self, Event};
    use serde_json::json;
    use std::sync::atomic::Ordering;

    /// One await alone on a watch that yields `stream`.
    async fn await_on_stream<S, F>(
        stream: S,
        name: &str,
        opts: AwaitOptions,
        on_running: F,
    ) -> AwaitOutcome
    where
        S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
        F: FnMut(&Value),
    {
        let hub = Hub::new(Script::new(vec![stream.boxed()]));
        let sub = hub.subscribe(key(), name).unwrap();
        await_subscription(sub, name, opts, on_running).await
    }

    fn pending_unbound() -> Pod {
        pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Pending"}}),
        )
    }

    fn creating() -> Pod {
        pod(json!({"metadata": {"name": "p"},
                   "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i",
                     "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"waiting": {"reason": "ContainerCreating"}}}]}}))
    }

    fn ready() -> Pod {
        pod(json!({"metadata": {"name": "p"},
                   "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Running", "podIP": "127.0.0.5", "containerStatuses": [{"name": "c",
                     "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                     "state": {"running": {}}}]}}))
    }

    fn unschedulable() -> Pod {
        pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                     "status": "False", "reason": "Unschedulable", "message": "no nodes"}]}}),
        )
    }

    fn opts(ms: u64, unschedulable: UnschedulablePolicy) -> AwaitOptions {
        AwaitOptions {
            timeout: Duration::from_millis(ms),
            unschedulable,
            report_ready: true,
        }
    }

    fn quiet(ms: u64) -> AwaitOptions {
        AwaitOptions {
            report_ready: false,
            ..opts(ms, UnschedulablePolicy::Fail)
        }
    }

    fn exited() -> Pod {
        pod(json!({"metadata": {"name": "p"},
                   "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Failed", "podIP": "127.0.0.5", "containerStatuses": [{"name": "c",
                     "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}))
    }

    /// For `report_ready: true`: the interim callback must never be called.
    fn never(pod: &Value) {
        panic!("on_running called with report_ready: true: {pod}");
    }

    /// Records every `on_running` call: the pod's IP and when (ms since `t0`, paused clock).
    #[derive(Clone, Default)]
    struct Calls(std::sync::Arc<std::sync::Mutex<Vec<(Value, u64)>>>);

    impl Calls {
        fn callback(&self, t0: Instant) -> impl FnMut(&Value) {
            let calls = self.0.clone();
            move |pod: &Value| {
                let at = u64::try_from(t0.elapsed().as_millis()).unwrap();
                calls
                    .lock()
                    .unwrap()
                    .push((pod["status"]["podIP"].clone(), at));
            }
        }

        fn get(&self) -> Vec<(Value, u64)> {
            self.0.lock().unwrap().clone()
        }
    }

    /// Events each delivered after its delay (from the previous one), then silence.
    fn timed(
        items: Vec<(u64, Result<Event<Pod>, watcher::Error>)>,
    ) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> {
        stream::iter(items)
            .then(|(ms, ev)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ev
            })
            .chain(stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_a_ready_pod_times_out_as_running() {
        let s = timed(vec![
            (0, Ok(Event::Init)),
            (0, Ok(Event::InitApply(creating()))),
            (0, Ok(Event::InitDone)),
            (100, Ok(Event::Apply(ready()))),
        ]);
        let calls = Calls::default();
        assert_eq!(
            await_on_stream(s, "p", quiet(700), calls.callback(Instant::now())).await,
            AwaitOutcome::Timeout {
                phase: Phase::Running,
                waited_ms: 700,
                detail: None
            }
        );
        // Reported when the pod became ready, not at the end.
        assert_eq!(calls.get(), vec![(json!("127.0.0.5"), 100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_running_is_reported_once() {
        // Ready in the list, again in updates, not ready (a readiness probe failing), ready again.
        let s = timed(vec![
            (0, Ok(Event::Init)),
            (0, Ok(Event::InitApply(ready()))),
            (0, Ok(Event::InitDone)),
            (50, Ok(Event::Apply(ready()))),
            (50, Ok(Event::Apply(creating()))),
            (50, Ok(Event::Apply(ready()))),
            // A relist after a dropped watch replays the ready pod.
            (50, Ok(Event::Init)),
            (0, Ok(Event::InitApply(ready()))),
            (0, Ok(Event::InitDone)),
        ]);
        let calls = Calls::default();
        assert_eq!(
            await_on_stream(s, "p", quiet(1000), calls.callback(Instant::now())).await,
            AwaitOutcome::Timeout {
                phase: Phase::Running,
                waited_ms: 1000,
                detail: None
            }
        );
        assert_eq!(calls.get(), vec![(json!("127.0.0.5"), 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_a_pod_never_ready_is_not_reported_running() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(creating())),
            Ok(Event::InitDone),
        ]);
        let calls = Calls::default();
        assert_eq!(
            await_on_stream(s, "p", quiet(500), calls.callback(Instant::now())).await,
            AwaitOutcome::Timeout {
                phase: Phase::ContainerStart,
                waited_ms: 500,
                detail: Some("ContainerCreating".into())
            }
        );
        assert_eq!(calls.get(), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_failures_after_ready_are_reported() {
        let s = timed(vec![
            (0, Ok(Event::Init)),
            (0, Ok(Event::InitApply(creating()))),
            (0, Ok(Event::InitDone)),
            (200, Ok(Event::Apply(ready()))),
            (150, Ok(Event::Apply(exited()))),
        ]);
        let calls = Calls::default();
        let t0 = Instant::now();
        assert!(matches!(
            await_on_stream(s, "p", quiet(10_000), calls.callback(t0)).await,
            AwaitOutcome::Failed(FailureReason::ContainerExited { exit_code: 1, .. })
        ));
        assert_eq!(t0.elapsed().as_millis(), 350);
        assert_eq!(calls.get(), vec![(json!("127.0.0.5"), 200)]);

        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(ready())),
            Ok(Event::InitDone),
            Ok(Event::Delete(ready())),
        ]);
        let calls = Calls::default();
        assert_eq!(
            await_on_stream(s, "p", quiet(10_000), calls.callback(Instant::now())).await,
            AwaitOutcome::Deleted("p".into())
        );
        assert_eq!(calls.get(), vec![(json!("127.0.0.5"), 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn with_report_ready_the_callback_is_never_called() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(ready())),
            Ok(Event::InitDone),
            Ok(Event::Apply(ready())),
        ]);
        let calls = Calls::default();
        let o = opts(1000, UnschedulablePolicy::Fail);
        assert!(matches!(
            await_on_stream(s, "p", o, calls.callback(Instant::now())).await,
            AwaitOutcome::Ready(_)
        ));
        assert_eq!(calls.get(), vec![]);
    }

    fn api_err(code: u16) -> watcher::Error {
        let mut s = Status::failure(
            "pods is forbidden: User \"u\" cannot watch resource \"pods\"",
            "Forbidden",
        );
        s.code = code;
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(s)))
    }

    fn transport_err() -> watcher::Error {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        watcher::Error::InitialListFailed(kube::Error::Service(Box::new(io)))
    }

    /// A finite stream of events followed by silence (a quiet watch).
    fn events(
        items: Vec<Result<Event<Pod>, watcher::Error>>,
    ) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> {
        stream::iter(items).chain(stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn ready_after_progress() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pending_unbound())),
            Ok(Event::InitDone),
            Ok(Event::Apply(creating())),
            Ok(Event::Apply(ready())),
        ]);
        match await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail), never).await {
            AwaitOutcome::Ready(v) => {
                assert_eq!(v["status"]["podIP"], "127.0.0.5");
                assert_eq!(v["kind"], "Pod");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A pod missing from the watch's first list: the list (from the API server's cache) may
    /// be behind, so the pod is read once, after `CONFIRM_UNSEEN_AFTER`: not found is deleted.
    #[tokio::test(start_paused = true)]
    async fn missing_at_start_is_read_once_and_deleted() {
        let (script, sub) = unlisted_at_start();
        let t0 = Instant::now();
        assert_eq!(
            await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Deleted("p".into())
        );
        assert_eq!(t0.elapsed(), CONFIRM_UNSEEN_AFTER);
        assert_eq!(script.gets.load(Ordering::SeqCst), 1);
    }

    /// A list from a cache that has not seen the pod yet: the pod's own event comes from the
    /// watch soon after, and no read is needed.
    #[tokio::test(start_paused = true)]
    async fn a_pod_the_list_missed_is_shown_by_its_event_without_a_read() {
        let (tx, s) = channel();
        let script = Script::new(vec![s]);
        let hub = Hub::new(script.clone());
        let sub = hub.subscribe(key(), "p").unwrap();
        let feed = async move {
            tx.unbounded_send(Ok(Event::Init)).unwrap();
            tx.unbounded_send(Ok(Event::InitDone)).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.unbounded_send(Ok(Event::Apply(ready()))).unwrap();
            tx
        };
        let (r, _tx) = tokio::join!(
            await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never),
            feed
        );
        assert!(matches!(r, AwaitOutcome::Ready(_)), "{r:?}");
        assert_eq!(script.gets.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delete_event_is_deleted() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(creating())),
            Ok(Event::InitDone),
            Ok(Event::Delete(creating())),
        ]);
        assert_eq!(
            await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Deleted("p".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forbidden_ends_at_once() {
        let s = events(vec![Err(api_err(403))]);
        match await_on_stream(s, "p", opts(60_000, UnschedulablePolicy::Fail), never).await {
            AwaitOutcome::Error(Error::Api {
                code: 403, message, ..
            }) => {
                assert!(message.contains("cannot watch"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transport_errors_are_retried_and_reported_on_timeout() {
        let s = stream::repeat_with(|| Err(transport_err()));
        match await_on_stream(s, "p", opts(3000, UnschedulablePolicy::Fail), never).await {
            AwaitOutcome::Timeout {
                phase: Phase::Scheduling,
                waited_ms,
                detail: Some(d),
            } => {
                assert_eq!(d, "Connection refused");
                assert!(waited_ms >= 3000, "{waited_ms}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recovers_after_transport_errors() {
        let s = events(vec![
            Err(transport_err()),
            Err(transport_err()),
            Ok(Event::Init),
            Ok(Event::InitApply(ready())),
        ]);
        assert!(matches!(
            await_on_stream(s, "p", opts(10_000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Ready(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_in_container_start_reports_waiting_reason() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(creating())),
            Ok(Event::InitDone),
        ]);
        assert_eq!(
            await_on_stream(s, "p", opts(500, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Timeout {
                phase: Phase::ContainerStart,
                waited_ms: 500,
                detail: Some("ContainerCreating".into())
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_fail_or_wait() {
        let evs = || {
            events(vec![
                Ok(Event::Init),
                Ok(Event::InitApply(unschedulable())),
                Ok(Event::InitDone),
            ])
        };
        assert_eq!(
            await_on_stream(evs(), "p", opts(500, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Failed(FailureReason::Unschedulable("no nodes".into()))
        );
        assert_eq!(
            await_on_stream(evs(), "p", opts(500, UnschedulablePolicy::Wait), never).await,
            AwaitOutcome::Timeout {
                phase: Phase::Scheduling,
                waited_ms: 500,
                detail: Some("no nodes".into())
            }
        );
    }

    /// Events watches a test hands out: one stream per watch started, counted, and whether
    /// the last one is still held (not dropped).
    #[derive(Default)]
    struct Events {
        streams: std::sync::Mutex<Vec<PodEventStream>>,
        watched: std::sync::Mutex<Vec<(String, String)>>,
        held: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Events {
        fn new(streams: Vec<PodEventStream>) -> Self {
            let mut streams = streams;
            streams.reverse();
            Events {
                streams: std::sync::Mutex::new(streams),
                ..Default::default()
            }
        }

        fn watched(&self) -> Vec<(String, String)> {
            self.watched.lock().unwrap().clone()
        }
    }

    impl EventSource for Events {
        fn watch(&self, namespace: &str, name: &str) -> PodEventStream {
            self.watched
                .lock()
                .unwrap()
                .push((namespace.to_string(), name.to_string()));
            let s = self
                .streams
                .lock()
                .unwrap()
                .pop()
                .unwrap_or_else(|| stream::pending().boxed());
            held_while_alive(s, self.held.clone())
        }
    }

    type CoreEvent = k8s_openapi::api::core::v1::Event;
    type EventEvent = Event<CoreEvent>;

    fn event(name: &str) -> CoreEvent {
        let path = format!(
            "{}/tests/fixtures/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// Pod events each delivered after its delay (ms from the previous one), then silence.
    fn timed_events(items: Vec<(u64, Result<EventEvent, watcher::Error>)>) -> PodEventStream {
        stream::iter(items)
            .then(|(ms, ev)| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ev
            })
            .chain(stream::pending())
            .boxed()
    }

    /// A list of `events` after `ms`.
    fn listed(ms: u64, events: Vec<CoreEvent>) -> Vec<(u64, Result<EventEvent, watcher::Error>)> {
        let mut items = vec![(ms, Ok(Event::Init))];
        items.extend(events.into_iter().map(|e| (0, Ok(Event::InitApply(e)))));
        items.push((0, Ok(Event::InitDone)));
        items
    }

    fn with_uid(mut p: Pod) -> Pod {
        p.metadata.uid = Some("7a8d1128-c62b-41e8-9f1f-066d51fa4852".into());
        p
    }

    fn unschedulable_with(message: &str) -> Pod {
        let mut p = with_uid(unschedulable());
        if let Some(c) = p
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|c| c.first_mut())
        {
            c.message = Some(message.into());
        }
        p
    }

    /// One await under `policy` on a pod watch yielding `pods` (delays in ms), with `events`.
    async fn await_with(
        pods: Vec<(u64, Result<Event<Pod>, watcher::Error>)>,
        events: &Events,
        policy: UnschedulablePolicy,
        timeout_ms: u64,
    ) -> AwaitOutcome {
        let hub = Hub::new(Script::new(vec![timed(pods).boxed()]));
        let sub = hub.subscribe(key(), "p").unwrap();
        let o = opts(timeout_ms, policy);
        await_with_events(sub, Some(events), "p", o, never).await
    }

    fn listed_unschedulable() -> Vec<(u64, Result<Event<Pod>, watcher::Error>)> {
        vec![
            (0, Ok(Event::Init)),
            (0, Ok(Event::InitApply(with_uid(pending_unbound())))),
            (0, Ok(Event::InitDone)),
            (10, Ok(Event::Apply(with_uid(unschedulable())))),
        ]
    }

    /// One await under `Wait` of a pod the scheduler leaves Unschedulable, with `events`.
    async fn await_unschedulable(events: &Events, timeout_ms: u64) -> AwaitOutcome {
        let pods = listed_unschedulable();
        await_with(pods, events, UnschedulablePolicy::Wait, timeout_ms).await
    }

    /// Events whose one watch lists `events` at once, then is silent.
    fn listing(events: Vec<CoreEvent>) -> Events {
        Events::new(vec![timed_events(listed(0, events))])
    }

    const TRIGGERED: &str = "cluster-autoscaler: pod triggered scale-up: [{eks-runners-2ac4b5e1-7d1f-9a3c-8e55-0b6d4f2c1a97 0->1 (max: 5)}]";

    #[tokio::test(start_paused = true)]
    async fn a_scale_up_under_way_is_the_phase_a_timeout_reports() {
        let events = Events::new(vec![timed_events(listed(
            50,
            vec![
                event("scheduler_failed_scheduling"),
                event("triggered_scale_up"),
            ],
        ))]);
        let r = await_unschedulable(&events, 5_000).await;
        assert_eq!(
            r,
            AwaitOutcome::Timeout {
                phase: Phase::ScalingUp,
                waited_ms: 5_000,
                detail: Some(TRIGGERED.into())
            }
        );
        // Started once the pod was seen Unschedulable, for this pod alone.
        assert_eq!(events.watched(), vec![("ns".to_string(), "p".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn karpenters_nomination_is_a_scale_up() {
        let events = listing(vec![event("karpenter_nominated")]);
        match await_unschedulable(&events, 2_000).await {
            AwaitOutcome::Timeout {
                phase: Phase::ScalingUp,
                detail: Some(d),
                ..
            } => assert_eq!(
                d,
                "karpenter: Pod should schedule on: nodeclaim/default-cvkcv"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// No scale-up can help: the await ends when the event comes, not at its timeout.
    #[tokio::test(start_paused = true)]
    async fn no_scale_up_ends_the_await_at_once_with_the_autoscalers_message() {
        let mut items = listed(0, vec![]);
        items.push((300, Ok(Event::Apply(event("not_trigger_scale_up")))));
        let events = Events::new(vec![timed_events(items)]);
        let t0 = Instant::now();
        let r = await_unschedulable(&events, 60_000).await;
        assert_eq!(
            r,
            AwaitOutcome::Failed(FailureReason::NoScaleUp {
                source: "cluster-autoscaler".into(),
                message: "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector, 2 max node group size reached".into(),
                scheduler: "no nodes".into(),
            })
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(310));
        assert!(
            !events.held.load(Ordering::SeqCst),
            "the events' watch ended with the await"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn karpenters_failed_scheduling_ends_the_await() {
        let events = listing(vec![event("karpenter_failed_scheduling")]);
        match await_unschedulable(&events, 60_000).await {
            AwaitOutcome::Failed(FailureReason::NoScaleUp {
                source, message, ..
            }) => {
                assert_eq!(source, "karpenter");
                assert!(message.contains("incompatible with nodepool"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A new Unschedulable message with no new autoscaler event keeps `ScalingUp`; a later
    /// `NotTriggerScaleUp` (a failed scale-up backing off) ends the await.
    #[tokio::test(start_paused = true)]
    async fn the_last_word_of_the_autoscaler_counts() {
        // The pod seen Unschedulable at 10 ms, again with another message at 1010 ms; the
        // scale-up listed at once, the autoscaler giving up at 5010 ms.
        let scenario = || {
            let mut pods = listed_unschedulable();
            pods.push((
                1_000,
                Ok(Event::Apply(unschedulable_with("0/4 nodes are available"))),
            ));
            let mut later = event("not_trigger_scale_up");
            later.last_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-03-02T10:25:00Z".parse().unwrap(),
            ));
            let mut items = listed(0, vec![event("triggered_scale_up")]);
            items.push((5_000, Ok(Event::Apply(later))));
            (pods, Events::new(vec![timed_events(items)]))
        };
        let (pods, events) = scenario();
        assert_eq!(
            await_with(pods, &events, UnschedulablePolicy::Wait, 3_000).await,
            AwaitOutcome::Timeout {
                phase: Phase::ScalingUp,
                waited_ms: 3_000,
                detail: Some(TRIGGERED.into())
            }
        );
        let (pods, events) = scenario();
        let t0 = Instant::now();
        let r = await_with(pods, &events, UnschedulablePolicy::Wait, 60_000).await;
        assert!(
            matches!(&r, AwaitOutcome::Failed(FailureReason::NoScaleUp { scheduler, .. }) if scheduler == "0/4 nodes are available"),
            "{r:?}"
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(5_010));
    }

    /// A pod bound to a node ends the events' watch: a `NotTriggerScaleUp` for it after that is
    /// history, and the pod goes on to be ready.
    #[tokio::test(start_paused = true)]
    async fn a_scale_up_that_lands_boots() {
        let mut pods = listed_unschedulable();
        pods.push((2_000, Ok(Event::Apply(with_uid(creating())))));
        pods.push((500, Ok(Event::Apply(with_uid(ready())))));
        let mut items = listed(0, vec![event("triggered_scale_up")]);
        items.push((2_200, Ok(Event::Apply(event("not_trigger_scale_up")))));
        let events = Events::new(vec![timed_events(items)]);
        let r = await_with(pods, &events, UnschedulablePolicy::Wait, 60_000).await;
        assert!(matches!(r, AwaitOutcome::Ready(_)), "{r:?}");
        assert_eq!(events.watched().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_events_watch_ends_once_the_pod_is_bound() {
        let mut pods = listed_unschedulable();
        pods.push((100, Ok(Event::Apply(with_uid(creating())))));
        let events = listing(vec![]);
        let hub = Hub::new(Script::new(vec![timed(pods).boxed()]));
        let sub = hub.subscribe(key(), "p").unwrap();
        let held = events.held.clone();
        let o = opts(1_000, UnschedulablePolicy::Wait);
        let probe = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let during = held.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            (during, held.load(Ordering::SeqCst))
        };
        let (r, (during, after)) =
            tokio::join!(await_with_events(sub, Some(&events), "p", o, never), probe);
        assert_eq!(
            r,
            AwaitOutcome::Timeout {
                phase: Phase::ContainerStart,
                waited_ms: 1_000,
                detail: Some("ContainerCreating".into())
            }
        );
        assert!(
            during && !after,
            "held while unschedulable: {during}, after bound: {after}"
        );
    }

    /// No Events are watched for a pod that never waits Unschedulable, nor under `Fail`.
    #[tokio::test(start_paused = true)]
    async fn no_events_are_watched_on_the_happy_path_or_under_fail() {
        let events = Events::new(vec![]);
        let pods = vec![
            (0, Ok(Event::Init)),
            (0, Ok(Event::InitApply(pending_unbound()))),
            (0, Ok(Event::InitDone)),
            (10, Ok(Event::Apply(creating()))),
            (10, Ok(Event::Apply(ready()))),
        ];
        let r = await_with(pods, &events, UnschedulablePolicy::Wait, 1_000).await;
        assert!(matches!(r, AwaitOutcome::Ready(_)), "{r:?}");
        let r = await_with(
            listed_unschedulable(),
            &events,
            UnschedulablePolicy::Fail,
            1_000,
        )
        .await;
        assert_eq!(
            r,
            AwaitOutcome::Failed(FailureReason::Unschedulable("no nodes".into()))
        );
        assert_eq!(events.watched(), vec![]);
    }

    /// Events the parent may not list or watch: the await goes on as without them (a timeout
    /// at `Scheduling` with the scheduler's message), and their watch is not tried again.
    #[tokio::test(start_paused = true)]
    async fn a_refused_events_watch_leaves_the_await_as_it_was() {
        let mut pods = listed_unschedulable();
        pods.push((500, Ok(Event::Apply(unschedulable_with("still no nodes")))));
        let events = Events::new(vec![timed_events(vec![(0, Err(api_err(403)))])]);
        let r = await_with(pods, &events, UnschedulablePolicy::Wait, 2_000).await;
        assert_eq!(
            r,
            AwaitOutcome::Timeout {
                phase: Phase::Scheduling,
                waited_ms: 2_000,
                detail: Some("still no nodes".into())
            }
        );
        assert_eq!(events.watched().len(), 1);
        assert!(!events.held.load(Ordering::SeqCst));
    }

    /// A watch of the Events that fails for a while (connection refused) is retried with
    /// backoff and then tells.
    #[tokio::test(start_paused = true)]
    async fn a_failing_events_watch_is_retried() {
        let mut items = vec![(0, Err(transport_err())), (0, Err(transport_err()))];
        items.extend(listed(0, vec![event("triggered_scale_up")]));
        let events = Events::new(vec![timed_events(items)]);
        match await_unschedulable(&events, 30_000).await {
            AwaitOutcome::Timeout {
                phase: Phase::ScalingUp,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    /// An event about an earlier pod of the same name says nothing about this one.
    #[tokio::test(start_paused = true)]
    async fn another_pods_events_are_not_this_ones() {
        let mut old = event("not_trigger_scale_up");
        old.involved_object.uid = Some("0b1e0d2c-0000-4000-8000-000000000000".into());
        let events = listing(vec![old]);
        let r = await_unschedulable(&events, 1_000).await;
        assert_eq!(
            r,
            AwaitOutcome::Timeout {
                phase: Phase::Scheduling,
                waited_ms: 1_000,
                detail: Some("no nodes".into())
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gone_after_relist() {
        // 410 Gone is retried; the relist no longer contains the pod: read, not found.
        let mut gone = Status::failure("too old resource version", "Expired");
        gone.code = 410;
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(creating())),
            Ok(Event::InitDone),
            Err(watcher::Error::WatchError(Box::new(gone))),
            Ok(Event::Init),
            Ok(Event::InitDone),
        ]);
        assert_eq!(
            await_on_stream(s, "p", opts(10_000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Deleted("p".into())
        );
    }

    /// A relist from a cache behind the watch (another API server, say) that lacks a pod the
    /// watch has shown: the read finds it, and the await goes on.
    #[tokio::test(start_paused = true)]
    async fn a_pod_a_stale_relist_lacks_is_read_and_watched_on() {
        let (tx, s) = channel();
        let listed = named(creating(), "p", &[("app", "runner")]);
        let script = Script::with_answers(vec![s], vec![Ok(Some(listed))]);
        let hub = Hub::new(script.clone());
        let sub = hub.subscribe(key(), "p").unwrap();
        let feed = async move {
            tx.unbounded_send(Ok(Event::Init)).unwrap();
            tx.unbounded_send(Ok(Event::InitApply(creating()))).unwrap();
            tx.unbounded_send(Ok(Event::InitDone)).unwrap();
            tx.unbounded_send(Ok(Event::Init)).unwrap();
            tx.unbounded_send(Ok(Event::InitDone)).unwrap();
            tokio::time::sleep(CONFIRM_UNSEEN_AFTER * 2).await;
            tx.unbounded_send(Ok(Event::Apply(ready()))).unwrap();
            tx
        };
        let (r, _tx) = tokio::join!(
            await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never),
            feed
        );
        assert!(matches!(r, AwaitOutcome::Ready(_)), "{r:?}");
        assert_eq!(script.gets.load(Ordering::SeqCst), 1);
    }

    fn named(mut p: Pod, name: &str, labels: &[(&str, &str)]) -> Pod {
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        );
        p
    }

    /// A hub whose watch has listed (`other` keeps it running), and the await of pod `p`
    /// subscribed after that list: only `p`'s own events, or the read, can settle it.
    async fn after_a_list(
        answers: Vec<Result<Option<Pod>, Error>>,
    ) -> (
        Arc<Script>,
        Hub,
        crate::watch::hub::tests::Tx,
        Subscription,
        Subscription,
    ) {
        let (tx, s) = channel();
        let script = Script::with_answers(vec![s], answers);
        let hub = Hub::new(script.clone());
        let other = hub.subscribe(key(), "other").unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let sub = hub.subscribe(key(), "p").unwrap();
        assert!(sub.registered_after_a_list());
        (script, hub, tx, other, sub)
    }

    #[tokio::test(start_paused = true)]
    async fn two_awaits_share_one_watch_and_get_their_own_results() {
        let (tx, s) = channel();
        let script = Script::new(vec![s]);
        let hub = Hub::new(script.clone());
        let a = hub.subscribe(key(), "a").unwrap();
        let b = hub.subscribe(key(), "b").unwrap();
        let feed = async move {
            for ev in [
                Event::Init,
                Event::InitApply(named(creating(), "a", &[])),
                Event::InitApply(named(pending_unbound(), "b", &[])),
                Event::InitDone,
                Event::Apply(named(ready(), "a", &[])),
                Event::Apply(named(unschedulable(), "b", &[])),
            ] {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.unbounded_send(Ok(ev)).unwrap();
            }
            tx
        };
        let o = opts(1000, UnschedulablePolicy::Fail);
        let (ra, rb, _tx) = tokio::join!(
            await_subscription(a, "a", o, never),
            await_subscription(b, "b", o, never),
            feed
        );
        assert!(
            matches!(ra, AwaitOutcome::Ready(ref v) if v["metadata"]["name"] == "a"),
            "{ra:?}"
        );
        assert_eq!(
            rb,
            AwaitOutcome::Failed(FailureReason::Unschedulable("no nodes".into()))
        );
        assert_eq!(script.opened.load(Ordering::SeqCst), 1);
        // Both awaits are over: the watch stopped.
        assert_eq!(hub.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_shown_in_time_needs_no_read() {
        let (script, _hub, tx, _other, sub) = after_a_list(vec![]).await;
        let feed = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.unbounded_send(Ok(Event::Apply(named(ready(), "p", &[]))))
                .unwrap();
            tx
        };
        let (r, _tx) = tokio::join!(
            await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never),
            feed
        );
        assert!(matches!(r, AwaitOutcome::Ready(_)), "{r:?}");
        assert_eq!(script.gets.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_never_shown_is_read_once_and_reported_gone() {
        let (script, _hub, _tx, _other, sub) = after_a_list(vec![Ok(None)]).await;
        let t0 = Instant::now();
        assert_eq!(
            await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Deleted("p".into())
        );
        assert_eq!(t0.elapsed(), CONFIRM_UNSEEN_AFTER);
        assert_eq!(script.gets.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_read_but_not_selected_is_an_error_naming_the_selector() {
        let stray = named(creating(), "p", &[("app", "other")]);
        let (_script, _hub, _tx, _other, sub) = after_a_list(vec![Ok(Some(stray))]).await;
        match await_subscription(sub, "p", opts(60_000, UnschedulablePolicy::Fail), never).await {
            AwaitOutcome::Error(Error::Config(m)) => {
                assert!(m.contains("ns/p") && m.contains("app=runner"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_read_and_selected_is_classified_and_watched_on() {
        let found = named(creating(), "p", &[("app", "runner")]);
        let refused = Error::Connect("refused".into());
        let (script, _hub, tx, _other, sub) =
            after_a_list(vec![Err(refused), Ok(Some(found))]).await;
        let feed = async move {
            // After the failed read (5 s) and the second one (10 s later).
            tokio::time::sleep(Duration::from_secs(20)).await;
            tx.unbounded_send(Ok(Event::Apply(named(exited(), "p", &[("app", "runner")]))))
                .unwrap();
            tx
        };
        let t0 = Instant::now();
        let (r, _tx) = tokio::join!(await_subscription(sub, "p", quiet(60_000), never), feed);
        assert!(
            matches!(
                r,
                AwaitOutcome::Failed(FailureReason::ContainerExited { exit_code: 1, .. })
            ),
            "{r:?}"
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(20));
        assert_eq!(script.gets.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_read_in_time_out_reports_its_phase() {
        let found = named(creating(), "p", &[("app", "runner")]);
        let (_script, _hub, _tx, _other, sub) = after_a_list(vec![Ok(Some(found))]).await;
        assert_eq!(
            await_subscription(sub, "p", opts(8_000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Timeout {
                phase: Phase::ContainerStart,
                waited_ms: 8_000,
                detail: Some("ContainerCreating".into())
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_await_that_ends_leaves_the_watch_to_the_others() {
        let (tx, s): (_, EventStream) = channel();
        let script = Script::new(vec![s]);
        let hub = Hub::new(script.clone());
        let a = hub.subscribe(key(), "a").unwrap();
        let b = hub.subscribe(key(), "b").unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitApply(named(ready(), "a", &[]))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitApply(named(creating(), "b", &[]))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        let o = opts(1000, UnschedulablePolicy::Fail);
        assert!(matches!(
            await_subscription(a, "a", o, never).await,
            AwaitOutcome::Ready(_)
        ));
        assert_eq!(hub.open(), 1);
        assert!(script.held.load(Ordering::SeqCst));
        tx.unbounded_send(Ok(Event::Delete(named(creating(), "b", &[]))))
            .unwrap();
        assert_eq!(
            await_subscription(b, "b", o, never).await,
            AwaitOutcome::Deleted("b".into())
        );
        assert_eq!(hub.open(), 0);
    }

    /// A pod Kubernetes takes away before the boot is done is `Disrupted` (a new pod may help),
    /// unlike one deleted by someone or one that failed on its own.
    #[tokio::test(start_paused = true)]
    async fn a_pod_kubernetes_takes_away_is_disrupted() {
        let mut evicted = serde_json::to_value(creating()).unwrap();
        evicted["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]);
        let mut deleted = evicted.clone();
        deleted["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut failed = serde_json::to_value(creating()).unwrap();
        failed["status"]["phase"] = json!("Failed");
        failed["status"]["reason"] = json!("Preempting");
        let expected = |reason: &str, message: Option<&str>| {
            AwaitOutcome::Disrupted(crate::watch::runner_state::Disruption {
                reason: reason.into(),
                message: message.map(Into::into),
            })
        };
        for (p, outcome) in [
            (
                evicted,
                expected("EvictionByEvictionAPI", Some("Eviction API: evicting")),
            ),
            (
                deleted,
                expected("EvictionByEvictionAPI", Some("Eviction API: evicting")),
            ),
            (failed, expected("Preempting", None)),
        ] {
            let s = stream::iter(vec![Ok(Event::Apply(creating())), Ok(Event::Apply(pod(p)))])
                .chain(stream::pending());
            let o = await_on_stream(s, "p", quiet(1000), |_| {}).await;
            assert_eq!(o, outcome);
        }
        let mut plain = serde_json::to_value(creating()).unwrap();
        plain["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let s = stream::iter(vec![Ok(Event::Apply(pod(plain)))]).chain(stream::pending());
        let o = await_on_stream(s, "p", quiet(1000), |_| {}).await;
        assert_eq!(o, AwaitOutcome::Deleted("p".into()));
    }
}
