//! The table of wire methods: every method the manager answers, with its params and whether it
//! may park.
//!
//! [`TABLE`] is the one list the rest of the code derives its facts about methods from: the
//! manager refuses a `<kind>.<method>` that is not in it before looking at the params or the
//! object, and a param count it does not document before running the call; [`MAY_WAIT`] is
//! computed from it; tests check it against `PROTOCOL.md` and against what the manager answers.
//! A method added to one place and not the others fails a test instead of drifting.
//!
//! Rows are grouped by kind, in the order `PROTOCOL.md` documents them, so that [`of`] is a
//! slice and [`find`] scans a dozen rows, not the whole table.

use crate::Kind;

/// One wire method: what `PROTOCOL.md` says about it in one row of a table.
///
/// Only this module makes them (the fields it computes are private), so a `MethodSpec` always
/// comes from [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    /// The kind whose objects have this method; `None` for the session and registry methods
    /// (`hello`, `auth`, `ping`, `create`, `lookup`, `delete`, `objects`, `stats`, `shutdown`
    /// and the reference counts), which take no object id.
    pub kind: Option<Kind>,
    /// The method's name within its kind: `"get"` for `dict.get`.
    pub name: &'static str,
    /// The full name a request carries: `"dict.get"`, or `"hello"` for a method of no kind.
    pub wire: &'static str,
    /// The params as `PROTOCOL.md` writes them, one bracketed form per accepted shape joined
    /// by "or" (`"[id, key] or [id, key, default]"`); an element ending in `...` stands for any
    /// number of params, including none. The counts [`MethodSpec::accepts`] checks are read
    /// from these forms, so the documented shapes and the enforced counts cannot disagree.
    pub params: &'static str,
    /// True when the manager may park the call: answer it only once it completes, times out
    /// or the manager stops (section 4.1 of `PROTOCOL.md`). Every other method is answered as
    /// soon as it is read.
    pub parks: bool,
    min_params: usize,
    max_params: Option<usize>,
}

impl MethodSpec {
    /// A row of the table. Runs at compile time only (every row is a `const`), so a malformed
    /// `params` stops the build instead of reaching a client.
    const fn new(
        kind: Option<Kind>,
        name: &'static str,
        wire: &'static str,
        params: &'static str,
        parks: bool,
    ) -> MethodSpec {
        let (min_params, max_params) = param_counts(params);
        MethodSpec {
            kind,
            name,
            wire,
            params,
            parks,
            min_params,
            max_params,
        }
    }

    /// The fewest params a call may have (the object id included).
    pub const fn min_params(&self) -> usize {
        self.min_params
    }

    /// The most params a call may have (the object id included); `None` when there is no
    /// limit (`create`'s init args).
    pub const fn max_params(&self) -> Option<usize> {
        self.max_params
    }

    /// Whether a call with `n` params has one of the documented shapes' lengths. The manager
    /// answers any other count with `ArgumentCountError`; a client may check before sending.
    pub const fn accepts(&self, n: usize) -> bool {
        n >= self.min_params
            && match self.max_params {
                Some(max) => n <= max,
                None => true,
            }
    }
}

/// The fewest and the most params the bracketed forms of `params` allow. A form's length is its
/// number of top-level elements; an element ending in `...` makes the form open-ended and
/// counts for none in the minimum. Panics (which, evaluated in a `const`, fails the build) on
/// a string without a form or with unbalanced brackets.
const fn param_counts(params: &str) -> (usize, Option<usize>) {
    let b = params.as_bytes();
    let (mut min, mut max, mut forms) = (usize::MAX, Some(0), 0);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b']' {
            panic!("a `]` without its `[` in a method's params");
        }
        if b[i] != b'[' {
            i += 1;
            continue;
        }
        // One form: count its top-level elements.
        let (mut depth, mut commas, mut content, mut open_ended) = (1, 0, false, false);
        i += 1;
        while depth > 0 {
            if i >= b.len() {
                panic!("a `[` without its `]` in a method's params");
            }
            match b[i] {
                b'[' => depth += 1,
                b']' => depth -= 1,
                b',' if depth == 1 => commas += 1,
                b'.' if depth == 1 && i + 2 < b.len() && b[i + 1] == b'.' && b[i + 2] == b'.' => {
                    open_ended = true;
                    content = true;
                }
                b' ' => {}
                _ => content = true,
            }
            i += 1;
        }
        let len = if content { commas + 1 } else { 0 };
        let fewest = if open_ended { len - 1 } else { len };
        if fewest < min {
            min = fewest;
        }
        max = match max {
            Some(most) if !open_ended && len <= most => Some(most),
            Some(_) if !open_ended => Some(len),
            _ => None,
        };
        forms += 1;
    }
    if forms == 0 {
        panic!("a method's params name no bracketed form");
    }
    (min, max)
}

