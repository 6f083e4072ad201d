"""Proxies of the data objects: ``dict``, ``list``, ``set``, ``Value``, ``Array`` and
``Namespace``.

A proxy holds only its manager's client and the object's id; every operation is one call to
the manager (a few list operations that Python's proxies do on the server are done here in two
calls, see their docstrings). Proxies have the surface of ``multiprocessing.managers``' proxies,
so code written for those runs unchanged, plus a few atomic operations of agora's own.

A proxy holds its object (``PROTOCOL.md`` section 3.2): the reference it was made from is
counted by the manager for one of this process's connections, and given back (``decref``) when
the last proxy made from it is collected. Pickling a proxy exports its object; unpickling adopts
it. So an object without a name lives while a proxy of it exists in some process, or another
object holds it, as with ``multiprocessing.managers``.

Values travel as MessagePack: ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``,
``bytes``, lists, tuples and dicts of those, and proxies of the same manager (stored as live
references and read back as proxies). Tuples come back as lists, except as dict keys, where they
come back as tuples. Anything else raises ``TypeError`` before anything is sent.
"""

from __future__ import annotations

import array
import collections.abc
import logging
import operator
import time
import types
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterator,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    cast,
)

from . import connection
from .connection import Client, Connection, client_for
from .errors import ConnectionLost, UnknownMethodError, UnknownObjectError

log = logging.getLogger("agora")

__all__ = [
    "BaseProxy",
    "DictProxy",
    "ListProxy",
    "ValueProxy",
    "ArrayProxy",
    "NamespaceProxy",
    "SetProxy",
    "proxy_class",
]

#: kind -> proxy class; filled in as the classes are defined.
_KINDS: Dict[str, Type["BaseProxy"]] = {}

def proxy_class(kind: str) -> Optional[Type["BaseProxy"]]:
    """The proxy class of objects of ``kind`` (a protocol kind such as ``"dict"``)."""
    return _KINDS.get(kind)


def _make_proxy(client: Client, kind: str, ident: int) -> Optional["BaseProxy"]:
    # Called while a response is decoded: the proxy is attached to the connection reading it.
    cls = _KINDS.get(kind)
    return None if cls is None else cls(client, ident)


connection.proxy_factory = _make_proxy


#: The run of a proxy unpickled from a pickle of an older agora, which did not record it.
_UNKNOWN_RUN = ""


def _rebuild(
    cls: Type["BaseProxy"],
    ident: int,
    address: str,
    authkey: bytes,
    extra: Any,
    run: Optional[str] = _UNKNOWN_RUN,
) -> Any:
    """Unpickles a proxy: finds (or makes) this process's client of the manager, and adopts
    the object the pickling process exported (``PROTOCOL.md`` section 3.2), so that this
    process holds it from now on. The proxy keeps the run it was pickled in: should the
    manager at the address be another run now, its calls raise
    :class:`agora.UnknownObjectError`. Unpickling itself never fails: a proxy whose object
    could not be adopted (gone, another run, the manager unreachable) holds nothing, and its
    calls say why."""
    client = client_for(address, authkey)

    def make(_: Any) -> "BaseProxy":
        proxy = cls(client, ident)
        object.__setattr__(proxy, "_run", run)
        if extra is not None:
            proxy._set_extra(extra)
        return proxy

    if run != _UNKNOWN_RUN:
        try:
            conn = client.connection()
            if run is None or conn.run == run:
                return conn.call("adopt", (ident,), make)
        except (UnknownObjectError, UnknownMethodError, ConnectionLost) as e:
            # UnknownMethodError: a manager older than object lifetimes, which frees nothing.
            log.debug("unpickled a proxy of %s %d that holds nothing: %s", cls._kind, ident, e)
    return make(None)


P = TypeVar("P", bound="BaseProxy")


def _twin(proxy: "BaseProxy", cls: Type[P], *args: Any) -> P:
    """A proxy of class ``cls`` (built with ``args`` after the client and id) of the same
    object as ``proxy``, holding it as ``proxy`` does: ``proxy`` may go first."""
    home = proxy._home
    previous = connection._attach.home
    connection._attach.home = home
    try:
        twin = cls(proxy._client, proxy._id, *args)
    finally:
        connection._attach.home = previous
    object.__setattr__(twin, "_run", proxy._run)
    return twin


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


