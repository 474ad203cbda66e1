//! Follow a booted runner's pod through the shared watch until it is gone, forwarding each
//! change `runner_state::Follow` classifies (at most once each).
//!
//! A follow is only a subscription: it sends no request of its own, except the one read an
//! await also makes when a list of the watch lacks the pod (`await_pod::CONFIRM_UNSEEN_AFTER`).

use super::await_pod::{Confirm, Confirmed};
use super::hub::{Subscription, Update};
use super::runner_state::{Change, Follow};
use crate::error::Error;

/// How a follow ends.
#[derive(Clone, Debug, PartialEq)]
pub enum FollowEnd {
    /// The pod is gone (a delete event, or a read that found nothing).
    Gone,
    /// The watch ended with this (non-retriable) error.
    Error(Error),
}

/// Forward the changes of the pod `subscription` is for to `on_change` until it is gone.
pub async fn follow<F>(mut sub: Subscription, mut on_change: F) -> FollowEnd
where
    F: FnMut(Change),
{
    let mut follow = Follow::default();
    let mut confirm = Confirm::new(&sub);
    loop {
        let update = tokio::select! {
            biased;
            u = sub.next() => u,
            () = confirm.due() => match confirm.read(&sub).await {
                Confirmed::Gone => return FollowEnd::Gone,
                Confirmed::Pod(pod) => Some(Update::Pod(pod)),
                Confirmed::Unsettled => continue,
            },
        };
        match update {
            None => return FollowEnd::Error(Error::Internal("the shared watch ended".into())),
            Some(Update::Failed(e)) => return FollowEnd::Error(e),
            Some(Update::Gone) => return FollowEnd::Gone,
            // A list without the pod proves nothing (see `hub`): its own event, or a read.
            Some(Update::Unlisted) => confirm.unlisted(),
            Some(Update::Pod(pod)) => {
                confirm.seen();
                for change in follow.changes(&pod) {
                    on_change(change);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::await_pod::CONFIRM_UNSEEN_AFTER;
    use crate::watch::hub::tests::{channel, unlisted_at_start, Script};
    use crate::watch::hub::Hub;
    use crate::watch::runner_state::{Disruption, Termination};
    use crate::watch::test_support::runner_key as key;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::Event;
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::time::Instant;

    fn pod(condition: bool, deleting: bool, exit: Option<i32>) -> Pod {
        let mut v = json!({"metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.5", "conditions": [],
              "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}]}});
        if condition {
            v["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
                "reason": "PreemptionByScheduler", "message": "preempted"}]);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        if let Some(code) = exit {
            v["status"]["containerStatuses"][0]["state"] =
                json!({"terminated": {"exitCode": code}});
        }
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn forwards_each_change_once_then_ends_when_gone() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let sub = hub.subscribe(key(), "p").unwrap();
        for p in [
            pod(false, false, None),
            pod(true, false, None),
            pod(true, true, None),
            pod(true, true, Some(143)),
            pod(true, true, Some(143)),
        ] {
            tx.unbounded_send(Ok(Event::Apply(p))).unwrap();
        }
        tx.unbounded_send(Ok(Event::Delete(pod(true, true, Some(143)))))
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let end = follow(sub, move |c| record.lock().unwrap().push(c)).await;
        assert_eq!(end, FollowEnd::Gone);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Change::Disruption(Disruption {
                    reason: "PreemptionByScheduler".into(),
                    message: Some("preempted".into())
                }),
                Change::Deleting,
                Change::Terminated(Termination {
                    reason: "Error".into(),
                    exit_code: Some(143),
                    message: None
                }),
            ]
        );
    }

    /// A list without the pod: one read settles it (here: gone).
    #[tokio::test(start_paused = true)]
    async fn a_list_without_the_pod_is_settled_by_a_read() {
        let (script, sub) = unlisted_at_start();
        let started = Instant::now();
        assert_eq!(follow(sub, |_| {}).await, FollowEnd::Gone);
        assert!(started.elapsed() >= CONFIRM_UNSEEN_AFTER);
        assert_eq!(script.gets.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_watch_ends_the_follow() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let sub = hub.subscribe(key(), "p").unwrap();
        let mut status = kube::core::Status::failure("cannot watch pods", "Forbidden");
        status.code = 403;
        tx.unbounded_send(Err(kube::runtime::watcher::Error::WatchFailed(
            kube::Error::Api(Box::new(status)),
        )))
        .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(60), follow(sub, |_| {}))
            .await
            .unwrap();
        assert!(matches!(
            end,
            FollowEnd::Error(Error::Api { code: 403, .. })
        ));
    }
}
