//! The one Tokio runtime of the NIF library, created on first use.

use std::future::Future;
use std::time::Duration;

use once_cell::sync::Lazy;
use tokio::runtime::Runtime;

use crate::error::{Error, Result};

// Two workers: the tasks only wait on sockets and convert JSON; the BEAM keeps every core it
// has for itself.
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

/// `fut`, bounded by `timeout`: when it elapses the future is dropped (which abandons its HTTP
/// request) and the result is `Error::Timeout(ms)`, the `{:timeout, ms}` callers see.
pub async fn with_timeout<T, F>(timeout: Duration, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_elapsed) => Err(Error::Timeout(timeout_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn times_out() {
        let r: Result<()> = with_timeout(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
        assert_eq!(r, Err(Error::Timeout(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn returns_value_or_error() {
        assert_eq!(
            with_timeout(Duration::from_secs(1), async { Ok(7) }).await,
            Ok(7)
        );
        let e: Result<()> = with_timeout(Duration::from_secs(1), async {
            Err(Error::Connect("refused".into()))
        })
        .await;
        assert_eq!(e, Err(Error::Connect("refused".into())));
    }

    #[test]
    fn the_runtime_starts() {
        assert!(runtime().is_ok());
    }
}
