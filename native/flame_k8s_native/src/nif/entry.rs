//! The NIFs of `FLAMEK8sBackend.Native`: typed arguments in, a task started, a handle out.
//!
//! Arguments are decoded by `args`, the task started by `tasks`, its reply encoded by `reply`.
//! Nothing else.
//!
//! No NIF here waits for anything: each returns at once on the caller's normal scheduler, so
//! no BEAM scheduler, normal or dirty, ever waits on the network (simultaneous requests
//! are as many tasks, not a queue behind the dirty IO schedulers). `FLAMEK8sBackend.Kube` turns
//! the reply into a synchronous call for its callers.

use std::future::Future;
use std::time::Duration;

use rustler::{Atom, Encoder, Env, Term};
use serde_json::Value;

use super::args::{
    ApiPath, Await, Body, Client, Connect, ContentType, Grace, Handle, Idempotent, KindArg,
    Manifest, MethodArg, Name, Namespace, QueueMs, Ref, Selector,
};
use super::reply::{self, Answer, Replier};
use super::tasks::{start, ClientResource};
use crate::nif::task::CancelToken;

use crate::api::client::ClientInfo;
use crate::error::Error;
use crate::nif::term::json_to_term;
use crate::runtime::with_timeout;
use crate::watch::follow::FollowEnd;
use crate::watch::hub::WatchKey;
use crate::watch::runner_state::Change;

rustler::atoms! {
    running,
    sent,
}

#[rustler::nif]
fn noop() -> Atom {
    rustler::types::atom::ok()
}

/// Tasks not finished yet, shared watches included (tests check that none is left behind).
#[rustler::nif]
fn live_tasks() -> usize {
    crate::nif::task::live_tasks() + crate::watch::hub::live_watches()
}

/// Reads the kubeconfig or in-cluster files (on Tokio's blocking pool) and builds the clients;
/// bounded by the request timeout like every request.
#[rustler::nif]
fn connect<'a>(env: Env<'a>, opts: Connect, reference: Ref<'a>) -> Term<'a> {
    let opts = opts.0;
    let timeout = std::time::Duration::from_millis(opts.request_timeout_ms);
    let work = async move {
        let handle = crate::api::client::connect(opts).await?;
        Ok(Answer::Client(rustler::ResourceArc::new(
            ClientResource::new(handle),
        )))
    };
    start(
        env,
        reference,
        move |_| with_timeout(timeout, work),
        reply::answer,
    )
}

#[rustler::nif]
fn client_info(client: Client) -> ClientInfo {
    client.0.handle.info()
}

/// Shared pod watches this client has open (one per namespace and label selector with awaits,
/// and one per pod awaited without a selector).
#[rustler::nif]
fn open_watches(client: Client) -> usize {
    client.0.watches.open()
}

#[rustler::nif]
fn get_pod<'a>(
    env: Env<'a>,
    client: Client,
    namespace: Namespace,
    name: Name,
    reference: Ref<'a>,
) -> Term<'a> {
    spawn_request(env, reference, client, |c, deadline| async move {
        let pod = crate::api::pods::get_pod(&c.handle, &namespace.0, &name.0, deadline).await?;
        Ok(Answer::Json(pod))
    })
}

#[rustler::nif]
fn list_pods<'a>(
    env: Env<'a>,
    client: Client,
    namespace: Namespace,
    label_selector: Selector,
    reference: Ref<'a>,
) -> Term<'a> {
    spawn_request(env, reference, client, |c, deadline| async move {
        let (ns, selector) = (&namespace.0, &label_selector.0);
        let pods = crate::api::pods::list_pods(&c.handle, ns, selector, deadline).await?;
        Ok(Answer::Json(Value::Array(pods)))
    })
}

