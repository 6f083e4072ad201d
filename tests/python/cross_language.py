"""The Python half of tests/cross_language.rs: a client written from PROTOCOL.md with nothing
but the standard library and the `msgpack` package.

    cross_language.py write   # writes the dict "from_python"
    cross_language.py read    # checks the dict "from_rust"

The manager's address and authkey come from AGORA_ADDRESS and AGORA_AUTHKEY (hex).
"""

import hashlib
import hmac
import os
import socket
import sys

import msgpack


class Client:
    def __init__(self, address, authkey):
        kind, _, where = address.partition(":")
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(where)
        else:
            host, _, port = where.rpartition(":")
            self.sock = socket.create_connection((host, int(port)))
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0
        challenge = self.call("hello")["challenge"]
        self.call("auth", hmac.new(authkey, challenge, hashlib.sha256).digest())

    def call(self, method, *params):
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, list(params)]))
        while True:
            for kind, msgid, error, result in self.unpacker:
                assert (kind, msgid) == (1, self.msgid), (kind, msgid)
                if error is not None:
                    raise RuntimeError(f"{error[0]}: {error[1]}")
                return result
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the manager closed the connection")
            self.unpacker.feed(data)


def reference(kind, object_id):
    """The ext type 1 value that points at a shared object (PROTOCOL.md, section 3)."""
    return msgpack.ExtType(1, msgpack.packb([kind, object_id]))


def write(c):
    d = c.call("create", "dict", "from_python")
    shared = c.call("create", "list", None, [10, 20])
    entries = [
        ("text", "h\u00e9llo \u4e16\u754c"),
        ("small", 5),
        ("negative", -7),
        ("big", 2**64 - 1),
        ("float", 1.5),
        ("true", True),
        ("none", None),
        ("bytes", b"\x00\xff\x10"),
        ("list", [1, "two", 3.5, [None]]),
        ("map", {"a": 1, "b": [True]}),
        (42, "an int key"),
        (2.0, "a float key equal to 2"),
        ("shared", reference("list", shared)),
    ]
    for key, value in entries:
        c.call("dict.setitem", d, key, value)
    # Mutating the shared list through its reference is visible to everyone.
    c.call("list.append", shared, 30)
    # A set: 2.0 and 2 are one element; [1, "a"] is one like a tuple.
    s = c.call("create", "set", "set_from_python", [2.0, "b", [1, "a"]])
    c.call("set.add", s, 2)
    c.call("set.update", s, reference("set", s), ["c"])


def read(c):
    kind, d = c.call("lookup", "from_rust")
    assert kind == "dict", kind
    expected = {
        "text": "\u00fcn\u00efcode \u2713",
        "int": -123456789012,
        "float": 0.25,
        "list": [1, 2, 3],
        "tuple": [7, "seven"],
        "bytes": b"\x01\x02\x03",
        "none": None,
        "nested": {"inner": [1.5, 2.5]},
    }
    for key, value in expected.items():
        got = c.call("dict.getitem", d, key)
        assert got == value, f"{key}: {got!r} != {value!r}"
        assert type(got) is type(value), f"{key}: {type(got)} != {type(value)}"
    assert c.call("dict.getitem", d, 7) == "an int key from rust"
    assert c.call("dict.get", d, 7.0) == "an int key from rust", "7.0 and 7 are one key"
    assert c.call("dict.len", d) == len(expected) + 1
    kind, s = c.call("lookup", "set_from_rust")
    assert kind == "set", kind
    assert sorted(c.call("set.copy", s)) == [1, 2, 3], c.call("set.copy", s)
    assert c.call("set.contains", s, 2.0), "2.0 and 2 are one element"
    assert c.call("set.compare", s, [3, 2, 1]) == [True, True]


def main():
    c = Client(os.environ["AGORA_ADDRESS"], bytes.fromhex(os.environ["AGORA_AUTHKEY"]))
    {"write": write, "read": read}[sys.argv[1]](c)
    print("ok", sys.argv[1])


if __name__ == "__main__":
    main()
