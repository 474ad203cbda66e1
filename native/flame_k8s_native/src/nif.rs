//! The NIFs: decode arguments, call the core, encode results. Nothing else.

use std::time::Duration;

use rustler::env::OwnedEnv;
use rustler::{Encoder, Env, LocalPid, Monitor, NifResult, ResourceArc, Term};
use serde_json::Value;

use crate::await_pod::{AwaitOptions, AwaitOutcome, Phase};
use crate::client::{ClientHandle, ConnectOptions, Mode};
use crate::error::Error;
use crate::manifest::check_path_segment;
use crate::readiness::{FailureReason, UnschedulablePolicy};
use crate::runtime::block_on_with_timeout;
use crate::task::{cancel_pair, spawn_reporting, Canceller, LiveGuard};
use crate::term::{json_to_term, term_to_json};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        // error reasons
        api,
        connect,
        timeout,
        invalid_manifest,
        config,
        decode,
        internal,
        // await results
        flame_k8s,
        ready,
        failed,
        deleted,
        image_pull,
        container_config,
        container_exited,
        unschedulable,
        pod_phase,
        scheduling,
        container_start,
        running,
        report_ready,
        // map keys
        reason,
        container,
        image,
        message,
        exit_code,
        phase,
        waited_ms,
        detail,
        server,
        default_namespace,
        request_timeout_ms,
        mode,
        kubeconfig,
        context,
        url,
        ca_cert_pem,
        token,
        insecure_skip_tls_verify,
        timeout_ms,
        // option values
        in_cluster,
        explicit,
        fail,
        wait,
        // ArgumentError
        __struct__,
        __exception__,
    }
}

// ---------------------------------------------------------------------------------------------
// Resources

pub struct ClientResource {
    handle: ClientHandle,
}

#[rustler::resource_impl]
impl rustler::Resource for ClientResource {}

pub struct AwaitResource {
    canceller: Canceller,
}

#[rustler::resource_impl]
impl rustler::Resource for AwaitResource {
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _mon: Monitor) {
        // The caller died: nobody is left to receive the result.
        self.canceller.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// Argument decoding: failures raise ArgumentError naming the argument.

/// An `%ArgumentError{message: ...}` to raise.
struct ArgumentError(String);

impl Encoder for ArgumentError {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let module = rustler::Atom::from_str(env, "Elixir.ArgumentError");
        let pairs = module.map(|m| {
            [
                (atoms::__struct__().encode(env), m.encode(env)),
                (atoms::__exception__().encode(env), true.encode(env)),
                (atoms::message().encode(env), self.0.as_str().encode(env)),
            ]
        });
        pairs
            .and_then(|p| Term::map_from_pairs(env, &p))
            .unwrap_or_else(|_| (rustler::types::atom::badarg(), self.0.as_str()).encode(env))
    }
}

fn arg_error(msg: impl Into<String>) -> rustler::Error {
    rustler::Error::RaiseTerm(Box::new(ArgumentError(msg.into())))
}

fn decode_client(term: Term) -> NifResult<ResourceArc<ClientResource>> {
    term.decode::<ResourceArc<ClientResource>>()
        .map_err(|_| arg_error("client: expected a client handle returned by connect/1"))
}

fn decode_string(term: Term, what: &str) -> NifResult<String> {
    let bin = rustler::Binary::from_term(term)
        .map_err(|_| arg_error(format!("{what}: expected a binary")))?;
    std::str::from_utf8(bin.as_slice())
        .map(str::to_string)
        .map_err(|_| arg_error(format!("{what}: expected a UTF-8 binary")))
}

fn decode_opt_string(term: Term, what: &str) -> NifResult<Option<String>> {
    if is_nil(term) {
        Ok(None)
    } else {
        decode_string(term, what)
            .map(Some)
            .map_err(|_| arg_error(format!("{what}: expected a binary or nil")))
    }
}

fn decode_name(term: Term, what: &str) -> NifResult<String> {
    let s = decode_string(term, what)?;
    check_path_segment(what, &s).map_err(arg_error)?;
    Ok(s)
}

fn is_nil(term: Term) -> bool {
    term == rustler::types::atom::nil().to_term(term.get_env())
}

