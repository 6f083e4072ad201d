"""What agora does beyond (or differently from) ``multiprocessing.managers``: names, pickling,
connections per thread and after fork, holders that die, values, errors, the manager's life,
and the ``multiprocessing`` drop-ins."""

from __future__ import annotations

import array
import ctypes
import multiprocessing
import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from multiprocessing.managers import RemoteError
from unittest import mock
from typing import Any

import msgpack

import agora
from agora import _dist
from agora.connection import Client, Connection

from _support import manager_binary, module_manager, run_threads, subprocess_env, WAIT, wait_for

manager: Any = None


setUpModule, tearDownModule = module_manager(globals())


# --- child process bodies (top level for spawn) -------------------------------------------------


def _hold_forever(lock: Any, held: Any) -> None:
    lock.acquire()
    held.set()
    time.sleep(WAIT * 2)


def _hold_permit_forever(sem: Any, held: Any) -> None:
    sem.acquire()
    held.set()
    time.sleep(WAIT * 2)


def _get_forever(q: Any, waiting: Any) -> None:
    waiting.set()
    q.get()


def _get_acked_and_die(q: Any, got: Any) -> None:
    got.put(q.get_acked(timeout=WAIT).item)
    time.sleep(WAIT * 2)


def _get_and_die(q: Any, got: Any) -> None:
    got.put(q.get(timeout=WAIT))
    time.sleep(WAIT * 2)


def _fetch_add_many(v: Any, n: int) -> None:
    for _ in range(n):
        v.fetch_add(1)


def _try_rlock(lock: Any, out: Any) -> None:
    out.append(lock.acquire(False))


def _use_named(address: str, authkey: bytes) -> None:
    m = agora.connect(address, authkey)
    m.named("shared").dict()["from child"] = os.getpid()


class ReprAndStr(unittest.TestCase):
    def test_repr_adds_agoras_details_after_pythons_shape(self) -> None:
        ev = manager.Event()
        self.assertRegex(
            repr(ev),
            rf"^<EventProxy object, typeid 'Event' at 0x[0-9a-f]+; agora event {ev._id} on "
            + re.escape(manager.address) + ">$",
        )

    def test_str_of_what_the_wire_does_not_tell(self) -> None:
        # Python's also shows an RLock's owner and depth, a BoundedSemaphore's initial value
        # and a Condition's waiters: the wire does not give them.
        rlock = manager.RLock()
        self.assertEqual(str(rlock), f"<unlocked _thread.RLock object at {rlock._id:#x}>")
        bounded = manager.BoundedSemaphore(2)
        self.assertEqual(str(bounded), f"<threading.BoundedSemaphore at {bounded._id:#x}: value=2>")
        cond = manager.Condition()
        with cond:
            self.assertEqual(str(cond), f"<Condition(<locked lock at {cond._id:#x}>)>")
        # A Value remembers its typecode in the proxy, enforced or not, pickled with it.
        v = manager.Value("i", 3)
        self.assertEqual(str(pickle.loads(pickle.dumps(v))), "Value('i', 3)")
        self.assertEqual(str(manager.Value("q", 4, strict=True)), "Value('q', 4)")

    def test_str_of_a_deleted_object_says_it_failed(self) -> None:
        ev = manager.Event()
        manager.delete(ev)
        self.assertEqual(str(ev), repr(ev)[:-1] + "; '__str__()' failed>")


class NewerPythonsAdditions(unittest.TestCase):
    """What Python's manager proxies gained up to 3.14, whatever Python runs the tests."""

    def test_abcs_and_generic_aliases(self) -> None:
        import collections.abc

        self.assertIsInstance(manager.dict(), collections.abc.MutableMapping)
        self.assertIsInstance(manager.list(), collections.abc.MutableSequence)
        self.assertIsInstance(manager.set(), collections.abc.MutableSet)
        for cls in (agora.DictProxy, agora.ListProxy, agora.SetProxy, agora.ValueProxy):
            self.assertEqual(cls[int].__origin__, cls)  # type: ignore[index]

    def test_list_clear_copy_dict_operators_lock_locked(self) -> None:
        lst = manager.list([1, 2])
        self.assertEqual(lst.copy(), [1, 2])
        lst.clear()
        self.assertEqual(len(lst), 0)
        d = manager.dict({"a": 1})
        self.assertEqual(d | {"b": 2}, {"a": 1, "b": 2})
        d |= {"c": 3}
        self.assertEqual(list(reversed(d)), ["c", "a"])
        self.assertEqual(d.fromkeys("xy", 0), {"x": 0, "y": 0})
        for lock in (manager.Lock(), manager.RLock()):
            self.assertFalse(lock.locked())
            with lock:
                self.assertTrue(lock.locked())

    def test_lock_tokens_grow_with_every_grant(self) -> None:
        for lock in (manager.Lock(), manager.RLock()):
            with self.assertRaises(RuntimeError):
                lock.token()
            last = 0
            for _ in range(3):
                with lock:
                    token = lock.token()
                    self.assertGreater(token, last)
                    self.assertEqual(lock.token(), token)
                    last = token