class BaseProxy:
    """What every proxy has: the manager's client, the object's id, pickling and a repr.

    A proxy pickles to its class, its object's id, the manager's address **and authkey**, so
    that it works in a child process whatever the start method (fork, spawn, forkserver) and
    through any channel (``Process`` args, a ``multiprocessing.Queue``, a ``Pool`` task). Treat
    a pickled proxy as a credential for its manager.

    A proxy belongs to one run of its manager (``PROTOCOL.md``, section 2), and the pickle
    carries it: a manager restarted at the same address gives out the same ids again, so a
    proxy whose run is not the manager's raises :class:`agora.UnknownObjectError` instead of
    reaching the new run's object of the same id.

    A proxy made from a reference (by a factory, read from another object, unpickled) holds
    its object: it is attached to the connection the manager counted the reference for, and
    when the last proxy attached there for that object is collected, the count is given back.
    A proxy built by hand from a bare id (``DictProxy(client, id)``, or by ``lookup``) holds
    nothing, as a name or an id does not.
    """

    __slots__ = ("_client", "_id", "_run", "_home", "__weakref__")
    _client: Client
    _id: int
    #: The manager's run this proxy's object belongs to (``None``: not known yet, taken from
    #: the first connection; ``""``: unpickled from an older agora, which did not record it).
    _run: Optional[str]
    #: The connection whose reference this proxy holds (``None``: it holds none).
    _home: Optional[Connection]

    #: The object's kind in the protocol (``"dict"``, ``"joinable_queue"``, ...).
    _kind: ClassVar[str] = ""
    #: The typeid Python's ``SyncManager`` registers for the kind (``"dict"``, ``"Event"``),
    #: which ``repr()`` shows as Python's proxies do.
    _typeid: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls._kind and cls._kind not in _KINDS:
            _KINDS[cls._kind] = cls

    def __init__(self, client: Client, ident: int) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_id", ident)
        object.__setattr__(self, "_run", client.run)
        # Set by the connection that counted the reference this proxy is made from.
        home = connection._attach.home
        object.__setattr__(self, "_home", None if home is None else home.track(ident))

    def __del__(self) -> None:
        try:
            home = self._home
            if home is not None:
                home.proxy_died(self._id)
        except Exception:  # at interpreter exit, say: the connection closes anyway
            pass

    def _call(self, method: str, *args: Any) -> Any:
        client = self._client
        try:
            conn = client._local.conn
        except AttributeError:
            conn = client.connection()
        else:
            if conn._closed:
                conn = client.connection()
        if conn.run != self._run:
            self._check_run(conn.run, conn.started)
        return conn.call(method, (self._id, *args))

    def _call_detached(self, method: str, *args: Any) -> None:
        """:meth:`_call` without waiting for the reply (:meth:`Connection.call_detached`)."""
        self._connection().call_detached(method, (self._id, *args))

    def _step(self, method: str, *args: Any) -> Tuple[str, Tuple[Any, ...]]:
        """The call ``method`` (a wire method of this proxy's kind, ``PROTOCOL.md`` section 4,
        without the kind: ``"get"`` for ``dict.get``) with ``args``, as one call of a chain
        or a batch sent by another proxy."""
        return self._kind + "." + method, (self._id, *args)

    def _connection_with(self, other: "BaseProxy") -> Connection:
        """As :meth:`_connection`, checking ``other`` too: for a request carrying calls of
        both proxies. They must be proxies of the same manager."""
        conn = self._connection()
        if other._client.address != self._client.address:
            raise ValueError(
                f"{other._kind} {other._id} belongs to another manager than "
                f"{self._kind} {self._id}; a chain runs in one manager"
            )
        if conn.run != other._run:
            other._check_run(conn.run, conn.started)
        return conn

    def _connection(self) -> Connection:
        """This thread's connection to the manager, checked to be of this proxy's run."""
        conn = self._client.connection()
        if conn.run != self._run:
            self._check_run(conn.run, conn.started)
        return conn

    def _check_run(self, run: str, started: int) -> None:
        """Raises :class:`agora.UnknownObjectError` unless this proxy belongs to ``run``, the
        run of the manager it is about to call (which started at ``started``)."""
        mine = self._run
        if mine == run:
            return
        if mine is None:  # made before the client had connected: the first run it meets
            object.__setattr__(self, "_run", run)
            return
        address = self._client.address
        if mine == _UNKNOWN_RUN:
            raise UnknownObjectError(
                f"this proxy was pickled by an older version of agora, which did not record "
                f"its manager's run, so it cannot be told from an object of a restarted "
                f"manager (the manager at {address} is run {run}, started at {_utc(started)}): "
                "pickle the proxy again with this version"
            )
        raise UnknownObjectError(
            f"this proxy belongs to run {mine}; the manager at {address} is run {run}, "
            f"started at {_utc(started)}; the object no longer exists"
        )

    def _agora_reference(self) -> Tuple[str, str, int, Optional[str]]:
        """(manager address, kind, id, run): how this proxy is stored inside another object."""
        return self._client.address, self._kind, self._id, self._run

    def _extra(self) -> Any:
        return None

    def _set_extra(self, extra: Any) -> None:
        pass

    def _export(self) -> None:
        """Sends ``export`` of the object without waiting: the manager keeps it for whoever
        adopts it, even if this process drops its last proxy first. Written on the connection
        this proxy's reference counts on, so that it is applied before that connection's decref
        of it."""
        home = self._home
        if home is not None:
            home = connection._resolve(home)
        if home is None or home._closed:
            # Held nowhere (built from an id), or on a connection gone with an interrupted call
            # or a fork: through this thread's connection, which adopts those first.
            try:
                home = self._client.connection()
            except ConnectionLost:
                return  # the receiver's adopt fails and its proxy says why
        if home.run == self._run or self._run is None:
            home.send_without_reply("export", (self._id,))

    def __reduce__(self) -> Any:
        self._export()
        client = self._client
        return _rebuild, (
            type(self), self._id, client.address, client.authkey, self._extra(), self._run
        )

    def __repr__(self) -> str:
        # Python's shape (`<DictProxy object, typeid 'dict' at 0x...>`), then agora's details:
        # the object's id in the manager, and the manager.
        return (
            f"<{type(self).__name__} object, typeid {self._typeid!r} at {id(self):#x}; "
            f"agora {self._kind} {self._id} on {self._client.address}>"
        )

    def __str__(self) -> str:
        # As Python's proxies: the referent's repr, read from the manager (or, when that
        # fails, the proxy's repr saying so).
        try:
            return self._referent_repr()
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"

    def _referent_repr(self) -> str:
        """The repr of the object in the manager, shaped as Python's manager shows its
        referent (``str()`` of a Python proxy); a subclass asks the manager what it needs."""
        return f"<{self._typeid} object at {self._id:#x}>"


