//! Shared pod watches: one kube-runtime `watcher` per (namespace, selector) and client.
//!
//! The watch's events are routed by pod name to the awaits that subscribed to them. Concurrent
//! boots of one parent share one watch through the parent's label selector instead of each
//! opening its own on the API server (Spark on Kubernetes watches all executors with one
//! label-selector watch for the same reason). The watcher does the list + watch with
//! resourceVersion, bookmarks and the relist after 410 Gone; kube-runtime's default backoff
//! paces it after errors. What this module adds is the routing and a store of the latest
//! state of every pod the watch has shown, so that an await that subscribes after its pod's
//! events went by still starts from that pod's state.
//!
//! A watch starts with its first subscriber and stops when its last one leaves (a dropped
//! `Subscription`: the await finished, was cancelled, or its caller died). A non-retriable
//! error (403, 404, ...) ends it for everyone subscribed; the next subscriber starts a new one,
//! which tries again from scratch.
//!
//! "Gone" is a delete event or a pod being deleted. The watch's lists are served from the API
//! server's watch cache (`resourceVersion=0`, `resourceVersionMatch=NotOlderThan`) rather than
//! read consistently (no resourceVersion), which would cost a quorum read of etcd, and a wait
//! for the cache to catch up, at every start of the watch: with boots one after another, each
//! boot starts it. A list from the cache may be behind, so a pod it lacks is not proven gone:
//! the pod may be newer than the cache (its event follows), or, on a relist from another API
//! server, older than what the watch has shown. Those that await such a pod and would have
//! been told "gone" by a consistent list are told `Unlisted` instead, and read it unless its
//! own event settles it first (`await_pod::CONFIRM_UNSEEN_AFTER`): a subscriber that
//! registered before the list's `Init` was processed (its pod existed when it subscribed, and
//! the watcher requests a list only after it has emitted `Init` and been polled again), or
//! whose pod was already shown. A subscriber that registered after the last list began and has
//! not seen its pod yet waits for its events and that same read.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::{mpsc, Notify};

use crate::error::{is_retriable, Error};

/// What a shared watch selects, within its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Every pod matching a label selector (a parent's runners), shared by all their awaits.
    Labels(String),
    /// One pod by name (`metadata.name=...`): an await that gave no selector.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub namespace: String,
    pub selection: Selection,
}

impl WatchKey {
    /// The watch that shows pod `name`: the shared one of `label_selector` (which the pod
    /// matches), else one of that pod alone. An empty selector is none.
    pub fn for_pod(namespace: &str, name: &str, label_selector: Option<&str>) -> Self {
        let selection = match label_selector.filter(|s| !s.is_empty()) {
            Some(selector) => Selection::Labels(selector.to_string()),
            None => Selection::Name(name.to_string()),
        };
        WatchKey {
            namespace: namespace.to_string(),
            selection,
        }
    }
}

pub type EventStream = BoxStream<'static, Result<Event<Pod>, watcher::Error>>;

/// Where watches come from: the API server, or a test's synthetic streams.
pub trait Source: Send + Sync + 'static {
    /// The watcher stream for `key`, without backoff (the hub adds kube-runtime's default).
    fn watch(&self, key: &WatchKey) -> EventStream;
    /// One read of a pod; `Ok(None)` if it does not exist.
    fn get(&self, namespace: &str, name: &str) -> BoxFuture<'static, Result<Option<Pod>, Error>>;
}

/// What a subscriber is told about its pod.
#[derive(Clone, Debug)]
pub enum Update {
    /// The pod's latest state (in order: every event, none merged).
    Pod(Arc<Pod>),
    /// Deleted (a delete event, or a pod being deleted: see `readiness`).
    Gone,
    /// Absent from a list it would have been in had it still existed: read it to know.
    Unlisted,
    /// The watch ended with this (non-retriable) error.
    Failed(Error),
}

/// The shared watches of one client.
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    source: Arc<dyn Source>,
    watches: Mutex<HashMap<WatchKey, Arc<Shared>>>,
}

