"""Errors a caller can act on (issue 19): oversized requests refused before they are sent,
error text without ``RemoteError``'s traceback frame."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from multiprocessing.managers import RemoteError
from typing import Any, List

import agora
from agora.connection import Client

from _support import module_manager, subprocess_env, WAIT

manager: Any = None


setUpModule, tearDownModule = module_manager(globals())


class Limits(unittest.TestCase):
    def test_hello_reports_the_limits(self) -> None:
        conn = manager._client.connection()
        self.assertEqual(
            conn.limits,
            {"max_message_bytes": 64 << 20, "max_depth": 128, "max_container_len": 16 << 20},
        )

    def test_an_oversized_value_raises_limit_error_and_the_connection_stays(self) -> None:
        d = manager.dict()
        conn = d._client.connection()
        with self.assertRaises(agora.LimitError) as caught:
            d["v"] = b"\0" * (65 << 20)
        e = caught.exception
        self.assertEqual((e.limit, e.max), ("max_message_bytes", 64 << 20))
        self.assertGreater(e.size, 65 << 20)
        self.assertIn("max_message_bytes", str(e))
        self.assertIn("nothing was sent", str(e))
        self.assertIsInstance(e, RemoteError)  # for existing except clauses
        # The same connection goes on.
        d["v"] = b"\1" * 10
        self.assertEqual(d["v"], b"\1" * 10)
        self.assertIs(d._client.connection(), conn)

    def test_a_container_over_the_limit_is_refused_unsent(self) -> None:
        conn = manager._client.connection()
        saved = dict(conn.limits)
        conn.limits["max_container_len"] = 100
        try:
            items = manager.list()
            with self.assertRaises(agora.LimitError) as caught:
                items.extend(range(101))
            self.assertEqual(caught.exception.limit, "max_container_len")
        finally:
            conn.limits.update(saved)
        items.extend(range(101))
        self.assertEqual(len(items), 101)

    def test_a_value_nested_too_deep_is_refused_unsent(self) -> None:
        items = manager.list()
        conn = items._client.connection()
        deepest = conn.limits["max_depth"]

        def nested(levels: int) -> Any:
            value: Any = []
            for _ in range(levels - 1):
                value = [value]
            return value

        # The request's array and its params are two levels: one more is over the limit.
        with self.assertRaises(agora.LimitError) as caught:
            items.append(nested(deepest - 1))
        self.assertEqual(caught.exception.limit, "max_depth")
        self.assertEqual(len(items), 0, "nothing was sent")
        items.append(nested(deepest - 2))
        self.assertEqual(len(items), 1, "the connection is fine")


#: A parent whose workers, forked by multiprocessing, wait in a queue get: it prints the
#: manager's pid and the workers', then waits to be killed.
_PARENT = """
import multiprocessing as mp, sys, time
import agora

def work(q):
    q.get()

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    manager = agora.Manager()
    q = manager.Queue()
    workers = [ctx.Process(target=work, args=(q,)) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(0.3)
    print(manager.pid, *[w.pid for w in workers], flush=True)
    time.sleep(60)
"""


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited orphan nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_stopped(pid: int) -> None:
    """Waits until the SIGSTOP sent to ``pid`` has taken effect (a polling manager could
    otherwise still answer the next call)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.001)
    raise AssertionError(f"{pid} did not stop")


