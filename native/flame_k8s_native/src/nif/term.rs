//! Elixir terms ⇄ `serde_json::Value`, by hand.
//!
//! By hand because rustler's serde support turns atom keys and structs into junk for our
//! purposes.
//!
//! Term → JSON: maps with binary or atom keys, lists, integers, floats, UTF-8 binaries, and
//! the atoms `nil`/`true`/`false` (other atoms become strings). Anything else is an error that
//! names the path of the offending value.
//!
//! JSON → term: objects → maps with binary keys, arrays → lists, strings → binaries,
//! numbers → integers or floats, booleans → `true`/`false`, null → `nil`.

use rustler::types::map::MapIterator;
use rustler::{Binary, Encoder, Env, NifResult, Term, TermType};
use serde_json::{Map, Number, Value};

use crate::api::path::Path;

/// Maps and lists may nest this deep, no deeper. No Kubernetes object comes near it; the bound
/// is there for what comes after conversion (serde's serializer, deserializer and `Drop` of a
/// `Value` recurse once per level). The conversions here are iterative: their stack use does
/// not grow with depth, whatever the input, so no build profile can overflow a scheduler's
/// stack in them.
pub const MAX_DEPTH: usize = 64;

const EXPECTED: &str = "expected a string, number, boolean, nil, list or map";

/// A list or map being converted: what is done so far and what is left of it.
// Frames live in a Vec on the heap, one per open level: boxing the big variant would only add
// an allocation per container.
#[allow(clippy::large_enum_variant)]
enum Frame<'a> {
    List {
        out: Vec<Value>,
        rest: Term<'a>,
    },
    Map {
        out: Map<String, Value>,
        entries: MapIterator<'a>,
        /// The key of the entry whose value is being converted.
        key: Option<String>,
    },
}

impl<'a> Frame<'a> {
    /// Store the converted value of the current entry (whose path segment is on `path`).
    fn accept(&mut self, value: Value, path: &mut Path) {
        match self {
            Frame::List { out, .. } => out.push(value),
            Frame::Map { out, key, .. } => {
                if let Some(key) = key.take() {
                    out.insert(key, value);
                }
            }
        }
        path.pop();
    }

    /// The next entry to convert, with its path segment pushed, or `None` when done.
    fn next_entry(&mut self, path: &mut Path) -> Result<Option<Term<'a>>, String> {
        match self {
            Frame::List { out, rest } => {
                if rest.is_empty_list() {
                    return Ok(None);
                }
                let (head, tail) = rest
                    .list_get_cell()
                    .map_err(|_| format!("{path}: improper list"))?;
                *rest = tail;
                path.push_index(out.len());
                Ok(Some(head))
            }
            Frame::Map { out, entries, key } => {
                let Some((k, v)) = entries.next() else {
                    return Ok(None);
                };
                let name = map_key(k, path)?;
                path.push_key(&name);
                if out.contains_key(&name) {
                    return Err(format!(
                        "{path}: duplicate key (given both as an atom and as a string)"
                    ));
                }
                *key = Some(name);
                Ok(Some(v))
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            Frame::List { out, .. } => Value::Array(out),
            Frame::Map { out, .. } => Value::Object(out),
        }
    }
}

/// Convert a term; errors name the path, with `root` for the term itself.
pub fn term_to_json(term: Term, root: &str) -> Result<Value, String> {
    let mut path = Path::named(root);
    let mut open: Vec<Frame> = Vec::new();
    let mut next = term;
    loop {
        let mut done = match enter(next, &path)? {
            Entered::Scalar(value) => Some(value),
            Entered::Container(frame) => {
                open.push(frame);
                None
            }
        };
        // Hand finished values up until some open container has another entry to convert.
        loop {
            let Some(frame) = open.last_mut() else {
                // Only the root finishes with nothing open; `done` is its value.
                return Ok(done.unwrap_or(Value::Null));
            };
            if let Some(value) = done.take() {
                frame.accept(value, &mut path);
            }
            match frame.next_entry(&mut path)? {
                Some(entry) => {
                    next = entry;
                    break;
                }
                None => {
                    done = open.pop().map(Frame::finish);
                }
            }
        }
    }
}

#[allow(clippy::large_enum_variant)] // short-lived, moved once into the frame stack
enum Entered<'a> {
    Scalar(Value),
    Container(Frame<'a>),
}

fn enter<'a>(term: Term<'a>, path: &Path) -> Result<Entered<'a>, String> {
    match term.get_type() {
        TermType::List => {
            check_depth(path)?;
            if !term.is_list() {
                return Err(format!("{path}: improper list"));
            }
            Ok(Entered::Container(Frame::List {
                out: Vec::new(),
                rest: term,
            }))
        }
        TermType::Map => {
            check_depth(path)?;
            let entries =
                MapIterator::new(term).ok_or_else(|| format!("{path}: unreadable map"))?;
            Ok(Entered::Container(Frame::Map {
                out: Map::new(),
                entries,
                key: None,
            }))
        }
        _ => scalar(term, path).map(Entered::Scalar),
    }
}