static LIVE_WATCHES: AtomicUsize = AtomicUsize::new(0);

/// Watch tasks running in the whole library (for diagnostics and tests; `live_tasks/0` of the
/// NIF adds them to `task::live_tasks`, counted apart so that neither count's unit tests see
/// the other's tasks).
pub fn live_watches() -> usize {
    LIVE_WATCHES.load(Ordering::SeqCst)
}

struct WatchGuard;

impl WatchGuard {
    fn new() -> Self {
        LIVE_WATCHES.fetch_add(1, Ordering::SeqCst);
        WatchGuard
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        LIVE_WATCHES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Locks never guard an await point and no code panics while holding one; should a panic
/// (a bug) poison one anyway, the state it guards is still the best there is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    pub fn new(source: Arc<dyn Source>) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                source,
                watches: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Watches of this hub that are running (a stopping one no longer counts).
    pub fn open(&self) -> usize {
        lock(&self.inner.watches).len()
    }

    /// Subscribe to the updates of pod `name` under `key`, starting the watch if none runs.
    /// Must be called on a Tokio runtime (the watch is a task of its own).
    pub fn subscribe(&self, key: WatchKey, name: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watches = lock(&self.inner.watches);
        let (shared, registration) = match watches.get(&key) {
            Some(shared) => {
                let registration = shared.register(name, tx);
                (shared.clone(), registration)
            }
            None => {
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|e| Error::Internal(format!("no runtime for the watch: {e}")))?;
                let shared = Arc::new(Shared::new());
                // Registered before the task can run, so that the watch's first list counts
                // against this subscriber (its pod exists already).
                let registration = shared.register(name, tx);
                let stream = self.inner.source.watch(&key);
                let task = run(self.inner.clone(), key.clone(), shared.clone(), stream);
                runtime.spawn(task);
                watches.insert(key.clone(), shared.clone());
                (shared, registration)
            }
        };
        drop(watches);
        Ok(Subscription {
            hub: self.inner.clone(),
            key,
            shared,
            id: registration.id,
            name: name.to_string(),
            after_a_list: registration.after_a_list,
            rx,
        })
    }
}

/// One await's view of a shared watch. Dropping it unsubscribes, and stops the watch if it was
/// the last subscriber.
pub struct Subscription {
    hub: Arc<HubInner>,
    key: WatchKey,
    shared: Arc<Shared>,
    id: u64,
    name: String,
    after_a_list: bool,
    rx: mpsc::UnboundedReceiver<Update>,
}

impl Subscription {
    /// The next update; `None` only if the watch is gone without saying why (a bug).
    pub async fn next(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// The watch's current trouble (retriable errors), cleared by its next event that came
    /// from the server (not the `Init` of the next attempt).
    pub fn transport_error(&self) -> Option<String> {
        lock(&self.shared.state).transport_error.clone()
    }

    /// Whether the pod was unknown to the watch when this subscriber came and a list had
    /// already been requested: no list will prove it gone, only its own events would.
    pub fn registered_after_a_list(&self) -> bool {
        self.after_a_list
    }

    pub fn key(&self) -> &WatchKey {
        &self.key
    }

    /// Read the pod directly (see `registered_after_a_list`).
    pub fn get(&self) -> BoxFuture<'static, Result<Option<Pod>, Error>> {
        self.hub.source.get(&self.key.namespace, &self.name)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watches = lock(&self.hub.watches);
        let now_empty = self.shared.unregister(&self.name, self.id);
        let current = watches
            .get(&self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.shared));
        if now_empty && current {
            watches.remove(&self.key);
            // A permit if the task is not waiting yet: the stop is never lost.
            self.shared.stop.notify_one();
        }
    }
}

struct Registration {
    id: u64,
    after_a_list: bool,
}

struct Shared {
    state: Mutex<State>,
    stop: Notify,
}