/// Rows of one group: `methods!(kind, "prefix": "name" "params" [parks]; ...)`. The wire name
/// is the prefix and the name joined at compile time, so that [`MAY_WAIT`] can hold it.
macro_rules! methods {
    (@parks parks) => {
        true
    };
    (@parks) => {
        false
    };
    ($kind:expr, $prefix:literal: $($name:literal $params:literal $($parks:ident)?;)*) => {
        &[$(MethodSpec::new(
            $kind,
            $name,
            concat!($prefix, $name),
            $params,
            methods!(@parks $($parks)?),
        )),*]
    };
}

/// Section 2 (session) and 4.2 (registry): the methods of no kind.
const SESSION_AND_REGISTRY: &[MethodSpec] = methods!(None, "":
    "hello" "[]";
    "auth" "[digest]";
    "ping" "[]";
    "create" "[kind, name, args...]";
    "lookup" "[name]";
    "delete" "[name or id]";
    "objects" "[]";
    "stats" "[]";
    "limits" "[] or [map]";
    "incref" "[id]";
    "decref" "[[id, count], ...]";
    "export" "[id]";
    "adopt" "[id]";
    "chain" "[[method, params], ...]";
    "shutdown" "[]";
);

const DICT: &[MethodSpec] = methods!(Some(Kind::Dict), "dict.":
    "get" "[id, key] or [id, key, default]";
    "getitem" "[id, key]";
    "setitem" "[id, key, value]";
    "delitem" "[id, key]";
    "contains" "[id, key]";
    "len" "[id]";
    "keys" "[id]";
    "values" "[id]";
    "items" "[id]";
    "update" "[id, map] or [id, array of [key, value]]";
    "pop" "[id, key] or [id, key, default]";
    "popitem" "[id]";
    "setdefault" "[id, key] or [id, key, default]";
    "clear" "[id]";
    "copy" "[id]";
);

const LIST: &[MethodSpec] = methods!(Some(Kind::List), "list.":
    "getitem" "[id, index]";
    "setitem" "[id, index, value]";
    "delitem" "[id, index]";
    "getslice" "[id, start, stop, step]";
    "setslice" "[id, start, stop, step, array]";
    "delslice" "[id, start, stop, step]";
    "append" "[id, value]";
    "extend" "[id, array]";
    "insert" "[id, index, value]";
    "pop" "[id] or [id, index]";
    "remove" "[id, value]";
    "index" "[id, value], [id, value, start] or [id, value, start, stop]";
    "count" "[id, value]";
    "len" "[id]";
    "reverse" "[id]";
    "sort" "[id] or [id, reverse]";
    "clear" "[id]";
    "copy" "[id]";
);

const VALUE: &[MethodSpec] = methods!(Some(Kind::Value), "value.":
    "get" "[id]";
    "set" "[id, value]";
    "fetch_add" "[id, delta]";
    "compare_and_swap" "[id, expected, new]";
    "typecode" "[id]";
);

const ARRAY: &[MethodSpec] = methods!(Some(Kind::Array), "array.":
    "getitem" "[id, index]";
    "setitem" "[id, index, value]";
    "getslice" "[id, start, stop, step]";
    "setslice" "[id, start, stop, step, array]";
    "len" "[id]";
    "tolist" "[id]";
    "typecode" "[id]";
);

const NAMESPACE: &[MethodSpec] = methods!(Some(Kind::Namespace), "namespace.":
    "getattr" "[id, name]";
    "setattr" "[id, name, value]";
    "delattr" "[id, name]";
    "items" "[id]";
);

