//! Watch one pod until it is ready, fails, disappears, or the time is up.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{ClientHandle, WATCH_TIMEOUT_SECS};
use crate::error::{is_retriable, Error};
use crate::readiness::{
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
    /// Set while the watch is failing; cleared by the next successful event.
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

/// Retry delays after watch errors: 250 ms doubling up to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff { next: Self::MIN }
    }

    fn reset(&mut self) {
        self.next = Self::MIN;
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }
}

/// Watch `namespace/name` with the handle's watch client; never returns before a decisive
/// event or `opts.timeout`. With `opts.report_ready == false`, `on_running` is called with the
/// pod (as sent for `Ready`) the first time it is ready, at most once; otherwise never.
pub async fn await_pod<F>(
    handle: &ClientHandle,
    namespace: &str,
    name: &str,
    opts: AwaitOptions,
    on_running: F,
) -> AwaitOutcome
where
    F: FnMut(&Value) + Send,
{
    let api: Api<Pod> = Api::namespaced(handle.watch_client().clone(), namespace);
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let stream = watcher::watcher(api, config);
    match await_on_stream(stream, name, opts, on_running).await {
        AwaitOutcome::Error(e) => AwaitOutcome::Error(handle.scrub(e)),
        AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail,
        } => AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail: detail.map(|d| crate::error::redact(&d, None)),
        },
        other => other,
    }
}

/// The watch logic over any stream of watcher events (unit-testable without a server).
pub async fn await_on_stream<S, F>(
    stream: S,
    name: &str,
    opts: AwaitOptions,
    on_running: F,
) -> AwaitOutcome
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
    F: FnMut(&Value),
{
    let started = Instant::now();
    let mut progress = Progress::new();
    let watch = drive(stream, name, opts, &mut progress, on_running);
    let outcome = tokio::time::timeout(opts.timeout, watch).await;
    match outcome {
        Ok(o) => o,
        Err(_elapsed) => progress.timeout(started.elapsed()),
    }
}

async fn drive<S, F>(
    stream: S,
    name: &str,
    opts: AwaitOptions,
    progress: &mut Progress,
    mut on_running: F,
) -> AwaitOutcome
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
    F: FnMut(&Value),
{
    let mut stream = std::pin::pin!(stream);
    let mut backoff = Backoff::new();
    // Was the pod in the current (re)list? If a list completes without it, it is gone.
    let mut seen_in_list = false;
    // `on_running` was called (at most once per await, even if the pod stops being ready and
    // becomes ready again).
    let mut running_reported = false;
    loop {
        let Some(item) = stream.next().await else {
            return AwaitOutcome::Error(Error::Internal("the watch stream ended".into()));
        };
        let event = match item {
            Ok(ev) => {
                backoff.reset();
                progress.transport_error = None;
                ev
            }
            Err(e) => {
                let err = Error::from(e);
                if !is_retriable(&err) {
                    return AwaitOutcome::Error(err);
                }
                progress.transport_error = Some(err.message());
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let pod = match event {
            Event::Init => {
                seen_in_list = false;
                continue;
            }
            Event::InitDone => {
                if seen_in_list {
                    continue;
                }
                return AwaitOutcome::Deleted(name.to_string());
            }
            Event::Delete(_) => return AwaitOutcome::Deleted(name.to_string()),
            Event::InitApply(pod) => {
                seen_in_list = true;
                pod
            }
            Event::Apply(pod) => pod,
        };
        // The field selector should guarantee this; be defensive anyway.
        if pod.metadata.name.as_deref() != Some(name) {
            continue;
        }
        match classify(&pod, opts.unschedulable) {
            Classification::Ready if !opts.report_ready => {
                if !running_reported {
                    match serde_json::to_value(&pod) {
                        Ok(v) => on_running(&v),
                        Err(e) => return AwaitOutcome::Error(Error::Decode(format!("pod: {e}"))),
                    }
                    running_reported = true;
                }
                progress.phase = Phase::Running;
                progress.detail = None;
            }
            Classification::Ready => {
                return match serde_json::to_value(&pod) {
                    Ok(v) => AwaitOutcome::Ready(v),
                    Err(e) => AwaitOutcome::Error(Error::Decode(format!("pod: {e}"))),
                }
            }
            Classification::Failed(reason) => return AwaitOutcome::Failed(reason),
            Classification::Deleted => return AwaitOutcome::Deleted(name.to_string()),
            Classification::Pending { phase, detail } => {
                progress.phase = phase.into();
                progress.detail = detail;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use kube::core::Status;
    use serde_json::json;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
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

    #[tokio::test(start_paused = true)]
    async fn missing_at_start_is_deleted() {
        let s = events(vec![Ok(Event::Init), Ok(Event::InitDone)]);
        assert_eq!(
            await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail), never).await,
            AwaitOutcome::Deleted("p".into())
        );
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

    #[tokio::test(start_paused = true)]
    async fn gone_after_relist() {
        // 410 Gone is retried; the relist no longer contains the pod.
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

    #[test]
    fn backoff_doubles_and_caps() {
        let mut b = Backoff::new();
        let ds: Vec<_> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ds, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 250);
    }
}