def _int(value: Any) -> int:
    # An exact int: before Python 3.10, operator.index(True) is True, which MessagePack would
    # send as a bool.
    return int(operator.index(value))


def _index(index: Any, what: str) -> int:
    try:
        return _int(index)
    except TypeError:
        raise TypeError(
            f"{what} indices must be integers or slices, not {type(index).__name__}"
        ) from None


def _bound(value: Any) -> Optional[int]:
    if value is None:
        return None
    try:
        return _int(value)
    except TypeError:
        raise TypeError(
            "slice indices must be integers or None or have an __index__ method"
        ) from None


def _key(key: Any) -> Any:
    # Keys are read back as tuples where they were sent as tuples (MessagePack arrays).
    return tuple(connection._freeze(v) for v in key) if type(key) is list else key


class DictProxy(BaseProxy):
    """A shared ``dict``. Insertion-ordered; ``keys()``, ``values()``, ``items()`` and
    ``copy()`` return snapshots (lists and a dict), as Python's proxy does.

    Differences from ``multiprocessing.managers.DictProxy``: iterating takes a snapshot of the
    keys (one call) instead of a server-side iterator, so it never raises "dictionary changed
    size during iteration"; keys compare by MessagePack value, so ``1`` and ``True`` are two
    different keys.
    """

    __slots__ = ()
    _kind = "dict"
    # As Python's proxies (ValueProxy since 3.9, DictProxy and ListProxy since gh-103134).
    __class_getitem__: ClassVar[Any] = classmethod(types.GenericAlias)
    _typeid = "dict"

    def __getitem__(self, key: Any) -> Any:
        hash(key)
        try:
            return self._call("dict.getitem", key)
        except KeyError:
            raise KeyError(key) from None

    def __setitem__(self, key: Any, value: Any) -> None:
        hash(key)
        self._call("dict.setitem", key, value)

    def __delitem__(self, key: Any) -> None:
        hash(key)
        try:
            self._call("dict.delitem", key)
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: Any) -> bool:
        hash(key)
        return cast("bool", self._call("dict.contains", key))

    def __len__(self) -> int:
        return cast("int", self._call("dict.len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def get(self, key: Any, default: Any = None) -> Any:
        """``d[key]`` if present, else ``default``."""
        hash(key)
        if default is None:
            return self._call("dict.get", key)
        return self._call("dict.get", key, default)

    def keys(self) -> List[Any]:
        """A snapshot of the keys, in insertion order."""
        return [_key(k) for k in self._call("dict.keys")]

    def values(self) -> List[Any]:
        """A snapshot of the values, in insertion order."""
        return cast("list[Any]", self._call("dict.values"))

    def items(self) -> List[Tuple[Any, Any]]:
        """A snapshot of the ``(key, value)`` pairs, in insertion order."""
        return [(_key(k), v) for k, v in self._call("dict.items")]

    def copy(self) -> Dict[Any, Any]:
        """A snapshot of the whole dict, as a plain ``dict``."""
        return cast("dict[Any, Any]", self._call("dict.copy"))

    _getvalue = copy

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Like ``dict.update``: from a mapping or an iterable of pairs, then keyword args.
        Atomic: other clients see all of it or none of it."""
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(args)}")
        merged: Dict[Any, Any] = {}
        if args:
            other = args[0]
            merged.update(other.copy() if isinstance(other, DictProxy) else other)
        merged.update(kwargs)
        self._call("dict.update", merged)

    def pop(self, key: Any, *default: Any) -> Any:
        """Removes ``key`` and returns its value, or ``default`` when given and absent."""
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        hash(key)
        try:
            return self._call("dict.pop", key, *default)
        except KeyError:
            raise KeyError(key) from None

    def popitem(self) -> Tuple[Any, Any]:
        """Removes and returns the last inserted ``(key, value)`` pair."""
        try:
            key, value = self._call("dict.popitem")
        except KeyError:
            raise KeyError("popitem(): dictionary is empty") from None
        return _key(key), value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``d[key]``, after setting it to ``default`` if it was absent (atomically)."""
        hash(key)
        return self._call("dict.setdefault", key, default)

    def clear(self) -> None:
        """Removes every item."""
        self._call("dict.clear")

    # Python 3.13's DictProxy adds these.

    def __or__(self, other: Any) -> Dict[Any, Any]:
        return cast("dict[Any, Any]", self.copy() | other)

    def __ror__(self, other: Any) -> Dict[Any, Any]:
        return cast("dict[Any, Any]", other | self.copy())

    def __ior__(self, other: Any) -> "DictProxy":
        self.update(other)
        return self

    def __reversed__(self) -> Iterator[Any]:
        return cast("Iterator[Any]", reversed(self.keys()))

    def fromkeys(self, iterable: Any, value: Any = None) -> Dict[Any, Any]:
        """A new plain dict with keys from ``iterable``, all set to ``value`` (as ``dict.fromkeys``;
        this proxy's contents play no part)."""
        return dict.fromkeys(iterable, value)

    def _referent_repr(self) -> str:
        return repr(self.copy())


class ListProxy(BaseProxy):
    """A shared ``list``, with slices, ``+=``, ``*=`` and the list methods.

    Differences from ``multiprocessing.managers.ListProxy``: iteration takes one snapshot
    instead of one call per item; ``sort(key=...)`` and ``*=`` read the list and write it back
    (two calls, not atomic; ``sort()`` without a key is atomic); equality (``in``, ``count``,
    ``index``, ``remove``) is by MessagePack value, so ``True`` does not equal ``1``.
    ``clear()`` and ``copy()`` are there as in Python 3.13.
    """

    __slots__ = ()
    _kind = "list"
    # As Python's proxies (ValueProxy since 3.9, DictProxy and ListProxy since gh-103134).
    __class_getitem__: ClassVar[Any] = classmethod(types.GenericAlias)
    _typeid = "list"

    def __len__(self) -> int:
        return cast("int", self._call("list.len"))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._call(
                "list.getslice", _bound(index.start), _bound(index.stop), _bound(index.step)
            )
        return self._call("list.getitem", _index(index, "list"))

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            try:
                items = list(value)
            except TypeError:
                raise TypeError("can only assign an iterable") from None
            self._call(
                "list.setslice",
                _bound(index.start),
                _bound(index.stop),
                _bound(index.step),
                items,
            )
        else:
            self._call("list.setitem", _index(index, "list"), value)

    def __delitem__(self, index: Any) -> None:
        if isinstance(index, slice):
            self._call(
                "list.delslice", _bound(index.start), _bound(index.stop), _bound(index.step)
            )
        else:
            self._call("list.delitem", _index(index, "list"))

    def __contains__(self, value: Any) -> bool:
        return cast("bool", self._call("list.count", value) > 0)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.copy())

    def __reversed__(self) -> Iterator[Any]:
        return cast("Iterator[Any]", reversed(self.copy()))

    def __add__(self, other: Any) -> List[Any]:
        return cast("list[Any]", self.copy() + other)

    def __mul__(self, n: Any) -> List[Any]:
        return cast("list[Any]", self.copy() * n)

    __rmul__ = __mul__

    def __iadd__(self, other: Any) -> "ListProxy":
        self.extend(other)
        return self

    def __imul__(self, n: Any) -> "ListProxy":
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(
                f"can't multiply sequence by non-int of type '{type(n).__name__}'"
            ) from None
        if n <= 0:
            self.clear()
        elif n > 1:
            self.extend(self.copy() * (n - 1))
        return self

    def append(self, value: Any) -> None:
        """Adds ``value`` at the end."""
        self._call("list.append", value)

    def extend(self, iterable: Any) -> None:
        """Adds every item of ``iterable`` at the end (atomically)."""
        if not isinstance(iterable, (list, tuple)):
            iterable = list(iterable)
        self._call("list.extend", iterable)

    def insert(self, index: Any, value: Any) -> None:
        """Inserts ``value`` before ``index`` (clamped like Python)."""
        self._call("list.insert", _int(index), value)

    def pop(self, *index: Any) -> Any:
        """Removes and returns the item at ``index`` (the last by default)."""
        if len(index) > 1:
            raise TypeError(f"pop expected at most 1 argument, got {len(index)}")
        return self._call("list.pop", *(_int(i) for i in index))

    def remove(self, value: Any) -> None:
        """Removes the first item equal to ``value``; ``ValueError`` if there is none."""
        self._call("list.remove", value)

    def index(self, value: Any, *bounds: Any) -> int:
        """The position of the first item equal to ``value`` within ``[start:stop]``."""
        if len(bounds) > 2:
            raise TypeError(f"index expected at most 3 arguments, got {1 + len(bounds)}")
        return cast("int", self._call("list.index", value, *(_int(b) for b in bounds)))

    def count(self, value: Any) -> int:
        """How many items equal ``value``."""
        return cast("int", self._call("list.count", value))

    def reverse(self) -> None:
        """Reverses the list in place."""
        self._call("list.reverse")

    def sort(self, *, key: Optional[Callable[[Any], Any]] = None, reverse: bool = False) -> None:
        """Sorts in place (stable). Without ``key`` the manager sorts, atomically; with one the
        list is read, sorted here and written back."""
        if key is None:
            self._call("list.sort", bool(reverse))
        else:
            items = self.copy()
            items.sort(key=key, reverse=reverse)
            self._call("list.setslice", None, None, None, items)

    def clear(self) -> None:
        """Removes every item."""
        self._call("list.clear")

    def copy(self) -> List[Any]:
        """A snapshot of the list, as a plain ``list``."""
        return cast("list[Any]", self._call("list.copy"))

    _getvalue = copy

    def _referent_repr(self) -> str:
        return repr(self.copy())


class ValueProxy(BaseProxy):
    """A shared value: ``.value`` (or ``get()`` / ``set()``), like Python's ``ValueProxy``.

    ``v.value += 1`` is a read then a write, not atomic (as in Python); for atomic updates use
    :meth:`fetch_add` or :meth:`compare_and_swap`.
    """

    __slots__ = ("_typecode",)
    _typecode: Optional[str]
    _kind = "value"
    # As Python's proxies (ValueProxy since 3.9, DictProxy and ListProxy since gh-103134).
    __class_getitem__: ClassVar[Any] = classmethod(types.GenericAlias)
    _typeid = "Value"

    def __init__(self, client: Client, ident: int, typecode: Optional[str] = None) -> None:
        super().__init__(client, ident)
        object.__setattr__(self, "_typecode", typecode)

    def _extra(self) -> Any:
        return self._typecode

    def _set_extra(self, extra: Any) -> None:
        object.__setattr__(self, "_typecode", extra)

    def _referent_repr(self) -> str:
        # Python's manager keeps the typecode it was given, enforced or not: so does this
        # proxy; one that does not know it asks the manager (nil unless strict).
        typecode = self._typecode
        if typecode is None:
            typecode = self._call("value.typecode")
        return f"Value({typecode!r}, {self.get()!r})"

    def get(self) -> Any:
        """The value."""
        return self._call("value.get")

    def set(self, value: Any) -> None:
        """Replaces the value."""
        self._call("value.set", value)

    value = property(get, set, doc="The value (one call to read, one to write).")

    _getvalue = get

    def fetch_add(self, delta: Any) -> Any:
        """Atomically adds ``delta`` and returns the value from **before** the addition."""
        return self._call("value.fetch_add", delta)

    def compare_and_swap(self, expected: Any, new: Any) -> Tuple[bool, Any]:
        """Atomically replaces the value by ``new`` if it equals ``expected``.

        Returns ``(swapped, previous value)``."""
        swapped, previous = self._call("value.compare_and_swap", expected, new)
        return swapped, previous

class ArrayProxy(BaseProxy):
    """A shared fixed-length array of one typecode (``array`` module typecodes), like Python's
    ``ArrayProxy``: ``len(a)``, ``a[i]``, ``a[i] = v`` and slices (read as ``array.array``).

    Differences: iteration and :meth:`tolist` take one snapshot; a slice assignment may not
    change the length (``ValueError``).
    """

    __slots__ = ("_typecode",)
    _typecode: Optional[str]
    _kind = "array"
    _typeid = "Array"

    def __init__(self, client: Client, ident: int, typecode: Optional[str] = None) -> None:
        super().__init__(client, ident)
        object.__setattr__(self, "_typecode", typecode)

    def _extra(self) -> Any:
        return self._typecode

    def _set_extra(self, extra: Any) -> None:
        object.__setattr__(self, "_typecode", extra)

    @property
    def typecode(self) -> str:
        """The array's typecode (``'i'``, ``'d'``, ...)."""
        typecode = self._typecode
        if typecode is None:
            typecode = self._call("array.typecode")
            object.__setattr__(self, "_typecode", typecode)
        return typecode

    def __len__(self) -> int:
        return cast("int", self._call("array.len"))

    def _wrap(self, items: List[Any]) -> Any:
        typecode = self.typecode
        if typecode == "c":
            return b"".join(items)
        return array.array(typecode, items)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            items = self._call(
                "array.getslice", _bound(index.start), _bound(index.stop), _bound(index.step)
            )
            return self._wrap(items)
        return self._call("array.getitem", _index(index, "array"))

    def _slice_items(self, value: Any) -> List[Any]:
        if not isinstance(value, array.array):
            raise TypeError(
                f'can only assign array (not "{type(value).__name__}") to array slice'
            )
        if value.typecode != self.typecode:
            raise TypeError("bad argument type for built-in operation")
        return value.tolist()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            self._call(
                "array.setslice",
                _bound(index.start),
                _bound(index.stop),
                _bound(index.step),
                self._slice_items(value),
            )
        else:
            self._call("array.setitem", _index(index, "array"), value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tolist())

    def tolist(self) -> List[Any]:
        """A snapshot of the elements, as a plain ``list``."""
        return cast("list[Any]", self._call("array.tolist"))

    def _getvalue(self) -> Any:
        return self._wrap(self.tolist())

    def _referent_repr(self) -> str:
        return repr(self._getvalue())


class NamespaceProxy(BaseProxy):
    """A shared attribute bag, like Python's ``NamespaceProxy``: ``ns.x``, ``ns.x = v``,
    ``del ns.x``. Attributes whose names start with ``_`` are local to the proxy and never
    sent, as in Python."""

    _kind = "namespace"
    _typeid = "Namespace"

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: proxy internals are found before this.
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        return self._call("namespace.getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._call("namespace.setattr", name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
        else:
            self._call("namespace.delattr", name)

    def _getvalue(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(**self._call("namespace.items"))

    def _referent_repr(self) -> str:
        # As Python's Namespace: the attributes sorted as "name=value" strings.
        items = self._call("namespace.items")
        inner = ", ".join(sorted(f"{name}={value!r}" for name, value in items.items()))
        return f"Namespace({inner})"


_SET_TYPES = (set, frozenset)


def _is_set(other: Any) -> bool:
    """Whether ``other`` may be a set operator's operand, as for Python's ``set`` (a set, a
    frozenset, or a shared set)."""
    return isinstance(other, (*_SET_TYPES, SetProxy))


def _elements(items: Any) -> List[Any]:
    """The elements a call sends for ``items``: each must be hashable, as Python's ``set``
    requires (a list element raises ``TypeError`` here, not in the manager)."""
    out = list(items)
    for item in out:
        hash(item)
    return out


class SetProxy(BaseProxy):
    """A shared ``set``, with the full ``set`` API of Python 3.14's ``SetProxy``: ``add``,
    ``discard``, ``remove``, ``pop``, ``clear``, ``update`` and the ``*_update`` methods,
    ``union`` / ``intersection`` / ``difference`` / ``symmetric_difference``, ``issubset`` /
    ``issuperset`` / ``isdisjoint``, the operators ``| & - ^`` and their in-place forms, the
    comparisons ``< <= > >=``, ``len``, ``in`` and iteration.

    Every operation is one call, and the set algebra runs in the manager: with another
    ``SetProxy`` of the same manager as operand, nothing but its reference travels (Python
    3.14's proxies raise ``TypeError`` for ``proxy | proxy``; agora computes it). Results that
    are sets (``union``, ``s | t``, ``copy``) are plain ``set`` snapshots, as Python's.

    Elements are compared as dict keys are in the manager (``PROTOCOL.md`` section 3), so
    ``1`` and ``True`` are two elements, as in the other proxies' keys; tuples come back as
    tuples. ``==`` is identity, as for Python's proxies (which expose no ``__eq__``); compare
    ``s.copy() == other`` for the contents, or use ``<=`` and ``>=``. Iteration takes a
    snapshot.
    """

    __slots__ = ()
    _kind = "set"
    _typeid = "set"

    __class_getitem__: ClassVar[Any] = classmethod(types.GenericAlias)

    def _operand(self, other: Any) -> Any:
        # A shared set travels as its reference; anything else as its elements (a proxy of a
        # dict or list is read first, as iterating it would).
        if isinstance(other, SetProxy):
            return other
        if isinstance(other, DictProxy):
            return _elements(other.keys())
        if isinstance(other, ListProxy):
            return _elements(other.copy())
        return _elements(other)

    def _elements_of(self, method: str, *args: Any) -> Any:
        return {connection._freeze(x) for x in self._call(method, *args)}

    # --- elements ------------------------------------------------------------------------------

    def add(self, element: Any) -> None:
        """Adds ``element`` (nothing happens when it is there)."""
        hash(element)
        self._call("set.add", element)

    def discard(self, element: Any) -> None:
        """Removes ``element`` if it is there."""
        hash(element)
        self._call("set.discard", element)

    def remove(self, element: Any) -> None:
        """Removes ``element``; ``KeyError`` when it is not there."""
        hash(element)
        try:
            self._call("set.remove", element)
        except KeyError:
            raise KeyError(element) from None

    def pop(self) -> Any:
        """Removes and returns an element (the last added); ``KeyError`` when empty."""
        try:
            return connection._freeze(self._call("set.pop"))
        except KeyError:
            raise KeyError("pop from an empty set") from None

    def clear(self) -> None:
        """Removes every element."""
        self._call("set.clear")

    def __contains__(self, element: Any) -> bool:
        hash(element)
        return cast("bool", self._call("set.contains", element))

    def __len__(self) -> int:
        return cast("int", self._call("set.len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.copy())

    def copy(self) -> Any:
        """A snapshot of the elements, as a plain ``set``."""
        return self._elements_of("set.copy")

    _getvalue = copy

    def _referent_repr(self) -> str:
        return repr(self.copy())

    # --- the algebra, with any iterables ------------------------------------------------------

    def update(self, *others: Any) -> None:
        """Adds the elements of every iterable in ``others`` (one atomic call)."""
        self._call("set.update", *[self._operand(o) for o in others])

    def intersection_update(self, *others: Any) -> None:
        """Keeps only the elements found in every iterable of ``others``."""
        self._call("set.intersection_update", *[self._operand(o) for o in others])

    def difference_update(self, *others: Any) -> None:
        """Removes the elements of every iterable of ``others``."""
        self._call("set.difference_update", *[self._operand(o) for o in others])

    def symmetric_difference_update(self, other: Any) -> None:
        """Keeps the elements found in exactly one of the set and ``other``."""
        self._call("set.symmetric_difference_update", self._operand(other))

    def union(self, *others: Any) -> Any:
        """A new ``set`` of the elements of the set and of every iterable of ``others``."""
        return self._elements_of("set.union", *[self._operand(o) for o in others])

    def intersection(self, *others: Any) -> Any:
        """A new ``set`` of the elements found in the set and every iterable of ``others``."""
        return self._elements_of("set.intersection", *[self._operand(o) for o in others])

    def difference(self, *others: Any) -> Any:
        """A new ``set`` of the elements of the set found in no iterable of ``others``."""
        return self._elements_of("set.difference", *[self._operand(o) for o in others])

    def symmetric_difference(self, other: Any) -> Any:
        """A new ``set`` of the elements found in exactly one of the set and ``other``."""
        return self._elements_of("set.symmetric_difference", self._operand(other))

    def issubset(self, other: Any) -> bool:
        """Whether every element of the set is in ``other``."""
        return cast("bool", self._call("set.issubset", self._operand(other)))

    def issuperset(self, other: Any) -> bool:
        """Whether every element of ``other`` is in the set."""
        return cast("bool", self._call("set.issuperset", self._operand(other)))

    def isdisjoint(self, other: Any) -> bool:
        """Whether the set and ``other`` have no element in common."""
        return cast("bool", self._call("set.isdisjoint", self._operand(other)))

    # --- operators: sets only, as Python's ------------------------------------------------------

    def __or__(self, other: Any) -> Any:
        return self.union(other) if _is_set(other) else NotImplemented

    def __and__(self, other: Any) -> Any:
        return self.intersection(other) if _is_set(other) else NotImplemented

    def __sub__(self, other: Any) -> Any:
        return self.difference(other) if _is_set(other) else NotImplemented

    def __xor__(self, other: Any) -> Any:
        return self.symmetric_difference(other) if _is_set(other) else NotImplemented

    # `{1} | proxy`: the set gives up (a proxy is no set), so these answer.
    __ror__ = __or__
    __rand__ = __and__
    __rxor__ = __xor__

    def __rsub__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        return set(other) - self.copy()

    def __ior__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        self.update(other)
        return self

    def __iand__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        self.symmetric_difference_update(other)
        return self

    def _compare(self, other: Any) -> Tuple[bool, bool]:
        subset, superset = self._call("set.compare", self._operand(other))
        return subset, superset

    def __le__(self, other: Any) -> Any:
        return self._compare(other)[0] if _is_set(other) else NotImplemented

    def __ge__(self, other: Any) -> Any:
        return self._compare(other)[1] if _is_set(other) else NotImplemented

    def __lt__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        subset, superset = self._compare(other)
        return subset and not superset

    def __gt__(self, other: Any) -> Any:
        if not _is_set(other):
            return NotImplemented
        subset, superset = self._compare(other)
        return superset and not subset


# As Python's proxies since gh-103134 (and 3.14's set).
collections.abc.MutableMapping.register(DictProxy)
collections.abc.MutableSequence.register(ListProxy)
collections.abc.MutableSet.register(SetProxy)
