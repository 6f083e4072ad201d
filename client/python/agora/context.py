"""Drop-in replacements for ``multiprocessing``'s own shared objects.

Programs written for ``multiprocessing`` create locks, queues and values directly
(``from multiprocessing import Process, Lock, Queue``). ``from agora import Process, Lock,
Queue`` runs them unchanged against an agora manager: each factory here creates its object on
the process's **default manager**, an ``agora.Manager()`` started on first use and shut down at
exit, after ``multiprocessing`` has joined the child processes (the objects outlive the children
that use them, as the operating system's do for ``multiprocessing``). A child made by ``fork``
shares its parent's default manager; objects passed to children arrive as proxies of it.

The objects behave like their ``multiprocessing`` counterparts, with these differences:

* they are ``threading``'s semantics over the manager: releasing an unheld ``Lock`` raises
  ``RuntimeError`` (``multiprocessing.Lock`` raises ``ValueError``);
* a lock held by a process that dies is released (the next acquirer's ``owner_died`` is set),
  where a ``multiprocessing.Lock`` would stay locked forever;
* ``Queue.close()`` is local, as in ``multiprocessing``: this process may no longer use its
  proxy; the queue itself stays open for the others.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Optional, Union

from .manager import Manager
from .proxies import ArrayProxy, ValueProxy, _twin
from .queues import JoinableQueueProxy, QueueProxy
from .synchronize import (
    BarrierProxy,
    BoundedSemaphoreProxy,
    ConditionProxy,
    EventProxy,
    LockProxy,
    RLockProxy,
    SemaphoreProxy,
)

__all__ = [
    "default_manager",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "Queue",
    "JoinableQueue",
    "SimpleQueue",
    "Value",
    "Array",
    "ProcessQueue",
    "ProcessJoinableQueue",
    "SynchronizedValue",
    "SynchronizedArray",
]

_default: Optional[Manager] = None
_default_guard = threading.Lock()


def default_manager() -> Manager:
    """This process's default manager (started on first use; a forked child shares its
    parent's)."""
    global _default
    with _default_guard:
        if _default is None:
            # Exit priority -1: stopped after multiprocessing has joined the child processes.
            _default = Manager(_exit_priority=-1)
        return _default


def _reset_guard_after_fork() -> None:
    global _default_guard
    _default_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_guard_after_fork)


# --- locks and friends: the manager's proxies as they are -------------------------------------


def Lock(*, owned: Optional[bool] = None) -> LockProxy:
    """A lock shared by processes (``multiprocessing.Lock``); ``owned`` as for
    :meth:`agora.Manager.Lock`."""
    return default_manager().Lock(owned=owned)


def RLock(*, owned: Optional[bool] = None) -> RLockProxy:
    """A reentrant lock shared by processes (``multiprocessing.RLock``)."""
    return default_manager().RLock(owned=owned)


def Semaphore(value: int = 1, *, owned: Optional[bool] = None) -> SemaphoreProxy:
    """A semaphore shared by processes (``multiprocessing.Semaphore``)."""
    return default_manager().Semaphore(value, owned=owned)


def BoundedSemaphore(value: int = 1, *, owned: Optional[bool] = None) -> BoundedSemaphoreProxy:
    """A bounded semaphore shared by processes (``multiprocessing.BoundedSemaphore``)."""
    return default_manager().BoundedSemaphore(value, owned=owned)


def Condition(lock: Optional[Union[LockProxy, RLockProxy]] = None) -> ConditionProxy:
    """A condition variable shared by processes (``multiprocessing.Condition``)."""
    return default_manager().Condition(lock)


def Event() -> EventProxy:
    """An event shared by processes (``multiprocessing.Event``)."""
    return default_manager().Event()


def Barrier(parties: int, action: Any = None, timeout: Optional[float] = None) -> BarrierProxy:
    """A barrier shared by processes (``multiprocessing.Barrier``; no ``action``)."""
    return default_manager().Barrier(parties, action, timeout)


# --- queues: multiprocessing.Queue's surface ----------------------------------------------------


class _LocalClose:
    """``close()`` as ``multiprocessing.Queue`` has it: this process is done with the queue."""

    __slots__ = ()
    _closed: bool

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def __init__(self, client: Any, ident: int) -> None:
        super().__init__(client, ident)  # type: ignore[call-arg]
        object.__setattr__(self, "_closed", False)

    def close(self) -> None:
        """Marks this proxy closed: it may no longer put or get. Other proxies of the queue,
        in this process or others, are not affected."""
        object.__setattr__(self, "_closed", True)

    def join_thread(self) -> None:
        """Nothing to do: agora queues have no feeder thread."""

    def cancel_join_thread(self) -> None:
        """Nothing to do: agora queues have no feeder thread."""

    # Each call checks the local close first, then goes on to the queue proxy (next in the MRO).

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        self._check_open()
        super().put(obj, block, timeout)  # type: ignore[misc]

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        self._check_open()
        return super().get(block, timeout)  # type: ignore[misc]

    def put_nowait(self, obj: Any) -> None:
        self._check_open()
        super().put_nowait(obj)  # type: ignore[misc]

    def get_nowait(self) -> Any:
        self._check_open()
        return super().get_nowait()  # type: ignore[misc]


class ProcessQueue(_LocalClose, QueueProxy):
    """The queue :func:`Queue` returns: a :class:`~agora.queues.QueueProxy` with
    ``multiprocessing.Queue``'s local ``close()``."""

    __slots__ = ("_closed",)


