//! Elixir terms ⇄ `serde_json::Value`, by hand (rustler's serde support turns atom keys and
//! structs into junk for our purposes).
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

use crate::path::Path;

/// Maps and lists may nest this deep, no deeper.
pub const MAX_DEPTH: usize = 64;

const EXPECTED: &str = "expected a string, number, boolean, nil, list or map";

/// Convert a term; errors name the path, with `root` for the term itself.
pub fn term_to_json(term: Term, root: &str) -> Result<Value, String> {
    let mut path = Path::named(root);
    convert(term, &mut path)
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

fn convert(term: Term, path: &mut Path) -> Result<Value, String> {
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
        TermType::List => {
            check_depth(path)?;
            let mut out = Vec::new();
            let mut rest = term;
            loop {
                if rest.is_empty_list() {
                    break;
                }
                if !rest.is_list() {
                    return Err(format!("{path}: improper list"));
                }
                let (head, tail) = rest
                    .list_get_cell()
                    .map_err(|_| format!("{path}: improper list"))?;
                path.push_index(out.len());
                let v = convert(head, path)?;
                path.pop();
                out.push(v);
                rest = tail;
            }
            Ok(Value::Array(out))
        }
        TermType::Map => {
            check_depth(path)?;
            let iter = MapIterator::new(term).ok_or_else(|| format!("{path}: unreadable map"))?;
            let mut out = Map::new();
            for (k, v) in iter {
                let key = map_key(k, path)?;
                path.push_key(&key);
                if out.contains_key(&key) {
                    return Err(format!(
                        "{path}: duplicate key (given both as an atom and as a string)"
                    ));
                }
                let value = convert(v, path)?;
                path.pop();
                out.insert(key, value);
            }
            Ok(Value::Object(out))
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

/// Convert JSON into a term (objects get binary keys).
pub fn json_to_term<'a>(env: Env<'a>, v: &Value) -> NifResult<Term<'a>> {
    Ok(match v {
        Value::Null => rustler::types::atom::nil().encode(env),
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
        Value::Array(items) => {
            let terms = items
                .iter()
                .map(|x| json_to_term(env, x))
                .collect::<NifResult<Vec<Term<'a>>>>()?;
            terms.encode(env)
        }
        Value::Object(obj) => {
            let mut keys = Vec::with_capacity(obj.len());
            let mut values = Vec::with_capacity(obj.len());
            for (k, x) in obj {
                keys.push(k.as_str().encode(env));
                values.push(json_to_term(env, x)?);
            }
            Term::map_from_term_arrays(env, &keys, &values)?
        }
    })
}
