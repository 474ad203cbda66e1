//! Background tasks on the runtime: cancellation, a live-task count, panic containment.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::watch;

use crate::error::Error;
use crate::runtime::runtime;

static LIVE_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Number of spawned tasks that have not finished (or been dropped) yet.
pub fn live_tasks() -> usize {
    LIVE_TASKS.load(Ordering::SeqCst)
}

/// Counts one live task from creation until drop, whatever the exit path
/// (result sent, cancelled, panicked, or never polled because the runtime went away).
#[derive(Debug)]
pub struct LiveGuard(());

impl LiveGuard {
    pub fn new() -> Self {
        LIVE_TASKS.fetch_add(1, Ordering::SeqCst);
        LiveGuard(())
    }
}

impl Default for LiveGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        LIVE_TASKS.fetch_sub(1, Ordering::SeqCst);
    }
}

// Who got to the final report first: the task (it will report) or the canceller (it never
// will). Deciding this once, atomically, lets a caller that cancels know whether a reply is on
// its way, so it can wait for it instead of leaving a stray message in its mailbox.
const PENDING: u8 = 0;
const REPORTING: u8 = 1;
const CANCELLED: u8 = 2;

/// The cancelling side (kept in the NIF resource). Cancelling is idempotent.
#[derive(Debug)]
pub struct Canceller {
    tx: watch::Sender<bool>,
    report: Arc<AtomicU8>,
}

/// The task's side. Clones observe the same cancellation (e.g. a callback inside the work
/// that sends its own messages checks one before each send).
#[derive(Clone, Debug)]
pub struct CancelToken {
    rx: watch::Receiver<bool>,
    report: Arc<AtomicU8>,
}

pub fn cancel_pair() -> (Canceller, CancelToken) {
    let (tx, rx) = watch::channel(false);
    let report = Arc::new(AtomicU8::new(PENDING));
    (
        Canceller {
            tx,
            report: report.clone(),
        },
        CancelToken { rx, report },
    )
}

/// What a cancel found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// No final report will be made.
    BeforeReport,
    /// The task had already begun its final report: it is made (or being made) regardless.
    AfterReport,
}

impl Canceller {
    pub fn cancel(&self) -> Cancelled {
        self.tx.send_replace(true);
        match self
            .report
            .compare_exchange(PENDING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) | Err(CANCELLED) => Cancelled::BeforeReport,
            Err(_) => Cancelled::AfterReport,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }
}

impl CancelToken {
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Take the one final report for the task; `false` if a cancel came first.
    fn claim_report(&self) -> bool {
        self.report
            .compare_exchange(PENDING, REPORTING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Resolves once cancelled; never resolves if the canceller is gone without cancelling.
    pub async fn cancelled(&mut self) {
        if self.rx.wait_for(|c| *c).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// Spawn `work` on the runtime. Unless cancelled first, `report` is called exactly once, with
/// the work's output or `Error::Internal` if the work panicked; a cancel that returns
/// `Cancelled::BeforeReport` guarantees it is not called at all. `guard` is held until the
/// task ends.
pub fn spawn_reporting<T, W, R>(
    work: W,
    mut cancel: CancelToken,
    guard: LiveGuard,
    report: R,
) -> Result<(), Error>
where
    T: Send + 'static,
    W: Future<Output = T> + Send + 'static,
    R: FnOnce(Result<T, Error>) + Send + 'static,
{
    let rt = runtime()?;
    rt.spawn(async move {
        let _guard = guard;
        let work = AssertUnwindSafe(work).catch_unwind();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = work => r,
        };
        if !cancel.claim_report() {
            return;
        }
        let result = result.map_err(|payload| Error::from_panic(payload.as_ref()));
        // A panic while reporting must not escape into Tokio either.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || report(result)));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    // LIVE_TASKS is global; these tests only check their own effects via channels, and
    // the count through a lock so they do not race each other.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn wait_for_count(n: usize) {
        for _ in 0..200 {
            if live_tasks() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(live_tasks(), n);
    }

    #[test]
    fn reports_once_and_counts() {
        let _l = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let base = live_tasks();
        let (_c, token) = cancel_pair();
        let (tx, rx) = mpsc::channel();
        spawn_reporting(async { 42 }, token, LiveGuard::new(), move |r| {
            tx.send(r).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(42));
        wait_for_count(base);
    }

    #[test]
    fn cancelled_tasks_report_nothing() {
        let _l = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let base = live_tasks();
        let (c, token) = cancel_pair();
        let (tx, rx) = mpsc::channel::<Result<(), Error>>();
        spawn_reporting(
            async { tokio::time::sleep(Duration::from_secs(60)).await },
            token,
            LiveGuard::new(),
            move |r| {
                let _ = tx.send(r);
            },
        )
        .unwrap();
        assert_eq!(live_tasks(), base + 1);
        assert_eq!(c.cancel(), Cancelled::BeforeReport);
        assert_eq!(c.cancel(), Cancelled::BeforeReport);
        assert!(c.is_cancelled());
        wait_for_count(base);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
    }

    #[test]
    fn panics_are_reported_as_internal() {
        let _l = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let base = live_tasks();
        let (_c, token) = cancel_pair();
        let (tx, rx) = mpsc::channel();
        spawn_reporting(
            async {
                if std::hint::black_box(true) {
                    panic!("task blew up");
                }
            },
            token,
            LiveGuard::new(),
            move |r| {
                tx.send(r).unwrap();
            },
        )
        .unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(Error::Internal("panic: task blew up".into()))
        );
        wait_for_count(base);
    }

    #[test]
    fn a_cancel_after_the_report_says_so() {
        let _l = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let base = live_tasks();
        let (c, token) = cancel_pair();
        let (tx, rx) = mpsc::channel();
        spawn_reporting(async { 5 }, token, LiveGuard::new(), move |r| {
            tx.send(r).unwrap();
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(5));
        assert_eq!(c.cancel(), Cancelled::AfterReport);
        assert_eq!(c.cancel(), Cancelled::AfterReport);
        // The task may outlive its report by a moment: the next test's base must not see it.
        wait_for_count(base);
    }

    #[test]
    fn cloned_tokens_see_the_cancel() {
        let (c, token) = cancel_pair();
        let clone = token.clone();
        assert!(!clone.is_cancelled());
        c.cancel();
        assert!(token.is_cancelled() && clone.is_cancelled());
        // A clone taken after the cancel sees it too.
        assert!(token.clone().is_cancelled());
    }

    #[test]
    fn dropped_canceller_does_not_cancel() {
        let _l = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let base = live_tasks();
        let (c, token) = cancel_pair();
        drop(c);
        let (tx, rx) = mpsc::channel();
        spawn_reporting(
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                1
            },
            token,
            LiveGuard::new(),
            move |r| {
                tx.send(r).unwrap();
            },
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(1));
        wait_for_count(base);
    }
}
