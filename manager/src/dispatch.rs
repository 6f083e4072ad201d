//! Routing a request to the registry or to an object: `create`, `lookup`, `delete`, `objects`,
//! and `<kind>.<method>`. Session methods (`hello`, `auth`, `shutdown`) live in [`crate::session`].

use agora_proto::{encode, methods, params, CallError, ErrorName, Params};

use crate::lifecycle::{Caller, Outcome};
use crate::objects::{self, Kind};
use crate::registry::{ObjectCache, Registry};

/// Runs a registry or object method, appending its encoded result to `out`.
pub fn call(
    registry: &Registry,
    cache: &mut ObjectCache,
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let done = |result: Result<(), CallError>| result.map(|()| Outcome::Done);
    match method {
        "create" => done(create(registry, p, out)),
        "lookup" => {
            p.expect(method, 1, 1)?;
            let (kind, id) = registry.lookup(p.str(0)?)?;
            out.push(0x92);
            encode::str(out, kind.as_str());
            encode::uint(out, id);
            Ok(Outcome::Done)
        }
        "delete" => {
            p.expect(method, 1, 1)?;
            match params::int_u64(p.raw(0)) {
                Some(id) => registry.delete_id(id)?,
                None => registry.delete_name(p.str(0)?)?,
            }
            out.extend_from_slice(encode::TRUE);
            Ok(Outcome::Done)
        }
        "objects" => {
            p.expect(method, 0, 0)?;
            let all = registry.list();
            encode::array_header(out, all.len());
            for info in all {
                out.push(0x93);
                encode::uint(out, info.id);
                match &info.name {
                    Some(name) => encode::str(out, name),
                    None => encode::nil(out),
                }
                encode::str(out, info.kind.as_str());
            }
            Ok(Outcome::Done)
        }
        _ => object_call(registry, cache, method, p, caller, out),
    }
}

fn create(registry: &Registry, p: &Params, out: &mut Vec<u8>) -> Result<(), CallError> {
    if p.len() < 2 {
        return Err(CallError::new(
            ErrorName::ArgumentCountError,
            format!(
                "create takes [kind, name or nil, init args...], got {} params",
                p.len()
            ),
        ));
    }
    let kind_name = p.str(0)?;
    let kind = Kind::parse(kind_name).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        CallError::value(format!(
            "unknown kind {kind_name:?}: expected one of {}",
            known.join(", ")
        ))
    })?;
    let name = match p.opt(1) {
        None => None,
        Some(_) => Some(p.str(1)?),
    };
    let id = registry.create(kind, name, p, 2)?;
    encode::uint(out, id);
    Ok(())
}

/// Runs `<kind>.<method>`. The method is looked up in the table ([`methods::find`]) before
/// anything else, so a method the kind does not have is an `UnknownMethodError` whatever its
/// params and whether or not the id names an object; the param count is checked against the
/// table once the object is known, so every object enforces the counts `PROTOCOL.md` documents.
fn object_call(
    registry: &Registry,
    cache: &mut ObjectCache,
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let unknown = || {
        CallError::new(
            ErrorName::UnknownMethodError,
            format!("unknown method {method:?} (see PROTOCOL.md for the list of methods)"),
        )
    };
    let (kind_name, op) = method.split_once('.').ok_or_else(unknown)?;
    let kind = Kind::parse(kind_name).ok_or_else(unknown)?;
    let spec = methods::find(Some(kind), op).ok_or_else(|| objects::unknown_method(kind, op))?;
    if p.is_empty() {
        return Err(CallError::new(
            ErrorName::ArgumentCountError,
            format!("{method} takes the object id as its first param, got no params"),
        ));
    }
    let id = p.u64(0)?;
    let slot = cache.get(registry, id)?;
    let object = slot.object();
    if object.kind() != kind {
        return Err(CallError::type_error(format!(
            "object {id} is a {}, not a {kind}",
            object.kind()
        )));
    }
    let max = spec.max_params().unwrap_or(usize::MAX);
    objects::arity(p, kind, op, spec.min_params(), max)?;
    object.call(op, p, caller, out)
}
