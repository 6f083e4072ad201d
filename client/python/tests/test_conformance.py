"""Conformance: agora's proxies behave like ``multiprocessing.managers``' proxies.

Every check runs one scenario twice, against a real ``multiprocessing.Manager()`` and against an
``agora.Manager()``, recording the outcome of each step (its result, or the type of the exception
it raised), and requires the same outcomes step by step. The scenarios stick to what both can do
(values that MessagePack carries unchanged; the methods Python's proxies expose in this Python
version); agora's own behaviour is tested in ``test_agora.py``.
"""

from __future__ import annotations

import array
import multiprocessing
import re
import time
import unittest
from multiprocessing import managers
from typing import Any, Callable, List

import agora

from _support import WAIT, Recorder, manager_binary, run_threads, same_outcome

Scenario = Callable[[Any, Recorder], None]

_managers: List[Any] = []


def setUpModule() -> None:
    manager_binary()
    _managers.append(multiprocessing.Manager())
    _managers.append(agora.Manager())


def tearDownModule() -> None:
    for m in _managers:
        m.shutdown()
    _managers.clear()


class ConformanceCase(unittest.TestCase):
    def check(self, scenario: Scenario) -> None:
        """Runs ``scenario`` against both managers and compares the outcomes step by step."""
        python_manager, agora_manager = _managers
        expected = Recorder()
        scenario(python_manager, expected)
        actual = Recorder()
        scenario(agora_manager, actual)
        self.assertEqual(
            [label for label, _ in actual.outcomes],
            [label for label, _ in expected.outcomes],
            "the scenario took different paths",
        )
        mismatches = [
            f"  {label}: multiprocessing {want!r}, agora {got!r}"
            for (label, want), (_, got) in zip(expected.outcomes, actual.outcomes)
            if not same_outcome(want, got)
        ]
        if mismatches:
            self.fail("outcomes differ:\n" + "\n".join(mismatches))
        self.assertTrue(expected.outcomes, "the scenario recorded nothing")


# --- helpers that run in child processes (top level, so that spawn can import them) -----------


def _child_fill(d: Any, lst: Any, ns: Any, v: Any) -> None:
    for i in range(10):
        d["arg" + str(i)] = i * i
    lst += range(11, 16)
    ns.seen = True
    v.value = v.value + 1


def _child_drain(q: Any, out: Any) -> None:
    while True:
        item = q.get(timeout=WAIT)
        if item is None:
            break
        out.append(item)


def _child_acquire_and_report(lock: Any, ev: Any) -> None:
    ok = lock.acquire(timeout=WAIT)
    ev.set()
    assert ok