class Lifeline(unittest.TestCase):
    def test_a_killed_parent_takes_the_manager_and_forked_workers_along(self) -> None:
        """SIGKILL of a parent whose fork-started workers wait in get(): the manager and the
        workers are gone within a second, 20 times out of 20 (the workers do not hold the
        manager's lifeline)."""
        for run in range(20):
            parent = subprocess.Popen(
                [sys.executable, "-c", _PARENT],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=subprocess_env(),
            )
            try:
                assert parent.stdout is not None
                line = parent.stdout.readline()
                pids: List[int] = [int(w) for w in line.split()]
                self.assertEqual(len(pids), 4, line)
            finally:
                parent.kill()
                parent.wait(WAIT)
                if parent.stdout is not None:
                    parent.stdout.close()
            deadline = time.monotonic() + 1.0
            while any(map(_running, pids)) and time.monotonic() < deadline:
                time.sleep(0.01)
            lingering = [pid for pid in pids if _running(pid)]
            for pid in lingering:
                os.kill(pid, signal.SIGKILL)
            self.assertEqual(lingering, [], f"run {run}: of {pids} (the manager first)")

    def test_shutdown_leaves_no_resource_warning(self) -> None:
        script = (
            "import agora\n"
            "m = agora.Manager()\n"
            "m.dict()['k'] = 1\n"
            "m.shutdown()\n"
            "with agora.Manager() as m2:\n"
            "    m2.list([1])\n"
            "m3 = agora.Manager()\n"  # stopped at exit
        )
        out = subprocess.run(
            [sys.executable, "-X", "dev", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
            timeout=WAIT,
        )
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertNotIn(b"ResourceWarning", out.stderr, out.stderr.decode())


def _serve_once(reply: bytes, ready: "threading.Event", listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.recv(64)
        if reply:
            conn.sendall(reply)
        else:
            time.sleep(2)


class Timeouts(unittest.TestCase):
    def _peer(self, reply: bytes) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        t = threading.Thread(
            target=_serve_once, args=(reply, threading.Event(), listener), daemon=True
        )
        t.start()
        self.addCleanup(t.join, 5)
        return "tcp:127.0.0.1:%d" % listener.getsockname()[1]

    def test_a_silent_peer_times_out_in_the_handshake(self) -> None:
        client = Client(self._peer(b""), b"key")
        client.handshake_timeout = 0.3
        started = time.monotonic()
        with self.assertRaises(agora.ManagerTimeout) as caught:
            client.connection()
        self.assertLess(time.monotonic() - started, 2)
        self.assertIn("did not answer hello within 0.3 s", str(caught.exception))
        self.assertIn("not an agora manager", str(caught.exception))

    def test_a_web_server_is_not_a_manager(self) -> None:
        client = Client(self._peer(b"HTTP/1.1 400 Bad Request\r\n\r\n"), b"key")
        with self.assertRaises(agora.NotAManagerError) as caught:
            client.connection()
        self.assertIn("not an agora manager", str(caught.exception))

    def test_the_environment_sets_the_timeouts(self) -> None:
        saved = {k: os.environ.get(k) for k in ("AGORA_CALL_TIMEOUT", "AGORA_CONNECT_TIMEOUT")}
        try:
            os.environ["AGORA_CALL_TIMEOUT"] = "0.25"
            os.environ["AGORA_CONNECT_TIMEOUT"] = "none"
            client = Client("tcp:127.0.0.1:1", b"key")
            self.assertEqual((client.call_timeout, client.connect_timeout), (0.25, None))
            os.environ["AGORA_CALL_TIMEOUT"] = "soon"
            with self.assertRaises(ValueError) as caught:
                Client("tcp:127.0.0.1:1", b"key")
            self.assertIn("AGORA_CALL_TIMEOUT", str(caught.exception))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_a_stopped_manager_is_a_timeout_after_the_deadline(self) -> None:
        m = agora.Manager()
        try:
            # Named: what only the closed connections held goes with them.
            d = m.named("stopped").dict()
            d["k"] = 1
            os.kill(m.pid, signal.SIGSTOP)
            _wait_stopped(m.pid)
            try:
                started = time.monotonic()
                with self.assertRaises(agora.ManagerTimeout) as caught:
                    with agora.deadline(0.3):
                        d["k"]
                waited = time.monotonic() - started
                m._client.call_timeout = 0.3
                started = time.monotonic()
                with self.assertRaises(agora.ManagerTimeout):
                    len(d)  # a new connection, whose handshake has the same deadline
                self.assertLess(time.monotonic() - started, 3)
            finally:
                os.kill(m.pid, signal.SIGCONT)
                m._client.call_timeout = None
            self.assertTrue(0.29 <= waited < 3, waited)
            self.assertIsInstance(caught.exception, ConnectionError)
            self.assertIsInstance(caught.exception, TimeoutError)
            self.assertIn("stopped or hung", str(caught.exception))
            # The next call opens a new connection.
            self.assertEqual(d["k"], 1)
        finally:
            m.shutdown()


class Authkeys(unittest.TestCase):
    def test_a_wrong_key_is_said_once_with_where_it_came_from(self) -> None:
        with self.assertRaises(agora.AuthenticationError) as caught:
            agora.connect(manager.address, b"wrong")
        text = str(caught.exception)
        self.assertIn("refused the authkey (given to agora.connect)", text)
        self.assertNotIn("AGORA_AUTHKEY", text)
        self.assertEqual(text.count("authkey"), 2, text)
        saved = os.environ.get("AGORA_AUTHKEY")
        try:
            os.environ["AGORA_AUTHKEY"] = "00"
            with self.assertRaises(agora.AuthenticationError) as caught:
                agora.connect(manager.address)
            self.assertIn("(AGORA_AUTHKEY)", str(caught.exception))
            os.environ["AGORA_AUTHKEY"] = ""
            with self.assertRaises(ValueError) as empty:
                agora.connect(manager.address)
            self.assertIn("the authkey (AGORA_AUTHKEY): the authkey is empty", str(empty.exception))
        finally:
            if saved is None:
                os.environ.pop("AGORA_AUTHKEY", None)
            else:
                os.environ["AGORA_AUTHKEY"] = saved


class Text(unittest.TestCase):
    def test_remote_errors_read_as_their_message(self) -> None:
        d = manager.dict()
        ident = d._id
        manager.delete(d)
        with self.assertRaises(agora.UnknownObjectError) as caught:
            manager._client.call("dict.len", ident)
        text = str(caught.exception)
        self.assertNotIn("----", text)
        self.assertIn(str(ident), text)
        self.assertEqual(str(agora.LimitError("too big")), "too big")
        self.assertEqual(str(agora.ProtocolError("bad")), "bad")


if __name__ == "__main__":
    unittest.main()
