"""How the client keeps the manager's reference counts (``PROTOCOL.md`` section 3.2), checked on
the wire against a fake manager that records every message it reads: what is counted, when
``decref`` goes out and with what, ``export`` on pickling, ``adopt`` on unpickling, after an
interrupted call and after ``fork``. The real manager's side is in ``test_lifetime.py``."""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import signal
import socket
import tempfile
import threading
import unittest
from typing import Any, List, Optional, Tuple

import msgpack

import agora
from agora.connection import Connection

from _support import WAIT, wait_for

RUN = "00000000-0000-4000-8000-000000000000"

#: (connection number, number of the read on that connection, message) for every message.
Record = Tuple[int, int, Any]


def decref_pairs(notification: List[Any]) -> List[Any]:
    """The pairs of a ``decref`` notification: its params, one pair each."""
    params: List[Any] = notification[2]
    assert all(len(pair) == 2 for pair in params), notification
    return params


def ref(kind: str, ident: int) -> msgpack.ExtType:
    """A reference as the manager sends it (ext type 1, data ``[kind, id]``)."""
    return msgpack.ExtType(1, msgpack.packb([kind, ident]))


class FakeManager:
    """Speaks just enough of the protocol: ``hello``, ``auth`` and ``ping`` as the manager does,
    ``create`` gives out ids from 100 up, ``echo [x, value]`` returns ``value`` (so a test
    decides which references a response holds), ``park`` is never answered, and every other
    request gets ``true``. Notifications are recorded and not answered."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="agora-fake-")
        self.address = "unix:" + os.path.join(self.dir, "m.sock")
        self.authkey = b"fake key"
        self.records: List[Record] = []
        self.closed: List[int] = []
        self.next_id = 100
        self._guard = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address[len("unix:"):])
        self._listener.listen()
        self._connections: List[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._guard:
                self._connections.append(sock)
            threading.Thread(target=self._serve, args=(number, sock), daemon=True).start()
            number += 1

    def _serve(self, number: int, sock: socket.socket) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        read = 0
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self._guard:
                    self.closed.append(number)
                sock.close()
                return
            unpacker.feed(data)
            replies = []
            for msg in unpacker:
                with self._guard:
                    self.records.append((number, read, msg))
                if msg[0] == 0:
                    reply = self._answer(msg[2], msg[3])
                    if reply is not None:
                        replies.append(msgpack.packb([1, msg[1], None, reply[0]]))
            read += 1
            try:
                sock.sendall(b"".join(replies))
            except OSError:
                pass

    def _answer(self, method: str, params: List[Any]) -> Optional[Tuple[Any]]:
        if method == "hello":
            return ({
                "protocol": 1, "server": "fake", "version": "0", "challenge": b"c" * 32,
                "run": RUN, "started": 0,
            },)
        if method == "ping":
            return ("pong",)
        if method == "create":
            with self._guard:
                self.next_id += 1
                return (self.next_id,)
        if method == "echo":
            return (params[1],)
        if method == "park":
            return None
        return (True,)

    def messages(self, connection: Optional[int] = None) -> List[Any]:
        """Every message read after authentication (of one connection, if given)."""
        with self._guard:
            records = list(self.records)
        return [
            msg for number, _, msg in records
            if (connection is None or number == connection)
            and not (msg[0] == 0 and msg[2] in ("hello", "auth"))
        ]

    def calls(self, method: str) -> List[Record]:
        """The records of the requests and notifications of ``method``."""
        with self._guard:
            records = list(self.records)
        return [
            r for r in records
            if (r[2][0] == 0 and r[2][2] == method) or (r[2][0] == 2 and r[2][1] == method)
        ]

    def decrefs(self) -> List[List[Any]]:
        """The ``[id, count]`` pairs of every ``decref`` notification, in order."""
        return [decref_pairs(r[2]) for r in self.calls("decref")]

    def stop(self) -> None:
        self._listener.close()
        with self._guard:
            for sock in self._connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


class WireTest(unittest.TestCase):
    fake: FakeManager
    manager: agora.Manager

    def setUp(self) -> None:
        self.fake = FakeManager()
        self.manager = agora.Manager(self.fake.address, self.fake.authkey)
        self.conn = self.manager._client.connection()

    def tearDown(self) -> None:
        self.manager._client.close_all()
        self.fake.stop()

    def sync(self) -> None:
        """Returns once the fake has read everything this thread's connection wrote before."""
        self.assertTrue(self.manager.ping())

    def echo(self, value: Any) -> Any:
        return self.conn.call("echo", (0, value))

    def hold_lock(self) -> None:
        """Takes the connection's lock as a call in progress on another thread would: a proxy
        collected meanwhile cannot write its decref."""
        self.conn._lock.acquire()

    def release_lock_quietly(self) -> None:
        self.conn._lock.release()


