"""The shared set against a real Python ``set``: every method, the operators and their
in-place forms, the comparisons and the error cases, step by step.

Python 3.14's ``SyncManager.set()`` proxies a real ``set``, so the reference is ``set`` itself
(this Python may predate 3.14): each scenario runs once on local ``set`` objects and once on
``agora.Manager().set()`` proxies, and every step must have the same outcome (the same result,
or an exception of the same type). Where the two must differ (``==``, which is identity for a
proxy as for Python's) a test says so.
"""

from __future__ import annotations

import collections.abc
import pickle
import unittest
from typing import Any, Callable, Iterable, List

import agora

from _support import module_manager, Recorder, same_outcome

Make = Callable[[Iterable[Any]], Any]

manager: Any = None


setUpModule, tearDownModule = module_manager(globals())


def local_set(items: Iterable[Any] = ()) -> Any:
    return set(items)


def shared_set(items: Iterable[Any] = ()) -> Any:
    return manager.set(items)


class SetCase(unittest.TestCase):
    def check(self, scenario: Callable[[Make, Recorder], None]) -> None:
        expected, actual = Recorder(), Recorder()
        scenario(local_set, expected)
        scenario(shared_set, actual)
        self.assertEqual(
            [label for label, _ in actual.outcomes], [label for label, _ in expected.outcomes]
        )
        mismatches = [
            f"  {label}: set {want!r}, agora {got!r}"
            for (label, want), (_, got) in zip(expected.outcomes, actual.outcomes)
            if not same_outcome(want, got)
        ]
        if mismatches:
            self.fail("outcomes differ:\n" + "\n".join(mismatches))