#[derive(Default)]
struct State {
    /// The latest state of every pod of the last completed list, updated by events since.
    pods: HashMap<String, Arc<Pod>>,
    /// The list in progress (between `Init` and `InitDone`).
    relist: Option<HashMap<String, Arc<Pod>>>,
    /// `Init` events processed: lists begun.
    generation: u64,
    transport_error: Option<String>,
    subscribers: HashMap<String, Vec<Subscriber>>,
    next_id: u64,
    /// The last states of the latest pods deleted while Kubernetes was taking them away
    /// (`runner_state::taken_away`), oldest first, at most `TAKEN_AWAY_KEPT`: an await that
    /// subscribes after such a pod went still learns why (a boot replaces it).
    taken_away: std::collections::VecDeque<(String, Arc<Pod>)>,
}

/// How many deleted pods `State::taken_away` keeps.
const TAKEN_AWAY_KEPT: usize = 64;

struct Subscriber {
    id: u64,
    tx: mpsc::UnboundedSender<Update>,
    /// `generation` when it registered: a list with a higher one was requested after.
    generation: u64,
    /// It was shown its pod, which therefore existed before any list still to come.
    seen: bool,
}

impl Shared {
    fn new() -> Self {
        Shared {
            state: Mutex::new(State::default()),
            stop: Notify::new(),
        }
    }

    fn register(&self, name: &str, tx: mpsc::UnboundedSender<Update>) -> Registration {
        let mut st = lock(&self.state);
        let id = st.next_id;
        st.next_id += 1;
        let known = st
            .relist
            .as_ref()
            .and_then(|l| l.get(name))
            .or_else(|| st.pods.get(name))
            .cloned();
        let gone = match known {
            Some(_) => None,
            None => st
                .taken_away
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, pod)| pod.clone()),
        };
        let seen = known.is_some() || gone.is_some();
        // The receiver is alive: it is about to be returned to the subscriber.
        if let Some(pod) = known {
            let _ = tx.send(Update::Pod(pod));
        }
        if let Some(pod) = gone {
            let _ = tx.send(Update::Pod(pod));
            let _ = tx.send(Update::Gone);
        }
        let generation = st.generation;
        st.subscribers
            .entry(name.to_string())
            .or_default()
            .push(Subscriber {
                id,
                tx,
                generation,
                seen,
            });
        Registration {
            id,
            after_a_list: !seen && generation > 0,
        }
    }

    /// Whether no subscriber is left.
    fn unregister(&self, name: &str, id: u64) -> bool {
        let mut st = lock(&self.state);
        if let Some(subs) = st.subscribers.get_mut(name) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                st.subscribers.remove(name);
            }
        }
        st.subscribers.is_empty()
    }

    /// Apply one item of the watcher stream; a non-retriable error is returned (the watch
    /// ends), a retriable one is kept for the subscribers' timeout reports.
    fn apply(&self, item: Result<Event<Pod>, watcher::Error>) -> Result<(), Error> {
        let mut st = lock(&self.state);
        match item {
            Ok(event) => {
                // `Init` comes before the list is requested: it proves nothing works yet.
                if !matches!(event, Event::Init) {
                    st.transport_error = None;
                }
                st.apply(event);
                Ok(())
            }
            Err(e) => {
                let err = Error::from(e);
                if !is_retriable(&err) {
                    return Err(err);
                }
                st.transport_error = Some(err.message());
                Ok(())
            }
        }
    }

    /// The watch is over: every subscriber gets `update`.
    fn end(&self, update: &Update) {
        let mut st = lock(&self.state);
        for subs in st.subscribers.values_mut() {
            for s in subs.iter() {
                let _ = s.tx.send(update.clone());
            }
        }
        st.pods.clear();
        st.relist = None;
    }
}

