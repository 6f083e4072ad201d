"""The admin authkey (issue 21): a manager that ``agora.Manager()`` starts keeps the key that
may stop it, and hands workers the authkey, which may not."""

from __future__ import annotations

import pickle
import unittest

import agora
from agora.connection import Client, Connection

from _support import manager_binary, WAIT


class AdminKey(unittest.TestCase):
    def setUp(self) -> None:
        manager_binary()
        self.manager = agora.Manager()

    def tearDown(self) -> None:
        self.manager.shutdown()

    def test_the_started_manager_keeps_an_admin_key_of_its_own(self) -> None:
        m = self.manager
        self.assertIsNotNone(m.admin_authkey)
        self.assertNotEqual(m.admin_authkey, m.authkey)
        # What reaches a child process carries the authkey only.
        child = pickle.loads(pickle.dumps(m))
        self.assertEqual(child.authkey, m.authkey)
        self.assertIsNone(child.admin_authkey)

    def test_a_worker_key_client_cannot_shut_the_manager_down(self) -> None:
        m = self.manager
        worker = agora.connect(m.address, m.authkey)
        d = worker.dict()
        d["x"] = 1
        with self.assertRaises(agora.PermissionDenied) as caught:
            worker.shutdown()
        self.assertIn("admin authkey", str(caught.exception))
        self.assertIsInstance(caught.exception, PermissionError)
        # Nothing stopped: the worker and the owner go on.
        self.assertEqual(d["x"], 1)
        self.assertTrue(m.ping())

    def test_the_admin_key_shuts_the_manager_down(self) -> None:
        m = self.manager
        key = m.admin_authkey
        assert key is not None and m._process is not None
        conn = Connection(Client(m.address, key), timeout=WAIT)
        try:
            self.assertIs(conn.call("shutdown", ()), True)
        finally:
            conn.close()
        self.assertEqual(m._process.wait(WAIT), 0)

    def test_the_started_manager_changes_its_limits_and_a_worker_may_not(self) -> None:
        m = self.manager
        before = m.limits()
        self.assertEqual(
            sorted(before),
            ["auth_timeout", "max_connections", "max_in_flight", "max_output_bytes"],
        )
        after = m.limits(max_in_flight=7, auth_timeout=2.5)
        self.assertEqual(after["max_in_flight"], 7)
        self.assertEqual(after["auth_timeout"], 2.5)
        self.assertEqual(after["max_connections"], before["max_connections"])
        with self.assertRaises(ValueError) as caught:
            m.limits(max_in_flight=1, max_depth=4)
        self.assertIn("max_depth", str(caught.exception))
        self.assertEqual(m.limits(), after)
        worker = agora.connect(m.address, m.authkey)
        with self.assertRaises(agora.PermissionDenied):
            worker.limits()

    def test_the_started_manager_deletes_what_a_worker_holds_and_the_worker_may_not(
        self,
    ) -> None:
        m = self.manager
        worker = agora.connect(m.address, m.authkey)
        # The worker holds the starting program's dict twice: through its proxy and stored in
        # its list.
        box = worker.named("box").list()
        mine = m.dict()
        mine["k"] = 1
        box.append(mine)
        theirs = box[0]
        with self.assertRaises(agora.PermissionDenied) as caught:
            worker.delete(theirs)
        self.assertIn("other holder", str(caught.exception))
        self.assertIn("admin authkey", str(caught.exception))
        self.assertEqual(theirs["k"], 1)
        m.delete(mine)
        with self.assertRaises(agora.UnknownObjectError):
            theirs["k"]
        # By name: a named list stored in the box.
        box.append(worker.named("by name").list())
        with self.assertRaises(agora.PermissionDenied):
            worker.delete("by name")
        m.delete("by name")
        with self.assertRaises(KeyError):
            m.lookup("by name")
        # What the worker alone holds it deletes itself.
        own = worker.dict()
        worker.delete(own)
        with self.assertRaises(agora.UnknownObjectError):
            len(own)

    def test_shutdown_of_the_started_manager_is_the_shutdown_call(self) -> None:
        # Had the call been refused, a debug line would say so, and the manager would only
        # stop on SIGTERM, after a warning.
        with self.assertLogs("agora", level="DEBUG") as logs:
            self.manager.shutdown()
        refused = [line for line in logs.output if "failed" in line or "terminating" in line]
        self.assertEqual(refused, [])
        assert self.manager._process is not None
        self.assertEqual(self.manager._process.returncode, 0)


if __name__ == "__main__":
    unittest.main()
