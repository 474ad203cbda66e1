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
    /// `false`: a ready pod is not reported; the watch goes on reporting failures (a
    /// container that exits, deletion) until cancelled or timed out (then `Phase::Running`).
    pub report_ready: bool,
}

/// The phase a timeout is reported in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
/// event or `opts.timeout`.
pub async fn await_pod(
    handle: &ClientHandle,
    namespace: &str,
    name: &str,
    opts: AwaitOptions,
) -> AwaitOutcome {
    let api: Api<Pod> = Api::namespaced(handle.watch_client().clone(), namespace);
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let stream = watcher::watcher(api, config);
    match await_on_stream(stream, name, opts).await {
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
pub async fn await_on_stream<S>(stream: S, name: &str, opts: AwaitOptions) -> AwaitOutcome
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let started = Instant::now();
    let mut progress = Progress::new();
    let outcome =
        tokio::time::timeout(opts.timeout, drive(stream, name, opts, &mut progress)).await;
    match outcome {
        Ok(o) => o,
        Err(_elapsed) => progress.timeout(started.elapsed()),
    }
}

async fn drive<S>(
    stream: S,
    name: &str,
    opts: AwaitOptions,
    progress: &mut Progress,
) -> AwaitOutcome
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut backoff = Backoff::new();
    // Was the pod in the current (re)list? If a list completes without it, it is gone.
    let mut seen_in_list = false;
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

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_a_ready_pod_times_out_as_running() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(creating())),
            Ok(Event::InitDone),
            Ok(Event::Apply(ready())),
        ]);
        assert_eq!(
            await_on_stream(s, "p", quiet(700)).await,
            AwaitOutcome::Timeout {
                phase: Phase::Running,
                waited_ms: 700,
                detail: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_ready_failures_after_ready_are_reported() {
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(ready())),
            Ok(Event::InitDone),
            Ok(Event::Apply(exited())),
        ]);
        assert!(matches!(
            await_on_stream(s, "p", quiet(10_000)).await,
            AwaitOutcome::Failed(FailureReason::ContainerExited { exit_code: 1, .. })
        ));
        let s = events(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(ready())),
            Ok(Event::InitDone),
            Ok(Event::Delete(ready())),
        ]);
        assert_eq!(
            await_on_stream(s, "p", quiet(10_000)).await,
            AwaitOutcome::Deleted("p".into())
        );
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
        match await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail)).await {
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
            await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail)).await,
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
            await_on_stream(s, "p", opts(1000, UnschedulablePolicy::Fail)).await,
            AwaitOutcome::Deleted("p".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forbidden_ends_at_once() {
        let s = events(vec![Err(api_err(403))]);
        match await_on_stream(s, "p", opts(60_000, UnschedulablePolicy::Fail)).await {
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
        match await_on_stream(s, "p", opts(3000, UnschedulablePolicy::Fail)).await {
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
            await_on_stream(s, "p", opts(10_000, UnschedulablePolicy::Fail)).await,
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
            await_on_stream(s, "p", opts(500, UnschedulablePolicy::Fail)).await,
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
            await_on_stream(evs(), "p", opts(500, UnschedulablePolicy::Fail)).await,
            AwaitOutcome::Failed(FailureReason::Unschedulable("no nodes".into()))
        );
        assert_eq!(
            await_on_stream(evs(), "p", opts(500, UnschedulablePolicy::Wait)).await,
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
            await_on_stream(s, "p", opts(10_000, UnschedulablePolicy::Fail)).await,
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