fn atom_name(term: Term) -> Option<String> {
    if term.is_atom() {
        term.atom_to_string().ok()
    } else {
        None
    }
}

fn map_field<'a>(map: Term<'a>, key: rustler::Atom, what: &str) -> NifResult<Term<'a>> {
    if !map.is_map() {
        return Err(arg_error(format!("{what}: expected a map")));
    }
    let env = map.get_env();
    map.map_get(key.to_term(env)).map_err(|_| {
        let k = key.to_term(env).atom_to_string().unwrap_or_default();
        arg_error(format!("{what}: missing key :{k}"))
    })
}

fn decode_pos_integer(term: Term, what: &str) -> NifResult<u64> {
    match term.decode::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(arg_error(format!("{what}: expected a positive integer"))),
    }
}

fn decode_bool(term: Term, what: &str) -> NifResult<bool> {
    term.decode::<bool>()
        .map_err(|_| arg_error(format!("{what}: expected a boolean")))
}

fn decode_connect_opts(opts: Term) -> NifResult<ConnectOptions> {
    let field = |k, name: &str| map_field(opts, k, "opts").map(|t| (t, format!("opts.{name}")));
    let (t, what) = field(atoms::mode(), "mode")?;
    let mode = match atom_name(t).as_deref() {
        Some("in_cluster") => Mode::InCluster,
        Some("kubeconfig") => Mode::Kubeconfig,
        Some("explicit") => Mode::Explicit,
        _ => {
            return Err(arg_error(format!(
                "{what}: expected :in_cluster, :kubeconfig or :explicit"
            )))
        }
    };
    let opt_string = |k, name: &str| -> NifResult<Option<String>> {
        let (t, what) = field(k, name)?;
        decode_opt_string(t, &what)
    };
    let (t, what) = field(
        atoms::insecure_skip_tls_verify(),
        "insecure_skip_tls_verify",
    )?;
    let insecure = decode_bool(t, &what)?;
    let (t, what) = field(atoms::request_timeout_ms(), "request_timeout_ms")?;
    let request_timeout_ms = decode_pos_integer(t, &what)?;
    Ok(ConnectOptions {
        mode: Some(mode),
        kubeconfig: opt_string(atoms::kubeconfig(), "kubeconfig")?,
        context: opt_string(atoms::context(), "context")?,
        url: opt_string(atoms::url(), "url")?,
        ca_cert_pem: opt_string(atoms::ca_cert_pem(), "ca_cert_pem")?,
        token: opt_string(atoms::token(), "token")?,
        insecure_skip_tls_verify: insecure,
        request_timeout_ms,
    })
}

fn decode_await_opts(opts: Term) -> NifResult<AwaitOptions> {
    let t = map_field(opts, atoms::timeout_ms(), "opts")?;
    let timeout_ms = decode_pos_integer(t, "opts.timeout_ms")?;
    let t = map_field(opts, atoms::unschedulable(), "opts")?;
    let unschedulable = match atom_name(t).as_deref() {
        Some("fail") => UnschedulablePolicy::Fail,
        Some("wait") => UnschedulablePolicy::Wait,
        _ => return Err(arg_error("opts.unschedulable: expected :fail or :wait")),
    };
    // Optional (default true) so callers written before it existed keep working.
    let env = opts.get_env();
    let report_ready = match opts.map_get(atoms::report_ready().to_term(env)) {
        Ok(t) => decode_bool(t, "opts.report_ready")?,
        Err(_) => true,
    };
    Ok(AwaitOptions {
        timeout: Duration::from_millis(timeout_ms),
        unschedulable,
        report_ready,
    })
}

/// A map/JSON argument; a non-map (when `map_only`) raises, a bad nested value is
/// `{:error, {:invalid_manifest, message}}`.
fn decode_json(term: Term, what: &str, map_only: bool) -> NifResult<Result<Value, Error>> {
    if map_only && !term.is_map() {
        return Err(arg_error(format!("{what}: expected a map")));
    }
    Ok(term_to_json(term, what).map_err(Error::InvalidManifest))
}

// ---------------------------------------------------------------------------------------------
// Encoding results

