"""A critical section in two round trips: ``acquire_then`` and ``release_after``.

Each is one ``chain`` request (``PROTOCOL.md`` section 4.16). What is checked: the result of
the chained call, what is held afterwards (acquired, released, released after a failure),
the timeout, the owner-died notice, and a contended grab from several processes that sells
every ticket exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import unittest
from typing import Any

import agora

from _support import module_manager, WAIT

manager: Any = None

setUpModule, tearDownModule = module_manager(globals())

CTX = multiprocessing.get_context("fork")


def _grab(lock: Any, db: Any, start: Any, sold: Any) -> None:
    """Sells tickets with the two-request critical section until none are left; puts how
    many it sold on ``sold``."""
    mine = 0
    start.wait(WAIT)
    while True:
        _, n = lock.acquire_then(db, "getitem", "count")
        if n <= 0:
            lock.release()
            break
        lock.release_after(db, "setitem", "count", n - 1, wait=mine % 2 == 0)
        mine += 1
    sold.put(mine)


def _hold_and_die(lock: Any, held: Any) -> None:
    lock.acquire()
    held.set()
    os._exit(0)


class Chains(unittest.TestCase):
    def test_acquire_then_reads_under_the_lock_and_release_after_writes_and_releases(self) -> None:
        lock, value = manager.Lock(), manager.Value("i", 41)
        self.assertEqual(lock.acquire_then(value, "get"), (True, 41))
        self.assertTrue(lock.locked())
        self.assertFalse(lock.owner_died)
        self.assertIsNone(lock.release_after(value, "set", 42))
        self.assertFalse(lock.locked())
        self.assertEqual(value.value, 42)

    def test_release_after_without_waiting_releases_before_the_next_call(self) -> None:
        lock, d = manager.Lock(), manager.dict()
        lock.acquire()
        self.assertIsNone(lock.release_after(d, "setitem", "k", 1, wait=False))
        self.assertFalse(lock.locked())
        self.assertEqual(d["k"], 1)

    def test_a_timeout_runs_nothing_and_holds_nothing(self) -> None:
        lock, d = manager.Lock(), manager.dict(k=1)
        # Unowned: the thread's connection closes when it ends, which would release an owned
        # acquire.
        holder = threading.Thread(target=lock.acquire, kwargs={"owned": False})
        holder.start()
        holder.join(WAIT)
        self.assertTrue(lock.locked())
        self.assertEqual(lock.acquire_then(d, "pop", "k", timeout=0.05), (False, None))
        self.assertEqual(dict(d), {"k": 1})  # the pop did not run
        lock.release()  # a Lock may be released by anyone, as threading.Lock
        self.assertFalse(lock.locked())

    def test_a_failing_first_read_releases_and_raises(self) -> None:
        lock, d = manager.Lock(), manager.dict()
        with self.assertRaises(KeyError):
            lock.acquire_then(d, "getitem", "missing")
        self.assertFalse(lock.locked())

    def test_a_failing_last_write_still_releases_and_raises(self) -> None:
        lock, d = manager.Lock(), manager.dict()
        lock.acquire()
        with self.assertRaises(KeyError):
            lock.release_after(d, "getitem", "missing")
        self.assertFalse(lock.locked())

    def test_an_rlock_chain_is_owned_by_this_thread(self) -> None:
        rlock, d = manager.RLock(), manager.dict(k=1)
        self.assertEqual(rlock.acquire_then(d, "getitem", "k"), (True, 1))
        self.assertEqual(rlock.release_after(d, "setitem", "k", 2), None)
        with self.assertRaises(RuntimeError):
            rlock.release()  # released once, as acquired once
        self.assertEqual(d["k"], 2)

    def test_the_owner_died_notice_comes_with_the_chain(self) -> None:
        lock, held, d = manager.Lock(), manager.Event(), manager.dict(k=0)
        child = CTX.Process(target=_hold_and_die, args=(lock, held))
        child.start()
        child.join(WAIT)
        self.assertTrue(held.is_set())
        self.assertEqual(lock.acquire_then(d, "getitem", "k", timeout=WAIT), (True, 0))
        self.assertTrue(lock.owner_died)
        lock.release()

    def test_proxies_of_another_manager_are_refused(self) -> None:
        other = agora.Manager()
        try:
            with self.assertRaises(ValueError):
                manager.Lock().acquire_then(other.dict(), "get", "k")
        finally:
            other.shutdown()

    def test_processes_grabbing_with_chains_sell_every_ticket_once(self) -> None:
        tickets, workers = 400, 4
        lock, db = manager.Lock(), manager.dict(count=tickets)
        start, sold = CTX.Event(), CTX.Queue()
        procs = [CTX.Process(target=_grab, args=(lock, db, start, sold)) for _ in range(workers)]
        for p in procs:
            p.start()
        start.set()
        counts = [sold.get(timeout=WAIT) for _ in procs]
        for p in procs:
            p.join(WAIT)
            self.assertEqual(p.exitcode, 0)
        self.assertEqual(sum(counts), tickets)
        self.assertEqual(db["count"], 0)
        self.assertFalse(lock.locked())


if __name__ == "__main__":
    unittest.main()