class NamedObjects(unittest.TestCase):
    def test_get_or_create(self) -> None:
        a = manager.named("named-dict").dict()
        a["x"] = 1
        b = manager.named("named-dict").dict({"ignored": True})
        self.assertEqual(a._id, b._id)
        self.assertEqual(b.copy(), {"x": 1})

    def test_lookup_and_delete(self) -> None:
        q = manager.named("named-queue").Queue()
        found = manager.lookup("named-queue")
        self.assertIsInstance(found, agora.QueueProxy)
        self.assertEqual(found._id, q._id)
        # Held by this connection (the name does not count as a holder).
        self.assertIn((q._id, "named-queue", "queue", 1), manager.objects())
        manager.delete("named-queue")
        with self.assertRaises(KeyError):
            manager.lookup("named-queue")
        with self.assertRaises(agora.UnknownObjectError) as caught:
            q.put(1)
        self.assertIsInstance(caught.exception, RemoteError)

    def test_delete_by_proxy(self) -> None:
        lst = manager.list([1])
        manager.delete(lst)
        with self.assertRaises(agora.UnknownObjectError):
            len(lst)

    def test_names_are_never_data_and_data_never_names(self) -> None:
        d = manager.named("spelled-named").dict(name="alice", age=30)
        self.assertEqual(d.copy(), {"name": "alice", "age": 30})
        self.assertEqual(manager.lookup("spelled-named")._id, d._id)
        ns = manager.named("spelled-ns").Namespace(name="x")
        self.assertEqual(ns.name, "x")
        self.assertEqual(manager.lookup("spelled-ns")._id, ns._id)
        # Keywords Python's factories lack are refused, as Python refuses them.
        with self.assertRaises(TypeError):
            manager.Queue(name="q")  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            manager.named(3)  # type: ignore[arg-type]
        self.assertNotIn("alice", [name for _, name, _, _ in manager.objects()])
        manager.delete("spelled-named")
        manager.delete("spelled-ns")

    def test_named_condition_over_a_lock(self) -> None:
        lock = manager.Lock()
        cond = manager.named("named-condition").Condition(lock)
        self.assertEqual(manager.lookup("named-condition")._id, cond._id)
        with cond:
            self.assertFalse(lock.acquire(timeout=0))
        self.assertTrue(lock.acquire(timeout=0))
        lock.release()
        manager.delete("named-condition")

    def test_kind_mismatch(self) -> None:
        manager.named("named-lock").Lock()
        with self.assertRaises(TypeError):
            manager.named("named-lock").dict()

    def test_unrelated_process_shares_by_name(self) -> None:
        shared = manager.named("by-name").dict()
        code = (
            "import agora, os, sys\n"
            "m = agora.connect(sys.argv[1], sys.argv[2])\n"
            "d = m.named('by-name').dict()\n"
            "d['pid'] = os.getpid()\n"
            "print(m.lookup('by-name')['pid'])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, manager.address, manager.authkey.hex()],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(int(out.stdout), shared["pid"])

    def test_connect_from_environment(self) -> None:
        code = "import agora; print(agora.connect().named('env-dict').dict()['k'])"
        manager.named("env-dict").dict()["k"] = "from env"
        env = subprocess_env(AGORA_ADDRESS=manager.address, AGORA_AUTHKEY=manager.authkey.hex())
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "from env")


