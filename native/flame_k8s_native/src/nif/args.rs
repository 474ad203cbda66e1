//! The NIF arguments as Rust types.
//!
//! `FLAMEK8sBackend.Kube` validates every value before it calls a NIF (the one place where
//! arguments are validated: it names options the way the caller wrote them, shows the bad value
//! with `inspect` unless it is a secret, and knows the caller's defaults). Here a term is only
//! decoded into its type. A term of another type can only come from calling
//! `FLAMEK8sBackend.Native` directly: it raises `ArgumentError` naming the argument, and
//! nothing is started.

use rustler::env::{OwnedEnv, SavedTerm};
use rustler::{Decoder, Encoder, NifException, NifMap, NifResult, ResourceArc, Term};
use serde_json::Value;

use super::tasks::{ClientResource, TaskResource};
use crate::await_pod::AwaitOptions;
use crate::client::ConnectOptions;
use crate::error::Error;
use crate::pods::Kind;
use crate::raw::Method;
use crate::readiness::UnschedulablePolicy;
use crate::term::term_to_json;

/// Raised as `%ArgumentError{message: message}`.
#[derive(NifException)]
#[module = "ArgumentError"]
pub struct ArgumentError {
    message: String,
}

fn raise(message: &str) -> rustler::Error {
    rustler::Error::RaiseTerm(Box::new(ArgumentError {
        message: message.to_string(),
    }))
}

/// Newtypes that decode as their inner type and raise `ArgumentError` with the given message
/// for any other term (rustler's own decoders only say `badarg`).
macro_rules! arguments {
    ($($(#[$doc:meta])* $ty:ident($inner:ty) = $expected:literal;)*) => {$(
        $(#[$doc])*
        pub struct $ty(pub $inner);

        impl<'a> Decoder<'a> for $ty {
            fn decode(term: Term<'a>) -> NifResult<Self> {
                term.decode().map($ty).map_err(|_| raise($expected))
            }
        }
    )*};
}

arguments! {
    Client(ResourceArc<ClientResource>) = "client: expected a client returned by connect/2";
    Handle(ResourceArc<TaskResource>) = "handle: expected a handle returned by a request or await_pod/6";
    Namespace(String) = "namespace: expected a UTF-8 binary";
    Name(String) = "name: expected a UTF-8 binary";
    Selector(String) = "label_selector: expected a UTF-8 binary";
    ApiPath(String) = "path: expected a UTF-8 binary";
    /// `nil`: the object's own grace period.
    Grace(Option<u32>) = "grace_period_seconds: expected a non-negative integer or nil";
    ContentType(Option<String>) = "content_type: expected a UTF-8 binary or nil";
    KindArg(Kind) = "kind: expected :pod or :secret";
    MethodArg(Method) = "method: expected :get, :post, :put, :patch or :delete";
}

rustler::atoms! {
    max_concurrent_creates,
    label_selector,
}

/// Options maps gained keys over time; a key that is absent takes its default, so a map built
/// for an earlier version still decodes (the derived decoders require every key).
fn with_defaults<'a>(term: Term<'a>, defaults: &[(rustler::Atom, Term<'a>)]) -> Term<'a> {
    let mut term = term;
    for (key, value) in defaults {
        if term.is_map() && term.map_get(*key).is_err() {
            if let Ok(with) = term.map_put(*key, *value) {
                term = with;
            }
        }
    }
    term
}

/// The connect options map built by `Kube.connect/1`.
pub struct Connect(pub ConnectOptions);

impl<'a> Decoder<'a> for Connect {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let default = crate::client::DEFAULT_MAX_CONCURRENT_CREATES.encode(term.get_env());
        with_defaults(term, &[(max_concurrent_creates(), default)])
            .decode()
            .map(Connect)
            .map_err(|_| {
                raise("opts: expected the connect options map built by FLAMEK8sBackend.Kube.connect/1")
            })
    }
}

/// The options map of `await_pod/5`.
pub struct Await(pub AwaitArgs);

impl<'a> Decoder<'a> for Await {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let nil = rustler::types::atom::nil().to_term(term.get_env());
        with_defaults(term, &[(label_selector(), nil)])
            .decode()
            .map(Await)
            .map_err(|_| {
                raise("opts: expected %{timeout_ms: pos_integer, unschedulable: :fail | :wait, report_ready: boolean, label_selector: binary | nil}")
            })
    }
}

/// The fields of `Await`.
#[derive(NifMap)]
#[rustler(decode)]
pub struct AwaitArgs {
    timeout_ms: u64,
    unschedulable: UnschedulablePolicy,
    report_ready: bool,
    /// `nil` (or empty: it would select every pod of the namespace): a watch of this pod alone.
    label_selector: Option<String>,
}

impl AwaitArgs {
    pub fn label_selector(&self) -> Option<String> {
        self.label_selector.clone().filter(|s| !s.is_empty())
    }

    pub fn options(&self) -> AwaitOptions {
        AwaitOptions {
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            unschedulable: self.unschedulable,
            report_ready: self.report_ready,
        }
    }
}

/// The reference the reply is tagged with.
pub struct Ref<'a>(pub Term<'a>);

impl<'a> Decoder<'a> for Ref<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        if term.is_ref() {
            Ok(Ref(term))
        } else {
            Err(raise("ref: expected a reference"))
        }
    }
}

/// A term copied out of the call for its task: the call's own terms die when the NIF returns.
/// The conversion to JSON happens in the task, so a large manifest costs a copy on the
/// scheduler, not a conversion. The env is never cleared, so loading the term cannot fail.
pub struct Owned {
    env: OwnedEnv,
    term: SavedTerm,
}

impl Owned {
    fn new(term: Term) -> Self {
        let env = OwnedEnv::new();
        let term = env.save(term);
        Owned { env, term }
    }

    /// The term as JSON; a value JSON cannot hold is `{:invalid_manifest, "path: ..."}`, with
    /// `root` naming the term itself.
    pub fn into_json(self, root: &str) -> Result<Value, Error> {
        self.env
            .run(|env| term_to_json(self.term.load(env), root))
            .map_err(Error::InvalidManifest)
    }
}

/// A pod or secret manifest: a map.
pub struct Manifest(pub Owned);

impl<'a> Decoder<'a> for Manifest {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        if term.is_map() {
            Ok(Manifest(Owned::new(term)))
        } else {
            Err(raise("manifest: expected a map"))
        }
    }
}

/// The body of `request/7`: any term, or `nil` for none.
pub struct Body(pub Option<Owned>);

impl<'a> Decoder<'a> for Body {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let nil = rustler::types::atom::nil().to_term(term.get_env());
        Ok(Body((term != nil).then(|| Owned::new(term))))
    }
}