impl State {
    fn apply(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => {
                self.generation += 1;
                self.relist = Some(HashMap::new());
            }
            Event::InitApply(pod) => {
                let Some(name) = pod.metadata.name.clone() else {
                    return;
                };
                let pod = Arc::new(pod);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name.clone(), pod.clone());
                self.show(&name, &pod);
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let generation = self.generation;
                for (name, subs) in &mut self.subscribers {
                    if listed.contains_key(name) {
                        continue;
                    }
                    for s in subs.iter_mut() {
                        if s.seen || s.generation < generation {
                            let _ = s.tx.send(Update::Unlisted);
                        }
                    }
                }
                self.pods = listed;
            }
            Event::Apply(pod) => {
                let Some(name) = pod.metadata.name.clone() else {
                    return;
                };
                let pod = Arc::new(pod);
                self.pods.insert(name.clone(), pod.clone());
                self.show(&name, &pod);
            }
            Event::Delete(pod) => {
                let Some(name) = pod.metadata.name.clone() else {
                    return;
                };
                self.pods.remove(&name);
                // Its last state says why Kubernetes took it away (an await or follow that
                // had not seen it yet needs it): shown before "gone".
                let taken_away = crate::watch::runner_state::taken_away(&pod)
                    .is_some()
                    .then(|| Arc::new(pod));
                if let Some(pod) = &taken_away {
                    if self.taken_away.len() >= TAKEN_AWAY_KEPT {
                        self.taken_away.pop_front();
                    }
                    self.taken_away.push_back((name.clone(), pod.clone()));
                }
                if let Some(subs) = self.subscribers.get(&name) {
                    for s in subs {
                        if let Some(pod) = &taken_away {
                            let _ = s.tx.send(Update::Pod(pod.clone()));
                        }
                        let _ = s.tx.send(Update::Gone);
                    }
                }
            }
        }
    }

    fn show(&mut self, name: &str, pod: &Arc<Pod>) {
        if let Some(subs) = self.subscribers.get_mut(name) {
            for s in subs.iter_mut() {
                s.seen = true;
                let _ = s.tx.send(Update::Pod(pod.clone()));
            }
        }
    }
}

/// The watch task: polls the watcher (with kube-runtime's default backoff after errors) until
/// the last subscriber leaves or a non-retriable error ends it. Dropping the stream closes the
/// request in flight. A panic (a bug here or in the watcher) is contained and reported to the
/// subscribers, who would otherwise wait for updates that never come.
async fn run<S>(hub: Arc<HubInner>, key: WatchKey, shared: Arc<Shared>, stream: S)
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>> + Send + 'static,
{
    let _watch = WatchGuard::new();
    let body = AssertUnwindSafe(follow(&shared, stream)).catch_unwind();
    let failure = match body.await {
        Ok(None) => return,
        Ok(Some(err)) => err,
        Err(payload) => Error::from_panic(payload.as_ref()),
    };
    // Out of the hub first, under its lock, so that no subscriber joins a watch that has ended;
    // the next one starts a new watch.
    let mut watches = lock(&hub.watches);
    if watches.get(&key).is_some_and(|s| Arc::ptr_eq(s, &shared)) {
        watches.remove(&key);
    }
    shared.end(&Update::Failed(failure));
}

