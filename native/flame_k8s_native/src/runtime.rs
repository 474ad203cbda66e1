//! The one Tokio runtime of the NIF library, created on first use.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use once_cell::sync::Lazy;
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

static RUNTIME: Lazy<std::result::Result<Runtime, String>> = Lazy::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flame-k8s")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime: {e}"))
});

/// The shared runtime (started on first call).
pub fn runtime() -> Result<&'static Runtime> {
    RUNTIME.as_ref().map_err(|e| Error::Internal(e.clone()))
}

/// Run `fut` to completion on the runtime from a non-runtime thread (a dirty scheduler),
/// bounded by `timeout`. Panics inside the future come back as `Error::Internal`.
pub fn block_on_with_timeout<T, F>(timeout: Duration, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    let rt = runtime()?;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let guarded = AssertUnwindSafe(async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_elapsed) => Err(Error::Timeout(timeout_ms)),
        }
    })
    .catch_unwind();
    match rt.block_on(guarded) {
        Ok(r) => r,
        Err(payload) => Err(Error::from_panic(payload.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out() {
        let r: Result<()> = block_on_with_timeout(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        assert_eq!(r, Err(Error::Timeout(20)));
    }

    #[test]
    fn returns_value() {
        let r = block_on_with_timeout(Duration::from_secs(1), async { Ok(7) });
        assert_eq!(r, Ok(7));
    }

    #[test]
    #[allow(clippy::unreachable)]
    fn panics_become_internal_errors() {
        let r: Result<()> = block_on_with_timeout(Duration::from_secs(1), async {
            if std::hint::black_box(true) {
                panic!("kaboom");
            }
            Ok(())
        });
        assert_eq!(r, Err(Error::Internal("panic: kaboom".into())));
    }
}
