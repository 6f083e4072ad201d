"""Talking to a manager: addresses, the per-thread connections, the handshake and the codec.

A :class:`Client` stands for one manager as seen from this process. It opens one
:class:`Connection` per thread, on first use, as ``multiprocessing.managers`` does: threads never
share a socket, so a call that blocks on the manager (a queue ``get``, an ``acquire``) holds up
only its own thread, and lock ownership follows threads. After ``fork`` the child drops every
inherited connection and opens its own.

Each call is one MessagePack-RPC request and its response (see ``PROTOCOL.md``). A connection
whose call was interrupted half way (by ``KeyboardInterrupt``, a signal handler, a socket error)
is closed rather than reused, since a late response would otherwise be read as the answer to a
later call. Closing it makes the manager give back whatever the connection held or waited for.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import numbers
import operator
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import msgpack

from . import errors
from .errors import ConnectionLost, ProtocolError

__all__ = ["Client", "Connection", "client_for", "parse_address", "parse_authkey"]

log = logging.getLogger("agora")

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1

#: MessagePack ext type of an object reference (``PROTOCOL.md``, section 3).
REFERENCE_EXT = 1

_RECV_CHUNK = 64 * 1024


#: The environment variable that sets the polling budget, in whole microseconds (0: never
#: poll). The manager and the Rust client read it by the same rules (``agora_proto::spin``).
SPIN_ENV = "AGORA_SPIN_US"

#: Microseconds a call polls by default on two CPUs or more (``agora_proto::spin``'s
#: ``DEFAULT_BUDGET``): about two wake-ups of an idle CPU on a virtual machine.
SPIN_DEFAULT_US = 50

#: The most microseconds any side polls, whatever it is asked (``agora_proto::spin``'s
#: ``MAX_BUDGET``): a reply slower than that is better slept for.
SPIN_MAX_US = 1000

#: What may surround the digits of ``AGORA_SPIN_US``: what a shell or a file leaves.
_SPIN_BLANKS = " \t\r\n"


def _cpus_to_run_on() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _parse_spin_us(raw: Optional[str], cpus: int) -> int:
    """The polling budget, in microseconds, that ``AGORA_SPIN_US`` set to ``raw`` (``None``:
    unset) gives a process that may run on ``cpus`` CPUs.

    The rules are the Rust side's (``agora_proto::spin``; ``tests/cross_language.rs`` checks
    that both agree): ASCII digits, with blanks around them; at most :data:`SPIN_MAX_US`;
    0 never polls. Unset or blank: :data:`SPIN_DEFAULT_US`, or 0 below two CPUs (one CPU, or
    pinned with ``taskset``), where a manager sharing the CPU cannot answer while the caller
    polls. Anything else raises :class:`ValueError`, including what ``int()`` would take but
    Rust would not: a sign (``-1`` is not "off"), underscores, non-ASCII digits."""
    digits = "" if raw is None else raw.strip(_SPIN_BLANKS)
    if not digits:
        return SPIN_DEFAULT_US if cpus >= 2 else 0
    if not all("0" <= c <= "9" for c in digits):
        raise ValueError(
            f"{SPIN_ENV}={raw!r} is not a whole number of microseconds "
            f"(digits only; 0 turns polling off, at most {SPIN_MAX_US} are used)"
        )
    # More digits than the cap has is over the cap; checked first because int() refuses
    # strings of thousands of digits (leading zeros included), which Rust takes like any other.
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(SPIN_MAX_US)):
        return SPIN_MAX_US
    return min(int(significant), SPIN_MAX_US)


def _spin_budget_us() -> int:
    """This process's polling budget, in microseconds, from ``AGORA_SPIN_US``
    (:func:`_parse_spin_us`). A value that is not a whole number is logged and ignored, as the
    Rust client does: a tuning knob must not make a program fail (the ``agora-manager`` program
    refuses to start instead)."""
    cpus = _cpus_to_run_on()
    try:
        return _parse_spin_us(os.environ.get(SPIN_ENV), cpus)
    except ValueError as e:
        log.warning("ignoring %s; polling with the default budget", e)
        return _parse_spin_us(None, cpus)


#: This process's polling budget in microseconds, read once so that every connection polls
#: alike (see :func:`_spin_budget_us`).
_SPIN_US = _spin_budget_us()

#: The same, in seconds. A reply usually comes within a few microseconds of the request;
#: sleeping in ``recv`` and being woken costs more than that on many machines (tens of
#: microseconds on a virtual machine whose idle CPU must be woken through the hypervisor).
_SPIN = _SPIN_US / 1e6

#: After a poll that found nothing in time (a loaded machine, a call the manager parked), a
#: connection reads its next 1, 2, 4, ... up to this many replies without polling; a poll that
#: finds its reply resets the back-off. Calls that may wait (``PROTOCOL.md`` section 4.1) keep
#: a back-off of their own, so that a contended lock does not stop the polling for the quick
#: calls made while holding it.
_SPIN_MAX_BACKOFF = 64

#: A gap this long (seconds) in polling means the CPU went to another process meanwhile: a
#: poll takes a couple of microseconds.
_SPIN_STALL = 10e-6

#: The methods the manager may park (``PROTOCOL.md``, section 4.1).
MAY_WAIT = frozenset({
    "queue.get", "queue.put", "queue.get_many", "queue.put_many",
    "queue.get_acked", "queue.get_many_acked", "joinable_queue.get", "joinable_queue.put", "joinable_queue.get_many",
    "joinable_queue.put_many", "joinable_queue.join",
    "lock.acquire", "rlock.acquire", "semaphore.acquire", "bounded_semaphore.acquire",
    "condition.acquire", "condition.wait", "event.wait", "barrier.wait", "mutex.lock",
})

AddressLike = Union[str, Tuple[str, int]]


def parse_address(address: AddressLike) -> str:
    """The canonical spelling (``unix:PATH`` or ``tcp:HOST:PORT``) of a manager address.

    Accepts those spellings, a ``(host, port)`` pair and a bare filesystem path (a Unix socket).
    """
    if isinstance(address, tuple):
        host, port = address
        return f"tcp:[{host}]:{int(port)}" if ":" in host else f"tcp:{host}:{int(port)}"
    if not isinstance(address, str) or not address:
        raise TypeError(f"a manager address is 'unix:PATH' or 'tcp:HOST:PORT', not {address!r}")
    if address.startswith(("unix:", "tcp:")):
        return address
    if "/" in address or ":" not in address:
        return "unix:" + address
    raise ValueError(f"bad manager address {address!r}: expected 'unix:PATH' or 'tcp:HOST:PORT'")


def _sockaddr(address: str) -> Tuple[int, Any]:
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[len("unix:"):]
    host, sep, port = address[len("tcp:"):].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bad manager address {address!r}: expected 'tcp:HOST:PORT'")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def parse_authkey(authkey: Union[bytes, bytearray, str]) -> bytes:
    """The authkey as bytes: bytes are taken as they are, a str as hexadecimal (like
    ``AGORA_AUTHKEY``)."""
    if isinstance(authkey, (bytes, bytearray)):
        key = bytes(authkey)
    elif isinstance(authkey, str):
        try:
            key = bytes.fromhex(authkey.strip())
        except ValueError:
            raise ValueError("an authkey given as str must be hexadecimal") from None
    else:
        raise TypeError(f"an authkey is bytes or a hex str, not {type(authkey).__name__}")
    if not key:
        raise ValueError("the authkey is empty")
    return key


def _freeze(value: Any) -> Any:
    # Arrays used as map keys come back as lists, which Python cannot hash: make them tuples.
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _pairs_to_dict(pairs: list) -> Any:
    try:
        return dict(pairs)
    except TypeError:
        pass
    try:
        return {_freeze(k): v for k, v in pairs}
    except TypeError:
        # A key Python cannot hash even as a tuple (a map inside an array key): hand over the
        # pairs rather than fail to read the response.
        return pairs


#: Set by ``agora.proxies``: builds the proxy for ``(client, kind, id)``.
proxy_factory: Optional[Callable[["Client", str, int], Any]] = None


class Connection:
    """One authenticated socket to a manager, used by one thread at a time."""

    __slots__ = (
        "client",
        "_sock",
        "_packer",
        "_unpacker",
        "_buffer",
        "_view",
        "_next_id",
        "_closed",
        "_spin",
        "_backoff_quick",
        "_backoff_wait",
        "run",
        "started",
        "__weakref__",
    )

    def __init__(self, client: "Client", timeout: Optional[float] = None) -> None:
        """Connects and authenticates. ``timeout`` (seconds) bounds every socket operation of
        this connection; ``None``, the default, waits as long as a call takes."""
        self.client = client
        self._closed = True
        self._next_id = 0
        #: The id of the manager's run this connection reaches, and when it started (Unix
        #: seconds), as ``hello`` reported them.
        self.run = ""
        self.started = 0
        family, target = _sockaddr(client.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        if timeout is not None:
            sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError as e:
            sock.close()
            raise ConnectionLost(f"cannot connect to the agora manager at {client.address}: {e}") from e
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._closed = False
        # A socket with a timeout waits in poll() even for MSG_DONTWAIT: never spin on one.
        self._spin = client.spin if timeout is None else 0.0
        # [replies left to read without polling, what that becomes after the next miss]
        self._backoff_quick = [0, 0]
        self._backoff_wait = [0, 0]
        # Responses are read into one buffer per connection: no allocation per call.
        self._buffer = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buffer)
        self._packer = msgpack.Packer(default=client._encode_default, use_bin_type=True)
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            ext_hook=client._decode_ext,
            object_pairs_hook=_pairs_to_dict,
            max_buffer_size=0,
        )
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    def _handshake(self) -> None:
        hello = self.call("hello", ())
        if not isinstance(hello, dict) or not isinstance(hello.get("challenge"), bytes):
            raise ProtocolError(f"{self.client.address} did not answer hello like an agora manager")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"the manager at {self.client.address} speaks protocol {hello.get('protocol')!r}, "
                f"this client speaks {PROTOCOL_VERSION}"
            )
        run, started = hello.get("run"), hello.get("started")
        if not isinstance(run, str) or not isinstance(started, int):
            raise ProtocolError(
                f"the manager at {self.client.address} does not report its run and start time "
                "in hello: it is older than this client; run the agora-manager of this version"
            )
        digest = hmac.new(self.client.authkey, hello["challenge"], hashlib.sha256).digest()
        self.call("auth", (digest,))
        self.run, self.started = run, started
        self.client.run, self.client.started = run, started
        log.debug("connected to %s (manager %s)", self.client.address, hello.get("version"))

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """Sends one request and returns its result, or raises the error it got."""
        msgid = self._next_id
        self._next_id = (msgid + 1) & 0xFFFFFFFF
        # Packing fails (unsupported value) before anything is sent: the connection stays good.
        data = self._packer.pack((0, msgid, method, params))
        if self._closed:
            raise ConnectionLost(f"the connection to {self.client.address} is closed")
        unpacker = self._unpacker
        response = None
        try:
            self._sock.sendall(data)
            while response is None:
                n = self._receive(method)
                if not n:
                    raise ConnectionLost(
                        f"the agora manager at {self.client.address} closed the connection"
                    )
                unpacker.feed(self._view[:n])
                for msg in unpacker:
                    if type(msg) is list and len(msg) == 4 and msg[0] == 1:
                        if msg[1] == msgid:
                            response = msg
                            break
                        # Not ours: cannot happen with one call at a time; ignored.
                    elif type(msg) is list and len(msg) == 3 and msg[0] == 2:
                        if msg[1] == "error":
                            # A fatal error on this connection; the manager closes it next.
                            raise errors.from_wire(msg[2])
                        # Any other notification is ignored.
        except BaseException as e:
            self._break()
            if isinstance(e, OSError) and not isinstance(e, ConnectionLost):
                raise ConnectionLost(
                    f"lost the connection to the agora manager at {self.client.address}: {e}"
                ) from e
            if isinstance(e, (ValueError, msgpack.UnpackException)):
                raise ProtocolError(f"cannot read the manager's response: {e}") from e
            raise
        error = response[2]
        if error is None:
            return response[3]
        exception = errors.from_wire(error)
        if isinstance(exception, (errors.LimitError, ProtocolError)):
            # The manager closes the connection after these: open a new one next time.
            self._break()
        raise exception

    def _receive(self, method: str) -> int:
        """Reads what has arrived into the buffer, polling for up to the spin budget before
        sleeping in ``recv`` (the caller is about to wait for the reply to ``method``)."""
        sock, buffer = self._sock, self._buffer
        if not self._spin:
            return sock.recv_into(buffer)
        backoff = self._backoff_wait if method in MAY_WAIT else self._backoff_quick
        if backoff[0]:
            backoff[0] -= 1
            return sock.recv_into(buffer)
        clock = time.perf_counter
        last = clock()
        deadline = last + self._spin
        stalled = False
        while True:
            try:
                n = sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
                # Polling paid off unless the CPU went to someone else meanwhile (perhaps
                # the manager, sharing this CPU): then sleeping would have served as well.
                if stalled:
                    self._back_off(backoff)
                else:
                    backoff[1] = 0
                return n
            except BlockingIOError:
                now = clock()
                stalled = stalled or now - last > _SPIN_STALL
                if now >= deadline:
                    break
                # Lets a process waiting for this CPU (perhaps the manager) run first.
                os.sched_yield()
                last = clock()
                stalled = stalled or last - now > _SPIN_STALL
        self._back_off(backoff)
        return sock.recv_into(buffer)

    @staticmethod
    def _back_off(backoff: list) -> None:
        backoff[1] = min(max(backoff[1] * 2, 1), _SPIN_MAX_BACKOFF)
        backoff[0] = backoff[1]

    def _break(self) -> None:
        self.close()
        self.client._forget(self)

    def close(self) -> None:
        """Closes the socket (the manager then releases what this connection held)."""
        if not self._closed:
            self._closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    @property
    def closed(self) -> bool:
        """True once the connection is closed or broken."""
        return self._closed

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Client:
    """A manager as seen from this process: its address, authkey and per-thread connections.

    Get one with :func:`client_for`; proxies share the client of their manager.
    """

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._local = threading.local()
        self._connections: "weakref.WeakSet[Connection]" = weakref.WeakSet()
        self._guard = threading.Lock()
        #: The agora.Manager that started this manager, kept alive while this client is.
        self._owner: Optional[Any] = None
        #: How long (seconds) a call polls for its reply before sleeping, for connections
        #: opened from now on: ``AGORA_SPIN_US``, or ``agora.Manager(spin_us=...)``.
        self.spin = _SPIN
        #: The run of the manager as the latest connection found it (``None`` before the
        #: first). Proxies made now belong to it; a manager restarted at the same address is
        #: another run, and the proxies of the old one refuse to call it.
        self.run: Optional[str] = None
        #: When that run started (Unix seconds; 0 before the first connection).
        self.started = 0

    def connection(self) -> Connection:
        """This thread's connection, opened on first use."""
        try:
            return self._local.conn
        except AttributeError:
            pass
        conn = Connection(self)
        self._local.conn = conn
        with self._guard:
            self._connections.add(conn)
        return conn

    def call(self, method: str, *params: Any) -> Any:
        """Calls ``method`` with ``params`` on this thread's connection."""
        try:
            conn = self._local.conn
        except AttributeError:
            conn = self.connection()
        return conn.call(method, params)

    def close_thread_connection(self) -> None:
        """Closes this thread's connection, if it has one (the next call opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn._break()

    def close_all(self) -> None:
        """Closes every connection of this process to the manager."""
        with self._guard:
            conns = list(self._connections)
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _forget(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn

    def _after_fork_in_child(self) -> None:
        # The sockets are shared with the parent: closing our copies leaves the parent's
        # connections alone, and lets the manager see the parent go when it does.
        for conn in list(self._connections):
            conn.close()
        self._connections = weakref.WeakSet()
        self._local = threading.local()
        self._guard = threading.Lock()

    # --- codec hooks -------------------------------------------------------------------------

    def _encode_default(self, obj: Any) -> Any:
        reference = getattr(obj, "_agora_reference", None)
        if reference is not None:
            address, kind, ident, run = reference()
            if address != self.address:
                raise TypeError(
                    f"cannot store a proxy of the manager at {address} in an object of the "
                    f"manager at {self.address}"
                )
            if run is not None and self.run is not None and run != self.run:
                # Its id names another object, or none, in this run.
                obj._check_run(self.run, self.started)
            return msgpack.ExtType(REFERENCE_EXT, msgpack.packb([kind, ident]))
        if not isinstance(obj, int) and isinstance(obj, numbers.Integral):
            return int(operator.index(obj))  # numpy integers, for instance: exact as an int
        if isinstance(obj, int):
            raise OverflowError(
                f"int out of range: agora stores integers from -2**63 to 2**64 - 1, not {obj}"
            )
        if isinstance(obj, (set, frozenset)):
            raise TypeError(
                f"agora cannot store a {type(obj).__name__}: values are MessagePack values "
                "(store it as a list or tuple)"
            )
        raise TypeError(
            f"agora cannot store a value of type {type(obj).__name__!r}: values are None, bool, "
            "int, float, str, bytes, list, tuple, dict, or a proxy of the same manager"
        )

    def _decode_ext(self, code: int, data: bytes) -> Any:
        if code == REFERENCE_EXT and proxy_factory is not None:
            try:
                kind, ident = msgpack.unpackb(data, raw=False)
                if isinstance(kind, str) and isinstance(ident, int):
                    proxy = proxy_factory(self, kind, ident)
                    if proxy is not None:
                        return proxy
            except Exception:  # never fail a whole response over one odd reference
                pass
        return msgpack.ExtType(code, data)

    def __repr__(self) -> str:
        return f"<agora.Client {self.address}>"


_clients: Dict[str, Client] = {}
_clients_guard = threading.Lock()


def client_for(address: AddressLike, authkey: Union[bytes, str]) -> Client:
    """The process-wide client of the manager at ``address`` (made on first use)."""
    address = parse_address(address)
    key = parse_authkey(authkey)
    with _clients_guard:
        client = _clients.get(address)
        if client is None or client.authkey != key:
            client = Client(address, key)
            _clients[address] = client
        return client


def _after_fork_in_child() -> None:
    global _clients_guard
    _clients_guard = threading.Lock()
    for client in list(_clients.values()):
        client._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
