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

/// Runs `<kind>.<method>`. A method the kind does not have is an `UnknownMethodError` whatever
/// its params and whether or not the id names an object: when a call fails, the method is
/// looked up in the table ([`methods::find`]) and an unknown one reported as such. The lookup
/// is made only then, off the path of calls that succeed; a call of an unknown method cannot
/// succeed, since every object answers names it does not have with `UnknownMethodError`, and
/// every object checks the param counts `PROTOCOL.md` documents (both tested against the table).
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
    // A byte search: every object call passes here, and `split_once` with a char pattern
    // costs a searcher object per call.
    let dot = method.bytes().position(|b| b == b'.').ok_or_else(unknown)?;
    let (kind_name, op) = (&method[..dot], &method[dot + 1..]);
    let kind = Kind::parse(kind_name).ok_or_else(unknown)?;
    match resolved_call(registry, cache, kind, op, p, caller, out) {
        Err(_) if methods::find(Some(kind), op).is_none() => Err(objects::unknown_method(kind, op)),
        result => result,
    }
}

/// Resolves the object `params[0]` names, checks its kind, and runs `op` on it.
fn resolved_call(
    registry: &Registry,
    cache: &mut ObjectCache,
    kind: Kind,
    op: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    if p.is_empty() {
        return Err(CallError::new(
            ErrorName::ArgumentCountError,
            format!("{kind}.{op} takes the object id as its first param, got no params"),
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
    object.call(op, p, caller, out)
}
