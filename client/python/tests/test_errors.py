"""Errors a caller can act on (issue 19): oversized requests refused before they are sent,
error text without ``RemoteError``'s traceback frame."""

from __future__ import annotations

import unittest
from multiprocessing.managers import RemoteError
from typing import Any

import agora

from _support import manager_binary

manager: Any = None


def setUpModule() -> None:
    global manager
    manager_binary()
    manager = agora.Manager()


def tearDownModule() -> None:
    manager.shutdown()


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