/// Creates a pod or a secret (`kind`), after waiting at most `queue_ms` for one of the client's
/// create slots. The manifest is converted to JSON in the task. `idempotent`: the manifest's
/// name is this object's alone (`pods::create`).
#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn create<'a>(
    env: Env<'a>,
    client: Client,
    kind: KindArg,
    namespace: Namespace,
    manifest: Manifest,
    queue_ms: QueueMs,
    idempotent: Idempotent,
    reference: Ref<'a>,
) -> Term<'a> {
    // Bounded so that no value, however large, overflows the clock.
    let queue = Duration::from_millis(queue_ms.0.min(4_000_000_000));
    let slot_deadline = tokio::time::Instant::now() + queue;
    spawn_queued_request(
        env,
        reference,
        client,
        queue,
        move |c, _deadline| async move {
            let manifest = manifest.0.into_json("manifest")?;
            let (kind, ns) = (kind.0, &namespace.0);
            let created = crate::api::pods::create(
                &c.handle,
                kind,
                ns,
                manifest,
                slot_deadline,
                idempotent.0,
            )
            .await?;
            Ok(match created {
                crate::api::pods::Created::Object(v) => Answer::Json(v),
                crate::api::pods::Created::AlreadyExists => Answer::AlreadyExists,
            })
        },
    )
}

/// Deletes a pod or a secret (`kind`); `grace_period_seconds` is `nil` for the object's own.
#[rustler::nif]
fn delete<'a>(
    env: Env<'a>,
    client: Client,
    kind: KindArg,
    namespace: Namespace,
    name: Name,
    grace_period_seconds: Grace,
    reference: Ref<'a>,
) -> Term<'a> {
    spawn_request(env, reference, client, |c, deadline| async move {
        let (kind, grace) = (kind.0, grace_period_seconds.0);
        crate::api::pods::delete(&c.handle, kind, &namespace.0, &name.0, grace, deadline).await?;
        Ok(Answer::Done)
    })
}

#[rustler::nif]
fn request<'a>(
    env: Env<'a>,
    client: Client,
    method: MethodArg,
    path: ApiPath,
    body: Body,
    content_type: ContentType,
    reference: Ref<'a>,
) -> Term<'a> {
    spawn_request(env, reference, client, |c, deadline| async move {
        let body = body.0.map(|b| b.into_json("body")).transpose()?;
        let ct = content_type.0;
        let (method, path) = (method.0, &path.0);
        let v = crate::api::raw::request(
            &c.handle,
            method,
            path,
            body.as_ref(),
            ct.as_deref(),
            deadline,
        );
        Ok(Answer::Json(v.await?))
    })
}

/// Watches a pod (through the client's shared watch of its namespace and `label_selector`,
/// or alone); see `Kube.await_pod/4` for the messages. With `report_ready: false` an interim
/// `{:running, pod}` comes first, at most once, never after a cancel.
#[rustler::nif]
fn await_pod<'a>(
    env: Env<'a>,
    client: Client,
    namespace: Namespace,
    name: Name,
    opts: Await,
    reference: Ref<'a>,
) -> Term<'a> {
    let selector = opts.0.label_selector();
    let opts = opts.0.options();
    let repliers = (!opts.report_ready)
        .then(|| Replier::new(env.pid(), reference.0))
        .into_iter()
        .collect();
    let work = move |cancel: CancelToken| {
        let mut interims = Interims { cancel, repliers };
        let on_running = move |pod: &Value| {
            interims.send(|env| Ok((running(), json_to_term(env, pod)?).encode(env)));
        };
        let c = client.0;
        async move {
            let (ns, name, selector) = (&namespace.0, &name.0, selector.as_deref());
            let (handle, watches) = (&c.handle, &c.watches);
            crate::watch::await_pod::await_pod(
                handle, watches, ns, name, selector, opts, on_running,
            )
            .await
        }
    };
    start(env, reference, work, reply::outcome)
}

