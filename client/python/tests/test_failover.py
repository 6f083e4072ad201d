"""A client given several manager addresses (managers serving the same objects): it connects
to the first that answers, the call in flight when its manager dies fails, the next calls
move to the next manager, and when none answers the error names every address. Runs real
``agora-manager`` processes with in-memory stores and one authkey."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
import unittest
from typing import Any, List

import agora
from agora.connection import parse_address, parse_addresses

from _support import manager_binary

KEY = bytes(range(32))


class Running:
    """An ``agora-manager`` on a Unix socket, started and ready; SIGKILLed by :meth:`kill`."""

    def __init__(self, address: str) -> None:
        self.address = address
        env = dict(os.environ, AGORA_AUTHKEY=KEY.hex(), RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [manager_binary(), "--listen", address],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("agora-manager ready "), line

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Failover(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.a = "unix:" + os.path.join(self.dir.name, "a.sock")
        self.b = "unix:" + os.path.join(self.dir.name, "b.sock")
        self.running: List[Running] = []
        self.started = time.monotonic()

    def tearDown(self) -> None:
        for manager in self.running:
            if manager.proc.poll() is None:
                manager.kill()
        self.dir.cleanup()
        self.assertLess(time.monotonic() - self.started, 5.0)

    def start(self, address: str) -> Running:
        manager = Running(address)
        self.running.append(manager)
        return manager

    def test_the_call_in_flight_fails_and_the_next_calls_reach_the_next_manager(self) -> None:
        ma, _mb = self.start(self.a), self.start(self.b)
        agora.connect(self.b, KEY).named("scores").dict()["alice"] = 7
        m = agora.connect([self.a, self.b], KEY)
        self.assertEqual(m.address, f"{self.a},{self.b}")
        on_a = m.named("scores").dict()
        on_a["alice"] = 1
        queue = m.Queue()
        outcome: List[Any] = []

        def park() -> None:
            try:
                outcome.append(queue.get(timeout=30))
            except Exception as e:  # the point is to see it
                outcome.append(e)

        waiter = threading.Thread(target=park)
        waiter.start()
        time.sleep(0.15)
        ma.kill()
        waiter.join(5)
        self.assertIsInstance(outcome[0], agora.ConnectionLost)
        self.assertIn("a.sock", str(outcome[0]))

        # This thread's connection to A is broken too: its next call finds out.
        with self.assertRaises(agora.ConnectionLost):
            on_a["alice"]
        # A and B are separate stores (separate runs): A's proxies are stale on B.
        with self.assertRaises(agora.UnknownObjectError):
            on_a["alice"]
        self.assertEqual(m.lookup("scores")["alice"], 7)
        self.assertEqual(m._client.current_address, self.b)

    def test_the_client_goes_round_the_list_and_names_every_address(self) -> None:
        ma, mb = self.start(self.a), self.start(self.b)
        m = agora.connect(f"{self.a} , {self.b}", KEY)
        ma.kill()
        with self.assertRaises(agora.ConnectionLost):
            m.ping()
        with self.assertLogs("agora", "INFO") as logs:
            self.assertTrue(m.ping())
        self.assertIn(f"moved to the agora manager at {self.b}", "\n".join(logs.output))

        ma = self.start(self.a)  # A again, at the same address
        mb.kill()
        with self.assertRaises(agora.ConnectionLost):
            m.ping()
        self.assertTrue(m.ping())
        self.assertEqual(m._client.current_address, self.a)

        ma.kill()
        with self.assertRaises(agora.ConnectionLost):
            m.ping()
        with self.assertRaises(agora.ConnectionLost) as none:
            m.ping()
        text = str(none.exception)
        self.assertIn("any of the 2 addresses", text)
        # From the one after A, which failed: B, then A.
        self.assertLess(text.index("b.sock"), text.index("a.sock"), text)

    def test_connecting_skips_addresses_where_no_manager_answers(self) -> None:
        self.start(self.b)
        saved = {k: os.environ.get(k) for k in ("AGORA_ADDRESS", "AGORA_AUTHKEY")}
        os.environ["AGORA_ADDRESS"] = f"{self.a},{self.b}"
        os.environ["AGORA_AUTHKEY"] = KEY.hex()
        try:
            m = agora.connect()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.assertTrue(m.ping())
        self.assertEqual(m._client.current_address, self.b)
        absent = "unix:" + os.path.join(self.dir.name, "c.sock")
        with self.assertRaises(agora.ConnectionLost) as none:
            agora.connect([self.a, absent], KEY)
        text = str(none.exception)
        self.assertIn("a.sock", text)
        self.assertIn("c.sock", text)


class Parsing(unittest.TestCase):
    def test_lists(self) -> None:
        self.assertEqual(
            parse_addresses(" unix:/a.sock , tcp:h:1,tls:[::1]:443 "),
            ["unix:/a.sock", "tcp:h:1", "tls:[::1]:443"],
        )
        self.assertEqual(
            parse_addresses(["/a.sock", ("h", 1), ("::1", 2)]),
            ["unix:/a.sock", "tcp:h:1", "tcp:[::1]:2"],
        )
        self.assertEqual(parse_addresses(("h", 1)), ["tcp:h:1"])
        self.assertEqual(parse_address(["unix:/a", "tcp:h:1"]), "unix:/a,tcp:h:1")
        self.assertEqual(parse_address("unix:/a"), "unix:/a")

    def test_a_comma_in_a_socket_path_stays_in_the_path(self) -> None:
        self.assertEqual(parse_addresses("unix:/a,b.sock"), ["unix:/a,b.sock"])
        self.assertEqual(
            parse_addresses("unix:/a,b.sock,tcp:h:1"), ["unix:/a,b.sock", "tcp:h:1"]
        )

    def test_bad_lists_say_what_is_wrong(self) -> None:
        cases = [
            ("unix:/a,,tcp:h:1", "entry 2 is empty"),
            ("unix:/a, ,tcp:h:1", "entry 2 is empty"),
            ("tcp:h:1,", "entry 2 is empty"),
            (",tcp:h:1", "entry 1 is empty"),
            ("tcp:h:1, tcp:h:1", "tcp:h:1 is listed twice"),
            ("unix:/a,tcp:h", "entry 2: bad manager address 'tcp:h'"),
        ]
        for text, expected in cases:
            with self.assertRaises(ValueError, msg=text) as caught:
                parse_addresses(text)
            self.assertIn(expected, str(caught.exception))
            self.assertIn(repr(text), str(caught.exception))
        with self.assertRaises(ValueError):
            parse_addresses([])


if __name__ == "__main__":
    unittest.main()