const QUEUE: &[MethodSpec] = methods!(Some(Kind::Queue), "queue.":
    "put" "[id, item], [id, item, block] or [id, item, block, timeout]" parks;
    "put_nowait" "[id, item]";
    "get" "[id], [id, block] or [id, block, timeout]" parks;
    "get_nowait" "[id]";
    "put_many" "[id, array], [id, array, block] or [id, array, block, timeout]" parks;
    "get_many" "[id, n], [id, n, block] or [id, n, block, timeout]" parks;
    "qsize" "[id]";
    "empty" "[id]";
    "full" "[id]";
    "maxsize" "[id]";
    "close" "[id]";
    "is_closed" "[id]";
    "get_acked" "[id], [id, block] or [id, block, timeout]" parks;
    "get_many_acked" "[id, n], [id, n, block] or [id, n, block, timeout]" parks;
    "ack" "[id, receipt]";
    "nack" "[id, receipt]";
    "task_done" "[id]";
    "join" "[id] or [id, timeout]" parks;
);

/// Every method of a queue but its acknowledged gets (a joinable queue's `task_done` is its
/// acknowledgement), then `task_done` and `join`.
const JOINABLE_QUEUE: &[MethodSpec] = methods!(Some(Kind::JoinableQueue), "joinable_queue.":
    "put" "[id, item], [id, item, block] or [id, item, block, timeout]" parks;
    "put_nowait" "[id, item]";
    "get" "[id], [id, block] or [id, block, timeout]" parks;
    "get_nowait" "[id]";
    "put_many" "[id, array], [id, array, block] or [id, array, block, timeout]" parks;
    "get_many" "[id, n], [id, n, block] or [id, n, block, timeout]" parks;
    "qsize" "[id]";
    "empty" "[id]";
    "full" "[id]";
    "maxsize" "[id]";
    "close" "[id]";
    "is_closed" "[id]";
    "task_done" "[id]";
    "join" "[id] or [id, timeout]" parks;
);

const LOCK: &[MethodSpec] = methods!(Some(Kind::Lock), "lock.":
    "acquire"
        "[id], [id, blocking], [id, blocking, timeout], [id, blocking, timeout, owner] \
         or [id, blocking, timeout, owner, owned]"
        parks;
    "release" "[id] or [id, owner]";
    "locked" "[id]";
    "token" "[id] or [id, owner]";
);

const RLOCK: &[MethodSpec] = methods!(Some(Kind::RLock), "rlock.":
    "acquire"
        "[id], [id, blocking], [id, blocking, timeout], [id, blocking, timeout, owner] \
         or [id, blocking, timeout, owner, owned]"
        parks;
    "release" "[id] or [id, owner]";
    "locked" "[id]";
    "token" "[id] or [id, owner]";
);

const SEMAPHORE: &[MethodSpec] = methods!(Some(Kind::Semaphore), "semaphore.":
    "acquire" "[id], [id, blocking], [id, blocking, timeout] or [id, blocking, timeout, owned]"
        parks;
    "release" "[id] or [id, n]";
    "get_value" "[id]";
);

const BOUNDED_SEMAPHORE: &[MethodSpec] = methods!(
    Some(Kind::BoundedSemaphore), "bounded_semaphore.":
    "acquire" "[id], [id, blocking], [id, blocking, timeout] or [id, blocking, timeout, owned]"
        parks;
    "release" "[id] or [id, n]";
    "get_value" "[id]";
);

const EVENT: &[MethodSpec] = methods!(Some(Kind::Event), "event.":
    "set" "[id]";
    "clear" "[id]";
    "is_set" "[id]";
    "wait" "[id] or [id, timeout]" parks;
);

/// The lock's methods (as `lock` / `rlock`), then the condition's own.
const CONDITION: &[MethodSpec] = methods!(Some(Kind::Condition), "condition.":
    "acquire"
        "[id], [id, blocking], [id, blocking, timeout], [id, blocking, timeout, owner] \
         or [id, blocking, timeout, owner, owned]"
        parks;
    "release" "[id] or [id, owner]";
    "locked" "[id]";
    "wait" "[id], [id, timeout] or [id, timeout, owner]" parks;
    "notify" "[id], [id, n] or [id, n, owner]";
    "notify_all" "[id] or [id, owner]";
);

