//! Python slices (`[start:stop:step]`) as commands, shared by [`List`](super::List) and
//! [`Array`](super::Array): the wire methods differ only by their kind prefix.

use std::borrow::Borrow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::list::By;
use crate::command::{decode, Args, Cmd};

/// Encodes start, stop and step, each nil when `None`.
fn bounds(a: &mut Args, start: Option<i64>, stop: Option<i64>, step: Option<i64>) {
    a.opt_int(start).opt_int(stop).opt_int(step);
}

/// `<kind>.getslice [id, start, stop, step]`.
pub(crate) fn get<T: DeserializeOwned>(
    id: u64,
    method: &'static str,
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Cmd<Vec<T>> {
    Cmd::object(id, method, decode::value, |a| {
        bounds(a, start, stop, step);
        Ok(())
    })
}

/// `<kind>.setslice [id, start, stop, step, items]`.
pub(crate) fn set<T, I>(
    id: u64,
    method: &'static str,
    (start, stop, step): (Option<i64>, Option<i64>, Option<i64>),
    items: I,
) -> Cmd<()>
where
    T: Serialize,
    I: IntoIterator,
    I::Item: Borrow<T>,
{
    Cmd::object(id, method, decode::unit, |a| {
        bounds(a, start, stop, step);
        a.seq(items.into_iter().map(By::<T, _>::new)).map(drop)
    })
}

/// `<kind>.delslice [id, start, stop, step]`.
pub(crate) fn delete(
    id: u64,
    method: &'static str,
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Cmd<()> {
    Cmd::object(id, method, decode::unit, |a| {
        bounds(a, start, stop, step);
        Ok(())
    })
}
