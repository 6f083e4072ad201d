"""Object lifetime against the real manager (``PROTOCOL.md`` section 3.2): an object without a
name is freed when nothing holds it any more (no proxy in any process, no other object storing
it, no export on its way), as with ``multiprocessing.Manager()``; a named object lives until it
is deleted. The wire-level details are in ``test_lifetime_wire.py``."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import unittest
from multiprocessing.managers import SyncManager
from typing import Any, Callable, Dict, List, Optional, Tuple

import agora

from _support import module_manager, subprocess_env, WAIT, wait_for

manager: Any = None


setUpModule, tearDownModule = module_manager(globals())


def listed(ident: int, m: Optional[agora.Manager] = None) -> Optional[Tuple[Any, ...]]:
    """The ``objects()`` entry of ``ident``, or ``None`` once it is freed. Being a call on this
    thread's connection, it also makes sure the manager has read every decref written before."""
    for entry in (m or manager).objects():
        if entry[0] == ident:
            return entry
    return None


def freed(ident: int, m: Optional[agora.Manager] = None) -> Callable[[], bool]:
    """A predicate for ``wait_for``: ``ident`` is no longer listed (frees that follow a
    connection's close happen when the manager sees it close)."""
    return lambda: listed(ident, m) is None


def holders(ident: int) -> Optional[int]:
    entry = listed(ident)
    return None if entry is None else entry[3]


#: One factory per kind, with the arguments it needs.
FACTORIES: Dict[str, Callable[[Any], Any]] = {
    "dict": lambda m: m.dict({"k": 1}),
    "list": lambda m: m.list([1]),
    "value": lambda m: m.Value("i", 1),
    "array": lambda m: m.Array("i", [1, 2]),
    "namespace": lambda m: m.Namespace(x=1),
    "queue": lambda m: m.Queue(),
    "joinable_queue": lambda m: m.JoinableQueue(),
    "lock": lambda m: m.Lock(),
    "rlock": lambda m: m.RLock(),
    "semaphore": lambda m: m.Semaphore(2),
    "bounded_semaphore": lambda m: m.BoundedSemaphore(2),
    "condition": lambda m: m.Condition(),
    "event": lambda m: m.Event(),
    "barrier": lambda m: m.Barrier(2),
}


# --- child process bodies (top level for spawn) -------------------------------------------------


def _append_and_report(lst: Any, out: Any) -> None:
    lst.append("from the child")
    out.put(lst[:])


def _get_proxy_and_report(channel: Any, out: Any) -> None:
    lst = channel.get(timeout=WAIT)
    lst.append("through a queue")
    out.put(lst[:])