const BARRIER: &[MethodSpec] = methods!(Some(Kind::Barrier), "barrier.":
    "wait" "[id] or [id, timeout]" parks;
    "abort" "[id]";
    "reset" "[id]";
    "parties" "[id]";
    "n_waiting" "[id]";
    "broken" "[id]";
);

const MUTEX: &[MethodSpec] = methods!(Some(Kind::Mutex), "mutex.":
    "lock" "[id], [id, blocking], [id, blocking, timeout] or [id, blocking, timeout, owner]"
        parks;
    "get" "[id] or [id, owner]";
    "set" "[id, value] or [id, value, owner]";
    "unlock" "[id] or [id, owner]";
    "set_unlock" "[id, value] or [id, value, owner]";
    "is_poisoned" "[id]";
    "clear_poison" "[id]";
    "locked" "[id]";
);

const SET: &[MethodSpec] = methods!(Some(Kind::Set), "set.":
    "add" "[id, element]";
    "discard" "[id, element]";
    "remove" "[id, element]";
    "contains" "[id, element]";
    "pop" "[id]";
    "clear" "[id]";
    "len" "[id]";
    "copy" "[id]";
    "update" "[id, operands...]";
    "intersection_update" "[id, operands...]";
    "difference_update" "[id, operands...]";
    "symmetric_difference_update" "[id, operand]";
    "union" "[id, operands...]";
    "intersection" "[id, operands...]";
    "difference" "[id, operands...]";
    "symmetric_difference" "[id, operand]";
    "issubset" "[id, operand]";
    "issuperset" "[id, operand]";
    "isdisjoint" "[id, operand]";
    "compare" "[id, operand]";
);

/// The methods of one kind, or with `None` the session and registry methods, in `PROTOCOL.md`
/// order. A `const fn` with an exhaustive match, so a new [`Kind`] does not compile until it has
/// its rows.
pub const fn of(kind: Option<Kind>) -> &'static [MethodSpec] {
    match kind {
        None => SESSION_AND_REGISTRY,
        Some(Kind::Dict) => DICT,
        Some(Kind::List) => LIST,
        Some(Kind::Value) => VALUE,
        Some(Kind::Array) => ARRAY,
        Some(Kind::Namespace) => NAMESPACE,
        Some(Kind::Queue) => QUEUE,
        Some(Kind::JoinableQueue) => JOINABLE_QUEUE,
        Some(Kind::Lock) => LOCK,
        Some(Kind::RLock) => RLOCK,
        Some(Kind::Semaphore) => SEMAPHORE,
        Some(Kind::BoundedSemaphore) => BOUNDED_SEMAPHORE,
        Some(Kind::Event) => EVENT,
        Some(Kind::Condition) => CONDITION,
        Some(Kind::Barrier) => BARRIER,
        Some(Kind::Mutex) => MUTEX,
        Some(Kind::Set) => SET,
    }
}

/// The method `name` of `kind` (`None`: a session or registry method); `None` when there is
/// no such method. The manager asks this before resolving an object, so that an unknown method
/// gets `UnknownMethodError` whatever its params.
pub fn find(kind: Option<Kind>, name: &str) -> Option<&'static MethodSpec> {
    of(kind).iter().find(|m| m.name == name)
}

/// The group [`TABLE`] holds in place `g`: the methods of no kind first, then those of each
/// kind in [`Kind::ALL`] order.
const fn group(g: usize) -> &'static [MethodSpec] {
    if g == 0 {
        of(None)
    } else {
        of(Some(Kind::ALL[g - 1]))
    }
}

/// The number of groups: one per kind, and the methods of no kind.
const GROUPS: usize = Kind::ALL.len() + 1;

/// The number of rows of every group together.
const fn table_len() -> usize {
    let (mut n, mut g) = (0, 0);
    while g < GROUPS {
        n += group(g).len();
        g += 1;
    }
    n
}