/// `None`: stopped (no subscriber left); `Some(error)`: the watch failed.
async fn follow<S>(shared: &Shared, stream: S) -> Option<Error>
where
    S: Stream<Item = Result<Event<Pod>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream.default_backoff());
    loop {
        let item = tokio::select! {
            biased;
            () = shared.stop.notified() => return None,
            item = stream.next() => item,
        };
        let Some(item) = item else {
            return Some(Error::Internal("the watch stream ended".into()));
        };
        if let Err(e) = shared.apply(item) {
            return Some(e);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::watch::test_support::{held_while_alive, runner_key};
    use futures::stream;
    use serde_json::json;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": phase}}))
        .unwrap()
    }

    /// Synthetic watches: each `watch` call takes the next scripted stream (then silence);
    /// it records how many were opened and whether the last one is still held. Each `get`
    /// takes the next scripted answer (then "not found") and is counted.
    #[derive(Default)]
    pub struct Script {
        streams: Mutex<Vec<EventStream>>,
        answers: Mutex<Vec<Result<Option<Pod>, Error>>>,
        pub opened: AtomicUsize,
        pub held: Arc<AtomicBool>,
        pub gets: AtomicUsize,
    }

    impl Script {
        pub fn new(streams: Vec<EventStream>) -> Arc<Self> {
            Self::with_answers(streams, vec![])
        }

        pub fn with_answers(
            streams: Vec<EventStream>,
            answers: Vec<Result<Option<Pod>, Error>>,
        ) -> Arc<Self> {
            Arc::new(Script {
                streams: Mutex::new(streams.into_iter().rev().collect()),
                answers: Mutex::new(answers.into_iter().rev().collect()),
                ..Default::default()
            })
        }
    }

    impl Source for Script {
        fn watch(&self, _key: &WatchKey) -> EventStream {
            self.opened.fetch_add(1, Ordering::SeqCst);
            let s = lock(&self.streams)
                .pop()
                .unwrap_or_else(|| stream::pending().boxed());
            held_while_alive(s, self.held.clone())
        }

        fn get(&self, _ns: &str, _name: &str) -> BoxFuture<'static, Result<Option<Pod>, Error>> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            let answer = lock(&self.answers).pop().unwrap_or(Ok(None));
            async move { answer }.boxed()
        }
    }

    pub type Tx = futures::channel::mpsc::UnboundedSender<Result<Event<Pod>, watcher::Error>>;

    /// A watch stream the test feeds as it goes.
    pub fn channel() -> (Tx, EventStream) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (tx, rx.chain(stream::pending()).boxed())
    }

    /// A subscription to the runner `p` whose watch's first list lacks it, and the script that
    /// counts its reads. The watch stays open (its stream ends in silence).
    pub fn unlisted_at_start() -> (Arc<Script>, Subscription) {
        let (tx, s) = channel();
        let script = Script::new(vec![s]);
        let sub = Hub::new(script.clone())
            .subscribe(runner_key(), "p")
            .unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        (script, sub)
    }

    fn key() -> WatchKey {
        WatchKey {
            namespace: "ns".into(),
            selection: Selection::Labels("a=b".into()),
        }
    }

    /// Lets the watch task run until it waits again (paused clock: no real time passes).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    fn phase(u: Option<Update>) -> String {
        match u {
            Some(Update::Pod(p)) => p.status.as_ref().unwrap().phase.clone().unwrap(),
            Some(Update::Gone) => "gone".into(),
            Some(Update::Unlisted) => "unlisted".into(),
            Some(Update::Failed(e)) => format!("failed: {e}"),
            None => "closed".into(),
        }
    }

    fn try_phase(sub: &mut Subscription) -> String {
        match sub.rx.try_recv() {
            Ok(u) => phase(Some(u)),
            Err(_) => "nothing".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_watch_routes_each_pod_to_its_subscribers() {
        let (tx, s) = channel();
        let script = Script::new(vec![s]);
        let hub = Hub::new(script.clone());
        let mut a = hub.subscribe(key(), "a").unwrap();
        let mut b = hub.subscribe(key(), "b").unwrap();
        let mut b2 = hub.subscribe(key(), "b").unwrap();
        assert_eq!(hub.open(), 1);
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitApply(pod("a", "Pending"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitApply(pod("b", "Pending"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        tx.unbounded_send(Ok(Event::Apply(pod("b", "Running"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::Apply(pod("c", "Running"))))
            .unwrap();
        settle().await;
        assert_eq!(phase(a.next().await), "Pending");
        assert_eq!(try_phase(&mut a), "nothing");
        for sub in [&mut b, &mut b2] {
            assert_eq!(phase(sub.next().await), "Pending");
            assert_eq!(phase(sub.next().await), "Running");
        }
        assert_eq!(script.opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_subscriber_starts_from_the_stored_state() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let _first = hub.subscribe(key(), "a").unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitApply(pod("b", "Pending"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        tx.unbounded_send(Ok(Event::Apply(pod("b", "Running"))))
            .unwrap();
        settle().await;
        let mut late = hub.subscribe(key(), "b").unwrap();
        assert!(!late.registered_after_a_list());
        assert_eq!(phase(late.next().await), "Running");
        // A pod the watch has not shown, after a list: only its own events can tell.
        let unseen = hub.subscribe(key(), "new").unwrap();
        assert!(unseen.registered_after_a_list());
    }

    /// The watch's lists come from the API server's cache (`resourceVersion=0`), which may be
    /// behind: a pod missing from one is not gone. Those that await it and would have been
    /// told "gone" by a consistent list (it existed before the list: subscribed before it, or
    /// shown already) are told to read it instead.
    #[tokio::test(start_paused = true)]
    async fn a_list_without_a_pod_asks_its_awaits_to_read_it() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let mut early = hub.subscribe(key(), "early").unwrap();
        let mut shown = hub.subscribe(key(), "shown").unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitApply(pod("shown", "Pending"))))
            .unwrap();
        settle().await;
        // Subscribed while that list is in progress: its pod may be newer than the list.
        let mut during = hub.subscribe(key(), "during").unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(phase(early.next().await), "unlisted");
        assert_eq!(phase(shown.next().await), "Pending");
        assert_eq!(try_phase(&mut shown), "nothing");
        assert_eq!(try_phase(&mut during), "nothing");
        // Its creation arrives as an event; then a relist (after a 410) without either pod.
        tx.unbounded_send(Ok(Event::Apply(pod("during", "Pending"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(phase(during.next().await), "Pending");
        assert_eq!(phase(during.next().await), "unlisted");
        assert_eq!(phase(shown.next().await), "unlisted");
        // A delete event is proof.
        tx.unbounded_send(Ok(Event::Delete(pod("shown", "Pending"))))
            .unwrap();
        settle().await;
        assert_eq!(phase(shown.next().await), "gone");
    }

    #[tokio::test(start_paused = true)]
    async fn delete_events_and_errors() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let mut a = hub.subscribe(key(), "a").unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitApply(pod("a", "Pending"))))
            .unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let reset = watcher::Error::WatchFailed(kube::Error::Service(Box::new(io)));
        tx.unbounded_send(Err(reset)).unwrap();
        settle().await;
        assert_eq!(a.transport_error().as_deref(), Some("reset"));
        // After the backoff the next event clears it.
        tx.unbounded_send(Ok(Event::Delete(pod("a", "Pending"))))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(a.transport_error(), None);
        assert_eq!(phase(a.next().await), "Pending");
        assert_eq!(phase(a.next().await), "gone");
    }

    /// The `Init` of the next attempt comes before its list is even requested: the trouble
    /// stays reported until the server has answered.
    #[tokio::test(start_paused = true)]
    async fn the_next_attempts_init_does_not_clear_the_watchs_trouble() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let a = hub.subscribe(key(), "a").unwrap();
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        let failed = watcher::Error::InitialListFailed(kube::Error::Service(Box::new(io)));
        tx.unbounded_send(Err(failed)).unwrap();
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(a.transport_error().as_deref(), Some("no answer"));
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        settle().await;
        assert_eq!(a.transport_error(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_stops_with_its_last_subscriber_and_restarts_lazily() {
        let script = Script::new(vec![channel().1, channel().1]);
        let hub = Hub::new(script.clone());
        assert_eq!(script.opened.load(Ordering::SeqCst), 0);
        let a = hub.subscribe(key(), "a").unwrap();
        let b = hub.subscribe(key(), "b").unwrap();
        settle().await;
        assert!(script.held.load(Ordering::SeqCst));
        drop(a);
        settle().await;
        assert!(script.held.load(Ordering::SeqCst));
        assert_eq!(hub.open(), 1);
        drop(b);
        assert_eq!(hub.open(), 0);
        settle().await;
        assert!(!script.held.load(Ordering::SeqCst), "stream dropped");
        let _c = hub.subscribe(key(), "c").unwrap();
        assert_eq!(script.opened.load(Ordering::SeqCst), 2);
        assert_eq!(hub.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_error_ends_the_watch_for_everyone_and_the_next_one_is_new() {
        let (tx, s) = channel();
        let script = Script::new(vec![s]);
        let hub = Hub::new(script.clone());
        let mut a = hub.subscribe(key(), "a").unwrap();
        let mut b = hub.subscribe(key(), "b").unwrap();
        let mut status = kube::core::Status::failure("cannot list pods", "Forbidden");
        status.code = 403;
        tx.unbounded_send(Err(watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(status),
        ))))
        .unwrap();
        settle().await;
        for sub in [&mut a, &mut b] {
            assert_eq!(
                phase(sub.next().await),
                "failed: API error 403 Forbidden: cannot list pods"
            );
        }
        assert_eq!(hub.open(), 0);
        assert!(!script.held.load(Ordering::SeqCst));
        let _c = hub.subscribe(key(), "c").unwrap();
        assert_eq!(script.opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_watch_fails_its_subscribers() {
        let s = stream::poll_fn(|_| -> std::task::Poll<Option<_>> {
            if std::hint::black_box(true) {
                panic!("watch blew up");
            }
            std::task::Poll::Pending
        })
        .boxed();
        let hub = Hub::new(Script::new(vec![s]));
        let mut a = hub.subscribe(key(), "a").unwrap();
        assert_eq!(
            phase(a.next().await),
            "failed: internal error: panic: watch blew up"
        );
        assert_eq!(hub.open(), 0);
    }

    /// kube-runtime's default backoff paces a failing watch: 0.8 s doubling (with jitter) to
    /// 30 s, instead of a retry storm.
    #[tokio::test(start_paused = true)]
    async fn a_failing_watch_is_backed_off() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let s = stream::repeat_with(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            Err(watcher::Error::InitialListFailed(kube::Error::Service(
                Box::new(io),
            )))
        })
        .boxed();
        let hub = Hub::new(Script::new(vec![s]));
        let a = hub.subscribe(key(), "a").unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let n = polls.load(Ordering::SeqCst);
        // Attempts at 0, then after 0.8, 1.6, 3.2, 6.4, 12.8, 25.6 s, each delay plus up to as
        // much again of jitter: the 6th by 49.6 s at the latest, the 7th at 50.4 s at the
        // earliest. A retry without backoff would have made thousands.
        assert!((6..=7).contains(&n), "{n} attempts in 60 s");
        assert_eq!(a.transport_error().as_deref(), Some("refused"));
    }

    /// A pod Kubernetes took away and deleted before its await subscribed: the await still
    /// gets its last state (why), then "gone", at once.
    #[tokio::test(start_paused = true)]
    async fn a_pod_taken_away_and_deleted_is_told_to_a_late_subscriber() {
        let (tx, s) = channel();
        let hub = Hub::new(Script::new(vec![s]));
        let _other = hub.subscribe(key(), "other").unwrap();
        let mut evicted = pod("a", "Pending");
        evicted.status.as_mut().unwrap().conditions =
            Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("EvictionByEvictionAPI".into()),
                ..Default::default()
            }]);
        tx.unbounded_send(Ok(Event::Init)).unwrap();
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        tx.unbounded_send(Ok(Event::Apply(evicted.clone())))
            .unwrap();
        tx.unbounded_send(Ok(Event::Delete(evicted))).unwrap();
        tx.unbounded_send(Ok(Event::Delete(pod("plain", "Pending"))))
            .unwrap();
        settle().await;
        let mut late = hub.subscribe(key(), "a").unwrap();
        assert!(!late.registered_after_a_list());
        assert_eq!(phase(late.next().await), "Pending");
        assert_eq!(phase(late.next().await), "gone");
        // A pod deleted without Kubernetes' reason is not kept: its read settles it.
        let plain = hub.subscribe(key(), "plain").unwrap();
        assert!(plain.registered_after_a_list());
    }
}
