//! What goes back to Elixir: the shapes `FLAMEK8sBackend.Kube` documents, and how tasks send them.
//!
//! The shapes are declared once, as types whose encoders rustler derives; a task sends them
//! one way only.
//!
//! Core types whose shape is the Elixir one derive their encoders where they are declared
//! (`FailureReason`, `Phase`, `ClientInfo`); the types here cover the rest (`Error::Api` has
//! named fields but is a 4-tuple in Elixir; a pod is JSON until it is encoded) and borrow from
//! the core's values instead of copying them.

use rustler::env::{OwnedEnv, SavedTerm};
use rustler::{Encoder, Env, LocalPid, NifResult, NifTaggedEnum, ResourceArc, Term};
use serde_json::Value;

use super::tasks::ClientResource;
use crate::error::Error;
use crate::nif::term::json_to_term;
use crate::watch::await_pod::{AwaitOutcome, Phase};
use crate::watch::readiness::FailureReason;

rustler::atoms! {
    flame_k8s,
    already_exists,
    gone,
}

/// The `reason` of `{:error, reason}` (the table in `error.rs`).
#[derive(NifTaggedEnum)]
#[rustler(encode)]
enum Reason<'e> {
    Api(u16, &'e str, &'e str),
    Connect(&'e str),
    Timeout(u64),
    InvalidManifest(&'e str),
    Config(&'e str),
    Decode(&'e str),
    Internal(&'e str),
    OutcomeUnknown {
        reason: Box<Reason<'e>>,
        settle_ms: u64,
    },
}

impl<'e> From<&'e Error> for Reason<'e> {
    fn from(e: &'e Error) -> Self {
        match e {
            Error::Api {
                code,
                reason,
                message,
            } => Reason::Api(*code, reason, message),
            Error::Connect(m) => Reason::Connect(m),
            Error::Timeout(ms) => Reason::Timeout(*ms),
            Error::InvalidManifest(m) => Reason::InvalidManifest(m),
            Error::Config(m) => Reason::Config(m),
            Error::Decode(m) => Reason::Decode(m),
            Error::Internal(m) => Reason::Internal(m),
            Error::OutcomeUnknown { cause, settled_at } => Reason::OutcomeUnknown {
                reason: Box::new(Reason::from(cause.as_ref())),
                settle_ms: Error::settle_ms(*settled_at),
            },
        }
    }
}

/// `{:error, reason}`.
pub fn error<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    (rustler::types::atom::error(), Reason::from(e)).encode(env)
}

/// What a request answers when it succeeds.
pub enum Answer {
    /// `:ok`
    Done,
    /// `{:ok, term}`
    Json(Value),
    /// `{:ok, client}`
    Client(ResourceArc<ClientResource>),
    /// `{:ok, :already_exists}`: an idempotent create found its object there.
    AlreadyExists,
}

/// The reply of a request task.
pub fn answer<'a>(env: Env<'a>, result: Result<Answer, Error>) -> NifResult<Term<'a>> {
    let ok = rustler::types::atom::ok();
    Ok(match result {
        Ok(Answer::Done) => ok.encode(env),
        Ok(Answer::Json(v)) => (ok, json_to_term(env, &v)?).encode(env),
        Ok(Answer::Client(c)) => (ok, c).encode(env),
        Ok(Answer::AlreadyExists) => (ok, already_exists()).encode(env),
        Err(e) => error(env, &e),
    })
}

/// The final message of an await (`Kube.await_pod/4` lists them).
#[derive(NifTaggedEnum)]
#[rustler(encode)]
enum Outcome<'a, 'o> {
    Ready(Term<'a>),
    Failed(&'o FailureReason),
    Deleted(&'o str),
    Disrupted(&'o crate::watch::runner_state::Disruption),
    Timeout {
        phase: Phase,
        waited_ms: u64,
        detail: Option<&'o str>,
    },
    Error(Reason<'o>),
}

/// The reply of an await task.
pub fn outcome<'a>(env: Env<'a>, outcome: AwaitOutcome) -> NifResult<Term<'a>> {
    let o = match &outcome {
        AwaitOutcome::Ready(pod) => Outcome::Ready(json_to_term(env, pod)?),
        AwaitOutcome::Failed(f) => Outcome::Failed(f),
        AwaitOutcome::Deleted(name) => Outcome::Deleted(name),
        AwaitOutcome::Disrupted(d) => Outcome::Disrupted(d),
        AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail,
        } => Outcome::Timeout {
            phase: *phase,
            waited_ms: *waited_ms,
            detail: detail.as_deref(),
        },
        AwaitOutcome::Error(e) => Outcome::Error(e.into()),
    };
    Ok(o.encode(env))
}

/// The final message of a follow (`Kube.follow_pod/4`): `:gone` or `{:error, reason}`.
pub fn follow_end<'a>(env: Env<'a>, end: crate::watch::follow::FollowEnd) -> NifResult<Term<'a>> {
    Ok(match end {
        crate::watch::follow::FollowEnd::Gone => gone().encode(env),
        crate::watch::follow::FollowEnd::Error(e) => error(env, &e),
    })
}

/// Sends one `{:flame_k8s, ref, message}` to the caller, from a task (never from a scheduler:
/// the VM allows a process-independent env to send only from threads it does not manage).
pub struct Replier {
    env: OwnedEnv,
    reference: SavedTerm,
    pid: LocalPid,
}

impl Replier {
    pub fn new(pid: LocalPid, reference: Term) -> Self {
        let env = OwnedEnv::new();
        let reference = env.save(reference);
        Replier {
            env,
            reference,
            pid,
        }
    }

    /// Send the message `build` makes. If it cannot be made (JSON to term fails only on
    /// duplicate map keys, which a JSON object cannot have), the caller still gets its one
    /// reply: `{:error, {:internal, _}}`.
    pub fn send<F>(self, build: F)
    where
        F: for<'b> FnOnce(Env<'b>) -> NifResult<Term<'b>>,
    {
        self.deliver(build, true);
    }

    /// Send the message `build` makes, or nothing if it cannot be made (an interim message is
    /// better missing than malformed: the final reply still comes).
    pub fn send_interim<F>(self, build: F)
    where
        F: for<'b> FnOnce(Env<'b>) -> NifResult<Term<'b>>,
    {
        self.deliver(build, false);
    }

    fn deliver<F>(mut self, build: F, fallback: bool)
    where
        F: for<'b> FnOnce(Env<'b>) -> NifResult<Term<'b>>,
    {
        let message = self.env.run(|env| match build(env) {
            Ok(t) => Some(self.env.save(t)),
            Err(_) if fallback => {
                let e = Error::Internal("cannot encode the result".into());
                Some(self.env.save(error(env, &e)))
            }
            Err(_) => None,
        });
        let Some(message) = message else { return };
        let reference = self.reference;
        // A caller that is gone is not an error: there is nobody left to tell.
        let _ = self.env.send_and_clear(&self.pid, |env| {
            (flame_k8s(), reference.load(env), message.load(env))
        });
    }
}