class Pickling(unittest.TestCase):
    def test_round_trip_in_process(self) -> None:
        for proxy in (manager.dict(), manager.Array("d", [1.5]), manager.Lock(), manager.Queue()):
            copy = pickle.loads(pickle.dumps(proxy))
            self.assertIs(type(copy), type(proxy))
            self.assertEqual(copy._id, proxy._id)
            self.assertIs(copy._client, proxy._client)
        self.assertEqual(pickle.loads(pickle.dumps(manager.Array("d", [1.5])))[:], array.array("d", [1.5]))

    def test_manager_pickles_to_a_connection(self) -> None:
        clone = pickle.loads(pickle.dumps(manager))
        self.assertEqual(clone.address, manager.address)
        self.assertIsNone(clone.pid)
        self.assertTrue(clone.ping())

    def test_spawned_child_connects_by_itself(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=_use_named, args=(manager.address, manager.authkey))
        p.start()
        p.join(WAIT)
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(manager.named("shared").dict()["from child"], p.pid)

    def test_atomic_counter_across_processes(self) -> None:
        v = manager.Value("q", 0, strict=True)
        # forkserver: the default start method from Python 3.14 on.
        for method in ("fork", "spawn", "forkserver"):
            ctx = multiprocessing.get_context(method)
            procs = [ctx.Process(target=_fetch_add_many, args=(v, 200)) for _ in range(3)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(WAIT)
            self.assertEqual([p.exitcode for p in procs], [0, 0, 0])
        self.assertEqual(v.value, 1800)


class Connections(unittest.TestCase):
    def test_one_connection_per_thread(self) -> None:
        d = manager.dict()
        d["x"] = 1
        client = d._client
        mine = client.connection()
        theirs = run_threads(lambda: (d["x"], client.connection()), lambda: client.connection())
        self.assertEqual(theirs[0][0], 1)
        conns = {id(mine), id(theirs[0][1]), id(theirs[1])}
        self.assertEqual(len(conns), 3)

    def test_blocked_thread_does_not_block_others(self) -> None:
        q = manager.Queue()
        getter = threading.Thread(target=lambda: q.get(timeout=WAIT))
        getter.start()
        d = manager.dict()
        for i in range(20):
            d[i] = i
        self.assertEqual(len(d), 20)
        q.put("release the getter")
        getter.join(WAIT)
        self.assertFalse(getter.is_alive())

    def test_fork_child_has_its_own_connection(self) -> None:
        lock = manager.RLock()
        lock.acquire()  # the parent's connection owns it
        out = manager.list()
        p = multiprocessing.get_context("fork").Process(target=_try_rlock, args=(lock, out))
        p.start()
        p.join(WAIT)
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(out[:], [False])  # a shared socket would have made it the owner
        lock.release()
        self.assertTrue(lock.acquire(False))
        lock.release()

    def test_interrupted_call_does_not_swallow_an_item(self) -> None:
        q = manager.Queue()

        class Interrupted(Exception):
            pass

        def on_alarm(signum: int, frame: Any) -> None:
            raise Interrupted()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            with self.assertRaises(Interrupted):
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                q.get()  # blocks until the alarm interrupts it
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # The interrupted get was abandoned with its connection: the item goes to the next get.
        q.put("item")
        self.assertEqual(q.get(timeout=WAIT), "item")

    def test_wrong_authkey(self) -> None:
        with self.assertRaises(agora.AuthenticationError) as caught:
            Connection(Client(manager.address, b"not the key"))
        self.assertIsInstance(caught.exception, multiprocessing.AuthenticationError)

    def test_unreachable_manager(self) -> None:
        with self.assertRaises(agora.ConnectionLost) as caught:
            agora.connect("unix:/nonexistent/agora.sock", b"key")
        self.assertIsInstance(caught.exception, ConnectionError)

    def test_message_over_the_limit(self) -> None:
        with agora.Manager(args=["--max-message-bytes", "4096"]) as small:
            # Named: the connection closed below takes its references with it, which would
            # free an unnamed dict only it held.
            d = small.named("survives").dict()
            d["held"] = 1
            with self.assertRaises(agora.LimitError):
                d["big"] = "x" * 10_000
            # The manager closed that connection; the next call opens a new one.
            d["small"] = 2
            self.assertEqual(d.copy(), {"held": 1, "small": 2})

    def test_unknown_method(self) -> None:
        d = manager.dict()
        with self.assertRaises(agora.UnknownMethodError):
            d._call("dict.no_such_method")


class HolderDeath(unittest.TestCase):
    """A process killed while holding something releases it; the next acquirer is told."""

    def _killed_holding(self, target: Any, obj: Any) -> None:
        held = manager.Event()
        p = multiprocessing.get_context("fork").Process(target=target, args=(obj, held))
        p.start()
        try:
            self.assertTrue(held.wait(WAIT))
        finally:
            p.kill()
            p.join(WAIT)

    def test_lock(self) -> None:
        lock = manager.Lock()
        self._killed_holding(_hold_forever, lock)
        self.assertTrue(lock.acquire(timeout=WAIT))
        self.assertTrue(lock.owner_died)
        lock.release()
        self.assertEqual(lock.acquire_status(), 1)
        self.assertFalse(lock.owner_died)
        lock.release()

    def test_rlock(self) -> None:
        lock = manager.RLock()
        self._killed_holding(_hold_forever, lock)
        self.assertEqual(lock.acquire_status(timeout=WAIT), 2)
        lock.release()

    def test_semaphore_permit(self) -> None:
        sem = manager.BoundedSemaphore(1)
        self._killed_holding(_hold_permit_forever, sem)
        self.assertTrue(sem.acquire(timeout=WAIT))
        self.assertTrue(sem.owner_died)
        sem.release()

    def test_killed_getter_does_not_swallow_an_item(self) -> None:
        q = manager.Queue()
        waiting = manager.Event()
        p = multiprocessing.get_context("fork").Process(target=_get_forever, args=(q, waiting))
        p.start()
        self.assertTrue(waiting.wait(WAIT))
        p.kill()
        p.join(WAIT)
        q.put("precious")
        self.assertEqual(q.get(timeout=WAIT), "precious")


class Values(unittest.TestCase):
    def test_unsupported_values_fail_before_sending(self) -> None:
        d = manager.dict()
        with self.assertRaisesRegex(TypeError, "set"):
            d["s"] = {1, 2}
        with self.assertRaisesRegex(TypeError, "object"):
            d["o"] = object()
        with self.assertRaises(OverflowError):
            d["big"] = 2**64
        d["still works"] = True
        self.assertEqual(d.copy(), {"still works": True})

    def test_msgpack_shapes(self) -> None:
        d = manager.dict()
        d["t"] = (1, (2, 3))
        self.assertEqual(d["t"], [1, [2, 3]])  # tuples come back as lists
        d[(1, 2)] = "tuple key"
        self.assertIn((1, 2), d.copy())  # ... except as keys
        self.assertEqual(d.keys()[-1], (1, 2))
        self.assertEqual(d.popitem(), ((1, 2), "tuple key"))
        ext = msgpack.ExtType(42, b"\x01\x02")
        d["ext"] = ext
        self.assertEqual(d["ext"], ext)
        d[1] = "int"
        d[True] = "bool"  # MessagePack tells them apart, Python does not
        self.assertEqual((d[1], d[True]), ("int", "bool"))

    def test_nested_proxies_stay_live(self) -> None:
        d = manager.dict()
        inner = manager.list([1])
        d["inner"] = inner
        got = d["inner"]
        self.assertIsInstance(got, agora.ListProxy)
        got.append(2)
        self.assertEqual(inner[:], [1, 2])
        ns = manager.Namespace(lock=manager.Lock())
        self.assertTrue(ns.lock.acquire(False))
        ns.lock.release()

    def test_proxy_of_another_manager_is_refused(self) -> None:
        with agora.Manager() as other:
            with self.assertRaisesRegex(TypeError, "manager"):
                manager.dict()["x"] = other.list()

    def test_strict_value(self) -> None:
        v = manager.Value("b", 1, strict=True)
        with self.assertRaises(TypeError):
            v.value = "x"
        with self.assertRaises(OverflowError):
            v.value = 300
        self.assertEqual(v.fetch_add(5), 1)
        self.assertEqual(v.compare_and_swap(6, 7), (True, 6))
        self.assertEqual(v.compare_and_swap(6, 8), (False, 7))

    def test_list_extras(self) -> None:
        lst = manager.list([3, "b", 1])
        lst.sort(key=str)
        self.assertEqual(lst.copy(), [1, 3, "b"])
        lst.clear()
        self.assertEqual(len(lst), 0)


class Queues(unittest.TestCase):
    def test_close_ends_consumers(self) -> None:
        q = manager.Queue()
        q.put_many(range(3))
        q.close()
        self.assertTrue(q.is_closed())
        with self.assertRaises(agora.Closed):
            q.put(4)
        self.assertEqual(q.get_many(10), [0, 1, 2])
        with self.assertRaises(agora.Closed):
            q.get(timeout=WAIT)

    def test_close_wakes_parked_getters(self) -> None:
        q = manager.Queue()
        # Whether the get is parked when close() arrives or comes after it, it gets Closed.
        results = run_threads(lambda: q.get(timeout=WAIT), lambda: (time.sleep(0.05), q.close()))
        self.assertIsInstance(results[0], agora.Closed)

    def test_batches_and_maxsize(self) -> None:
        q = manager.Queue(2)
        self.assertEqual(q.maxsize, 2)
        self.assertEqual(q.put_many([1, 2, 3], block=False), 2)
        self.assertEqual(q.get_many(5, block=False), [1, 2])
        with self.assertRaises(queue.Empty):
            q.get_many(5, block=False)

    def test_join_with_timeout(self) -> None:
        q = manager.JoinableQueue()
        q.put(1)
        self.assertFalse(q.join(timeout=0.01))
        q.get()
        q.task_done()
        self.assertTrue(q.join(timeout=WAIT))


class Redelivery(unittest.TestCase):
    """Items a killed consumer took and did not finish come back to the head of the queue."""

    def _killed_after(self, target: Any, q: Any) -> Any:
        got = manager.Queue()
        p = multiprocessing.get_context("fork").Process(target=target, args=(q, got))
        p.start()
        try:
            item = got.get(timeout=WAIT)
        finally:
            p.kill()
            p.join(WAIT)
        return item

    def test_get_acked_and_ack(self) -> None:
        q = manager.Queue()
        q.put_many(["a", "b", "c"])
        first = q.get_acked(timeout=WAIT)
        self.assertIsInstance(first, agora.Acked)
        self.assertEqual(first.item, "a")
        q.ack(first.receipt)
        with self.assertRaises(ValueError):
            q.ack(first.receipt)
        batch = q.get_many_acked(5, block=False)
        self.assertEqual([a.item for a in batch], ["b", "c"])
        q.nack(batch[1].receipt)
        q.ack(batch[0].receipt)
        again = q.get_acked(block=False)
        self.assertEqual(again.item, "c")
        q.ack(again.receipt)
        with self.assertRaises(queue.Empty):
            q.get_acked(block=False)

    def test_a_killed_consumers_unacknowledged_item_comes_back(self) -> None:
        q = manager.Queue()
        q.put_many(["precious", "next"])
        self.assertEqual(self._killed_after(_get_acked_and_die, q), "precious")
        # The manager puts the item back once it has handled the dead connection's close,
        # which nothing here waits for: a get at once could come first and take "next".
        wait_for(lambda: q.qsize() == 2)
        self.assertEqual(q.get(timeout=WAIT), "precious")
        self.assertEqual(q.get(timeout=WAIT), "next")

    def test_a_killed_consumers_plain_get_is_not_redelivered(self) -> None:
        q = manager.Queue()
        q.put_many(["gone", "next"])
        self.assertEqual(self._killed_after(_get_and_die, q), "gone")
        self.assertEqual(q.get(timeout=WAIT), "next")

    def test_a_killed_consumers_joinable_item_comes_back_and_join_completes(self) -> None:
        q = manager.JoinableQueue()
        q.put("job")
        self.assertEqual(self._killed_after(_get_and_die, q), "job")
        self.assertFalse(q.join(timeout=0.05))
        self.assertEqual(q.get(timeout=WAIT), "job")
        q.task_done()
        self.assertTrue(q.join(timeout=WAIT))


class Synchronisation(unittest.TestCase):
    def test_condition_over_a_given_lock(self) -> None:
        lock = manager.Lock()
        cond = manager.Condition(lock)
        with cond:
            self.assertTrue(lock.locked())
            self.assertFalse(cond.wait(0.01))
        self.assertFalse(lock.locked())
        with self.assertRaises(TypeError):
            manager.Condition(threading.Lock())

    def test_barrier_action_is_refused(self) -> None:
        with self.assertRaises(NotImplementedError):
            manager.Barrier(2, action=print)

    def test_semaphore_extras(self) -> None:
        sem = manager.Semaphore(0)
        sem.release(3)
        self.assertEqual(sem.get_value(), 3)


class FindingTheManager(unittest.TestCase):
    """``executable=``, else ``$AGORA_MANAGER_BIN``, else the binary pip installed with this
    package, else ``agora-manager`` on ``PATH``."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.on_path = os.path.join(tmp.name, "agora-manager")
        self.explicit = os.path.join(tmp.name, "explicit-manager")
        for path in (self.on_path, self.explicit):
            with open(path, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(path, 0o755)
        self.env = mock.patch.dict(os.environ, {"PATH": tmp.name})
        self.env.start()
        self.addCleanup(self.env.stop)
        os.environ.pop(agora.manager.MANAGER_BIN_ENV, None)

    def test_the_order(self) -> None:
        find = agora.manager.find_manager_binary
        installed = _dist.installed_manager_binary()
        # Installed with pip (as under `cargo test`), the package's own binary comes before PATH.
        self.assertEqual(find(), installed or self.on_path)
        os.environ[agora.manager.MANAGER_BIN_ENV] = self.explicit
        self.assertEqual(find(), self.explicit)
        self.assertEqual(find(self.on_path), self.on_path)
        # A variable naming no executable is an error, not a reason to look further.
        os.environ[agora.manager.MANAGER_BIN_ENV] = self.on_path + "-missing"
        with self.assertRaises(FileNotFoundError):
            find()


class ManagerLife(unittest.TestCase):
    def test_context_manager_stops_the_process(self) -> None:
        with agora.Manager() as m:
            proc = m._process
            d = m.dict()
            d["x"] = 1
        self.assertIsNotNone(proc.poll())
        with self.assertRaises(agora.ConnectionLost):
            d["x"]

    def test_shutdown_wakes_parked_calls(self) -> None:
        m = agora.Manager()
        q = m.Queue()
        # A get parked when the manager stops gets ShutdownError; one that comes after finds
        # the manager gone: both are ConnectionLost.
        results = run_threads(q.get, lambda: (time.sleep(0.1), m.shutdown()))
        self.assertIsInstance(results[0], agora.ConnectionLost)

    def test_connected_manager_is_not_shut_down_on_exit(self) -> None:
        with agora.Manager(manager.address, manager.authkey) as m:
            m.dict()
        self.assertTrue(manager.ping())

    def test_missing_binary(self) -> None:
        with self.assertRaises(FileNotFoundError):
            agora.Manager(executable="/nonexistent/agora-manager")

    def test_binary_that_fails(self) -> None:
        with self.assertRaises(RuntimeError):
            agora.Manager(executable="/bin/false")


def _standalone(address: str, authkey: bytes) -> "tuple[subprocess.Popen[bytes], str]":
    """A standalone agora-manager listening at ``address`` with ``authkey``, once ready, and
    the run its ready line names. It stops when this process dies (``--lifeline-stdin``)."""
    proc = subprocess.Popen(
        [manager_binary(), "--listen", address, "--lifeline-stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, AGORA_AUTHKEY=authkey.hex(), RUST_LOG="warn"),
    )
    assert proc.stdout is not None
    words = proc.stdout.readline().decode().split()
    proc.stdout.close()
    runs = [w[len("run="):] for w in words if w.startswith("run=")]
    if words[:2] != ["agora-manager", "ready"] or len(runs) != 1:
        proc.kill()
        proc.wait()
        raise AssertionError(f"not a ready line naming the run: {words}")
    return proc, runs[0]


def _stop(proc: "subprocess.Popen[bytes]", address: str, authkey: bytes) -> None:
    """Shuts a standalone manager down and waits until it has exited (socket removed)."""
    try:
        agora.connect(address, authkey).shutdown()
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None
        proc.stdin.close()


class Restarts(unittest.TestCase):
    """A manager restarted at the same address with the same authkey gives out the same ids
    again: a proxy or a pickle of the old run must not reach the new run's objects."""

    def test_a_pickled_proxy_of_a_restarted_manager_is_an_unknown_object(self) -> None:
        tmp = tempfile.mkdtemp(prefix="restart-")
        address = "unix:" + os.path.join(tmp, "m.sock")
        key = os.urandom(32)
        first, first_run = _standalone(address, key)
        try:
            m = agora.connect(address, key)
            old = m.list([1, 2, 3])
            pickled = pickle.dumps(old)
            self.assertEqual(pickle.loads(pickled)[:], [1, 2, 3])
        finally:
            _stop(first, address, key)

        second, second_run = _standalone(address, key)
        try:
            self.assertNotEqual(first_run, second_run)
            m = agora.connect(address, key)
            new_list = m.list([10, 20])
            new_dict = m.dict({"a": 1})

            stale = pickle.loads(pickled)  # unpickling works; calling does not
            with self.assertRaises(agora.UnknownObjectError) as caught:
                len(stale)
            message = str(caught.exception)
            self.assertIn(f"this proxy belongs to run {first_run}", message)
            self.assertIn(f"the manager at {address} is run {second_run}, started at ", message)
            self.assertIn("the object no longer exists", message)
            # The multiprocessing-style class, so that existing except clauses catch it.
            self.assertIsInstance(caught.exception, RemoteError)
            # The proxy kept from the first run fails the same way, whatever it is used for.
            with self.assertRaises(agora.UnknownObjectError):
                old.append(4)
            with self.assertRaises(agora.UnknownObjectError):
                new_dict["old"] = old
            with self.assertRaises(agora.UnknownObjectError):
                m.delete(stale)

            # The new run's objects are as they were.
            self.assertEqual(new_list[:], [10, 20])
            self.assertEqual(dict(new_dict.items()), {"a": 1})
            self.assertEqual(pickle.loads(pickle.dumps(new_list))[:], [10, 20])
        finally:
            _stop(second, address, key)
            os.rmdir(tmp)

    def test_a_pickle_of_an_older_agora_cannot_be_checked(self) -> None:
        lst = manager.list([1])
        # What an older agora pickled: no run.
        older = agora.proxies._rebuild(
            type(lst), lst._id, manager.address, manager.authkey, None
        )
        with self.assertRaises(agora.UnknownObjectError) as caught:
            len(older)
        self.assertIn("older version of agora", str(caught.exception))
        self.assertIn("pickle the proxy again", str(caught.exception))


class MultiprocessingDropIns(unittest.TestCase):
    def test_value_with_lock(self) -> None:
        v = agora.Value("i", 5)
        with v.get_lock():
            v.value += 1
        with v:
            self.assertEqual(v.value, 6)
        with self.assertRaises(TypeError):
            v.value = "not an int"
        self.assertEqual(agora.Value(ctypes.c_double).value, 0.0)
        raw = agora.Value("i", 1, lock=False)
        self.assertFalse(hasattr(raw, "get_lock"))

    def test_array_slices_are_lists(self) -> None:
        a = agora.Array("i", 4)
        a[1:3] = [7, 8]
        self.assertEqual(a[:], [0, 7, 8, 0])
        with a.get_lock():
            a[0] = 1
        self.assertEqual(list(a), [1, 7, 8, 0])
        copy = pickle.loads(pickle.dumps(a))
        self.assertEqual(copy[:2], [1, 7])
        self.assertTrue(copy.get_lock().acquire(False))
        copy.get_lock().release()

    def test_queue_close_is_local(self) -> None:
        q = agora.Queue()
        other = pickle.loads(pickle.dumps(q))
        q.put(1)
        q.close()
        with self.assertRaises(ValueError):
            q.put(2)
        self.assertEqual(other.get(timeout=WAIT), 1)
        other.put(3)
        self.assertEqual(other.get(timeout=WAIT), 3)

    def test_locks_are_shared_with_children(self) -> None:
        lock = agora.Lock()
        lock.acquire()
        out = manager.list()
        p = multiprocessing.Process(target=_try_rlock, args=(lock, out))
        p.start()
        p.join(WAIT)
        self.assertEqual(out[:], [False])
        lock.release()


if __name__ == "__main__":
    unittest.main()


class Polling(unittest.TestCase):
    """Calls poll for their reply before sleeping (AGORA_SPIN_US, or Manager(spin_us=...))."""

    def test_spin_us_zero_turns_polling_off_and_calls_still_work(self) -> None:
        with agora.Manager(spin_us=0) as m:
            d = m.dict()
            for i in range(200):
                d["k"] = i
                self.assertEqual(d["k"], i)
            self.assertEqual(m._client.connection()._spin, 0)

    def test_polling_connections_answer_every_kind_of_call(self) -> None:
        with agora.Manager(spin_us=200) as m:
            conn = m._client.connection()
            self.assertAlmostEqual(conn._spin, 200e-6)
            q, lock = m.Queue(), m.Lock()
            for i in range(200):
                q.put(i)
                self.assertEqual(q.get(), i)
                self.assertTrue(lock.acquire())
                lock.release()
            # A call that waits longer than the budget: polling gives up, the reply still comes.
            self.assertFalse(m.Event().wait(0.01))

    def test_replies_of_detached_calls_do_not_keep_a_waiting_call_polling(self) -> None:
        # A call that waits longer than the budget, after a call sent without waiting (as an
        # acquire after a with block's release): the detached call's reply, read first, is
        # not the awaited one, so the wait still counts as wasted polling and backs off.
        class CountingSocket:
            def __init__(self, sock: Any) -> None:
                self.sock, self.polls = sock, 0

            def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
                self.polls += bool(flags & socket.MSG_DONTWAIT)
                return int(self.sock.recv_into(buffer, nbytes, flags))

            def __getattr__(self, name: str) -> Any:
                return getattr(self.sock, name)

        with agora.Manager(spin_us=200) as m:
            event = m.Event()
            conn = m._client.connection()
            counting = CountingSocket(conn._sock)
            conn._sock = counting  # type: ignore[assignment]
            polled = 0
            for _ in range(40):
                conn.call_detached("ping", ())
                before = counting.polls
                self.assertFalse(event.wait(0.005))
                polled += counting.polls > before
            # Backing off after each wasted poll (1, 2, 4, ... calls skipped): 6 of 40 calls
            # poll, fewer if the CPU went elsewhere meanwhile.
            self.assertLessEqual(polled, 6)
            self.assertGreaterEqual(polled, 1)

    def test_bad_spin_us_is_refused(self) -> None:
        for bad in (-1, 1.5, "50"):
            with self.assertRaises(ValueError):
                agora.Manager(spin_us=bad)  # type: ignore[arg-type]

    def test_environment_sets_the_budget(self) -> None:
        from agora.connection import _cpus_to_run_on
        code = "import agora.connection as c; print(c._SPIN)"
        default = 50e-6 if _cpus_to_run_on() >= 2 else 0.0
        cases = (
            ("0", 0.0), ("120", 120e-6), (" 30\n", 30e-6), ("99999", 1e-3), ("", default),
            # Not whole numbers by the shared rules: warned about, then the default.
            ("junk", default), ("-1", default), ("+5", default), ("1_000", default),
        )
        for value, expected in cases:
            env = subprocess_env(AGORA_SPIN_US=value)
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            self.assertAlmostEqual(float(out.stdout), expected, msg=repr(value))
            warned = "ignoring AGORA_SPIN_US" in out.stderr
            self.assertEqual(warned, value in ("junk", "-1", "+5", "1_000"), out.stderr)

    def test_parse_spin_us_follows_the_shared_rules(self) -> None:
        from agora.connection import _parse_spin_us
        for cpus in (1, 2):
            default = 50 if cpus >= 2 else 0
            self.assertEqual(_parse_spin_us(None, cpus), default)
            self.assertEqual(_parse_spin_us(" \t", cpus), default)
            self.assertEqual(_parse_spin_us("0", cpus), 0)
            self.assertEqual(_parse_spin_us("007", cpus), 7)
            self.assertEqual(_parse_spin_us("10000000", cpus), 1000)
            # Past Python's int() digit limit: still a whole number, still capped.
            self.assertEqual(_parse_spin_us("9" * 5000, cpus), 1000)
            self.assertEqual(_parse_spin_us("0" * 5000 + "7", cpus), 7)
        for bad in ("abc", "-1", "+5", "1.5", "1_000", "5 0", "\u0663", "\udcff"):
            with self.assertRaises(ValueError, msg=repr(bad)):
                _parse_spin_us(bad, 2)

    def test_a_bad_environment_budget_does_not_stop_a_started_manager(self) -> None:
        # The agora-manager program refuses AGORA_SPIN_US=junk; a manager started by
        # agora.Manager() is given this process's budget instead, as Manager::spawn does.
        code = "import agora; m = agora.Manager(); m.dict()['k'] = 1; m.shutdown(); print('ok')"
        env = subprocess_env(AGORA_SPIN_US="junk")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=WAIT)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "ok")


