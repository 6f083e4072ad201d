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

Each connection also keeps the counts of object references the manager made for it
(``PROTOCOL.md`` section 3.2), and the live proxies made from them; see :class:`Connection`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import numbers
import operator
import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from multiprocessing import util as mp_util
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    NoReturn,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
    Union,
    cast,
)

import msgpack

from . import errors
from .errors import (
    AuthenticationError,
    ConnectionLost,
    LimitError,
    ManagerTimeout,
    NotAManagerError,
    ProtocolError,
    ShutdownError,
    TLSError,
)

__all__ = [
    "Client",
    "Connection",
    "client_for",
    "parse_address",
    "parse_addresses",
    "parse_authkey",
]

_T = TypeVar("_T")

log = logging.getLogger("agora")

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1

def _parse_seconds(var: str, default: Optional[float]) -> Optional[float]:
    """The number of seconds in the environment variable ``var`` (``0`` or ``none``: no
    limit), ``default`` when it is unset; a ValueError naming the variable when malformed."""
    raw = os.environ.get(var)
    if raw is None:
        return default
    text = raw.strip()
    if text.lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a number of seconds (or none)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{var}={raw!r} is not a number of seconds >= 0")
    return seconds or None


class _Deadlines(threading.local):
    #: This thread's open ``deadline`` blocks, innermost last (``None``: never opened one).
    stack: Optional[List[float]] = None


_DEADLINES = _Deadlines()

_get_ident = threading.get_ident



#: The bytes that start an array or a map: fixmap, fixarray, array16/32, map16/32.
_CONTAINER_MARKERS = bytes(range(0x80, 0xA0)) + bytes([0xDC, 0xDD, 0xDE, 0xDF])

#: Every other byte: deleting them leaves the possible container headers, in one C pass.
_NOT_CONTAINER_MARKERS = bytes(b for b in range(256) if b not in _CONTAINER_MARKERS)

#: Bytes after the marker of a fixed-size value (ints, floats, nil, bools have none beyond it).
_FIXED = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}

#: Payload length prefix size, for str, bin and ext headers (ext adds a type byte).
_PAYLOAD = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}


def _nests_deeper(message: bytes, limit: int) -> bool:
    """True when ``message`` (one MessagePack value: a request) nests arrays and maps deeper
    than ``limit``, counting the request's own array as depth 1, as the manager does. A message
    with no more container headers than ``limit`` cannot: a message that short, or one whose
    possible headers (counted in one C pass) are that few, which is nearly every request; only
    the others are walked, here."""
    if len(message) <= limit:
        return False
    if len(message.translate(None, _NOT_CONTAINER_MARKERS)) <= limit:
        return False
    pending: List[int] = []  # items still due in each open container, innermost last
    pos, end = 0, len(message)
    while pos < end:
        marker = message[pos]
        pos += 1
        items = 0
        # An empty array or map one level too deep is refused too, as the manager does.
        if marker in _CONTAINER_MARKERS and len(pending) + 1 > limit:
            return True
        if 0x80 <= marker <= 0x8F:
            items = 2 * (marker & 0x0F)
        elif 0x90 <= marker <= 0x9F:
            items = marker & 0x0F
        elif marker in (0xDC, 0xDE):
            items = int.from_bytes(message[pos:pos + 2], "big") * (2 if marker == 0xDE else 1)
            pos += 2
        elif marker in (0xDD, 0xDF):
            items = int.from_bytes(message[pos:pos + 4], "big") * (2 if marker == 0xDF else 1)
            pos += 4
        elif 0xA0 <= marker <= 0xBF:
            pos += marker & 0x1F
        elif marker in _FIXED:
            pos += _FIXED[marker]
        elif marker in _PAYLOAD:
            n = _PAYLOAD[marker]
            pos += n + int.from_bytes(message[pos:pos + n], "big")
        elif marker in _EXT:
            n = _EXT[marker]
            pos += n + 1 + int.from_bytes(message[pos:pos + n], "big")
        elif 0xD4 <= marker <= 0xD8:
            pos += 1 + (1 << (marker - 0xD4))
        # Anything else (fixints, nil, bools) is the marker alone.
        if items:
            pending.append(items)
            continue
        # A value ended: it closes every container it was the last item of.
        while pending:
            pending[-1] -= 1
            if pending[-1]:
                break
            pending.pop()
    return False

