"""Proxies of the synchronisation objects: ``Lock``, ``RLock``, ``Semaphore``,
``BoundedSemaphore``, ``Condition``, ``Event`` and ``Barrier``.

They return what ``threading``'s objects return and raise what they raise. Two things are
better than with ``multiprocessing.managers``:

* **Waiters are served in arrival order**, and a waiting call holds no thread in the manager.
* **A holder that dies releases what it held.** When a process (or thread) ends while holding a
  lock, an rlock, semaphore permits or a condition's lock, its connection closes and the
  manager releases them. The next acquire succeeds and reports it: :meth:`AcquirerProxy.acquire`
  returns ``True`` as usual and sets :attr:`AcquirerProxy.owner_died`, and
  :meth:`AcquirerProxy.acquire_status` returns ``2`` instead of ``1``. The data the lock
  guarded may be half updated: check it before going on.

Ownership (for ``RLock`` and ``Condition``, and for releasing what died with its holder)
belongs to a thread of a process: each thread has its own connection.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Optional, TypeVar

from .proxies import BaseProxy

__all__ = [
    "AcquirerProxy",
    "LockProxy",
    "RLockProxy",
    "SemaphoreProxy",
    "BoundedSemaphoreProxy",
    "ConditionProxy",
    "EventProxy",
    "BarrierProxy",
]

#: ``acquire_status`` results.
NOT_ACQUIRED = 0
ACQUIRED = 1
ACQUIRED_OWNER_DIED = 2

T = TypeVar("T")


class AcquirerProxy(BaseProxy):
    """What locks, semaphores and conditions share: ``acquire``, ``release`` and ``with``."""

    __slots__ = ("owner_died",)
    _m: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._m = cls._kind + "."

    def __init__(self, client: Any, ident: int) -> None:
        super().__init__(client, ident)
        #: True when the last acquire through this proxy succeeded because the previous
        #: holder died holding the object (its data may be half updated).
        self.owner_died = False

    def acquire_status(self, blocking: bool = True, timeout: Optional[float] = None) -> int:
        """Like :meth:`acquire`, but returns the protocol's code: ``0`` not acquired, ``1``
        acquired, ``2`` acquired after the previous holder died holding it."""
        if timeout is None:
            code = self._call(self._m + "acquire", bool(blocking))
        else:
            code = self._call(self._m + "acquire", bool(blocking), timeout)
        if code:
            self.owner_died = code == ACQUIRED_OWNER_DIED
        return code

    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> bool:
        """Acquires, waiting (up to ``timeout`` seconds) unless ``blocking`` is false.

        Returns ``True`` when acquired, ``False`` otherwise. ``ValueError`` for a timeout with
        ``blocking`` false."""
        return self.acquire_status(blocking, timeout) != NOT_ACQUIRED

    def release(self) -> None:
        """Releases; ``RuntimeError`` when not held (by this thread, for an ``RLock``)."""
        self._call(self._m + "release")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class LockProxy(AcquirerProxy):
    """A shared ``threading.Lock``: not reentrant, and anyone may release it."""

    __slots__ = ()
    _kind = "lock"
    _typeid = "Lock"

    def _referent_repr(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<{state} _thread.lock object at {self._id:#x}>"

    def locked(self) -> bool:
        """True when someone holds the lock."""
        return self._call(self._m + "locked")


class RLockProxy(LockProxy):
    """A shared ``threading.RLock``: reentrant, released only by the thread that holds it."""

    __slots__ = ()
    _kind = "rlock"
    _typeid = "RLock"

    def _referent_repr(self) -> str:
        # Python's also shows the owner and depth, which the wire does not give.
        state = "locked" if self.locked() else "unlocked"
        return f"<{state} _thread.RLock object at {self._id:#x}>"


class SemaphoreProxy(AcquirerProxy):
    """A shared ``threading.Semaphore``."""

    __slots__ = ()
    _kind = "semaphore"
    _typeid = "Semaphore"

    def _referent_repr(self) -> str:
        return f"<threading.Semaphore at {self._id:#x}: value={self.get_value()}>"

    def release(self, n: int = 1) -> None:
        """Gives back ``n`` permits (``n`` is an agora extension; Python's proxy takes none)."""
        if n == 1:
            self._call(self._m + "release")
        else:
            self._call(self._m + "release", n)

    def get_value(self) -> int:
        """The number of permits available now."""
        return self._call(self._m + "get_value")


class BoundedSemaphoreProxy(SemaphoreProxy):
    """A shared ``threading.BoundedSemaphore``: releasing above the initial value raises
    ``ValueError``."""

    __slots__ = ()
    _kind = "bounded_semaphore"
    _typeid = "BoundedSemaphore"

    def _referent_repr(self) -> str:
        # Python's also shows the initial value (value=1/1), which the wire does not give.
        return f"<threading.BoundedSemaphore at {self._id:#x}: value={self.get_value()}>"


class ConditionProxy(AcquirerProxy):
    """A shared ``threading.Condition`` (over a new ``RLock``, or the lock given)."""

    __slots__ = ()
    _kind = "condition"
    _typeid = "Condition"

    def _referent_repr(self) -> str:
        # Python's shows its lock's repr and the number of waiters; the wire gives the first.
        state = "locked" if self.locked() else "unlocked"
        return f"<Condition(<{state} lock at {self._id:#x}>)>"

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Releases the lock, waits to be notified (up to ``timeout`` seconds), re-acquires.

        Returns ``False`` at the timeout; ``RuntimeError`` without the lock."""
        if timeout is None:
            return self._call(self._m + "wait")
        return self._call(self._m + "wait", timeout)

    def wait_for(self, predicate: Callable[[], T], timeout: Optional[float] = None) -> T:
        """Waits until ``predicate()`` is true (it is evaluated here, with the lock held);
        returns its last value, which is false at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            if deadline is None:
                self.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters, in the order they began waiting."""
        if n == 1:
            self._call(self._m + "notify")
        else:
            self._call(self._m + "notify", n)

    def notify_all(self) -> None:
        """Wakes every waiter."""
        self._call(self._m + "notify_all")

    def locked(self) -> bool:
        """True when someone holds the condition's lock."""
        return self._call(self._m + "locked")


class EventProxy(BaseProxy):
    """A shared ``threading.Event``."""

    __slots__ = ()
    _kind = "event"
    _typeid = "Event"

    def _referent_repr(self) -> str:
        state = "set" if self.is_set() else "unset"
        return f"<threading.Event at {self._id:#x}: {state}>"

    def is_set(self) -> bool:
        """True when the flag is set."""
        return self._call("event.is_set")

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        self._call("event.set")

    def clear(self) -> None:
        """Clears the flag."""
        self._call("event.clear")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the flag is set (up to ``timeout`` seconds); returns the flag."""
        if timeout is None:
            return self._call("event.wait")
        return self._call("event.wait", timeout)


class BarrierProxy(BaseProxy):
    """A shared ``threading.Barrier`` (without an ``action``: the manager runs no Python)."""

    __slots__ = ()
    _kind = "barrier"
    _typeid = "Barrier"

    def _referent_repr(self) -> str:
        if self.broken:
            return f"<threading.Barrier at {self._id:#x}: broken>"
        return f"<threading.Barrier at {self._id:#x}: waiters={self.n_waiting}/{self.parties}>"

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits until ``parties`` callers wait; returns this caller's arrival index (exactly
        one caller gets 0). ``threading.BrokenBarrierError`` if the barrier is or becomes
        broken (a timeout breaks it, as in Python)."""
        if timeout is None:
            return self._call("barrier.wait")
        return self._call("barrier.wait", timeout)

    def abort(self) -> None:
        """Breaks the barrier: waiters get ``BrokenBarrierError``."""
        self._call("barrier.abort")

    def reset(self) -> None:
        """Makes the barrier whole again; current waiters get ``BrokenBarrierError``."""
        self._call("barrier.reset")

    @property
    def parties(self) -> int:
        """How many callers the barrier waits for."""
        return self._call("barrier.parties")

    @property
    def n_waiting(self) -> int:
        """How many callers are waiting now."""
        return self._call("barrier.n_waiting")

    @property
    def broken(self) -> bool:
        """True when the barrier is broken."""
        return self._call("barrier.broken")
