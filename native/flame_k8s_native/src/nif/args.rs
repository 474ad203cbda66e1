//! The NIF arguments as Rust types.
//!
//! The user's options are validated once, by `FLAMEK8sBackend.Options`, with messages that name
//! them. Here a term is only decoded into its type. A term of another type raises
//! `ArgumentError` naming the argument, and nothing is started. Two checks go beyond the type, because what they prevent happens in
//! the NIF itself: names and selectors that could not fit in a request URL (an `ArgumentError`
//! instead of a request that cannot be built), and terms whose copy would be huge (shared
//! subterms are copied once per occurrence: see `Owned`).

use rustler::env::{OwnedEnv, SavedTerm};
use rustler::{Decoder, Encoder, NifException, NifMap, NifResult, ResourceArc, Term};
use serde_json::Value;

use super::tasks::{ClientResource, TaskResource};
use crate::api::config::ConnectOptions;
use crate::api::pods::Kind;
use crate::api::raw::Method;
use crate::error::Error;
use crate::nif::term::term_to_json;
use crate::watch::await_pod::AwaitOptions;
use crate::watch::readiness::UnschedulablePolicy;

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
    ApiPath(String) = "path: expected a UTF-8 binary";
    /// `nil`: the object's own grace period.
    Grace(Option<u32>) = "grace_period_seconds: expected a non-negative integer or nil";
    /// Milliseconds a create may wait for a create slot.
    QueueMs(u64) = "queue_ms: expected a non-negative integer";
    /// Whether a create's name is its object's alone (see `pods::create`).
    Idempotent(bool) = "idempotent: expected a boolean";
    ContentType(Option<String>) = "content_type: expected a UTF-8 binary or nil";
    KindArg(Kind) = "kind: expected :pod or :secret";
    MethodArg(Method) = "method: expected :get, :post, :put, :patch or :delete";
}

rustler::atoms! {
    max_concurrent_creates,
    label_selector,
}

/// A label selector's bound: percent-encoded (up to 3 bytes per byte) it stays
/// within what an HTTP URI may hold (64 KiB).
pub const MAX_SELECTOR: usize = 16_384;

/// A namespace or name: a Kubernetes name. It goes into the
/// request's path as it is, so nothing else may: no `/`, `?`, `%`, space or control character,
/// not `.` or `..`, at most 253 bytes.
fn kubernetes_name(term: Term, what: &str) -> NifResult<String> {
    let expected = || {
        raise(&format!(
            "{what}: expected a Kubernetes name (letters, digits, -, ., _, :; 1 to 253 of them)"
        ))
    };
    let s: String = term.decode().map_err(|_| expected())?;
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if (1..=253).contains(&s.len()) && chars_ok && s != "." && s != ".." {
        Ok(s)
    } else {
        Err(expected())
    }
}

/// A namespace (see `kubernetes_name`).
pub struct Namespace(pub String);

impl<'a> Decoder<'a> for Namespace {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        kubernetes_name(term, "namespace").map(Namespace)
    }
}

/// A pod or secret name (see `kubernetes_name`).
pub struct Name(pub String);

impl<'a> Decoder<'a> for Name {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        kubernetes_name(term, "name").map(Name)
    }
}

/// A label selector of at most `MAX_SELECTOR` bytes (empty: every pod).
pub struct Selector(pub String);

impl<'a> Decoder<'a> for Selector {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        match term.decode::<String>() {
            Ok(s) if s.len() <= MAX_SELECTOR => Ok(Selector(s)),
            _ => Err(raise(&format!(
                "label_selector: expected a UTF-8 binary of at most {MAX_SELECTOR} bytes"
            ))),
        }
    }
}

/// A key absent from an options map takes its default, so a map built without an optional key
/// still decodes (the derived decoders require every key).
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
        let default = crate::api::config::DEFAULT_MAX_CONCURRENT_CREATES.encode(term.get_env());
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
        let expected = || {
            raise(&format!("opts: expected %{{timeout_ms: pos_integer, unschedulable: :fail | :wait, report_ready: boolean, label_selector: binary of at most {MAX_SELECTOR} bytes | nil}}"))
        };
        let args: AwaitArgs = with_defaults(term, &[(label_selector(), nil)])
            .decode()
            .map_err(|_| expected())?;
        if args
            .label_selector
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SELECTOR)
        {
            return Err(expected());
        }
        Ok(Await(args))
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
///
/// The copy (`enif_make_copy`) and the conversion both flatten the term: a subterm shared by
/// reference (`x = [y, y]`, 24 times over) is copied once per occurrence, so a term of a few
/// hundred bytes can stand for millions of values. The term is measured first, as the copy
/// would see it, and one of more than `MAX_TERM_NODES` values is not copied at all: it is
/// `{:invalid_manifest, ...}` when the task converts it.
pub struct Owned(Result<(OwnedEnv, SavedTerm), Refused>);