/// Every group's rows, one after another.
const fn flatten() -> [MethodSpec; table_len()] {
    let mut all = [SESSION_AND_REGISTRY[0]; table_len()];
    let (mut at, mut g) = (0, 0);
    while g < GROUPS {
        let rows = group(g);
        let mut r = 0;
        while r < rows.len() {
            all[at] = rows[r];
            at += 1;
            r += 1;
        }
        g += 1;
    }
    all
}

const ROWS: [MethodSpec; table_len()] = flatten();

/// Every wire method: the session and registry methods, then each kind's in [`Kind::ALL`]
/// order, the order of `PROTOCOL.md`. Built at compile time from the same rows as [`of`], so
/// iterating the whole table and looking up one kind cannot disagree.
pub const TABLE: &[MethodSpec] = &ROWS;

/// The number of rows that may park.
const fn parking_len() -> usize {
    let (mut n, mut i) = (0, 0);
    while i < ROWS.len() {
        if ROWS[i].parks {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The wire names of the rows that may park, in table order.
const fn parking() -> [&'static str; parking_len()] {
    let mut names = [""; parking_len()];
    let (mut n, mut i) = (0, 0);
    while i < ROWS.len() {
        if ROWS[i].parks {
            names[n] = ROWS[i].wire;
            n += 1;
        }
        i += 1;
    }
    names
}

const PARKING: [&str; parking_len()] = parking();

/// The methods the manager may park: their answers can come long after the request (section
/// 4.1 of `PROTOCOL.md`). Every other method is answered as soon as it is read.
///
/// Clients use this to tell a slow answer that is normal (a contended `lock.acquire`) from one
/// that says something about the machine, for instance when deciding whether to poll for
/// replies before sleeping.
///
/// It is a `const` computed from [`TABLE`] (the rows with [`MethodSpec::parks`]) by `const fn`s
/// at compile time, rather than a list written out and compared by a test: a plain slice of
/// wire names keeps the type clients already use and costs nothing at run time, and being
/// derived it cannot drift from the table.
pub const MAY_WAIT: &[&str] = &PARKING;

/// Whether the manager may park `method` (see [`MAY_WAIT`]).
pub fn may_wait(method: &str) -> bool {
    MAY_WAIT.contains(&method)
}

/// Whether a request may wait in the manager: its method may, or it is a `chain` whose first
/// call's method may. `params` are the request's params after the array header (the first
/// one is all that is read).
pub fn request_may_wait(method: &str, params: &[u8]) -> bool {
    if method != "chain" {
        return may_wait(method);
    }
    let mut rest = params;
    let first_method = rmp::decode::read_array_len(&mut rest)
        .ok()
        .filter(|&n| n >= 1)
        .and_then(|_| {
            let mut buf = [0u8; 64];
            rmp::decode::read_str(&mut rest, &mut buf)
                .ok()
                .map(str::to_owned)
        });
    first_method.is_some_and(|m| may_wait(&m))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn waiting_methods_are_told_from_quick_ones() {
        assert!(may_wait("lock.acquire"));
        assert!(may_wait("queue.get"));
        assert!(may_wait("joinable_queue.join"));
        assert!(!may_wait("dict.get"));
        assert!(!may_wait("queue.get_nowait"));
        assert!(may_wait("queue.join"));
        assert!(!may_wait("lock.release"));
        assert!(!may_wait("acquire"));
    }

    #[test]
    fn a_chain_may_wait_when_its_first_call_may() {
        let params = |first: &str| {
            let mut out = Vec::new();
            crate::encode::array_header(&mut out, 2);
            crate::encode::str(&mut out, first);
            crate::encode::array_header(&mut out, 1);
            crate::encode::uint(&mut out, 1);
            out
        };
        assert!(request_may_wait("chain", &params("lock.acquire")));
        assert!(!request_may_wait("chain", &params("value.get")));
        assert!(!request_may_wait("chain", &[]));
        assert!(request_may_wait("queue.get", &[]));
        assert!(!request_may_wait("dict.get", &[]));
    }

    #[test]
    fn may_wait_names_exactly_the_methods_the_table_says_park() {
        let parking: HashSet<&str> = TABLE.iter().filter(|m| m.parks).map(|m| m.wire).collect();
        let listed: HashSet<&str> = MAY_WAIT.iter().copied().collect();
        assert_eq!(
            listed.len(),
            MAY_WAIT.len(),
            "MAY_WAIT names a method twice"
        );
        assert_eq!(listed, parking);
        for wire in MAY_WAIT {
            let (kind, name) = wire.split_once('.').expect("only object methods park");
            let spec = find(Kind::parse(kind), name).expect("in the table");
            assert!(spec.parks, "{wire}");
        }
    }

    #[test]
    fn every_row_is_its_kinds_and_its_wire_name_is_kind_dot_name() {
        let mut seen = HashSet::new();
        for m in TABLE {
            let expected = match m.kind {
                Some(kind) => format!("{kind}.{}", m.name),
                None => m.name.to_owned(),
            };
            assert_eq!(m.wire, expected);
            assert!(seen.insert(m.wire), "{} is in the table twice", m.wire);
            assert_eq!(find(m.kind, m.name), Some(m), "{}", m.wire);
            assert!(of(m.kind).contains(m));
        }
        let grouped: usize = std::iter::once(None)
            .chain(Kind::ALL.iter().copied().map(Some))
            .map(|k| of(k).len())
            .sum();
        assert_eq!(TABLE.len(), grouped, "a group is missing from TABLE");
        for kind in Kind::ALL {
            assert!(!of(Some(*kind)).is_empty(), "{kind} has no methods");
            assert!(of(Some(*kind)).iter().all(|m| m.kind == Some(*kind)));
        }
        assert!(of(None).iter().all(|m| m.kind.is_none()));
    }

    #[test]
    fn methods_outside_the_table_are_not_found() {
        assert_eq!(find(Some(Kind::Lock), "owner"), None);
        assert_eq!(find(Some(Kind::JoinableQueue), "ack"), None);
        assert_eq!(find(Some(Kind::Dict), "append"), None);
        assert_eq!(find(Some(Kind::Dict), "hello"), None);
        assert_eq!(find(None, "get"), None);
        assert_eq!(find(Some(Kind::Dict), "dict.get"), None);
        assert!(find(Some(Kind::JoinableQueue), "task_done").is_some());
    }

    #[test]
    fn param_counts_are_read_from_the_documented_forms() {
        let counts = |params| param_counts(params);
        assert_eq!(counts("[]"), (0, Some(0)));
        assert_eq!(counts("[ ]"), (0, Some(0)));
        assert_eq!(counts("[id]"), (1, Some(1)));
        assert_eq!(counts("[name or id]"), (1, Some(1)));
        assert_eq!(counts("[id, key] or [id, key, default]"), (2, Some(3)));
        assert_eq!(
            counts("[id, map] or [id, array of [key, value]]"),
            (2, Some(2))
        );
        assert_eq!(
            counts(
                "[id], [id, blocking], [id, blocking, timeout] or [id, blocking, timeout, owner]"
            ),
            (1, Some(4))
        );
        assert_eq!(counts("[id, a, b] or [id]"), (1, Some(3)));
        assert_eq!(counts("[kind, name, args...]"), (2, None));
        assert_eq!(counts("[args...] or [x, y]"), (0, None));
    }

    #[test]
    fn accepts_follows_the_counts() {
        let get = find(Some(Kind::Dict), "get").expect("dict.get");
        assert_eq!((get.min_params(), get.max_params()), (2, Some(3)));
        assert!(!get.accepts(1) && get.accepts(2) && get.accepts(3) && !get.accepts(4));
        let create = find(None, "create").expect("create");
        assert!(!create.accepts(1) && create.accepts(2) && create.accepts(1000));
        let ping = find(None, "ping").expect("ping");
        assert!(ping.accepts(0) && !ping.accepts(1));
    }

    #[test]
    fn every_object_method_takes_the_object_id_first() {
        for m in TABLE.iter().filter(|m| m.kind.is_some()) {
            assert!(m.min_params() >= 1, "{}", m.wire);
            assert!(m.params.starts_with("[id"), "{}: {}", m.wire, m.params);
        }
    }
}
