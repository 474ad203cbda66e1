//! Pod status classification (`readiness::classify`) on any pod serde accepts: never a panic,
//! and the decisions the await relies on hold for both policies:
//!
//! - a pod with a deletionTimestamp is `Deleted`, and only such a pod is;
//! - `UnschedulablePolicy::Wait` never fails with `Unschedulable`, and differs from `Fail` only
//!   there (a `Failed(Unschedulable(msg))` under `Fail` is `Pending` scheduling with `msg`);
//! - `Ready` needs phase Running, a pod IP and every container running.
//!
//! Input: a JSON document (the seeds are the crate's pod fixtures).
#![no_main]

use flame_k8s_native_fuzz::readiness::{
    classify, Classification, FailureReason, PendingPhase, UnschedulablePolicy,
};
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pod) = serde_json::from_slice::<Pod>(data) else {
        return;
    };
    let fail = classify(&pod, UnschedulablePolicy::Fail);
    let wait = classify(&pod, UnschedulablePolicy::Wait);

    let deleting = pod.metadata.deletion_timestamp.is_some();
    assert_eq!(fail == Classification::Deleted, deleting, "{fail:?}");
    assert_eq!(wait == Classification::Deleted, deleting, "{wait:?}");

    assert!(
        !matches!(
            wait,
            Classification::Failed(FailureReason::Unschedulable(_))
        ),
        "{wait:?}"
    );
    match &fail {
        Classification::Failed(FailureReason::Unschedulable(msg)) => assert_eq!(
            wait,
            Classification::Pending {
                phase: PendingPhase::Scheduling,
                detail: Some(msg.clone()),
            }
        ),
        other => assert_eq!(&wait, other),
    }

    if fail == Classification::Ready {
        let status = pod.status.as_ref().expect("a ready pod has a status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()));
        let spec = pod.spec.as_ref().expect("a ready pod has a spec");
        assert!(!spec.containers.is_empty());
    }
});