/// Follows a booted runner's pod through the client's shared watch of `namespace` and
/// `label_selector` (see `Kube.follow_pod/4` for the messages). The subscription is made here,
/// before the NIF returns, so that a boot's await cancelled right after it leaves the watch
/// open: following costs no request.
#[rustler::nif]
fn follow_pod<'a>(
    env: Env<'a>,
    client: Client,
    namespace: Namespace,
    name: Name,
    label_selector: Selector,
    reference: Ref<'a>,
) -> Term<'a> {
    let c = client.0;
    let key = WatchKey::for_pod(&namespace.0, &name.0, Some(&label_selector.0));
    let subscription = match crate::runtime::runtime() {
        Ok(rt) => {
            // The hub starts a watch (a task) when none runs yet: it needs the runtime.
            let _entered = rt.enter();
            c.watches.subscribe(key, &name.0)
        }
        Err(e) => Err(e),
    };
    let subscription = match subscription {
        Ok(s) => s,
        Err(e) => return reply::error(env, &c.handle.scrub(e)),
    };
    // One message per change, each at most once (`runner_state::Follow`).
    let repliers = (0..3)
        .map(|_| Replier::new(env.pid(), reference.0))
        .collect();
    let work = move |cancel: CancelToken| {
        let mut interims = Interims { cancel, repliers };
        let on_change = move |change: Change| interims.send(|env| Ok(change.encode(env)));
        async move {
            match crate::watch::follow::follow(subscription, on_change).await {
                FollowEnd::Error(e) => FollowEnd::Error(c.handle.scrub(e)),
                end => end,
            }
        }
    };
    start(env, reference, work, reply::follow_end)
}

/// The interim messages of one task, each through a replier of its own: as many as there are
/// repliers, and none once the task is cancelled (its caller expects nothing more from it).
struct Interims {
    cancel: CancelToken,
    repliers: Vec<Replier>,
}

impl Interims {
    fn send<F>(&mut self, build: F)
    where
        F: for<'b> FnOnce(Env<'b>) -> rustler::NifResult<Term<'b>>,
    {
        if self.cancel.is_cancelled() {
            return;
        }
        if let Some(r) = self.repliers.pop() {
            r.send_interim(build);
        }
    }
}

/// Cancels a request or an await. Idempotent. `:ok`: its final reply will never come;
/// `:sent`: the task got to its final reply first, which is (or is about to be) in the
/// caller's mailbox. Either way the task ends.
#[rustler::nif]
fn cancel(handle: Handle) -> Atom {
    match handle.0.cancel() {
        crate::nif::task::Cancelled::BeforeReport => rustler::types::atom::ok(),
        crate::nif::task::Cancelled::AfterReport => sent(),
    }
}

/// A request task: `work` bounded by the client's request timeout, its errors scrubbed of the
/// client's secret, its reply one of `:ok`, `{:ok, value}` or `{:error, reason}`. `work` gets
/// the deadline that timeout sets, so that its retries never start past it.
fn spawn_request<'a, W, F>(env: Env<'a>, reference: Ref<'a>, client: Client, work: W) -> Term<'a>
where
    W: FnOnce(rustler::ResourceArc<ClientResource>, tokio::time::Instant) -> F,
    F: Future<Output = Result<Answer, Error>> + Send + 'static,
{
    spawn_queued_request(env, reference, client, Duration::ZERO, work)
}

/// `spawn_request` for a request that may first wait up to `queue` for its turn: the task's
/// bound (and `work`'s deadline) is the request timeout plus `queue`.
fn spawn_queued_request<'a, W, F>(
    env: Env<'a>,
    reference: Ref<'a>,
    client: Client,
    queue: Duration,
    work: W,
) -> Term<'a>
where
    W: FnOnce(rustler::ResourceArc<ClientResource>, tokio::time::Instant) -> F,
    F: Future<Output = Result<Answer, Error>> + Send + 'static,
{
    let client = client.0;
    let timeout = client.handle.request_timeout().saturating_add(queue);
    // Taken here, on the scheduler, a moment before the task's own timeout starts: a retry
    // that fits before it also fits before the timeout.
    let deadline = tokio::time::Instant::now() + timeout;
    let future = work(client.clone(), deadline);
    let bounded = async move {
        with_timeout(timeout, future)
            .await
            .map_err(|e| client.handle.scrub(e))
    };
    start(env, reference, move |_| bounded, reply::answer)
}
