//! `chain`: calls run back to back in one request, the first of which may wait.
//!
//! A critical section under a manager lock costs its client a round trip per call, and under
//! contention the lock is idle while the next holder's process wakes up to send its first call.
//! A chain `[[method, params], ...]` runs its calls in order, each as if sent alone, in one
//! round trip; when the first one waits (an acquire, a get), the others run the moment it
//! completes, in the manager, before the client has woken up: `[lock.acquire, value.get]`
//! holds the lock one wake-up shorter, and `[value.set, lock.release]` ends it without a
//! round trip of its own (`PROTOCOL.md`, section 4.16).
//!
//! This module parses a chain and encodes its entries; the session runs it (the first call may
//! park, and the rest then run when the session writes the first one's reply).

use agora_proto::{encode, methods, CallError, ErrorName, Params};

/// The most calls one chain may hold.
pub const MAX_CALLS: usize = 16;

/// A chain's calls after the first, kept while the first one waits.
pub struct Rest {
    /// The method and params of each call, in order.
    pub calls: Vec<(String, Params)>,
    /// Whether the first call may wait: then a `false` or `0` result (not acquired, not set)
    /// means the others do not run.
    pub first_waits: bool,
}

/// Parses `chain`'s params: one to [`MAX_CALLS`] `[method, params]` pairs, each an object
/// method (`<kind>.<name>`); only the first may be a method that waits.
pub fn parse(p: &Params) -> Result<Vec<(String, Params)>, CallError> {
    if p.is_empty() || p.len() > MAX_CALLS {
        return Err(CallError::new(
            ErrorName::ValueError,
            format!(
                "chain takes 1 to {MAX_CALLS} calls, each [method, params]; got {}",
                p.len()
            ),
        ));
    }
    let mut calls = Vec::with_capacity(p.len());
    for i in 0..p.len() {
        let pair = p.array(i)?;
        pair.expect("a chain's call", 2, 2)?;
        let method = pair.str(0)?.to_owned();
        let mut params = pair.array(1)?;
        if !p.may_hold_ext() {
            // What the framing found out for the whole request holds for each call.
            params.set_framed_ext(false);
        }
        if !method.contains('.') {
            return Err(CallError::new(
                ErrorName::ValueError,
                format!("chain runs object methods (<kind>.<name>); {method:?} is not one"),
            ));
        }
        if i > 0 && methods::may_wait(&method) {
            return Err(CallError::new(
                ErrorName::ValueError,
                format!("only the first call of a chain may wait; call {i} is {method}"),
            ));
        }
        calls.push((method, params));
    }
    Ok(calls)
}

/// Whether the rest of a chain runs after its first call's `result`: not when that call waits
/// and answered `false` or `0` (it did not get what it waited for).
pub fn goes_on(first_waits: bool, result: &[u8]) -> bool {
    !(first_waits && matches!(result, [0xc2] | [0x00]))
}

/// Appends the entry of a call that succeeded: `[nil, result]`, the result to follow.
pub fn begin_ok(out: &mut Vec<u8>) {
    out.push(0x92);
    encode::nil(out);
}

/// Appends the entry of a call that failed: `[[name, message], nil]`.
pub fn failed(out: &mut Vec<u8>, err: &CallError) {
    out.push(0x92);
    encode::error_pair(out, err.name.as_str(), &err.message);
    encode::nil(out);
}

/// Appends the entry of a call that did not run: `nil`.
pub fn skipped(out: &mut Vec<u8>) {
    encode::nil(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn params(v: rmpv::Value) -> Params {
        Params::from_array(Bytes::from(encode::to_vec(&v))).unwrap()
    }

    fn call(method: &str) -> rmpv::Value {
        rmpv::Value::Array(vec![method.into(), rmpv::Value::Array(vec![1.into()])])
    }

    #[test]
    fn a_chain_is_object_methods_and_only_the_first_waits() {
        let ok = params(rmpv::Value::Array(vec![
            call("lock.acquire"),
            call("value.get"),
        ]));
        assert_eq!(parse(&ok).unwrap().len(), 2);
        for bad in [
            vec![],
            vec![call("value.get"), call("lock.acquire")],
            vec![call("create")],
            vec![rmpv::Value::from("value.get")],
            vec![call("value.get"); MAX_CALLS + 1],
        ] {
            let p = params(rmpv::Value::Array(bad.clone()));
            assert!(parse(&p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_wait_that_got_nothing_stops_the_chain() {
        assert!(!goes_on(true, &[0xc2]));
        assert!(!goes_on(true, &[0x00]));
        assert!(goes_on(true, &[0x01]));
        assert!(goes_on(true, &[0x02]));
        assert!(goes_on(true, &[0xc3]));
        assert!(
            goes_on(false, &[0x00]),
            "a value of 0 read first is a result"
        );
    }
}