fn ok<'a>(env: Env<'a>, value: Term<'a>) -> Term<'a> {
    (atoms::ok(), value).encode(env)
}

fn error_reason<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    match err {
        Error::Api {
            code,
            reason,
            message,
        } => (atoms::api(), *code, reason.as_str(), message.as_str()).encode(env),
        Error::Connect(m) => (atoms::connect(), m.as_str()).encode(env),
        Error::Timeout(ms) => (atoms::timeout(), *ms).encode(env),
        Error::InvalidManifest(m) => (atoms::invalid_manifest(), m.as_str()).encode(env),
        Error::Config(m) => (atoms::config(), m.as_str()).encode(env),
        Error::Decode(m) => (atoms::decode(), m.as_str()).encode(env),
        Error::Internal(m) => (atoms::internal(), m.as_str()).encode(env),
    }
}

fn error_tuple<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (atoms::error(), error_reason(env, err)).encode(env)
}

fn json_result<'a>(env: Env<'a>, r: Result<Value, Error>) -> NifResult<Term<'a>> {
    match r {
        Ok(v) => Ok(ok(env, json_to_term(env, &v)?)),
        Err(e) => Ok(error_tuple(env, &e)),
    }
}

fn unit_result<'a>(env: Env<'a>, r: Result<(), Error>) -> Term<'a> {
    match r {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => error_tuple(env, &e),
    }
}

fn atom_map<'a>(env: Env<'a>, pairs: &[(rustler::Atom, Term<'a>)]) -> NifResult<Term<'a>> {
    let pairs: Vec<(Term<'a>, Term<'a>)> = pairs.iter().map(|(k, v)| (k.encode(env), *v)).collect();
    Term::map_from_pairs(env, &pairs)
}

fn failure_term<'a>(env: Env<'a>, f: &FailureReason) -> NifResult<Term<'a>> {
    Ok(match f {
        FailureReason::ImagePull {
            reason,
            container,
            image,
            message,
        } => (
            atoms::image_pull(),
            atom_map(
                env,
                &[
                    (atoms::reason(), reason.as_str().encode(env)),
                    (atoms::container(), container.as_str().encode(env)),
                    (atoms::image(), image.as_str().encode(env)),
                    (atoms::message(), message.as_str().encode(env)),
                ],
            )?,
        )
            .encode(env),
        FailureReason::ContainerConfig {
            reason,
            container,
            message,
        } => (
            atoms::container_config(),
            atom_map(
                env,
                &[
                    (atoms::reason(), reason.as_str().encode(env)),
                    (atoms::container(), container.as_str().encode(env)),
                    (atoms::message(), message.as_str().encode(env)),
                ],
            )?,
        )
            .encode(env),
        FailureReason::ContainerExited {
            container,
            exit_code,
            reason,
            message,
        } => (
            atoms::container_exited(),
            atom_map(
                env,
                &[
                    (atoms::container(), container.as_str().encode(env)),
                    (atoms::exit_code(), exit_code.encode(env)),
                    (atoms::reason(), reason.as_str().encode(env)),
                    (atoms::message(), message.as_deref().encode(env)),
                ],
            )?,
        )
            .encode(env),
        FailureReason::Unschedulable(m) => (atoms::unschedulable(), m.as_str()).encode(env),
        FailureReason::PodPhase { phase, message } => {
            (atoms::pod_phase(), phase.as_str(), message.as_deref()).encode(env)
        }
    })
}

fn outcome_term<'a>(env: Env<'a>, outcome: &Result<AwaitOutcome, Error>) -> NifResult<Term<'a>> {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(error_tuple(env, e)),
    };
    Ok(match outcome {
        AwaitOutcome::Ready(pod) => (atoms::ready(), json_to_term(env, pod)?).encode(env),
        AwaitOutcome::Failed(f) => (atoms::failed(), failure_term(env, f)?).encode(env),
        AwaitOutcome::Deleted(name) => (atoms::deleted(), name.as_str()).encode(env),
        AwaitOutcome::Timeout {
            phase,
            waited_ms,
            detail,
        } => {
            let phase = match phase {
                Phase::Scheduling => atoms::scheduling(),
                Phase::ContainerStart => atoms::container_start(),
                Phase::Running => atoms::running(),
            };
            (
                atoms::timeout(),
                atom_map(
                    env,
                    &[
                        (atoms::phase(), phase.encode(env)),
                        (atoms::waited_ms(), waited_ms.encode(env)),
                        (atoms::detail(), detail.as_deref().encode(env)),
                    ],
                )?,
            )
                .encode(env)
        }
        AwaitOutcome::Error(e) => error_tuple(env, e),
    })
}