class Counting(WireTest):
    def test_a_created_object_is_decrefd_once_its_proxy_is_collected(self) -> None:
        d = self.manager.dict()
        ident = d._id
        self.assertEqual(self.conn._refs[ident], [1, 1])
        del d
        gc.collect()
        # Written at once (the connection is idle), without waiting for another call.
        wait_for(lambda: self.fake.decrefs())
        self.assertEqual(self.fake.decrefs(), [[[ident, 1]]])
        self.assertNotIn(ident, self.conn._refs)

    def test_every_reference_in_a_response_is_counted(self) -> None:
        got = self.echo({"a": [ref("list", 7), ref("list", 7)], "b": ref("dict", 8)})
        self.assertIsInstance(got["a"][0], agora.ListProxy)
        self.assertEqual(self.conn._refs[7], [2, 2])
        self.assertEqual(self.conn._refs[8], [1, 1])
        first, second = got["a"]
        del got
        # One proxy of 7 is left (and none of 8): only 8 goes.
        gc.collect()
        self.sync()
        self.assertEqual(self.fake.decrefs(), [[[8, 1]]])
        again = self.echo(ref("list", 7))
        del first, second
        gc.collect()
        self.sync()
        self.assertEqual(self.fake.decrefs(), [[[8, 1]]])  # `again` still holds 7
        del again
        gc.collect()
        self.sync()
        self.assertEqual(self.fake.decrefs(), [[[8, 1]], [[7, 3]]])

    def test_a_reference_of_an_unknown_kind_is_given_back(self) -> None:
        got = self.echo([ref("no_such_kind", 9)])
        self.assertIsInstance(got[0], msgpack.ExtType)
        self.sync()
        self.assertEqual(self.fake.decrefs(), [[[9, 1]]])

    def test_decrefs_go_in_one_notification_in_the_same_write_as_the_next_request(self) -> None:
        proxies = [self.manager.list() for _ in range(3)]
        idents = [p._id for p in proxies]
        self.hold_lock()
        try:
            del proxies
            gc.collect()
        finally:
            self.release_lock_quietly()
        self.assertEqual(self.fake.decrefs(), [])
        self.sync()
        decrefs = self.fake.calls("decref")
        self.assertEqual(len(decrefs), 1)
        self.assertEqual(sorted(decref_pairs(decrefs[0][2])), [[i, 1] for i in sorted(idents)])
        ping = self.fake.calls("ping")[-1]
        # Read in one piece with the ping that followed it: one write, no round trip.
        self.assertEqual(decrefs[0][:2], ping[:2])

    def test_an_id_whose_proxy_came_back_is_not_decrefd(self) -> None:
        d = self.manager.dict()
        ident = d._id
        self.hold_lock()
        try:
            del d
            gc.collect()
            # A proxy of the same object made before the decref could be written.
            self.conn._owner = threading.get_ident()
            self.conn.track(ident)
            self.conn._owner = 0
        finally:
            self.release_lock_quietly()
        self.sync()
        self.assertEqual(self.fake.decrefs(), [])
        self.assertEqual(self.conn._refs[ident], [1, 1])

    def test_a_decref_is_written_while_its_connection_waits_for_a_parked_call(self) -> None:
        box: List[Any] = []
        made = threading.Event()

        def worker() -> None:
            box.append(self.manager.dict())
            made.set()
            try:
                self.manager._client.call("park")  # never answered
            except agora.ConnectionLost:  # the fake stops at the end of the test
                pass

        threading.Thread(target=worker, daemon=True).start()
        self.assertTrue(made.wait(WAIT))
        wait_for(lambda: self.fake.calls("park"))
        ident = box[0]._id
        worker_connection = self.fake.calls("park")[0][0]
        box.clear()  # collected here, on the main thread
        wait_for(lambda: self.fake.decrefs())
        self.assertEqual(self.fake.decrefs(), [[[ident, 1]]])
        self.assertEqual(self.fake.calls("decref")[0][0], worker_connection)

    def test_nested_call_from_a_finalizer_is_refused_not_deadlocked(self) -> None:
        self.conn._owner = threading.get_ident()
        try:
            with self.assertRaisesRegex(RuntimeError, "in the middle of another call"):
                self.conn.call("ping", ())
        finally:
            self.conn._owner = 0