class ProcessJoinableQueue(_LocalClose, JoinableQueueProxy):
    """The queue :func:`JoinableQueue` returns: a
    :class:`~agora.queues.JoinableQueueProxy` with ``multiprocessing.Queue``'s local
    ``close()``."""

    __slots__ = ("_closed",)


def Queue(maxsize: int = 0) -> ProcessQueue:
    """A FIFO queue shared by processes (``multiprocessing.Queue``)."""
    return _twin(default_manager().Queue(maxsize), ProcessQueue)


def JoinableQueue(maxsize: int = 0) -> ProcessJoinableQueue:
    """A queue with ``task_done``/``join`` shared by processes
    (``multiprocessing.JoinableQueue``)."""
    return _twin(default_manager().JoinableQueue(maxsize), ProcessJoinableQueue)


def SimpleQueue() -> ProcessQueue:
    """An unbounded queue shared by processes (``multiprocessing.SimpleQueue``)."""
    return Queue()


# --- Value and Array: multiprocessing.sharedctypes' surface ------------------------------------

_CTYPES_TYPECODES = {
    ctypes.c_byte: "b",
    ctypes.c_ubyte: "B",
    ctypes.c_short: "h",
    ctypes.c_ushort: "H",
    ctypes.c_int: "i",
    ctypes.c_uint: "I",
    ctypes.c_long: "l",
    ctypes.c_ulong: "L",
    ctypes.c_longlong: "q",
    ctypes.c_ulonglong: "Q",
    ctypes.c_float: "f",
    ctypes.c_double: "d",
    ctypes.c_char: "c",
    ctypes.c_wchar: "u",
}


def _typecode(typecode_or_type: Any) -> Optional[str]:
    if isinstance(typecode_or_type, str):
        return typecode_or_type
    if typecode_or_type is ctypes.c_bool:
        return None  # no array typecode: any value
    try:
        return _CTYPES_TYPECODES[typecode_or_type]
    except (KeyError, TypeError):
        raise TypeError(
            f"agora supports the array typecodes and their ctypes types, not {typecode_or_type!r}"
        ) from None


def _zero(typecode: Optional[str]) -> Any:
    return {"c": b"\x00", "u": "\x00", "f": 0.0, "d": 0.0, None: False}.get(typecode, 0)


def _lock_for(manager: Manager, lock: Any) -> Optional[LockProxy]:
    if lock is True:
        return manager.RLock()
    if isinstance(lock, LockProxy):
        return lock
    raise TypeError(f"lock must be True, False or an agora Lock/RLock, not {lock!r}")


class _Synchronized:
    """``get_lock()``, ``acquire()``, ``release()`` and ``with``, as on
    ``multiprocessing.sharedctypes``' synchronized wrappers."""

    __slots__ = ()
    _lock: LockProxy

    def get_lock(self) -> LockProxy:
        """The lock that guards this object (an ``RLock`` unless one was given)."""
        return self._lock

    def get_obj(self) -> Any:
        """The object itself (there is no separate raw object in agora)."""
        return self

    def acquire(self, *args: Any) -> bool:
        """Acquires :meth:`get_lock`."""
        return self._lock.acquire(*args)

    def release(self) -> None:
        """Releases :meth:`get_lock`."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class SynchronizedValue(_Synchronized, ValueProxy):
    """What :func:`Value` returns: a :class:`~agora.proxies.ValueProxy` with a lock."""

    __slots__ = ("_lock",)

    def __init__(self, client: Any, ident: int, lock: Optional[LockProxy] = None) -> None:
        super().__init__(client, ident)
        object.__setattr__(self, "_lock", lock)

    def _extra(self) -> Any:
        return self._lock

    def _set_extra(self, extra: Any) -> None:
        object.__setattr__(self, "_lock", extra)


class SynchronizedArray(_Synchronized, ArrayProxy):
    """What :func:`Array` returns: an :class:`~agora.proxies.ArrayProxy` with a lock, whose
    slices read as lists and take any sequence of the same length, as ``multiprocessing``'s."""

    __slots__ = ("_lock",)

    def __init__(
        self,
        client: Any,
        ident: int,
        typecode: Optional[str] = None,
        lock: Optional[LockProxy] = None,
    ) -> None:
        super().__init__(client, ident, typecode)
        object.__setattr__(self, "_lock", lock)

    def _extra(self) -> Any:
        return (self._typecode, self._lock)

    def _set_extra(self, extra: Any) -> None:
        object.__setattr__(self, "_typecode", extra[0])
        object.__setattr__(self, "_lock", extra[1])

    def _wrap(self, items: Any) -> Any:
        return b"".join(items) if self.typecode == "c" else list(items)

    def _slice_items(self, value: Any) -> Any:
        return list(value)


def Value(typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
    """A value shared by processes (``multiprocessing.Value``): the typecode is enforced,
    and ``lock`` (``True``: a new ``RLock``) is what ``get_lock()`` and ``with`` use."""
    manager = default_manager()
    typecode = _typecode(typecode_or_type)
    if len(args) > 1:
        raise TypeError(f"Value takes at most one initial value, got {len(args)}")
    initial = args[0] if args else _zero(typecode)
    plain = manager.Value(typecode, initial, strict=True)
    if lock is False or lock is None:
        return plain
    return _twin(plain, SynchronizedValue, _lock_for(manager, lock))


def Array(typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
    """An array shared by processes (``multiprocessing.Array``)."""
    manager = default_manager()
    typecode = _typecode(typecode_or_type)
    if typecode is None:
        raise TypeError("agora arrays need an array typecode (c_bool has none)")
    plain = manager.Array(typecode, size_or_initializer)
    if lock is False or lock is None:
        return plain
    return _twin(plain, SynchronizedArray, typecode, _lock_for(manager, lock))