class SetConformance(SetCase):
    def test_elements(self) -> None:
        def scenario(make: Make, r: Recorder) -> None:
            s = make([1, 2, 3, 2])
            r("len", len, s)
            r("in", lambda: 2 in s)
            r("not in", lambda: 9 in s)
            r("in unhashable", lambda: [1] in s)
            r("add", s.add, 4)
            r("add again", s.add, 4)
            r("after add", lambda: sorted(s))
            r("add unhashable list", s.add, [1])
            r("add unhashable dict", s.add, {"a": 1})
            r("add tuple", s.add, (1, "a"))
            r("tuple in", lambda: (1, "a") in s)
            r("tuple back", lambda: (1, "a") in set(iter(s)))
            r("discard", s.discard, (1, "a"))
            r("discard missing", s.discard, 99)
            r("discard unhashable", s.discard, [1])
            r("remove", s.remove, 4)
            r("remove missing", s.remove, 4)
            r("remove unhashable", s.remove, [4])
            r("strings and bytes", lambda: (s.add("a"), s.add(b"a"), len(s))[2])
            r("float equal to int", lambda: (s.add(1.0), len(s))[1])
            r("none", lambda: (s.add(None), None in s))
            r("iteration", lambda: sorted(map(repr, s)))
            r("copy", s.copy)
            r("copy is a set", lambda: type(s.copy()))

            def pop_one() -> Any:
                before = s.copy()
                x = s.pop()
                return x in before, len(s) == len(before) - 1, x in s

            r("pop", pop_one)
            r("clear", s.clear)
            r("empty", len, s)
            r("pop empty", s.pop)
            r("pop empty message", lambda: _message(s.pop))

        self.check(scenario)

    def test_algebra_with_iterables(self) -> None:
        def scenario(make: Make, r: Recorder) -> None:
            s = make(range(1, 6))
            r("union", s.union, [7], (8, 1), {9})
            r("union of nothing", s.union)
            r("union generator", s.union, (x * 10 for x in range(3)))
            r("union string", s.union, "ab")
            r("union not iterable", s.union, 3)
            r("union unhashable", s.union, [[1]])
            r("intersection", s.intersection, range(3, 10), [4, 5, 6])
            r("intersection of nothing", s.intersection)
            r("difference", s.difference, [1], {5, 6})
            r("symmetric_difference", s.symmetric_difference, [4, 5, 6, 7])
            r("symmetric_difference of two", s.symmetric_difference, [1], [2])
            r("issubset", s.issubset, range(10))
            r("issubset not", s.issubset, [1, 2])
            r("issuperset", s.issuperset, (1, 2))
            r("issuperset not", s.issuperset, [1, 99])
            r("isdisjoint", s.isdisjoint, [0, 99])
            r("isdisjoint not", s.isdisjoint, iter([5]))
            r("issubset not iterable", s.issubset, 3)
            r("unchanged", lambda: sorted(s))
            r("update", s.update, [6], (7,), {8})
            r("update nothing", s.update)
            r("update not iterable", s.update, 1)
            r("after update", lambda: sorted(s))
            r("intersection_update", s.intersection_update, range(2, 20), [2, 3, 4, 5, 6, 7])
            r("after intersection_update", lambda: sorted(s))
            r("difference_update", s.difference_update, [2], {7})
            r("after difference_update", lambda: sorted(s))
            r("symmetric_difference_update", s.symmetric_difference_update, [3, 10])
            r("after symmetric_difference_update", lambda: sorted(s))
            r("symmetric_difference_update of two", s.symmetric_difference_update, [1], [2])

        self.check(scenario)

    def test_operators(self) -> None:
        def scenario(make: Make, r: Recorder) -> None:
            s, t = make([1, 2, 3]), make([3, 4])
            r("or", lambda: s | t)
            r("and", lambda: s & t)
            r("sub", lambda: s - t)
            r("xor", lambda: s ^ t)
            r("or set", lambda: s | {9})
            r("or frozenset", lambda: s | frozenset({9}))
            r("ror", lambda: {9} | s)
            r("rand", lambda: {1, 9} & s)
            r("rsub", lambda: {1, 9} - s)
            r("rxor", lambda: {1, 9} ^ s)
            for op, name in [
                (lambda a, b: a | b, "or"),
                (lambda a, b: a & b, "and"),
                (lambda a, b: a - b, "sub"),
                (lambda a, b: a ^ b, "xor"),
            ]:
                r(f"{name} list", op, s, [1])
                r(f"r{name} list", op, [1], s)
                r(f"{name} int", op, s, 1)
            r("unchanged", lambda: sorted(s))

            def inplace(fn: Callable[[Any], Any], other: Any) -> Any:
                nonlocal s
                before = s
                s = fn(other)
                return s is before, sorted(s)

            r("ior", inplace, lambda o: _ior(s, o), {5, 6})
            r("iand", inplace, lambda o: _iand(s, o), {1, 2, 5, 9})
            r("isub", inplace, lambda o: _isub(s, o), {1})
            r("ixor", inplace, lambda o: _ixor(s, o), {2, 7})
            r("ior shared", inplace, lambda o: _ior(s, o), t)
            r("ior list", lambda: _ior(s, [1]))
            r("iand list", lambda: _iand(s, [1]))
            r("isub list", lambda: _isub(s, [1]))
            r("ixor list", lambda: _ixor(s, [1]))
            r("self operand", lambda: (s.symmetric_difference_update(s), sorted(s)))

        self.check(scenario)

    def test_comparisons(self) -> None:
        def scenario(make: Make, r: Recorder) -> None:
            s, t = make([1, 2]), make([1, 2, 3])
            r("le", lambda: s <= t)
            r("lt", lambda: s < t)
            r("ge", lambda: s >= t)
            r("gt", lambda: t > s)
            r("le self", lambda: s <= s)
            r("lt self", lambda: s < s)
            r("le set", lambda: s <= {1, 2})
            r("lt set", lambda: s < {1, 2})
            r("ge set", lambda: s >= {1})
            r("gt frozenset", lambda: s > frozenset({1}))
            r("reflected le", lambda: {1} <= s)
            r("reflected gt", lambda: {1, 2, 3} > s)
            r("incomparable", lambda: (s <= {3}, s >= {3}))
            r("lt list", lambda: s < [1, 2, 3])
            r("ge int", lambda: s >= 1)
            r("issubset of a list", s.issubset, [1, 2])

        self.check(scenario)