class Handoffs(WireTest):
    def test_pickling_exports_and_unpickling_adopts(self) -> None:
        lst = self.manager.list()
        data = pickle.dumps(lst)
        self.sync()
        exports = self.fake.calls("export")
        self.assertEqual([r[2][3] for r in exports], [[lst._id]])
        copy = pickle.loads(data)
        self.assertEqual([r[2][3] for r in self.fake.calls("adopt")], [[lst._id]])
        self.assertEqual(self.conn._refs[lst._id], [2, 2])
        del lst, copy
        gc.collect()
        self.sync()
        self.assertEqual(self.fake.decrefs(), [[[exports[0][2][3][0], 2]]])

    def test_an_interrupted_call_hands_its_references_to_the_next_connection(self) -> None:
        d = self.manager.dict()
        lst = self.manager.list()

        class Interrupted(Exception):
            pass

        def on_alarm(signum: int, frame: Any) -> None:
            raise Interrupted()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            with self.assertRaises(Interrupted):
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                self.conn.call("park", ())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        old = self.conn
        self.assertTrue(old.closed)
        # Exported before the close, so that the manager keeps them...
        wait_for(lambda: 0 in self.fake.closed)
        exports = [r for r in self.fake.calls("export") if r[0] == 0]
        self.assertEqual(sorted(r[2][3][0] for r in exports), sorted([d._id, lst._id]))
        # ... and adopted by the next connection, in the same write as its first request.
        self.sync()
        adopts = self.fake.calls("adopt")
        self.assertEqual(sorted(r[2][3][0] for r in adopts), sorted([d._id, lst._id]))
        ping = self.fake.calls("ping")[-1]
        self.assertTrue(all(r[:2] == ping[:2] for r in adopts))
        new = self.manager._client.connection()
        self.assertIsNot(new, old)
        self.assertEqual(new._refs[d._id], [1, 1])
        ident = d._id
        del d
        gc.collect()
        self.sync()
        decrefs = self.fake.calls("decref")
        self.assertEqual([decref_pairs(r[2]) for r in decrefs], [[[ident, 1]]])
        self.assertEqual(decrefs[0][0], ping[0])  # on the new connection

    def test_fork_exports_before_and_the_child_adopts(self) -> None:
        lst = self.manager.list()
        pid = os.fork()
        if pid == 0:  # the child: adopt on first use, then report through the fake
            code = 1
            try:
                self.manager._client.call("echo", 0, "child")
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.sync()
        exports = self.fake.calls("export")
        self.assertEqual([(r[0], r[2][3]) for r in exports], [(0, [lst._id])])
        adopts = self.fake.calls("adopt")
        self.assertEqual([r[2][3] for r in adopts], [[lst._id]])
        child_connection = adopts[0][0]
        self.assertNotEqual(child_connection, 0)
        wait_for(lambda: child_connection in self.fake.closed)


class Threads(WireTest):
    def test_a_finished_threads_connection_stays_open_while_its_proxies_live(self) -> None:
        box: List[Any] = []
        worker = threading.Thread(target=lambda: box.append(self.manager.dict()))
        worker.start()
        worker.join(WAIT)
        home: Connection = box[0]._home
        self.assertIsNot(home, self.conn)
        gc.collect()
        self.sync()
        self.assertFalse(home.closed)
        worker_connection = self.fake.calls("create")[-1][0]
        self.assertNotIn(worker_connection, self.fake.closed)
        ident = box[0]._id
        del home
        box.clear()
        gc.collect()
        # Its decref, then its close.
        wait_for(lambda: worker_connection in self.fake.closed)
        self.assertEqual(self.fake.decrefs(), [[[ident, 1]]])

    def test_close_all_forgets_the_tables(self) -> None:
        d = self.manager.dict()
        self.manager._client.close_all()
        self.assertEqual(self.conn._refs, {})
        del d
        gc.collect()
        self.assertEqual(self.fake.decrefs(), [])


if __name__ == "__main__":
    unittest.main()