class deadline:
    """``with agora.deadline(seconds):`` every call this thread makes inside the block that
    gets no answer within ``seconds`` raises :class:`agora.ManagerTimeout` (whatever the call,
    blocking ones included: prefer their own ``timeout`` argument, which the manager keeps).
    For a manager that may be stopped or hung. Blocks nest; the innermost wins."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"a deadline is a number of seconds > 0, not {seconds!r}")
        self.seconds = float(seconds)

    def __enter__(self) -> "deadline":
        stack = _DEADLINES.stack
        if stack is None:
            stack = _DEADLINES.stack = []
        stack.append(self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _DEADLINES.stack
        if stack:
            stack.pop()


def _thread_deadline() -> Optional[float]:
    stack = _DEADLINES.stack
    return stack[-1] if stack else None


#: The limits of PROTOCOL.md section 1.1 with their default values, for a manager whose
#: ``hello`` does not report its own.
DEFAULT_LIMITS: Dict[str, int] = {
    "max_message_bytes": 64 << 20,
    "max_depth": 128,
    "max_container_len": 16 << 20,
}

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

#: The most calls sent by :meth:`Connection.call_detached` whose replies may be unread at
#: once (as the Rust client): past it, such a call waits for its reply like any other.
MAX_DETACHED = 1024

#: The methods the manager may park (``PROTOCOL.md``, section 4.1).
MAY_WAIT = frozenset({
    "queue.get", "queue.put", "queue.get_many", "queue.put_many",
    "queue.get_acked", "queue.get_many_acked", "queue.join",
    "joinable_queue.get", "joinable_queue.put", "joinable_queue.get_many",
    "joinable_queue.put_many", "joinable_queue.join",
    "lock.acquire", "rlock.acquire", "semaphore.acquire", "bounded_semaphore.acquire",
    "condition.acquire", "condition.wait", "event.wait", "barrier.wait", "mutex.lock",
})

AddressLike = Union[str, Tuple[str, int]]


#: One manager address, or several managers serving the same objects: a string of addresses
#: separated by commas, or a list of addresses.
AddressList = Union[AddressLike, Sequence[AddressLike]]

#: What an address starts with: a part of a list after a comma that does not start with one
#: of them continues the Unix socket path before it.
_SCHEMES = ("unix:", "tcp:", "tls:")


def _parse_one(address: AddressLike) -> str:
    """The canonical spelling of one address (see :func:`parse_address`)."""
    if isinstance(address, tuple):
        host, port = address
        return f"tcp:[{host}]:{int(port)}" if ":" in host else f"tcp:{host}:{int(port)}"
    if not isinstance(address, str) or not address:
        raise TypeError(f"a manager address is 'unix:PATH' or 'tcp:HOST:PORT', not {address!r}")
    if address.startswith(_SCHEMES):
        return address
    if "/" in address or ":" not in address:
        return "unix:" + address
    raise ValueError(
        f"bad manager address {address!r}: expected 'unix:PATH', 'tcp:HOST:PORT' or "
        "'tls:HOST:PORT'"
    )


def _split_list(text: str) -> List[str]:
    """The entries of a comma-separated list of addresses, as written (spaces around them
    trimmed); a part that does not start with a scheme continues the socket path before it."""
    entries: List[str] = []
    for n, part in enumerate(text.split(","), 1):
        trimmed = part.strip()
        continues_path = trimmed and not trimmed.startswith(_SCHEMES)
        if continues_path and entries and entries[-1].startswith("unix:"):
            entries[-1] += "," + part.rstrip()
            continue
        if not trimmed:
            raise ValueError(
                f"bad manager address list {text!r}: entry {n} is empty (separate addresses "
                "with single commas, as 'unix:/PATH,tcp:HOST:PORT')"
            )
        entries.append(trimmed)
    return entries


def _is_pair(address: object) -> bool:
    return isinstance(address, tuple) and len(address) == 2 and isinstance(address[1], int)


def parse_addresses(address: AddressList) -> List[str]:
    """The canonical spelling of each address of ``address``, in order: one address (see
    :func:`parse_address`), a string of several separated by commas
    (``"unix:/run/a.sock, tcp:10.0.0.2:5555"``, as in ``AGORA_ADDRESS``), or a list of
    addresses. Refuses an empty entry, an empty list and an address listed twice.

    A Unix socket path may contain a comma, as long as no part after a comma starts with
    ``unix:``, ``tcp:`` or ``tls:``."""
    if isinstance(address, str):
        written: List[AddressLike] = list(_split_list(address))
    elif isinstance(address, (list, tuple)) and not _is_pair(address):
        written = list(address)
    else:
        written = [cast("AddressLike", address)]
    if not written:
        raise ValueError("no manager address: give at least one")
    entries: List[str] = []
    for n, one in enumerate(written, 1):
        entry = _parse_one(one)
        try:
            _sockaddr(entry)
        except ValueError as e:
            if len(written) == 1:
                raise
            raise ValueError(f"bad manager address list {address!r}: entry {n}: {e}") from None
        if entry in entries:
            raise ValueError(f"bad manager address list {address!r}: {entry} is listed twice")
        entries.append(entry)
    return entries


def parse_address(address: AddressList) -> str:
    """The canonical spelling (``unix:PATH``, ``tcp:HOST:PORT`` or ``tls:HOST:PORT``) of a
    manager address, or of a list of them (those spellings separated by commas: see
    :func:`parse_addresses`).

    Accepts those spellings, a ``(host, port)`` pair and a bare filesystem path (a Unix socket).
    """
    return ",".join(parse_addresses(address))


def _sockaddr(address: str) -> Tuple[int, Any]:
    if address.startswith("unix:"):
        return socket.AF_UNIX, address[len("unix:"):]
    scheme = address[:4]
    host, sep, port = address[len(scheme):].rpartition(":")
    if scheme not in ("tcp:", "tls:") or not sep or not port.isdigit():
        raise ValueError(
            f"bad manager address {address!r}: expected 'tcp:HOST:PORT' or 'tls:HOST:PORT'"
        )
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def _tls_ca_from_env() -> Optional[str]:
    """``AGORA_TLS_CA``: the path of a PEM file of CA certificates, or ``None`` when unset."""
    value = os.environ.get("AGORA_TLS_CA")
    if value is None:
        return None
    if not value.strip():
        raise ValueError(
            "AGORA_TLS_CA is empty: set it to the path of a PEM file of CA certificates, or "
            "unset it to trust the system's roots"
        )
    return value


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


def _pairs_to_dict(pairs: List[Any]) -> Any:
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

#: The methods whose success the manager counts as one more reference of the connection to the
#: object they name (``PROTOCOL.md`` section 3.2): the id is ``create``'s result and the first
#: param of the others.
COUNTED = frozenset({"create", "incref", "adopt"})

#: Raised instead of deadlocking when a thread starts a call while it is in the middle of
#: another on the same connection: a ``__del__`` method or a signal handler that uses a proxy.
_REENTERED = (
    "an agora call was made on a connection while this thread was in the middle of another "
    "call on it (from a __del__ method, a weakref callback or a signal handler?)"
)


class _Attach(threading.local):
    #: The connection a proxy made now on this thread is attached to: set while a proxy is
    #: made from a reference that connection counted (or as a twin of one of its proxies,
    #: ``agora.proxies._twin``). ``None``: the proxy holds nothing.
    home: Optional["Connection"] = None


_attach = _Attach()


def _resolve(conn: "Connection") -> "Connection":
    # A connection whose references were taken over by another forwards to it.
    while True:
        forward = conn._forward
        if forward is None:
            return conn
        conn = forward


def _small_request(limits: Dict[str, int]) -> int:
    """The size in bytes up to which a request is within every limit of ``limits`` whatever it
    holds (:meth:`Connection._check_limits` need not look at it): it cannot be over the size
    limit, nest deeper than the depth limit or hold a container longer than the length limit,
    each nesting level and element taking a byte at least."""
    return min(limits["max_message_bytes"], limits["max_depth"], limits["max_container_len"] - 1)


class Connection:
    """One authenticated socket to a manager, used by one thread at a time.

    It also keeps this process's side of the manager's reference counts (``PROTOCOL.md``
    section 3.2): per object id, ``[received, live]``, where ``received`` counts what the
    manager counted for this connection since this client last sent it a ``decref`` of the id
    (a ``create`` answered with it, an ``incref`` or ``adopt`` of it, and each reference to it
    in a successful response), and ``live`` the proxies attached to this connection (made from
    those references). When ``live`` drops to zero the id goes in a ``decref`` notification,
    with ``received`` as its count, written before the connection's next request or at once
    when the connection's lock is free.

    A proxy's ``__del__`` may run on any thread, in the middle of anything (even of a call on
    this connection, when the garbage collector runs): it only appends the id to ``_dead``
    and tries the lock without waiting. Everything else that touches the table, or writes to
    the socket, holds ``_lock``; the thread that made a call reads its reply without holding
    it, so that other threads can still write their ``decref`` notifications while a call is
    parked on the manager.
    """

    __slots__ = (
        "client",
        "address",
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
        "_poll_by",
        "_lock",
        "_owner",
        "_reader",
        "_sending",
        "_refs",
        "_dead",
        "_pending",
        "_detached",
        "_forward",
        "_orphaned",
        "run",
        "started",
        "limits",
        "_small",
        "_until",
        "_tls",
        "_timeout",
        "__weakref__",
    )

    def __init__(
        self, client: "Client", timeout: Optional[float] = None, address: Optional[str] = None
    ) -> None:
        """Connects and authenticates. ``timeout`` (seconds) bounds every socket operation of
        this connection; ``None``, the default, waits as long as a call takes. ``address`` is
        the one of the client's addresses to connect to (by default the one it is on)."""
        self.client = client
        #: The address of the manager this connection reaches.
        self.address = address if address is not None else client.current_address
        self._closed = True
        self._next_id = 0
        #: The id of the manager's run this connection reaches, and when it started (Unix
        #: seconds), as ``hello`` reported them.
        self.run = ""
        self.started = 0
        #: What the manager takes of an authenticated connection, as ``hello`` reported it
        #: (``max_message_bytes``, ``max_depth``, ``max_container_len``); the protocol's
        #: defaults for a manager that does not report them.
        self.limits: Dict[str, int] = dict(DEFAULT_LIMITS)
        self._small = _small_request(self.limits)
        #: When the call being read must have its answer (``time.monotonic()``), if ever.
        self._until: Optional[float] = None
        # Held to write to the socket or to change the tables below; _owner is the holder's
        # thread id (0: free), so that a thread never waits for itself.
        self._lock = threading.Lock()
        self._owner = 0
        #: The thread reading a reply on this connection (0: none).
        self._reader = 0
        #: True while a write is under way: a write cut short leaves half a message behind.
        self._sending = False
        #: id -> [received, live] (see the class docstring).
        self._refs: Dict[int, List[int]] = {}
        #: Ids one of whose proxies was collected, not yet taken off ``live``.
        self._dead: Deque[int] = deque()
        #: Ids whose ``live`` reached zero: the next decref (ordered, as a set).
        self._pending: Dict[int, None] = {}
        #: The msgids of the calls sent without waiting for their replies
        #: (:meth:`call_detached`), whose replies the next call reads and drops.
        self._detached: Set[int] = set()
        #: The connection that took over this one's references (see Client._orphans).
        self._forward: Optional[Connection] = None
        #: Closed with proxies still attached, whose references another connection of this
        #: client must adopt (after an interrupted call, or in a forked child).
        self._orphaned = False
        family, target = _sockaddr(self.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout if timeout is not None else client.connect_timeout)
        try:
            sock.connect(target)
        except OSError as e:
            sock.close()
            raise ConnectionLost(
                f"cannot connect to the agora manager at {self.address}: {e}"
            ) from e
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        #: The connection speaks TLS (a ``tls:`` address).
        self._tls = self.address.startswith("tls:")
        if self._tls:
            sock = self._tls_handshake(sock, target[0])
        self._timeout = timeout
        sock.settimeout(timeout)
        self._sock = sock
        self._closed = False
        # A socket with a timeout waits in poll() even for MSG_DONTWAIT: never spin on one.
        # Nor on TLS: an SSL socket takes no MSG_DONTWAIT, and the socket being readable does
        # not mean that a whole record, which is what decrypts, has arrived.
        self._spin = client.spin if timeout is None and not self._tls else 0.0
        # [replies left to read without polling, what that becomes after the next miss]
        self._backoff_quick = [0, 0]
        self._backoff_wait = [0, 0]
        #: Until when the call reading its reply may still poll for it (0.0: not any more).
        self._poll_by = 0.0
        # Responses are read into one buffer per connection: no allocation per call.
        self._buffer = bytearray(_RECV_CHUNK)
        self._view = memoryview(self._buffer)
        self._packer = msgpack.Packer(default=client._encode_default, use_bin_type=True)
        # Through a weak reference: a bound method would make a cycle, and the connection
        # would then close only when the cyclic garbage collector runs.
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=False,
            ext_hook=_ext_hook(weakref.ref(self)),
            object_pairs_hook=_pairs_to_dict,
            max_buffer_size=0,
        )
        try:
            self._handshake()
        except BaseException:
            self.close()
            raise

    def _tls_handshake(self, sock: socket.socket, host: str) -> ssl.SSLSocket:
        """The TLS handshake on the connected ``sock``, within the handshake timeout: the
        manager's certificate must be valid for ``host`` and signed by the CA of
        ``client.tls_ca`` (``AGORA_TLS_CA``) or, when there is none, by one the system
        trusts."""
        client = self.client
        sock.settimeout(client.handshake_timeout)
        try:
            cached = client._tls_context
            if cached is not None and cached[0] == client.tls_ca:
                context = cached[1]
            else:
                # Two threads may both build one here; either is as good, and an SSLContext
                # may be shared by connections of several threads.
                context = ssl.create_default_context(cafile=client.tls_ca)
                client._tls_context = (client.tls_ca, context)
            return context.wrap_socket(sock, server_hostname=host)
        except socket.timeout:
            sock.close()
            raise ManagerTimeout(
                f"the peer at {self.address} did not finish the TLS handshake within "
                f"{client.handshake_timeout} s (AGORA_HANDSHAKE_TIMEOUT)"
            ) from None
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise TLSError(
                f"TLS with the agora manager at {self.address} failed: its certificate is "
                f"not valid for this address ({e.verify_message}): a certificate signed by a "
                "private CA needs that CA's PEM file in AGORA_TLS_CA (or tls_ca=); the host "
                "in the address must be a name or address the certificate is for"
            ) from e
        except (ssl.SSLError, ConnectionError) as e:
            sock.close()
            raise TLSError(
                f"TLS with the agora manager at {self.address} failed: {e} (does it serve "
                "TLS, started with --tls-cert and --tls-key, and not already --max-connections? "
                "A plain manager is reached at tcp:HOST:PORT)"
            ) from e
        except OSError as e:  # the CA file cannot be read
            sock.close()
            raise TLSError(
                f"TLS with the agora manager at {self.address} failed: cannot use the CA "
                f"file {client.tls_ca!r}: {e}"
            ) from e

    def _handshake(self) -> None:
        client = self.client
        bounds = (client.handshake_timeout, client.call_timeout, _thread_deadline())
        within = min((s for s in bounds if s is not None), default=None)
        not_a_manager = (
            f"the peer at {self.address} is not an agora manager (is AGORA_ADDRESS right?)"
        )
        try:
            hello = self.call("hello", (), _within=within)
        except ManagerTimeout:
            raise ManagerTimeout(
                f"the peer at {self.address} did not answer hello within {within} s: a "
                "stopped or hung manager, or not an agora manager (AGORA_HANDSHAKE_TIMEOUT)"
            ) from None
        except (ShutdownError, LimitError):
            raise  # a manager refusing the connection says why
        except (ConnectionLost, ProtocolError) as e:
            raise NotAManagerError(f"{not_a_manager}: it did not answer hello ({e})") from None
        if not isinstance(hello, dict) or not isinstance(hello.get("challenge"), bytes):
            raise NotAManagerError(f"{not_a_manager}: its answer to hello is {hello!r}")
        if hello.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(
                f"the manager at {self.address} speaks protocol {hello.get('protocol')!r}, "
                f"this client speaks {PROTOCOL_VERSION}"
            )
        run, started = hello.get("run"), hello.get("started")
        if not isinstance(run, str) or not isinstance(started, int):
            raise ProtocolError(
                f"the manager at {self.address} does not report its run and start time "
                "in hello: it is older than this client; run the agora-manager of this version"
            )
        limits = hello.get("limits")
        if isinstance(limits, dict):
            for name in DEFAULT_LIMITS:
                if isinstance(limits.get(name), int):
                    self.limits[name] = limits[name]
        self._small = _small_request(self.limits)
        digest = hmac.new(self.client.authkey, hello["challenge"], hashlib.sha256).digest()
        try:
            self.call("auth", (digest,), _within=within)
        except AuthenticationError as e:
            if not str(e).startswith("wrong digest"):
                raise
            raise AuthenticationError(
                f"the agora manager at {self.address} refused the authkey "
                f"({client.authkey_from}): it is not the manager's authkey"
            ) from None
        self.run, self.started = run, started
        self.client.run, self.client.started = run, started
        log.debug("connected to %s (manager %s)", self.address, hello.get("version"))

    def _check_limits(self, request: bytes) -> None:
        """Raises :class:`LimitError` for a request the manager would close the connection for:
        the connection stays usable, and nothing was sent."""
        size, most = len(request), self.limits["max_message_bytes"]
        if size > most:
            raise LimitError(
                f"the request is {size} bytes, over the manager's limit of {most} "
                "(max_message_bytes); nothing was sent and the connection is fine (the "
                "manager's operator sets the limit with --max-message-bytes)",
                "max_message_bytes",
                most,
                size,
            )
        deepest = self.limits["max_depth"]
        if _nests_deeper(request, deepest):
            raise LimitError(
                f"the request nests arrays and maps deeper than the manager's limit of {deepest} "
                "(max_depth); nothing was sent and the connection is fine",
                "max_depth",
                deepest,
                None,
            )
        longest = self.limits["max_container_len"]
        if size < longest:  # every element takes a byte at least
            return
        try:
            msgpack.unpackb(
                request,
                max_array_len=longest,
                max_map_len=longest,
                max_bin_len=size,
                max_str_len=size,
                max_ext_len=size,
                ext_hook=lambda code, data: None,
                object_pairs_hook=list,
                strict_map_key=False,
            )
        except ValueError as e:
            raise LimitError(
                f"an array or map of the request has more than {longest} elements, over the "
                "manager's limit (max_container_len); nothing was sent and the connection is "
                f"fine ({e})",
                "max_container_len",
                longest,
                None,
            ) from None

    # --- locking -------------------------------------------------------------------------------

    def _enter(self, me: int) -> None:
        if self._owner == me:
            raise RuntimeError(_REENTERED)
        self._lock.acquire()
        self._owner = me

    def _leave(self) -> None:
        self._owner = 0
        self._lock.release()
        # Checked after the release: a proxy that went while the lock was held could not
        # write its decref, and nobody else may come to write it.
        if self._dead or self._pending:
            self._try_flush()

    # --- calls ---------------------------------------------------------------------------------

    def _request(self, method: str, params: Sequence[Any]) -> Tuple[int, bytes]:
        """Takes the next msgid and packs the request, checked against the manager's limits,
        after the decrefs due (under the connection's lock). Packing fails (an unsupported
        value) before anything is sent: the connection stays good, the tables as they were."""
        msgid = self._next_id
        self._next_id = (msgid + 1) & 0xFFFFFFFF
        request = self._packer.pack((0, msgid, method, params))
        if len(request) > self._small:
            self._check_limits(request)
        if self._dead or self._pending or self.client._orphans:
            request = self._prelude(()) + request
        return msgid, request

    def call(
        self,
        method: str,
        params: Sequence[Any],
        make: Optional[Callable[[Any], Any]] = None,
        _within: Optional[float] = None,
    ) -> Any:
        """Sends one request and returns its result, or raises the error it got.

        For the methods the manager counts (:data:`COUNTED`), ``make`` turns the result into
        the proxy that holds the reference, atomically with counting it, and ``call`` returns
        what ``make`` returned.

        The answer must come within ``_within`` seconds if given, else within the thread's
        :class:`deadline`, else, for a call the manager does not park, within the client's
        ``call_timeout``; otherwise :class:`ManagerTimeout` (and the connection closes)."""
        # The per-call path is inlined (the lock, the limits, the write): each Python-level
        # call it saves is a sizeable part of a call's own cost.
        # A chain waits as its first call does (PROTOCOL.md section 4.16).
        waits_as = params[0][0] if method == "chain" else method
        within = _within
        if within is None:
            stack = _DEADLINES.stack
            if stack:
                within = stack[-1]
            elif waits_as not in MAY_WAIT:
                within = self.client.call_timeout
        me = _get_ident()
        if self._reader == me or self._owner == me:
            raise RuntimeError(_REENTERED)
        lock = self._lock
        lock.acquire()
        self._owner = me
        try:
            if self._closed:
                raise ConnectionLost(f"the connection to {self.address} is closed")
            msgid, request = self._request(method, params)
            self._sending = True
            try:
                self._sock.sendall(request)
            except BaseException as e:
                self._write_failed(e)
                raise
            self._sending = False
        finally:
            self._owner = 0
            lock.release()
            # Checked after the release, as in _leave.
            if self._dead or self._pending:
                self._try_flush()
        self._reader = me
        self._until = None if within is None else time.monotonic() + within
        try:
            response = self._read_response(msgid, waits_as)
        except BaseException as e:
            self._reader = 0
            self._break(writable=_interrupted(e))
            if isinstance(e, OSError) and not isinstance(e, ConnectionLost):
                raise ConnectionLost(
                    f"lost the connection to the agora manager at {self.address}: {e}"
                ) from e
            if isinstance(e, (ValueError, msgpack.UnpackException)):
                raise ProtocolError(f"cannot read the manager's response: {e}") from e
            raise
        finally:
            self._reader = 0
            self._until = None
            if self._owner == me:  # taken while decoding a reference
                self._leave()
        error = response[2]
        if error is None:
            if method in COUNTED:
                ident = response[3] if method == "create" else params[0]
                return self._count(ident, response[3], make)
            return response[3]
        exception = errors.from_wire(error)
        if isinstance(exception, (errors.LimitError, ProtocolError)):
            # The manager closes the connection after these: open a new one next time.
            self._break()
        raise exception

    def _read_response(self, msgid: int, method: str) -> List[Any]:
        unpacker = self._unpacker
        # Calls that may wait keep their own back-off, so that a contended lock does not stop
        # the polling for the quick calls made while holding it.
        backoff = self._backoff_wait if method in MAY_WAIT else self._backoff_quick
        # Inlined _poll_plan for the usual case (no deadline, polling on, no back-off).
        if self._until is None and self._spin and not backoff[0]:
            self._poll_by = time.perf_counter() + self._spin
        else:
            self._poll_by = self._poll_plan(backoff)
        while True:
            n = self._receive(backoff)
            if not n:
                raise ConnectionLost(
                    f"the agora manager at {self.address} closed the connection"
                )
            unpacker.feed(self._view[:n])
            for msg in unpacker:
                if type(msg) is list and len(msg) == 4 and msg[0] == 1:
                    if msg[1] == msgid:
                        if self._poll_by:  # found by polling, the CPU ours all along
                            backoff[1] = 0
                        return msg
                    # Not ours: the answer to a request sent without waiting (export, adopt,
                    # call_detached).
                    if self._detached:
                        self._drop_detached(msg)
                elif type(msg) is list and len(msg) == 3 and msg[0] == 2:  # noqa: SIM102
                    if msg[1] == "error":
                        # A fatal error on this connection; the manager closes it next.
                        raise errors.from_wire(msg[2])
                    # Any other notification is ignored.

    def _drop_detached(self, msg: List[Any]) -> None:
        """Drops the reply ``msg`` to a call sent by :meth:`call_detached`; an error it carries
        is logged, since nobody waits for it."""
        msgid = msg[1]
        if msgid in self._detached:
            self._detached.discard(msgid)
            if msg[2] is not None:
                e = errors.from_wire(msg[2])
                log.warning(
                    "a call sent without waiting for its reply failed: %s: %s",
                    type(e).__name__,
                    e,
                )

    def call_detached(self, method: str, params: Sequence[Any]) -> None:
        """Sends one request without waiting for its reply: the manager runs a connection's
        calls in order, so whatever this connection sends next runs after it. The reply is
        read and dropped with the next call's (an error in it is logged). For a release at
        the end of a ``with`` block, which then costs no round trip.

        Past :data:`MAX_DETACHED` replies still unread, it first reads them all with one
        round trip: a program that releases many times without another call in between never
        lets the manager's replies pile up until it stops reading this connection."""
        self.calls_detached(((method, params),))

    def calls_detached(self, calls: Sequence[Tuple[str, Sequence[Any]]]) -> None:
        """:meth:`call_detached` for several calls, written together (one system call): they
        run in their order, each on its own (one failing does not stop the next)."""
        if len(self._detached) + len(calls) > MAX_DETACHED:
            # A ping's reply comes after every unread one (the manager answers a connection's
            # calls in order), and reading up to it drops and logs them. The calls themselves
            # are still sent detached: waiting for them would raise their error here, where
            # the caller was promised it is only logged.
            self.call("ping", ())
        me = threading.get_ident()
        if self._reader == me:
            raise RuntimeError(_REENTERED)
        self._enter(me)
        try:
            if self._closed:
                raise ConnectionLost(f"the connection to {self.address} is closed")
            requests = [self._request(method, params) for method, params in calls]
            self._write(b"".join(request for _, request in requests))
            self._detached.update(msgid for msgid, _ in requests)
        finally:
            self._leave()

    def _write(self, data: bytes) -> None:
        """Writes ``data`` (the lock held). A write that fails or is interrupted may have
        left half a message on the stream: the connection is closed."""
        if not data:
            return
        self._sending = True
        try:
            self._sock.sendall(data)
        except BaseException as e:
            self._write_failed(e)
            raise
        self._sending = False

    def _write_failed(self, e: BaseException) -> None:
        """A write failed with ``e`` or was interrupted (the lock held): the connection is
        closed, and an ``OSError`` is raised as :class:`ConnectionLost` (else the caller
        re-raises ``e``)."""
        self._break()
        if isinstance(e, OSError) and not isinstance(e, ConnectionLost):
            raise ConnectionLost(
                f"lost the connection to the agora manager at {self.address}: {e}"
            ) from e

    def send_without_reply(self, method: str, idents: Iterable[int]) -> None:
        """Writes one ``[method, [id]]`` request per id without waiting for the answers (the
        reader of this connection skips them): for ``export`` and ``adopt``, whose effect is
        ordered before whatever this connection sends next. Counted methods are counted as
        if they succeeded: a ``decref`` of an object that failed is harmless."""
        me = threading.get_ident()
        self._enter(me)
        try:
            if self._closed:
                return
            self._write(self._prelude(self._requests(method, idents)))
        finally:
            self._leave()

    def _requests(self, method: str, idents: Iterable[int]) -> List[bytes]:
        out = []
        counted = method in COUNTED
        for ident in idents:
            msgid = self._next_id
            self._next_id = (msgid + 1) & 0xFFFFFFFF
            out.append(self._packer.pack((0, msgid, method, (ident,))))
            if counted:
                entry = self._refs.get(ident)
                if entry is None:
                    entry = self._refs[ident] = [0, 0]
                    self._pending[ident] = None  # no proxy here holds it: give it back
                entry[0] += 1
        return out

    def _prelude(self, requests: Sequence[bytes]) -> bytes:
        """What goes before the next request (the lock held): the ``adopt`` requests that take
        over orphaned references, ``requests``, then the pending decrefs, in one buffer."""
        parts: List[bytes] = []
        if self.client._orphans and self.run:
            parts.extend(self._requests("adopt", self._take_over()))
        parts.extend(requests)
        parts.append(self._decref_message())
        return b"".join(parts)

    # --- references ----------------------------------------------------------------------------

    def _count(self, ident: Any, result: Any, make: Optional[Callable[[Any], Any]]) -> Any:
        """Counts one reference to ``ident`` received with ``result`` and runs ``make`` on it,
        as one step: no decref of ``ident`` can slip in between."""
        if type(ident) is not int:
            return result if make is None else make(result)
        me = threading.get_ident()
        self._enter(me)
        try:
            entry = self._reserve(ident)
            try:
                if make is None:
                    return result
                _attach.home = self
                try:
                    return make(result)
                finally:
                    _attach.home = None
            finally:
                self._unreserve(entry, ident)
        finally:
            self._leave()

    def _reserve(self, ident: int) -> List[int]:
        # One more reference received, plus a live count held until the proxy exists, so that
        # the id cannot be decref'd in between (the lock held).
        entry = self._refs.get(ident)
        if entry is None:
            entry = self._refs[ident] = [0, 0]
        entry[0] += 1
        entry[1] += 1
        return entry

    def _unreserve(self, entry: List[int], ident: int) -> None:
        entry[1] -= 1
        if entry[1] <= 0:
            self._pending[ident] = None  # no proxy was made: give the reference back

    def _decode_ext(self, code: int, data: bytes) -> Any:
        """The unpacker's hook: a reference becomes a proxy attached to this connection, and is
        counted whether or not this client knows its kind."""
        if code != REFERENCE_EXT:
            return msgpack.ExtType(code, data)
        try:
            kind, ident = msgpack.unpackb(data, raw=False)
        except Exception:  # never fail a whole response over one odd reference
            return msgpack.ExtType(code, data)
        if not isinstance(kind, str) or type(ident) is not int:
            return msgpack.ExtType(code, data)
        me = threading.get_ident()
        if self._owner != me:
            # Kept until the whole reply is read (call() releases it): one acquire per reply.
            self._lock.acquire()
            self._owner = me
        entry = self._reserve(ident)
        proxy = None
        try:
            factory = proxy_factory
            if factory is not None:
                _attach.home = self
                try:
                    proxy = factory(self.client, kind, ident)
                finally:
                    _attach.home = None
        except Exception:  # a reference this client cannot make a proxy of stays an ExtType
            proxy = None
        finally:
            self._unreserve(entry, ident)
        return msgpack.ExtType(code, data) if proxy is None else proxy

    def track(self, ident: int) -> "Connection":
        """Attaches one more proxy of ``ident`` to this connection (or to the one that took its
        references over); returns the connection it is attached to."""
        me = threading.get_ident()
        conn = _resolve(self)
        if conn._closed and not conn._orphaned:
            return conn  # what it held went with it: nothing to count
        if conn._owner == me:  # making the proxy of a reference just counted
            entry = conn._refs.get(ident)
            if entry is None:
                entry = conn._refs[ident] = [0, 0]
            entry[1] += 1
            return conn
        while True:
            conn._enter(me)
            try:
                if conn._forward is None:
                    entry = conn._refs.get(ident)
                    if entry is None:
                        entry = conn._refs[ident] = [0, 0]
                    entry[1] += 1
                    return conn
            finally:
                conn._leave()
            conn = _resolve(conn)

    def proxy_died(self, ident: int) -> None:
        """Called by a proxy's ``__del__``, on any thread and at any moment: only queues the id,
        then writes the decref if the lock is free."""
        conn = _resolve(self)
        if conn._closed and not conn._orphaned:
            return  # what the connection held went with it
        conn._dead.append(ident)
        if conn._forward is not None:
            # Taken over meanwhile: the takeover may have read _dead already.
            _move_dead(conn)
            return
        if not conn._orphaned:
            conn._try_flush()

    def _drain_dead(self) -> None:
        # Takes the collected proxies off their live counts (the lock held).
        dead, refs, pending = self._dead, self._refs, self._pending
        while dead:
            ident = dead.popleft()
            entry = refs.get(ident)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    pending[ident] = None

    def _decref_message(self) -> bytes:
        """The ``decref`` notification of every id whose proxies are all gone, its entries
        removed; empty when there is none (the lock held)."""
        self._drain_dead()
        pending = self._pending
        if not pending:
            return b""
        batch = []
        refs = self._refs
        for ident in pending:
            entry = refs.get(ident)
            if entry is None or entry[1] > 0:
                continue  # a proxy of it came back since
            del refs[ident]
            if entry[0] > 0:
                batch.append((ident, entry[0]))
        pending.clear()
        if not batch:
            return b""
        # Each pair is one param (PROTOCOL.md, section 3.2).
        return cast("bytes", self._packer.pack((2, "decref", batch)))

    def _try_flush(self) -> None:
        """Writes the pending decrefs now, if the lock is free (else its holder will)."""
        while (self._dead or self._pending) and not self._closed:
            if not self._lock.acquire(False):
                return
            self._owner = threading.get_ident()
            try:
                self._write(self._decref_message())
            except Exception:  # the connection is closed: what it held went with it
                pass
            finally:
                self._owner = 0
                self._lock.release()

    def export_live(self, done: Set[int]) -> None:
        """Exports every object this connection has live proxies of and that is not in
        ``done`` (then added to it), without waiting for the answers: before a fork, so that
        the objects outlive the parent dropping its proxies until the child adopts them."""
        me = threading.get_ident()
        if self._owner == me or self._closed or self._forward is not None:
            return
        self._enter(me)
        try:
            if self._closed:
                return
            self._drain_dead()
            idents = [i for i, e in self._refs.items() if e[1] > 0 and i not in done]
            done.update(idents)
            self._write(self._prelude(self._requests("export", idents)))
        finally:
            self._leave()

    def _take_over(self) -> List[int]:
        """Takes over the references of the client's orphaned connections of this run (the lock
        held): their proxies now count here. Returns the ids to adopt."""
        client = self.client
        with client._guard:
            orphans, client._orphans = client._orphans, []
        adopt: List[int] = []
        me = threading.get_ident()
        for orphan in orphans:
            orphan._enter(me)
            try:
                orphan._drain_dead()
                live = [(i, e[1]) for i, e in orphan._refs.items() if e[1] > 0]
                orphan._refs.clear()
                orphan._pending.clear()
                orphan._orphaned = False
                if orphan.run != self.run:
                    continue  # its ids name nothing in this run; its proxies say so when used
                orphan._forward = self
            finally:
                orphan._owner = 0
                orphan._lock.release()
            _move_dead(orphan)
            for ident, count in live:
                entry = self._refs.get(ident)
                if entry is None:
                    entry = self._refs[ident] = [0, 0]
                entry[1] += count
                adopt.append(ident)
        return adopt

    def take_over_now(self) -> None:
        """Adopts the orphaned references of the client at once, without waiting for a call."""
        self.send_without_reply("adopt", ())

    # --- closing -------------------------------------------------------------------------------

    def _break(self, writable: bool = False) -> None:
        """Closes a connection that cannot be used any more (its stream is in an unknown state).

        Its proxies keep their objects: when the stream still takes a whole message
        (``writable``: the call was interrupted, not the connection lost), an ``export`` of
        each of their objects goes first, so that none is freed when the manager drops this
        connection's counts; the next connection of this client adopts them."""
        me = threading.get_ident()
        held = self._owner == me
        if not held:
            self._lock.acquire()
            self._owner = me
        try:
            if self._closed:
                return
            self._drain_dead()
            live = [ident for ident, entry in self._refs.items() if entry[1] > 0]
            if writable and live and not self._sending:
                try:
                    self._sock.sendall(b"".join(self._requests("export", live)))
                except Exception:  # lost after all: the objects may be gone with it
                    pass
            self._close_socket()
            self._pending.clear()
            self._detached.clear()
            if live and self.run:
                self._orphaned = True
                with self.client._guard:
                    self.client._orphans.append(self)
            else:
                self._refs.clear()
                self._dead.clear()
        finally:
            if not held:
                self._owner = 0
                self._lock.release()
        if not writable:
            self.client._failed(self.address)
        self.client._forget(self)

    def _close_socket(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """Closes the socket (the manager then releases what this connection held, its
        references included: its proxies no longer hold their objects)."""
        self._close_socket()
        self._orphaned = False
        self._refs.clear()
        self._dead.clear()
        self._pending.clear()
        self._detached.clear()

    def _after_fork_in_child(self) -> bool:
        """In a forked child: closes this process's copy of the socket (the parent's stays
        open) and keeps the table if proxies are attached, for another connection to adopt.
        True when it does."""
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._owner = 0
        self._reader = 0
        self._sending = False
        self._close_socket()
        self._detached.clear()
        if self._forward is None:
            self._drain_dead()
            self._pending.clear()
            if any(entry[1] > 0 for entry in self._refs.values()):
                self._orphaned = True
                return True
        self._orphaned = False
        self._refs.clear()
        self._dead.clear()
        return False

    def _poll_plan(self, backoff: List[int]) -> float:
        """Until when (``time.perf_counter()``) the call about to read its reply may poll for
        it, ``0.0`` when it sleeps in ``recv`` at once: a call with a deadline, polling off,
        or one of the calls ``backoff`` (that kind's back-off) still skips polling for."""
        if self._until is not None or not self._spin:
            return 0.0
        if backoff[0]:
            backoff[0] -= 1
            return 0.0
        return time.perf_counter() + self._spin

    def _receive(self, backoff: List[int]) -> int:
        """Reads what has arrived into the buffer, polling until ``_poll_by`` (the budget of
        the call whose reply is awaited, shared by all its reads) before sleeping in ``recv``.
        A poll that times out, or during which the CPU went elsewhere, backs off ``backoff``
        and ends the call's polling; a poll that only finds the replies of detached calls
        is no hit: :meth:`_read_response` counts one when the awaited reply comes."""
        sock, buffer = self._sock, self._buffer
        if self._until is not None:
            return self._receive_by(self._until)
        deadline = self._poll_by
        if not deadline:
            return sock.recv_into(buffer)
        clock = time.perf_counter
        last = clock()
        stalled = False
        while True:
            try:
                n = sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
                # Polling paid off unless the CPU went to someone else meanwhile (perhaps
                # the manager, sharing this CPU): then sleeping would have served as well.
                if stalled:
                    self._back_off(backoff)
                    self._poll_by = 0.0
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
        self._poll_by = 0.0
        return sock.recv_into(buffer)

    def _receive_by(self, until: float) -> int:
        """Reads what has arrived, waiting until ``until`` (``time.monotonic()``) at most."""
        if self._tls:
            return self._receive_tls_by(until)
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            if poller.poll(max(1, int(left * 1000 + 0.999))):
                return self._sock.recv_into(self._buffer)
        self._deadline_passed()

    def _receive_tls_by(self, until: float) -> int:
        """:meth:`_receive_by` on TLS, where what was decrypted already comes first and a
        record may arrive in parts: the read itself is bounded by the time left."""
        sock = self._sock
        if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
            left = until - time.monotonic()
            if left <= 0:
                self._deadline_passed()
            sock.settimeout(left)
        try:
            return sock.recv_into(self._buffer)
        except socket.timeout:
            self._deadline_passed()
        finally:
            sock.settimeout(self._timeout)

    def _deadline_passed(self) -> NoReturn:
        raise ManagerTimeout(
            f"the agora manager at {self.address} did not answer within the deadline: "
            "it may be stopped or hung; the connection is closed"
        )

    @staticmethod
    def _back_off(backoff: List[int]) -> None:
        backoff[1] = min(max(backoff[1] * 2, 1), _SPIN_MAX_BACKOFF)
        backoff[0] = backoff[1]

    @property
    def closed(self) -> bool:
        """True once the connection is closed or broken."""
        return self._closed

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _move_dead(conn: Connection) -> None:
    """Hands the collected proxies queued on ``conn`` on to the connection that took over its
    references."""
    target = _resolve(conn)
    if target is conn:
        return
    while True:
        try:
            ident = conn._dead.popleft()
        except IndexError:
            break
        target._dead.append(ident)
    if not target._orphaned:
        target._try_flush()


def _interrupted(e: BaseException) -> bool:
    """True when ``e`` came from outside the stream (a signal handler, ``KeyboardInterrupt``):
    the connection can still take whole messages before it is closed."""
    return not isinstance(e, (OSError, ValueError, msgpack.UnpackException, errors.AgoraError))


def _ext_hook(ref: "weakref.ReferenceType[Connection]") -> Callable[[int, bytes], Any]:
    def hook(code: int, data: bytes) -> Any:
        conn = ref()
        if conn is None:
            return msgpack.ExtType(code, data)
        return conn._decode_ext(code, data)

    return hook


class Client:
    """A manager as seen from this process: its address, authkey and per-thread connections.

    Get one with :func:`client_for`; proxies share the client of their manager.

    It may have several addresses: managers that serve the same objects (one store, one
    run). Each new connection goes to the first that answers, starting from the one the
    client is on, or from the next one when the connection to that one broke, and round the
    list; when none answers it raises :class:`agora.ConnectionLost` naming each address and
    why. A call in flight when its connection broke fails, and is never sent again.
    """

    def __init__(self, address: AddressList, authkey: bytes) -> None:
        #: Every address, in the order they are tried.
        self.addresses = parse_addresses(address)
        #: Them all, separated by commas: what tells this client from another one.
        self.address = ",".join(self.addresses)
        #: The index in ``addresses`` of the manager new connections try first.
        self._current = 0
        #: The address the latest connection reached, for the log line saying it moved.
        self._reached: Optional[str] = None
        self.authkey = authkey
        self._local = threading.local()
        self._connections: "weakref.WeakSet[Connection]" = weakref.WeakSet()
        self._guard = threading.Lock()
        #: Closed connections whose proxies still hold references (``Connection._orphaned``),
        #: waiting for the next call of any thread to adopt them on its own connection.
        self._orphans: List[Connection] = []
        #: The agora.Manager that started this manager, kept alive while this client is.
        self._owner: Optional[Any] = None
        #: How long (seconds) a call polls for its reply before sleeping, for connections
        #: opened from now on: ``AGORA_SPIN_US``, or ``agora.Manager(spin_us=...)``.
        self.spin = _SPIN
        #: Where the authkey came from, for error messages.
        self.authkey_from = "given to agora.connect or agora.Manager"
        #: Seconds a new connection may take to connect (``AGORA_CONNECT_TIMEOUT``, 10 by
        #: default), then to answer ``hello`` and ``auth`` (``AGORA_HANDSHAKE_TIMEOUT``, 10);
        #: ``None``: no limit.
        self.connect_timeout = _parse_seconds("AGORA_CONNECT_TIMEOUT", 10.0)
        self.handshake_timeout = _parse_seconds("AGORA_HANDSHAKE_TIMEOUT", 10.0)
        #: Seconds a call the manager does not park may wait for its answer
        #: (``AGORA_CALL_TIMEOUT``; ``None``, the default: no limit). See :class:`deadline`.
        self.call_timeout = _parse_seconds("AGORA_CALL_TIMEOUT", None)
        #: For a ``tls:`` address: a PEM file of the CA certificates the manager's certificate
        #: must be signed by (``AGORA_TLS_CA``); ``None``: those the system trusts. Read only
        #: for such an address: a unix: or tcp: manager never uses it, so a stray empty
        #: AGORA_TLS_CA must not stop a program from reaching one.
        uses_tls = any(a.startswith("tls:") for a in self.addresses)
        self.tls_ca: Optional[str] = _tls_ca_from_env() if uses_tls else None
        #: The TLS context of this client's connections, with the ``tls_ca`` it was built
        #: from: loading the CA certificates (the system's bundle by default) takes tens of
        #: milliseconds, too much to pay on every connection of every thread.
        self._tls_context: Optional[Tuple[Optional[str], ssl.SSLContext]] = None
        #: The run of the manager as the latest connection found it (``None`` before the
        #: first). Proxies made now belong to it; a manager restarted at the same address is
        #: another run, and the proxies of the old one refuse to call it.
        self.run: Optional[str] = None
        #: When that run started (Unix seconds; 0 before the first connection).
        self.started = 0

    def connection(self) -> Connection:
        """This thread's connection, opened on first use (and again once it is closed)."""
        conn: Optional[Connection] = getattr(self._local, "conn", None)
        if conn is not None and not conn._closed:
            return conn
        conn = self._open()
        self._local.conn = conn
        with self._guard:
            self._connections.add(conn)
        return conn

    @property
    def current_address(self) -> str:
        """The address of the manager new connections try first: the one the client is on."""
        return self.addresses[self._current]

    def _open(self) -> Connection:
        """A new connection to the first of the addresses that answers, from the current one
        round the list; raises the only address's error, or one naming every address."""
        start, count = self._current, len(self.addresses)
        failures: List[Tuple[str, Exception]] = []
        for step in range(count):
            at = (start + step) % count
            address = self.addresses[at]
            try:
                conn = Connection(self, address=address)
            except (ConnectionLost, NotAManagerError, TLSError, AuthenticationError,
                    ProtocolError, LimitError) as e:
                log.debug("no agora manager answered at %s: %s", address, e)
                failures.append((address, e))
                continue
            with self._guard:
                self._current = at
                moved = self._reached is not None and self._reached != address
                self._reached = address
            if moved:
                log.info("moved to the agora manager at %s", address)
            return conn
        if count == 1:
            raise failures[0][1]
        each = "; ".join(f"({n}) {e}" for n, (_, e) in enumerate(failures, 1))
        raise ConnectionLost(
            f"no agora manager answered at any of the {count} addresses: {each}"
        ) from failures[-1][1]

    def _failed(self, address: str) -> None:
        """The connection to ``address`` broke: new connections start from the next address
        (other threads' connections to it are likely broken too)."""
        with self._guard:
            if self.addresses[self._current] == address:
                self._current = (self._current + 1) % len(self.addresses)

    def call(self, method: str, *params: Any) -> Any:
        """Calls ``method`` with ``params`` on this thread's connection."""
        return self.connection().call(method, params)

    def call_and_make(self, make: Callable[[Any], _T], method: str, *params: Any) -> _T:
        """Calls ``method`` (``create`` or ``adopt``) and turns the reference it counts into a
        proxy with ``make(result)``, atomically with counting it (see :meth:`Connection.call`)."""
        return cast("_T", self.connection().call(method, params, make))

    def close_thread_connection(self) -> None:
        """Closes this thread's connection, if it has one (the next call opens a new one, which
        adopts the references of this one's proxies)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn._break(writable=True)

    def close_all(self) -> None:
        """Closes every connection of this process to the manager (its proxies then hold
        nothing: the manager drops what the connections held)."""
        with self._guard:
            conns = list(self._connections)
            orphans, self._orphans = self._orphans, []
        for conn in conns + orphans:
            conn.close()
        self._local = threading.local()

    def _forget(self, conn: Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            del self._local.conn

    def _after_fork_in_child(self) -> None:
        # The sockets are shared with the parent: closing our copies leaves the parent's
        # connections alone, and lets the manager see the parent go when it does. Proxies
        # inherited from the parent count on none of this process's connections: the first
        # connection opened here adopts their objects (agora.connection._adopt_after_fork
        # does it at once in children that multiprocessing starts).
        conns = set(self._connections) | set(self._orphans)
        self._connections = weakref.WeakSet()
        self._local = threading.local()
        self._guard = threading.Lock()
        self._orphans = [conn for conn in conns if conn._after_fork_in_child()]

    def _export_before_fork(self) -> None:
        done: Set[int] = set()
        with self._guard:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.export_live(done)
            except Exception as e:  # never stop a fork: the child may not even use them
                log.debug("could not export the objects of %s before fork: %s", conn, e)

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

    def __repr__(self) -> str:
        return f"<agora.Client {self.address}>"


_clients: Dict[str, Client] = {}
_clients_guard = threading.Lock()


def client_for(address: AddressList, authkey: Union[bytes, str]) -> Client:
    """The process-wide client of the manager at ``address``, or of the managers at a list of
    addresses (made on first use)."""
    address = parse_address(address)
    key = parse_authkey(authkey)
    with _clients_guard:
        client = _clients.get(address)
        if client is None or client.authkey != key:
            client = Client(address, key)
            _clients[address] = client
        return client


def _before_fork() -> None:
    # A forked child gets the parent's proxies without a pickle, hence without an export: the
    # parent exports their objects here, so that they survive the parent dropping its proxies
    # before the child has adopted them (PROTOCOL.md section 3.2).
    for client in list(_clients.values()):
        client._export_before_fork()


def _after_fork_in_child() -> None:
    global _clients_guard
    _clients_guard = threading.Lock()
    for client in list(_clients.values()):
        client._after_fork_in_child()


class _AfterForkKey:
    """What ``multiprocessing.util.register_after_fork`` keys :func:`_adopt_after_fork` by."""


_after_fork_key = _AfterForkKey()


def _adopt_after_fork(_: object) -> None:
    # In a child that multiprocessing started (fork start method), before the target runs:
    # the inherited proxies' objects are adopted at once, rather than on the first call,
    # which may come after the parent's exports ran out (--handoff-seconds).
    for client in list(_clients.values()):
        if client._orphans:
            try:
                client.connection().take_over_now()
            except Exception as e:  # the manager may be gone; the proxies will say so
                log.debug("could not adopt the inherited proxies of %s: %s", client, e)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
mp_util.register_after_fork(_after_fork_key, _adopt_after_fork)