/// Why a term was not copied.
enum Refused {
    /// More than `MAX_TERM_NODES` values.
    TooLarge,
    /// A value JSON cannot hold, found (with its path) before anything was copied.
    Invalid(String),
}

impl Owned {
    fn new(term: Term) -> Self {
        match measure(term, MAX_TERM_NODES) {
            Measured::Within => {
                let env = OwnedEnv::new();
                let saved = env.save(term);
                Owned(Ok((env, saved)))
            }
            Measured::TooLarge => Owned(Err(Refused::TooLarge)),
            // A fun's environment is copied too, and cannot be measured: the term is
            // converted now instead (it fails at the fun at the latest, after at most
            // `MAX_TERM_NODES` values), and only the error is kept.
            Measured::HasFun => Owned(Err(match term_to_json(term, "") {
                Err(message) => Refused::Invalid(message),
                Ok(_) => Refused::TooLarge,
            })),
        }
    }

    /// The term as JSON; a value JSON cannot hold is `{:invalid_manifest, "path: ..."}`, with
    /// `root` naming the term itself.
    pub fn into_json(self, root: &str) -> Result<Value, Error> {
        match self.0 {
            Ok((env, saved)) => env
                .run(|env| term_to_json(saved.load(env), root))
                .map_err(Error::InvalidManifest),
            Err(Refused::TooLarge) => Err(Error::InvalidManifest(format!(
                "{root}: more than {MAX_TERM_NODES} values (a subterm counts once per \
                 occurrence: shared subterms are copied each time)"
            ))),
            Err(Refused::Invalid(message)) if message.starts_with(": ") => {
                Err(Error::InvalidManifest(format!("{root}{message}")))
            }
            Err(Refused::Invalid(message)) => Err(Error::InvalidManifest(message)),
        }
    }
}

/// The most values (every list element, map key and value, tuple element, and the term
/// itself) a manifest or body may hold, counted as the copy counts them. A pod manifest holds
/// hundreds; a million is tens of MB of JSON.
pub const MAX_TERM_NODES: usize = 1_000_000;

enum Measured {
    Within,
    TooLarge,
    HasFun,
}

/// Counts the values of `term` as a copy flattens it, up to `budget`: stops as soon as the
/// count passes it, so it costs at most `budget` steps however large the flattened term is.
/// Iterative: its stack use does not grow with the term's depth.
fn measure(term: Term, budget: usize) -> Measured {
    let mut pending = vec![term];
    let mut count = 0usize;
    let mut has_fun = false;
    while let Some(t) = pending.pop() {
        count += 1;
        if count > budget {
            return Measured::TooLarge;
        }
        match t.get_type() {
            rustler::TermType::List => {
                // Each cell's head, and an improper tail.
                let mut rest = t;
                while let Ok((head, tail)) = rest.list_get_cell() {
                    pending.push(head);
                    if pending.len() > budget {
                        return Measured::TooLarge;
                    }
                    rest = tail;
                }
                if !rest.is_empty_list() {
                    pending.push(rest);
                }
            }
            rustler::TermType::Map => {
                if let Some(entries) = rustler::types::map::MapIterator::new(t) {
                    for (k, v) in entries {
                        pending.push(k);
                        pending.push(v);
                        if pending.len() > budget {
                            return Measured::TooLarge;
                        }
                    }
                }
            }
            rustler::TermType::Tuple => {
                if let Ok(elements) = rustler::types::tuple::get_tuple(t) {
                    if elements.len() > budget {
                        return Measured::TooLarge;
                    }
                    pending.extend(elements);
                }
            }
            rustler::TermType::Fun => has_fun = true,
            _ => {}
        }
    }
    if has_fun {
        Measured::HasFun
    } else {
        Measured::Within
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
