//! How a NIF call becomes a task: the handle it returns, the monitor on the caller, the reply.
//!
//! Every NIF that talks to the API server returns `{:ok, handle}` at once and its task later
//! sends the caller `{:flame_k8s, ref, reply}`, exactly once, unless cancelled first. The task
//! is cancelled (its future dropped, which abandons any HTTP request in flight) when the
//! caller exits (the monitor's `down`) or calls `cancel/1` (`Kube` does when it stops waiting),
//! so no task outlives its caller's interest.

use std::future::Future;

use rustler::{Encoder, Env, LocalPid, Monitor, NifResult, ResourceArc, Term};

use super::args::Ref;
use super::reply::{self, Replier};
use crate::api::client::ClientHandle;
use crate::error::Error;
use crate::nif::task::{
    cancel_pair, spawn_reporting, CancelToken, Cancelled, Canceller, LiveGuard,
};
use crate::watch::hub::Hub;

/// A connection (`Kube.t()`'s `resource`): its clients, and the pod watches its awaits share.
pub struct ClientResource {
    pub handle: ClientHandle,
    pub watches: Hub,
}

impl ClientResource {
    pub fn new(handle: ClientHandle) -> Self {
        let watches = crate::watch::source::pod_watches(&handle);
        ClientResource { handle, watches }
    }
}

#[rustler::resource_impl]
impl rustler::Resource for ClientResource {}

/// A running task, as the caller holds it.
pub struct TaskResource {
    canceller: Canceller,
}

#[rustler::resource_impl]
impl rustler::Resource for TaskResource {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _mon: Monitor) {
        // The caller died: nobody is left to receive the reply.
        let _ = self.canceller.cancel();
    }
}

impl TaskResource {
    /// Idempotent. Says whether the final reply had already been claimed by the task (it is
    /// then in the caller's mailbox or about to be); interim messages are not covered.
    pub fn cancel(&self) -> Cancelled {
        self.canceller.cancel()
    }
}

/// Start the future `work` builds as a task on the runtime; `encode` turns its output into the
/// reply. `work` gets the task's cancel token: work that sends messages of its own (the interim
/// `{:running, pod}` of an await) checks it before each. Returns `{:ok, handle}`, or
/// `{:error, {:internal, _}}` if no task could start.
pub fn start<'a, T, F, W, E>(env: Env<'a>, reference: Ref<'a>, work: W, encode: E) -> Term<'a>
where
    W: FnOnce(CancelToken) -> F,
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
    E: for<'b> FnOnce(Env<'b>, T) -> NifResult<Term<'b>> + Send + 'static,
{
    let pid = env.pid();
    let (canceller, token) = cancel_pair();
    let resource = ResourceArc::new(TaskResource { canceller });
    if env.monitor(&resource, &pid).is_none() {
        let e = Error::Internal("cannot monitor the calling process".into());
        return reply::error(env, &e);
    }
    let replier = Replier::new(pid, reference.0);
    let future = work(token.clone());
    // The task holds the resource until it ends, so the monitor (and `down`) outlives a handle
    // the caller dropped.
    let held = resource.clone();
    let report = move |result: Result<T, Error>| {
        let _held = held;
        replier.send(move |env| match result {
            Ok(output) => encode(env, output),
            // The work panicked.
            Err(e) => Ok(reply::error(env, &e)),
        });
    };
    match spawn_reporting(future, token, LiveGuard::new(), report) {
        Ok(()) => (rustler::types::atom::ok(), resource).encode(env),
        Err(e) => reply::error(env, &e),
    }
}