def _ior(s: Any, o: Any) -> Any:
    s |= o
    return s


def _iand(s: Any, o: Any) -> Any:
    s &= o
    return s


def _isub(s: Any, o: Any) -> Any:
    s -= o
    return s


def _ixor(s: Any, o: Any) -> Any:
    s ^= o
    return s


def _message(fn: Callable[[], Any]) -> Any:
    try:
        fn()
    except KeyError as e:
        return e.args
    return None


class SharedSets(unittest.TestCase):
    """What a shared set does beyond a local one."""

    def test_equality_is_identity_as_for_pythons_proxies(self) -> None:
        s = manager.set([1])
        self.assertTrue(s == s)
        self.assertFalse(s == {1})
        self.assertFalse(s == manager.set([1]))
        self.assertTrue(s <= manager.set([1]) and s >= manager.set([1]))
        self.assertIsInstance(s, collections.abc.MutableSet)
        self.assertEqual(str(s), "{1}")
        self.assertEqual(str(manager.set()), "set()")
        self.assertRegex(repr(s), r"^<SetProxy object, typeid 'set' at 0x")

    def test_shared_operands_are_read_in_the_manager(self) -> None:
        a, b = manager.set(range(5)), manager.set(range(3, 8))
        self.assertEqual(a | b, set(range(8)))
        self.assertEqual(a.intersection(b, [4]), {4})
        a -= b
        self.assertEqual(a.copy(), {0, 1, 2})
        self.assertEqual(b.copy(), set(range(3, 8)), "the operand is unchanged")
        # Proxies of a dict or a list are operands through their contents.
        self.assertEqual(a.union(manager.dict({9: 0})), {0, 1, 2, 9})
        self.assertEqual(a.union(manager.list([10])), {0, 1, 2, 10})

    def test_named_nested_and_pickled(self) -> None:
        named = manager.named("test-set").set(["x"])
        self.assertEqual(manager.named("test-set").set().copy(), {"x"})
        self.assertIsInstance(manager.lookup("test-set"), agora.SetProxy)
        d = manager.dict()
        d["members"] = named
        lst = manager.list([named])
        d["members"].add("y")
        self.assertEqual(lst[0].copy(), {"x", "y"})
        again = pickle.loads(pickle.dumps(named))
        self.assertEqual(again.copy(), {"x", "y"})
        self.assertEqual(manager.set(named).copy(), {"x", "y"}, "a set from a shared set")
        manager.delete("test-set")

    def test_update_is_all_or_nothing(self) -> None:
        # Python's set.update adds the elements before a bad one; agora's checks them all
        # first and changes nothing.
        s = manager.set([1])
        with self.assertRaises(TypeError):
            s.update([100, [1]])
        self.assertEqual(s.copy(), {1})

    def test_elements_compare_as_the_managers_keys(self) -> None:
        # A documented difference: True and 1 are two elements (Python: one).
        s = manager.set([1])
        s.add(True)
        self.assertEqual(len(s), 2)
        # Elements must be values MessagePack carries.
        with self.assertRaises(TypeError):
            s.add(frozenset({1}))

    def test_elements_that_are_proxies_hold_their_objects(self) -> None:
        s = manager.set()
        inner = manager.list([1])
        s.add(inner)
        (got,) = list(s)
        self.assertIsInstance(got, agora.ListProxy)
        ident = inner._id
        del inner, got
        import gc

        gc.collect()
        self.assertIn(ident, [i for i, _, _, _ in manager.objects()])
        s.clear()
        manager.ping()  # the decrefs go with the next request
        gc.collect()
        from _support import wait_for

        wait_for(lambda: ident not in [i for i, _, _, _ in manager.objects()])