class DictConformance(ConformanceCase):
    def test_items(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            d = m.dict()
            r("set", d.__setitem__, "a", 1)
            r("set2", d.__setitem__, 2, [1, "two", None, 3.5, {"k": [True, b"bin"]}])
            r("get", d.__getitem__, "a")
            r("get nested", d.__getitem__, 2)
            r("missing", d.__getitem__, "zz")
            r("len", len, d)
            r("contains", d.__contains__, "a")
            r("not contains", d.__contains__, "b")
            r("del", d.__delitem__, "a")
            r("del missing", d.__delitem__, "a")
            r("after del", d.copy)
            r("unhashable set", d.__setitem__, ["list"], 1)
            r("unhashable get", d.__getitem__, {"a": 1})
            r("big ints", d.__setitem__, "big", 2**63 - 1)
            r("big ints get", d.__getitem__, "big")
            r("negative", d.__setitem__, -5, -(2**63))
            r("negative get", d.__getitem__, -5)
            r("unicode", d.__setitem__, "clé", "värde ✓")
            r("unicode get", d.__getitem__, "clé")
            r("bytes key", d.__setitem__, b"k", b"\x00\xff")
            r("bytes get", d.__getitem__, b"k")
            r("tuple key", d.__setitem__, (1, "x"), "tuple")
            r("tuple key get", d.__getitem__, (1, "x"))
            r("tuple key in keys", lambda: (1, "x") in d.keys())
            r("equality is identity", lambda: d == d.copy())

        self.check(scenario)

    def test_every_keyword_is_data(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            d = m.dict(name="alice", age=30)
            r("copy", d.copy)
            r("name", d.__getitem__, "name")
            e = m.dict(name="alice", age=30)
            r("a second call is another dict", lambda: (e.__setitem__("age", 31), d["age"]))
            r("mapping and keywords", lambda: m.dict({"a": 1}, name="b").copy())
            r("pairs and keywords", lambda: m.dict([("a", 1)], name="b").copy())

        self.check(scenario)

    def test_missing_key_args(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            d = m.dict({"a": 1})

            def key_error_args(fn: Callable[[], Any]) -> Any:
                try:
                    fn()
                except KeyError as e:
                    return e.args
                return None

            r("getitem", key_error_args, lambda: d["nope"])
            r("delitem", key_error_args, lambda: d.__delitem__(7))
            r("pop", key_error_args, lambda: d.pop("nope"))
            r("popitem", lambda: (d.popitem(), key_error_args(d.popitem)))

        self.check(scenario)

    def test_methods(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            d = m.dict({"a": 1, "b": 2}, c=3)
            r("copy", d.copy)
            r("keys", d.keys)
            r("values", d.values)
            r("items", d.items)
            r("iter", list, d)
            r("sorted", sorted, d)
            r("dict()", dict, d)
            r("str", str, d)
            r("get", d.get, "a")
            r("get missing", d.get, "zz")
            r("get default", d.get, "zz", 42)
            r("setdefault existing", d.setdefault, "a", 100)
            r("setdefault new", d.setdefault, "d", 4)
            r("setdefault none", d.setdefault, "e")
            r("pop", d.pop, "e")
            r("pop default", d.pop, "zz", "dflt")
            r("pop missing", d.pop, "zz")
            r("pop too many", d.pop, "a", 1, 2)
            r("update map", d.update, {"x": 10, "a": -1})
            r("update pairs", d.update, [("y", 11), ("z", 12)])
            r("update kwargs", d.update, w=13)
            r("update both", d.update, {"v": 14}, u=15)
            r("update two positional", d.update, {}, {})
            r("update bad pair", d.update, [(1, 2, 3)])
            r("update not iterable", d.update, 5)
            r("after updates", d.copy)
            r("popitem", d.popitem)
            r("len", len, d)
            r("clear", d.clear)
            r("empty", d.copy)
            r("popitem empty", d.popitem)
            r("from pairs", lambda: m.dict([("p", 1), ("q", 2)]).copy())
            r("from kwargs", lambda: m.dict(k=1).items())

        self.check(scenario)

    def test_shared_between_processes(self) -> None:
        # forkserver: the default start method from Python 3.14 on.
        for method in ("fork", "spawn", "forkserver"):
            with self.subTest(start_method=method):

                def scenario(m: Any, r: Recorder) -> None:
                    d, lst, ns, v = m.dict(), m.list(), m.Namespace(), m.Value("i", 41)
                    ctx = multiprocessing.get_context(method)
                    p = ctx.Process(target=_child_fill, args=(d, lst, ns, v))
                    p.start()
                    p.join(WAIT)
                    r("exit code", lambda: p.exitcode)
                    r("dict", d.copy)
                    r("list", lambda: lst[:])
                    r("namespace", lambda: ns.seen)
                    r("value", lambda: v.value)

                self.check(scenario)


class ListConformance(ConformanceCase):
    def test_indexing(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lst = m.list(range(10))
            r("get", lst.__getitem__, 3)
            r("get negative", lst.__getitem__, -1)
            r("get bool", lst.__getitem__, True)
            r("out of range", lst.__getitem__, 10)
            r("out of range negative", lst.__getitem__, -11)
            r("str index", lst.__getitem__, "a")
            r("float index", lst.__getitem__, 1.5)
            r("set", lst.__setitem__, 0, "zero")
            r("set out of range", lst.__setitem__, 10, 1)
            r("del", lst.__delitem__, 1)
            r("del out of range", lst.__delitem__, 100)
            r("slice", lambda: lst[2:5])
            r("slice step", lambda: lst[::2])
            r("slice negative step", lambda: lst[::-3])
            r("slice clamped", lambda: lst[-100:100])
            r("slice step zero", lambda: lst[::0])
            r("slice bad bound", lambda: lst["a":])
            r("set slice", lst.__setitem__, slice(0, 2), ["a", "b", "c"])
            r("set slice from range", lst.__setitem__, slice(0, 0), range(3))
            r("set slice not iterable", lst.__setitem__, slice(0, 1), 5)
            r("set extended slice", lst.__setitem__, slice(None, None, 4), [1, 2, 3])
            r("set extended slice wrong size", lst.__setitem__, slice(None, None, 2), [1])
            r("del slice", lst.__delitem__, slice(0, 3))
            r("del extended slice", lst.__delitem__, slice(None, None, 2))
            r("contents", lambda: lst[:])
            r("len", len, lst)

        self.check(scenario)

    def test_methods(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lst = m.list([3, 1, 2])
            r("append", lst.append, 5)
            r("extend", lst.extend, [9, 8])
            r("extend range", lst.extend, range(2))
            r("extend not iterable", lst.extend, 5)
            r("insert", lst.insert, 0, "first")
            r("insert clamped", lst.insert, 100, "last")
            r("insert negative", lst.insert, -1, "second last")
            r("contents", lambda: lst[:])
            r("pop", lst.pop)
            r("pop 0", lst.pop, 0)
            r("pop out of range", lst.pop, 100)
            r("remove", lst.remove, "second last")
            r("remove missing", lst.remove, "nope")
            r("index", lst.index, 9)
            r("index start", lst.index, 1, 2)
            r("index missing", lst.index, "nope")
            r("index out of window", lst.index, 3, 1, 2)
            r("count", lst.count, 1)
            r("count none", lst.count, "x")
            r("in", lambda: 9 in lst)
            r("not in", lambda: "x" in lst)
            r("reverse", lst.reverse)
            r("reversed", lambda: list(reversed(lst)))
            r("sort", lst.sort)
            r("sorted", lambda: lst[:])
            r("sort reverse", lst.sort, reverse=True)
            r("sorted reverse", lambda: lst[:])
            r("sort key", lst.sort, key=str)
            r("sorted key", lambda: lst[:])
            r("sort positional", lst.sort, True)
            r("iteration", list, lst)
            r("str", str, lst)
            r("len", len, lst)
            r("mixed sort", lambda: (lst.append("str"), lst.sort()))
            r("pop empty", lambda: m.list().pop())
            r("from str", lambda: m.list("abc")[:])

        self.check(scenario)

    def test_operators(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lst = m.list([1, 2])
            r("add", lambda: lst + [3])
            r("add tuple", lambda: lst + (3,))
            r("mul", lambda: lst * 2)
            r("rmul", lambda: 3 * lst)
            r("mul str", lambda: lst * "a")

            def iadd() -> Any:
                nonlocal lst
                before = lst
                lst += [7, 8]
                return lst is before

            r("iadd keeps proxy", iadd)

            def imul(n: Any) -> Any:
                nonlocal lst
                before = lst
                lst *= n
                return lst is before, lst[:]

            r("imul", imul, 2)
            r("imul one", imul, 1)
            r("imul str", imul, "x")
            r("imul zero", imul, 0)
            r("empty", len, lst)

        self.check(scenario)


class NewerPythonConformance(ConformanceCase):
    """What later Pythons add to the dict and list proxies (gh-103134), checked where this
    Python's multiprocessing has it."""

    def needs(self, cls: Any, *names: str) -> None:
        missing = [n for n in names if not hasattr(cls, n)]
        if missing:
            self.skipTest(f"this Python's {cls.__name__} lacks {', '.join(missing)}")

    def test_dict_operators(self) -> None:
        self.needs(managers.DictProxy, "__or__", "__ior__", "__reversed__", "fromkeys")

        def scenario(m: Any, r: Recorder) -> None:
            d = m.dict({"a": 1, "b": 2})
            r("or", lambda: d | {"c": 3})
            r("ror", lambda: {"z": 0} | d)
            r("or not a mapping", lambda: d | [1])

            def ior() -> Any:
                nonlocal d
                before = d
                d |= {"a": 10, "d": 4}
                return d is before, d.copy()

            r("ior", ior)
            r("reversed", lambda: list(reversed(d)))
            r("fromkeys", d.fromkeys, "xy", 0)

        self.check(scenario)

    def test_list_clear_and_copy(self) -> None:
        self.needs(managers.ListProxy, "clear", "copy")

        def scenario(m: Any, r: Recorder) -> None:
            lst = m.list([1, 2])
            r("copy", lst.copy)
            r("clear", lst.clear)
            r("empty", len, lst)

        self.check(scenario)


class ValueAndArrayConformance(ConformanceCase):
    def test_value(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            v = m.Value("i", 7)
            r("value", lambda: v.value)
            r("get", v.get)
            r("set", v.set, 8)
            r("property set", setattr, v, "value", 9)
            r("after", v.get)

            def increment() -> Any:
                v.value += 1
                return v.value

            r("+=", increment)
            r("typecode not enforced", v.set, "a string")
            r("string", v.get)
            r("list value", lambda: (v.set([1, [2]]), v.get()))
            r("float value", lambda: m.Value("d", 1.5).value)

        self.check(scenario)

    def test_array(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            a = m.Array("i", [1, 2, 3, 4])
            r("len", len, a)
            r("get", a.__getitem__, 1)
            r("get negative", a.__getitem__, -1)
            r("out of range", a.__getitem__, 4)
            r("str index", a.__getitem__, "x")
            r("set", a.__setitem__, 0, 10)
            r("set out of range", a.__setitem__, 9, 1)
            r("set wrong type", a.__setitem__, 0, "x")
            r("set float", a.__setitem__, 0, 1.5)
            r("set overflow", a.__setitem__, 0, 2**40)
            r("slice", lambda: a[1:3])
            r("slice step", lambda: a[::2])
            r("set slice", a.__setitem__, slice(0, 2), array.array("i", [7, 8]))
            r("set slice from list", a.__setitem__, slice(0, 2), [7, 8])
            r("set slice other typecode", a.__setitem__, slice(0, 2), array.array("d", [1, 2]))
            r("list()", list, a)
            r("doubles", lambda: list(m.Array("d", [0.5, 1])))
            r("unsigned overflow", lambda: m.Array("B", [1])[0:1])
            r("unsigned set negative", lambda: m.Array("B", [1]).__setitem__(0, -1))

        self.check(scenario)


class NamespaceConformance(ConformanceCase):
    def test_every_keyword_is_an_attribute(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            ns = m.Namespace(name="x", value=1)
            r("name", lambda: ns.name)
            r("value", lambda: ns.value)
            r("another", lambda: m.Namespace(name="x") is ns)

        self.check(scenario)

    def test_attributes(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            ns = m.Namespace(a=1, b="two")
            r("get", lambda: ns.a)
            r("get 2", lambda: ns.b)
            r("missing", lambda: ns.zz)
            r("set", setattr, ns, "c", [1, 2])
            r("after set", lambda: ns.c)
            r("del", delattr, ns, "a")
            r("deleted", lambda: ns.a)
            r("del missing", delattr, ns, "a")
            r("hasattr", hasattr, ns, "b")
            r("hasattr missing", hasattr, ns, "a")
            r("getattr default", getattr, ns, "nope", "default")
            r("private set", setattr, ns, "_mine", 5)
            r("private get", lambda: ns._mine)
            r("private missing", lambda: ns._nope)

        self.check(scenario)


class QueueConformance(ConformanceCase):
    def test_queue(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            q = m.Queue(3)
            r("empty", q.empty)
            r("put", q.put, 1)
            r("put nowait", q.put_nowait, [2, "two"])
            r("put timeout", q.put, {"three": 3}, True, 1.0)
            r("full", q.full)
            r("qsize", q.qsize)
            r("put full nonblocking", q.put, 4, False)
            r("put full nowait", q.put_nowait, 4)
            r("put full timeout", q.put, 4, timeout=0.01)
            r("put full nonblocking negative timeout", q.put, 4, False, -1)
            r("put negative timeout", q.put, 4, True, -1)
            r("get", q.get)
            r("get nowait", q.get_nowait)
            r("get timeout", q.get, timeout=1.0)
            r("get empty nonblocking", q.get, False)
            r("get empty nowait", q.get_nowait)
            r("get empty timeout", q.get, timeout=0.01)
            r("get zero timeout", q.get, True, 0)
            r("get negative timeout", q.get, timeout=-1)
            r("get nonblocking ignores timeout", q.get, False, -5)
            r("empty again", q.empty)
            r("fifo", lambda: ([q.put(i) for i in "abc"], [q.get() for _ in range(3)]))

        self.check(scenario)

    def test_unbounded(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            q = m.Queue()
            r("many", lambda: [q.put(i) for i in range(100)] and q.qsize())
            r("full never", q.full)
            r("drain", lambda: [q.get() for _ in range(100)])

        self.check(scenario)

    def test_blocking_get_is_woken_by_put(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            q = m.Queue()

            def producer() -> None:
                time.sleep(0.05)
                q.put("late")

            results = run_threads(lambda: q.get(timeout=WAIT), producer)
            r("got", lambda: results)

        self.check(scenario)

    def test_joinable_queue(self) -> None:
        self.check(self.joinable_scenario("JoinableQueue"))

    def test_queue_is_joinable_too(self) -> None:
        # Python's manager Queue() is a queue.Queue: task_done and join, the tutorials' pattern.
        self.check(self.joinable_scenario("Queue"))

    @staticmethod
    def joinable_scenario(factory: str) -> Scenario:
        def scenario(m: Any, r: Recorder) -> None:
            q = getattr(m, factory)()
            r("put", q.put, "job")
            r("get", q.get)
            r("task done", q.task_done)
            r("join", q.join)
            r("task done too often", q.task_done)
            r("put 2", lambda: (q.put(1), q.put(2)))

            def consumer() -> None:
                for _ in range(2):
                    q.get(timeout=WAIT)
                    q.task_done()

            r("join waits for consumer", lambda: run_threads(consumer, q.join))

        return scenario

    def test_producer_consumer_across_processes(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            q, out = m.Queue(), m.list()
            consumers = [multiprocessing.Process(target=_child_drain, args=(q, out)) for _ in range(2)]
            for c in consumers:
                c.start()
            for i in range(50):
                q.put(i)
            for _ in consumers:
                q.put(None)
            for c in consumers:
                c.join(WAIT)
            r("exit codes", lambda: [c.exitcode for c in consumers])
            r("everything once", lambda: sorted(out[:]))

        self.check(scenario)


class LockConformance(ConformanceCase):
    def test_lock(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lock = m.Lock()
            r("acquire", lock.acquire)
            r("acquire nonblocking while held", lock.acquire, False)
            r("acquire timeout while held", lock.acquire, True, 0.01)
            r("acquire timeout kw", lock.acquire, timeout=0)
            r("nonblocking with timeout", lock.acquire, False, 1)
            r("negative timeout", lock.acquire, True, -2)
            r("release", lock.release)
            r("release unlocked", lock.release)
            r("acquire nonblocking", lock.acquire, False)
            r("release from another thread", lambda: run_threads(lock.release))
            r("with", lambda: lock.__enter__())
            r("exit", lambda: lock.__exit__(None, None, None))
            r("acquire after with", lock.acquire, False)
            r("release again", lock.release)

        self.check(scenario)

    def test_lock_excludes(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lock, counter = m.Lock(), m.Value("i", 0)

            def work() -> None:
                for _ in range(20):
                    with lock:
                        counter.value = counter.value + 1

            run_threads(work, work, work)
            r("no lost update", lambda: counter.value)

        self.check(scenario)

    def test_rlock(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lock = m.RLock()
            r("acquire", lock.acquire)
            r("acquire again", lock.acquire)
            r("acquire nonblocking again", lock.acquire, False)
            r("other thread cannot", lambda: run_threads(lambda: lock.acquire(False)))
            r("other thread cannot release", lambda: [type(e) for e in run_threads(lock.release)])
            r("release 1", lock.release)
            r("release 2", lock.release)
            r("release 3", lock.release)
            r("release unheld", lock.release)
            r(
                "other thread can now",
                lambda: run_threads(lambda: (lock.acquire(False), lock.release())),
            )
            r("with", lambda: lock.__enter__())
            r("exit", lambda: lock.__exit__(None, None, None))

        self.check(scenario)

    def test_lock_held_by_child_process(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            lock, ev = m.Lock(), m.Event()
            lock.acquire()
            p = multiprocessing.Process(target=_child_acquire_and_report, args=(lock, ev))
            p.start()
            r("child waits", ev.wait, 0.1)
            lock.release()
            r("child got it", ev.wait, WAIT)
            p.join(WAIT)
            r("exit code", lambda: p.exitcode)

        self.check(scenario)


class SemaphoreConformance(ConformanceCase):
    def test_semaphore(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            s = m.Semaphore(2)
            r("acquire", s.acquire)
            r("acquire 2", s.acquire, True)
            r("acquire nonblocking", s.acquire, False)
            r("acquire timeout", s.acquire, timeout=0.01)
            r("nonblocking with timeout", s.acquire, False, 1)
            r("release", s.release)
            r("release", s.release)
            r("release above initial", s.release)
            r("three now", lambda: [s.acquire(False) for _ in range(4)])
            r("with", lambda: (s.release(), s.__enter__(), s.__exit__(None, None, None)))
            r("zero", lambda: m.Semaphore(0).acquire(False))

        self.check(scenario)

    def test_bounded_semaphore(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            s = m.BoundedSemaphore(1)
            r("acquire", s.acquire)
            r("acquire nonblocking", s.acquire, False)
            r("release", s.release)
            r("release too many", s.release)
            r("acquire after", s.acquire, False)

        self.check(scenario)


class ConditionEventBarrierConformance(ConformanceCase):
    def test_condition(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            c = m.Condition()
            r("wait unheld", c.wait, 0.01)
            r("notify unheld", c.notify)
            r("notify_all unheld", c.notify_all)
            r("acquire", c.acquire)
            r("acquire reentrant", c.acquire)
            r("wait timeout", c.wait, 0.01)
            r("notify nobody", c.notify)
            r("notify n", c.notify, 3)
            r("notify_all nobody", c.notify_all)
            r("wait_for true", c.wait_for, lambda: "yes")
            r("wait_for false", c.wait_for, lambda: 0, 0.01)
            r("release", c.release)
            r("release 2", c.release)
            r("release unheld", c.release)

        self.check(scenario)

    def test_condition_notify_wakes_waiter(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            c, state = m.Condition(), m.dict(ready=False)

            def waiter() -> Any:
                with c:
                    return c.wait_for(lambda: state["ready"], WAIT)

            def notifier() -> None:
                time.sleep(0.05)
                with c:
                    state["ready"] = True
                    c.notify_all()

            r("waiter sees it", lambda: run_threads(waiter, waiter, notifier))

        self.check(scenario)

    def test_event(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            e = m.Event()
            r("is_set", e.is_set)
            r("wait timeout", e.wait, 0.01)
            r("set", e.set)
            r("is_set after", e.is_set)
            r("wait", e.wait)
            r("wait timeout set", e.wait, 0.01)
            r("clear", e.clear)
            r("cleared", e.is_set)

            def setter() -> None:
                time.sleep(0.05)
                e.set()

            r("wakes waiters", lambda: run_threads(lambda: e.wait(WAIT), lambda: e.wait(WAIT), setter))

        self.check(scenario)

    def test_barrier(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            b = m.Barrier(3)
            r("parties", lambda: b.parties)
            r("n_waiting", lambda: b.n_waiting)
            r("broken", lambda: b.broken)
            r("indexes", lambda: sorted(run_threads(*[lambda: b.wait(WAIT)] * 3)))
            r("timeout breaks", b.wait, 0.01)
            r("broken after timeout", lambda: b.broken)
            r("wait while broken", b.wait, 1)
            r("reset", b.reset)
            r("whole again", lambda: b.broken)
            r("abort", b.abort)
            r("broken after abort", lambda: b.broken)
            r("wait after abort", b.wait, 1)
            r("default timeout", lambda: m.Barrier(2, None, 0.01).wait())

        self.check(scenario)

    def test_barrier_abort_wakes_waiters(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            b = m.Barrier(3)

            def aborter() -> None:
                time.sleep(0.05)
                b.abort()

            results = run_threads(lambda: b.wait(WAIT), lambda: b.wait(WAIT), aborter)
            r("waiters broken", lambda: [type(x) for x in results])

        self.check(scenario)


if __name__ == "__main__":
    unittest.main()


def _masked(text: str) -> str:
    """``text`` with addresses (``0x...``) masked: they differ between any two objects."""
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


class ReprAndStrConformance(ConformanceCase):
    """``repr()`` of a proxy is Python's shape (agora adds details after it); ``str()`` is the
    referent's repr, as Python's manager shows it."""

    def test_repr_begins_as_pythons(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            for factory, args in [
                ("dict", ()), ("list", ()), ("Value", ("i", 3)), ("Array", ("i", [0])),
                ("Namespace", ()), ("Event", ()), ("Condition", ()), ("Barrier", (2,)),
            ]:
                shown = repr(getattr(m, factory)(*args))
                r(factory, lambda: re.match(r"<(\w+) object, typeid '(\w+)' at 0x", shown).groups())

        self.check(scenario)

    def test_str_shows_the_referent(self) -> None:
        def scenario(m: Any, r: Recorder) -> None:
            shown = lambda obj: lambda: _masked(str(obj))  # noqa: E731
            r("dict", shown(m.dict({"a": 1, 2: [3]})))
            r("list", shown(m.list([1, "two", None])))
            r("Value", shown(m.Value("i", 3)))
            r("Value d", shown(m.Value("d", 1.5)))
            r("Array", shown(m.Array("i", [0, 1])))
            r("Namespace sorted", shown(m.Namespace(name="Bob", age=3)))
            lock = m.Lock()
            r("Lock", shown(lock))
            lock.acquire()
            r("Lock locked", shown(lock))
            lock.release()
            r("RLock", lambda: _masked(str(m.RLock())).split(" object")[0])
            r("Semaphore", shown(m.Semaphore(2)))
            ev = m.Event()
            r("Event", shown(ev))
            ev.set()
            r("Event set", shown(ev))
            r("Queue", shown(m.Queue()))
            r("JoinableQueue", shown(m.JoinableQueue()))
            barrier = m.Barrier(3)
            r("Barrier", shown(barrier))
            barrier.abort()
            r("Barrier broken", shown(barrier))

        self.check(scenario)

