//! Routing a request to the registry or to an object: `create`, `lookup`, `delete`, `objects`,
//! the reference counts (`incref`, `decref`, `export`, `adopt`) and `<kind>.<method>`. Session
//! methods (`hello`, `auth`, `shutdown`) live in [`crate::session`].
//!
//! Every call runs in a [`CallScope`]: references in its params are checked first (and pinned
//! by the values it stores), references in its reply are counted for the connection, and the
//! objects that lost their last holder during the call are freed after it.

use agora_proto::{encode, methods, params, CallError, ErrorName, Params};

use crate::lifecycle::{Caller, Outcome};
use crate::objects::{self, Kind};
use crate::registry::holders::{CallScope, Held};
use crate::registry::{unknown_id, Deleter, ObjectCache, Reach, Registry};

/// Runs a registry or object method, appending its encoded result to `out`.
pub fn call(
    registry: &Registry,
    reach: &mut Reach,
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let scope = CallScope::enter();
    let result = scoped_call(&scope, registry, reach, method, p, caller, out);
    // Pins the call dropped go now that its reply is counted; then whatever they held alone.
    drop(scope);
    registry.reap();
    result
}

fn scoped_call(
    scope: &CallScope,
    registry: &Registry,
    reach: &mut Reach,
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    if p.may_hold_ext() {
        scope.admit(registry.admit(&mut reach.cache, p)?);
    }
    let start = out.len();
    let outcome = route(registry, reach, method, p, caller, out)?;
    // A value the call took out (a pop, a get) has dropped its pins already, so the count of
    // nested references alone does not tell whether the reply can hold one.
    let may_hold_refs = registry.reaper().any_nested() || scope.dropped_pins();
    if matches!(outcome, Outcome::Done) && may_hold_refs {
        registry.count_refs(&mut reach.cache, &mut reach.held, &out[start..]);
    }
    Ok(outcome)
}

fn route(
    registry: &Registry,
    reach: &mut Reach,
    method: &str,
    p: &Params,
    caller: &Caller<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, CallError> {
    let done = |result: Result<(), CallError>| result.map(|()| Outcome::Done);
    match method {
        "create" => done(create(registry, reach, p, out)),
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
            let id = match params::int_u64(p.raw(0)) {
                Some(id) => registry.delete_id(id, Deleter::of(reach)).map(|()| id)?,
                None => registry.delete_name(p.str(0)?, Deleter::of(reach))?,
            };
            reach.held.forget(id);
            out.extend_from_slice(encode::TRUE);
            Ok(Outcome::Done)
        }
        "objects" => {
            p.expect(method, 0, 0)?;
            let all = registry.list();
            encode::array_header(out, all.len());
            for info in all {
                out.push(0x94);
                encode::uint(out, info.id);
                match &info.name {
                    Some(name) => encode::str(out, name),
                    None => encode::nil(out),
                }
                encode::str(out, info.kind.as_str());
                encode::uint(out, info.holders);
            }
            Ok(Outcome::Done)
        }
        "incref" | "export" | "adopt" => {
            p.expect(method, 1, 1)?;
            let slot = reach.cache.get(registry, p.u64(0)?)?;
            match method {
                "incref" if !reach.held.add(&slot) => return Err(unknown_id(slot.id())),
                "export" => registry.export(&slot)?,
                "adopt" => registry.adopt(&slot, &mut reach.held)?,
                _ => {}
            }
            out.extend_from_slice(encode::TRUE);
            Ok(Outcome::Done)
        }
        "decref" => {
            decref(&mut reach.held, p)?;
            encode::nil(out);
            Ok(Outcome::Done)
        }
        _ => object_call(registry, &mut reach.cache, method, p, caller, out),
    }
}

/// Applies `decref [[id, count], ...]` (each param one pair): all of it, or nothing when a
/// pair is malformed.
pub fn decref(held: &mut Held, p: &Params) -> Result<(), CallError> {
    let wrong = || {
        CallError::type_error(
            "decref takes [id, count] pairs of non-negative ints, one pair per param",
        )
    };
    let mut parsed = Vec::with_capacity(p.len());
    for i in 0..p.len() {
        match params::array_items(p.raw(i)).as_deref() {
            Some([id, n]) => {
                let id = params::int_u64(id).ok_or_else(wrong)?;
                parsed.push((id, params::int_u64(n).ok_or_else(wrong)?));
            }
            _ => return Err(wrong()),
        }
    }
    for (id, n) in parsed {
        held.remove(id, n);
    }
    Ok(())
}

fn create(
    registry: &Registry,
    reach: &mut Reach,
    p: &Params,
    out: &mut Vec<u8>,
) -> Result<(), CallError> {
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
    let slot = registry.create(kind, name, p, 2)?;
    // The creating connection is the new object's first holder. A named object found by
    // name cannot be dead; an unnamed one was just made.
    if !reach.held.add(&slot) {
        return Err(unknown_id(slot.id()));
    }
    encode::uint(out, slot.id());
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