fn type_name(t: TermType) -> &'static str {
    match t {
        TermType::Atom => "an atom",
        TermType::Binary => "a binary",
        TermType::Fun => "a function",
        TermType::List => "a list",
        TermType::Map => "a map",
        TermType::Integer => "an integer",
        TermType::Float => "a float",
        TermType::Pid => "a pid",
        TermType::Port => "a port",
        TermType::Ref => "a reference",
        TermType::Tuple => "a tuple",
        TermType::Unknown => "an unsupported term",
    }
}

fn scalar(term: Term, path: &Path) -> Result<Value, String> {
    match term.get_type() {
        TermType::Atom => {
            let name = term
                .atom_to_string()
                .map_err(|_| format!("{path}: unreadable atom"))?;
            Ok(match name.as_str() {
                "nil" => Value::Null,
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(name),
            })
        }
        TermType::Binary => binary_to_string(term, path).map(Value::String),
        TermType::Integer => {
            if let Ok(i) = term.decode::<i64>() {
                Ok(Value::Number(i.into()))
            } else if let Ok(u) = term.decode::<u64>() {
                Ok(Value::Number(u.into()))
            } else {
                Err(format!("{path}: integer out of the 64-bit range"))
            }
        }
        TermType::Float => {
            let f = term
                .decode::<f64>()
                .map_err(|_| format!("{path}: unreadable float"))?;
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| format!("{path}: float is not finite"))
        }
        other => Err(format!("{path}: {EXPECTED}, got {}", type_name(other))),
    }
}

fn check_depth(path: &Path) -> Result<(), String> {
    if path.depth() >= MAX_DEPTH {
        Err(format!("{path}: nested deeper than {MAX_DEPTH} levels"))
    } else {
        Ok(())
    }
}

fn binary_to_string(term: Term, path: &Path) -> Result<String, String> {
    let bin = Binary::from_term(term)
        .map_err(|_| format!("{path}: expected a binary, got a bitstring"))?;
    std::str::from_utf8(bin.as_slice())
        .map(str::to_string)
        .map_err(|_| format!("{path}: binary is not valid UTF-8"))
}

fn map_key(k: Term, path: &Path) -> Result<String, String> {
    match k.get_type() {
        TermType::Binary => binary_to_string(k, path).map_err(|e| format!("{e} (in a map key)")),
        TermType::Atom => k
            .atom_to_string()
            .map_err(|_| format!("{path}: unreadable atom key")),
        other => Err(format!(
            "{path}: map keys must be strings or atoms, got {}",
            type_name(other)
        )),
    }
}

/// A JSON array or object being converted: its entries left and the terms made so far.
enum JsonFrame<'v, 'a> {
    Array {
        items: std::slice::Iter<'v, Value>,
        done: Vec<Term<'a>>,
    },
    Object {
        entries: serde_json::map::Iter<'v>,
        keys: Vec<Term<'a>>,
        values: Vec<Term<'a>>,
    },
}

/// Convert JSON into a term (objects get binary keys). Iterative, like `term_to_json`.
pub fn json_to_term<'a>(env: Env<'a>, v: &Value) -> NifResult<Term<'a>> {
    let mut open: Vec<JsonFrame<'_, 'a>> = Vec::new();
    let mut next = v;
    loop {
        let mut done = match next {
            Value::Array(items) => {
                open.push(JsonFrame::Array {
                    items: items.iter(),
                    done: Vec::with_capacity(items.len()),
                });
                None
            }
            Value::Object(obj) => {
                open.push(JsonFrame::Object {
                    entries: obj.iter(),
                    keys: Vec::with_capacity(obj.len()),
                    values: Vec::with_capacity(obj.len()),
                });
                None
            }
            scalar => Some(json_scalar(env, scalar)),
        };
        loop {
            let Some(frame) = open.last_mut() else {
                return Ok(done.unwrap_or_else(|| rustler::types::atom::nil().encode(env)));
            };
            let entry = match frame {
                JsonFrame::Array { items, done: out } => {
                    out.extend(done.take());
                    items.next()
                }
                JsonFrame::Object {
                    entries,
                    keys,
                    values,
                } => {
                    values.extend(done.take());
                    entries.next().map(|(k, x)| {
                        keys.push(k.as_str().encode(env));
                        x
                    })
                }
            };
            match entry {
                Some(entry) => {
                    next = entry;
                    break;
                }
                None => {
                    done = match open.pop() {
                        Some(JsonFrame::Array { done: out, .. }) => Some(out.encode(env)),
                        Some(JsonFrame::Object { keys, values, .. }) => {
                            Some(Term::map_from_term_arrays(env, &keys, &values)?)
                        }
                        None => None,
                    };
                }
            }
        }
    }
}

fn json_scalar<'a>(env: Env<'a>, v: &Value) -> Term<'a> {
    match v {
        Value::Bool(b) => b.encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(0.0).encode(env)
            }
        }
        Value::String(s) => s.as_str().encode(env),
        _ => rustler::types::atom::nil().encode(env),
    }
}