/// Run one bounded request on the runtime (from a dirty IO scheduler).
fn run<T, F>(client: &ClientHandle, fut: F) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    block_on_with_timeout(client.request_timeout(), fut).map_err(|e| client.scrub(e))
}

// ---------------------------------------------------------------------------------------------
// NIFs

#[rustler::nif]
fn noop() -> rustler::Atom {
    atoms::ok()
}

#[rustler::nif]
fn live_tasks() -> usize {
    crate::task::live_tasks()
}

#[rustler::nif(schedule = "DirtyIo")]
fn connect<'a>(env: Env<'a>, opts: Term<'a>) -> NifResult<Term<'a>> {
    let opts = decode_connect_opts(opts)?;
    match crate::client::connect(&opts) {
        Ok(handle) => {
            let arc = ResourceArc::new(ClientResource { handle });
            Ok(ok(env, arc.encode(env)))
        }
        Err(e) => Ok(error_tuple(env, &e)),
    }
}

#[rustler::nif]
fn client_info<'a>(env: Env<'a>, client: Term<'a>) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let info = client.handle.info();
    atom_map(
        env,
        &[
            (atoms::server(), info.server.as_str().encode(env)),
            (
                atoms::default_namespace(),
                info.default_namespace.as_deref().encode(env),
            ),
            (
                atoms::request_timeout_ms(),
                info.request_timeout_ms.encode(env),
            ),
        ],
    )
}

#[rustler::nif(schedule = "DirtyIo")]
fn get_pod<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    name: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let name = decode_name(name, "name")?;
    let h = &client.handle;
    json_result(env, run(h, crate::pods::get_pod(h, &namespace, &name)))
}

#[rustler::nif(schedule = "DirtyIo")]
fn create_pod<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    manifest: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let manifest = match decode_json(manifest, "manifest", true)? {
        Ok(m) => m,
        Err(e) => return Ok(error_tuple(env, &e)),
    };
    let h = &client.handle;
    json_result(
        env,
        run(h, crate::pods::create_pod(h, &namespace, manifest)),
    )
}

#[rustler::nif(schedule = "DirtyIo")]
fn delete_pod<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    name: Term<'a>,
    grace_period_seconds: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let name = decode_name(name, "name")?;
    let grace = if is_nil(grace_period_seconds) {
        None
    } else {
        Some(grace_period_seconds.decode::<u32>().map_err(|_| {
            arg_error("grace_period_seconds: expected a non-negative integer or nil")
        })?)
    };
    let h = &client.handle;
    Ok(unit_result(
        env,
        run(h, crate::pods::delete_pod(h, &namespace, &name, grace)),
    ))
}

#[rustler::nif(schedule = "DirtyIo")]
fn list_pods<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    label_selector: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let selector = decode_string(label_selector, "label_selector")?;
    let h = &client.handle;
    let r = run(h, crate::pods::list_pods(h, &namespace, &selector));
    json_result(env, r.map(Value::Array))
}

#[rustler::nif(schedule = "DirtyIo")]
fn create_secret<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    manifest: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let manifest = match decode_json(manifest, "manifest", true)? {
        Ok(m) => m,
        Err(e) => return Ok(error_tuple(env, &e)),
    };
    let h = &client.handle;
    json_result(
        env,
        run(h, crate::pods::create_secret(h, &namespace, manifest)),
    )
}

#[rustler::nif(schedule = "DirtyIo")]
fn delete_secret<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    name: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let name = decode_name(name, "name")?;
    let h = &client.handle;
    Ok(unit_result(
        env,
        run(h, crate::pods::delete_secret(h, &namespace, &name)),
    ))
}