def _acquire_and_report(lock: Any, out: Any) -> None:
    got = lock.acquire(timeout=WAIT)
    out.append(got)
    if got:
        lock.release()


class DetachedRelease(unittest.TestCase):
    """``with lock:`` sends its release without waiting for the reply."""

    def _connection(self) -> Connection:
        return manager._client.connection()

    def test_another_process_sees_the_lock_free(self) -> None:
        lock, out = manager.Lock(), manager.list()
        for _ in range(200):
            with lock:
                pass
        # No call of this process after the blocks: the last release must reach the manager
        # on its own for the child to get the lock.
        p = multiprocessing.Process(target=_acquire_and_report, args=(lock, out))
        p.start()
        p.join(WAIT * 2)
        self.assertEqual(out[:], [True])

    def test_the_next_call_of_the_thread_comes_after_the_release(self) -> None:
        lock = manager.Lock()
        for _ in range(50):
            with lock:
                pass
            self.assertTrue(lock.acquire(False))
            lock.release()
        self.assertFalse(lock.locked())
        self.assertFalse(self._connection()._detached)

    def test_more_unread_replies_than_the_cap_do_not_hang(self) -> None:
        lock, rlock = manager.Lock(), manager.RLock()
        conn = self._connection()
        with agora.deadline(WAIT * 4):
            for _ in range(3 * agora.connection.MAX_DETACHED + 7):
                with lock:
                    pass
                self.assertLessEqual(len(conn._detached), agora.connection.MAX_DETACHED)
            for _ in range(agora.connection.MAX_DETACHED + 7):
                with rlock, rlock:
                    pass
            self.assertFalse(lock.locked())
        self.assertFalse(conn._detached)
        self.assertFalse(rlock.locked())

    def test_a_failed_detached_release_is_logged_and_explicit_release_raises(self) -> None:
        lock = manager.Lock()
        with self.assertLogs("agora", "WARNING") as logs:
            with lock:
                lock.release()
            self.assertFalse(lock.locked())  # the next call reads the dropped reply
        self.assertIn("RuntimeError", "".join(logs.output))
        lock.acquire()
        lock.release()
        self.assertRaises(RuntimeError, lock.release)

    def test_an_exception_in_the_block_still_releases(self) -> None:
        lock = manager.Lock()
        with self.assertRaises(ZeroDivisionError):
            with lock:
                1 / 0
        self.assertFalse(lock.locked())