class Freeing(unittest.TestCase):
    def test_an_unnamed_object_is_freed_when_its_last_proxy_goes(self) -> None:
        for kind, make in FACTORIES.items():
            with self.subTest(kind=kind):
                proxy = make(manager)
                ident = proxy._id
                self.assertEqual(listed(ident), (ident, None, kind, 1))
                del proxy
                gc.collect()
                self.assertIsNone(listed(ident))

    def test_the_last_of_several_proxies_frees_it(self) -> None:
        lst = manager.list([1])
        ident = lst._id
        copy = pickle.loads(pickle.dumps(lst))  # adopted: a second proxy
        d = manager.dict()
        d["l"] = lst
        read = d["l"]  # a third, made from a reference in a response
        del d["l"]
        del lst, copy
        gc.collect()
        self.assertEqual(read[:], [1])
        self.assertEqual(holders(ident), 1)
        del read
        gc.collect()
        self.assertIsNone(listed(ident))

    def test_a_dict_keeps_a_nested_list_alive_until_the_entry_goes(self) -> None:
        d = manager.dict()
        d["inner"] = manager.list([1])  # the only proxy goes at once
        gc.collect()
        ident = d["inner"]._id
        gc.collect()
        self.assertEqual(listed(ident), (ident, None, "list", 1))  # the dict holds it
        d["inner"].append(2)
        self.assertEqual(d["inner"][:], [1, 2])
        d["other"] = 0
        d["inner"] = "overwritten"
        self.assertIsNone(listed(ident))

    def test_freeing_a_container_frees_what_only_it_held(self) -> None:
        outer = manager.dict()
        outer["inner"] = manager.list([manager.Lock()])
        gc.collect()
        inner = outer["inner"]
        lock = inner[0]
        idents = [outer._id, inner._id, lock._id]
        del inner, lock
        gc.collect()
        self.assertTrue(all(listed(i) for i in idents))
        del outer
        gc.collect()
        self.assertEqual([listed(i) for i in idents], [None, None, None])

    def test_a_queue_item_holds_its_object_until_it_is_taken(self) -> None:
        q = manager.Queue()
        q.put(manager.dict({"job": 1}))
        gc.collect()
        item = q.get(timeout=WAIT)
        ident = item._id
        self.assertEqual(holders(ident), 1)  # now this connection's
        self.assertEqual(item.copy(), {"job": 1})
        del item
        gc.collect()
        self.assertIsNone(listed(ident))

    def test_named_objects_survive_their_creator(self) -> None:
        d = manager.named("lifetime-named").dict({"k": "v"})
        ident = d._id
        del d
        gc.collect()
        self.assertEqual(listed(ident), (ident, "lifetime-named", "dict", 0))
        code = (
            "import agora, sys\n"
            "m = agora.connect(sys.argv[1], sys.argv[2])\n"
            "m.named('lifetime-made-by-a-child').list([1, 2])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, manager.address, manager.authkey.hex()],
            env=subprocess_env(), capture_output=True, text=True, timeout=WAIT,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(manager.lookup("lifetime-made-by-a-child")[:], [1, 2])
        self.assertEqual(manager.lookup("lifetime-named")["k"], "v")
        manager.delete("lifetime-named")
        manager.delete("lifetime-made-by-a-child")
        self.assertIsNone(listed(ident))

    def test_a_finished_thread_leaves_its_objects_alive(self) -> None:
        box: List[Any] = []
        worker = threading.Thread(target=lambda: box.append(manager.dict({"from": "thread"})))
        worker.start()
        worker.join(WAIT)
        gc.collect()
        ident = box[0]._id
        self.assertEqual(box[0].copy(), {"from": "thread"})
        self.assertEqual(holders(ident), 1)
        box.clear()
        gc.collect()
        wait_for(freed(ident))


class Holders(unittest.TestCase):
    def test_what_each_holder_adds(self) -> None:
        d = manager.dict()
        lst = manager.list()
        ident = lst._id
        self.assertEqual(holders(ident), 1)  # this connection
        d["l"] = lst
        self.assertEqual(holders(ident), 2)  # and the dict
        pickled = pickle.dumps(lst)
        self.assertEqual(holders(ident), 3)  # and the export
        copy = pickle.loads(pickled)
        self.assertEqual(holders(ident), 2)  # adopted by this connection, which held it already
        box: List[Any] = []
        worker = threading.Thread(target=lambda: box.append(d["l"]))
        worker.start()
        worker.join(WAIT)
        self.assertEqual(holders(ident), 3)  # the thread's connection, kept open by its proxy
        del lst, copy
        gc.collect()
        self.assertEqual(holders(ident), 2)
        box.clear()
        gc.collect()
        wait_for(lambda: holders(ident) == 1)
        del d["l"]
        self.assertIsNone(listed(ident))

    def test_an_export_nobody_adopts_ends(self) -> None:
        with agora.Manager(args=["--handoff-seconds", "1"]) as m:
            lst = m.list()
            ident = lst._id
            pickle.dumps(lst)
            del lst
            gc.collect()
            self.assertEqual(listed(ident, m), (ident, None, "list", 1))  # the export
            wait_for(freed(ident, m))


class Handoffs(unittest.TestCase):
    def test_a_proxy_dropped_right_after_start_still_works_in_the_child(self) -> None:
        for method in ("spawn", "fork", "forkserver"):
            with self.subTest(method=method):
                lst = manager.list(["from the parent"])
                ident = lst._id
                out = manager.Queue()
                ctx: Any = multiprocessing.get_context(method)
                child = ctx.Process(target=_append_and_report, args=(lst, out))
                child.start()
                del lst
                gc.collect()
                self.assertEqual(out.get(timeout=WAIT), ["from the parent", "from the child"])
                child.join(WAIT)
                self.assertEqual(child.exitcode, 0)
                # The child held it last: freed when its connection closed.
                wait_for(freed(ident))

    def test_a_forked_child_adopts_what_the_parent_dropped_before_it_called(self) -> None:
        lst = manager.list(["from the parent"])
        ident = lst._id
        out = manager.Queue()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: waits until the parent has dropped its proxy
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)
                lst.append("from the child")
                out.put(lst[:])
                code = 0
            finally:
                os._exit(code)
        os.close(go_r)
        try:
            del lst
            gc.collect()
            # Only the export made before the fork holds the list now.
            self.assertEqual(holders(ident), 1)
        finally:
            os.write(go_w, b"x")
            os.close(go_w)
        self.assertEqual(out.get(timeout=WAIT), ["from the parent", "from the child"])
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        wait_for(freed(ident))

    def test_a_proxy_sent_through_a_multiprocessing_queue(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        channel = ctx.Queue()
        out = manager.Queue()
        child = ctx.Process(target=_get_proxy_and_report, args=(channel, out))
        child.start()
        lst = manager.list()
        ident = lst._id
        channel.put(lst)
        del lst
        gc.collect()
        self.assertEqual(out.get(timeout=WAIT), ["through a queue"])
        child.join(WAIT)
        self.assertEqual(child.exitcode, 0)
        wait_for(freed(ident))


# --- side by side with CPython's manager ------------------------------------------------------


def _observe(make: Callable[[], Any], count: Callable[[], int]) -> List[int]:
    """How many objects the manager has, relative to before: after ``make()``, after a second
    proxy (a pickle round trip), after dropping the first, after dropping the second."""
    gc.collect()
    before = count()
    first = make()
    seen = [count() - before]
    second = pickle.loads(pickle.dumps(first))
    seen.append(count() - before)
    del first
    gc.collect()
    seen.append(count() - before)
    del second
    gc.collect()
    seen.append(count() - before)
    return seen


class AgainstMultiprocessing(unittest.TestCase):
    """``multiprocessing.Manager()`` frees an object when its last proxy goes; agora does too."""

    python: SyncManager

    @classmethod
    def setUpClass(cls) -> None:
        cls.python = multiprocessing.Manager()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.python.shutdown()

    def test_the_last_proxy_frees_the_object_in_both(self) -> None:
        py = self.python
        kinds: Dict[str, Tuple[Callable[[], Any], Callable[[], Any]]] = {
            "dict": (py.dict, manager.dict),
            "list": (py.list, manager.list),
            "Namespace": (py.Namespace, manager.Namespace),
            "Value": (lambda: py.Value("i", 1), lambda: manager.Value("i", 1)),
            "Array": (lambda: py.Array("i", [1]), lambda: manager.Array("i", [1])),
            "Queue": (py.Queue, manager.Queue),
            "Lock": (py.Lock, manager.Lock),
            "Event": (py.Event, manager.Event),
            "Semaphore": (py.Semaphore, manager.Semaphore),
        }
        for kind, (make_python, make_agora) in kinds.items():
            with self.subTest(kind=kind):
                expected = _observe(make_python, py._number_of_objects)  # type: ignore[attr-defined]
                self.assertEqual(expected, [1, 1, 1, 0])
                self.assertEqual(_observe(make_agora, lambda: len(manager.objects())), expected)

    def test_a_nested_object_stays_usable_in_both(self) -> None:
        for m in (self.python, manager):
            with self.subTest(manager=type(m).__module__):
                d = m.dict()
                d["inner"] = m.list([1])
                gc.collect()
                d["inner"].append(2)
                self.assertEqual(d["inner"][:], [1, 2])


if __name__ == "__main__":
    unittest.main()