#[rustler::nif(schedule = "DirtyIo")]
fn request<'a>(
    env: Env<'a>,
    client: Term<'a>,
    method: Term<'a>,
    path: Term<'a>,
    body: Term<'a>,
    content_type: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let method = decode_string(method, "method")?;
    crate::raw::parse_method(&method).map_err(arg_error)?;
    let path = decode_string(path, "path")?;
    crate::raw::check_path(&path).map_err(arg_error)?;
    let content_type = decode_opt_string(content_type, "content_type")?;
    let body = if is_nil(body) {
        None
    } else {
        match decode_json(body, "body", false)? {
            Ok(b) => Some(b),
            Err(e) => return Ok(error_tuple(env, &e)),
        }
    };
    let h = &client.handle;
    json_result(
        env,
        run(
            h,
            crate::raw::request(h, &method, &path, body.as_ref(), content_type.as_deref()),
        ),
    )
}

#[rustler::nif]
fn await_pod<'a>(
    env: Env<'a>,
    client: Term<'a>,
    namespace: Term<'a>,
    name: Term<'a>,
    reference: Term<'a>,
    opts: Term<'a>,
) -> NifResult<Term<'a>> {
    let client = decode_client(client)?;
    let namespace = decode_name(namespace, "namespace")?;
    let name = decode_name(name, "name")?;
    if !reference.is_ref() {
        return Err(arg_error("ref: expected a reference"));
    }
    let opts = decode_await_opts(opts)?;

    let pid = env.pid();
    let (canceller, token) = cancel_pair();
    let resource = ResourceArc::new(AwaitResource { canceller });
    if env.monitor(&resource, &pid).is_none() {
        return Ok(error_tuple(
            env,
            &Error::Internal("cannot monitor the calling process".into()),
        ));
    }
    // One env per message, each with its own copy of the ref (`send_and_clear` invalidates
    // the terms saved in the env it sends from).
    let mut msg_env = OwnedEnv::new();
    let saved_ref = msg_env.save(reference);
    let mut interim = (!opts.report_ready).then(|| {
        let env = OwnedEnv::new();
        let saved = env.save(reference);
        (env, saved)
    });
    let guard = LiveGuard::new();

    // `{:running, pod}` from the Tokio thread, at most once (the core calls this at most once;
    // `take` makes a second call a no-op anyway), never after a cancel.
    let interim_cancel = token.clone();
    let on_running = move |pod: &Value| {
        if interim_cancel.is_cancelled() {
            return;
        }
        let Some((mut env, saved)) = interim.take() else {
            return;
        };
        // json_to_term fails only on duplicate map keys, which JSON objects cannot have; if it
        // ever did, the interim message is skipped rather than sent malformed.
        let Some(pod) = env.run(|e| json_to_term(e, pod).ok().map(|t| env.save(t))) else {
            return;
        };
        let _ = env.send_and_clear(&pid, |e| {
            (
                atoms::flame_k8s(),
                saved.load(e),
                (atoms::running(), pod.load(e)),
            )
        });
    };

    let task_client = client.clone();
    let work = async move {
        crate::await_pod::await_pod(&task_client.handle, &namespace, &name, opts, on_running).await
    };
    // Held by the task until it ends, so the monitor (and `down`) outlive a dropped handle.
    let task_resource = resource.clone();
    let report = move |outcome: Result<AwaitOutcome, Error>| {
        let _keep_alive = task_resource;
        let _ = msg_env.send_and_clear(&pid, |env| {
            let result = outcome_term(env, &outcome).unwrap_or_else(|_| {
                error_tuple(env, &Error::Internal("cannot encode the result".into()))
            });
            (atoms::flame_k8s(), saved_ref.load(env), result)
        });
    };
    match spawn_reporting(work, token, guard, report) {
        Ok(()) => Ok(ok(env, resource.encode(env))),
        Err(e) => Ok(error_tuple(env, &e)),
    }
}

#[rustler::nif]
fn cancel_await(handle: Term) -> NifResult<rustler::Atom> {
    let handle = handle
        .decode::<ResourceArc<AwaitResource>>()
        .map_err(|_| arg_error("handle: expected an await handle returned by await_pod/5"))?;
    handle.canceller.cancel();
    Ok(atoms::ok())
}
