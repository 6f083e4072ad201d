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

**What a dying process gives back.** What a ``with`` block takes is always *owned*: a process
that dies inside the block releases it, and the next acquirer is told. A bare ``acquire()`` of
a ``Lock``, ``RLock``, ``BoundedSemaphore`` or ``Condition`` is owned too (a ``try``/``finally``
critical section stays protected). A bare ``acquire()`` of a ``Semaphore`` is a consumption
that nothing gives back, as in Python, so a semaphore works as a signal: a consumer that
acquires and exits does not hand the signal back. ``owned=False`` at creation
(``manager.Lock(owned=False)``) gives Python's exact ownerless semantics for every acquire (a
child acquires a lock and exits, its parent releases it); ``owned=True`` protects every acquire.

**One outcome on every run.** When a process that acquired something has exited before another
process calls ``release`` (CPython's ``TestSyncManagerTypes.test_lock`` pattern: the parent
joining the child, then releases), the manager finishes the exit first. With an owned
acquire the exit released it, so the parent's ``release()`` raises ``RuntimeError`` (a
``BoundedSemaphore``: ``ValueError``) on every run; with ``owned=False`` it succeeds on every
run, as in Python.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, ClassVar, Optional, Tuple, TypeVar, cast

from .errors import ProtocolError, from_wire
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
    "MutexProxy",
    "MutexGuard",
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
    #: The acquire params between the timeout and ``owned``: a lock's ``owner`` (nil: the
    #: default, each thread has its own connection); none for a semaphore.
    _owned_pad: ClassVar[Tuple[Any, ...]] = (None,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._m = cls._kind + "."

    def __init__(self, client: Any, ident: int) -> None:
        super().__init__(client, ident)
        #: True when the last acquire through this proxy succeeded because the previous
        #: holder died holding the object (its data may be half updated).
        self.owner_died = False

    def acquire_status(
        self,
        blocking: bool = True,
        timeout: Optional[float] = None,
        *,
        owned: Optional[bool] = None,
    ) -> int:
        """Like :meth:`acquire`, but returns the protocol's code: ``0`` not acquired, ``1``
        acquired, ``2`` acquired after the previous holder died holding it.

        ``owned``: whether this process's exit gives back what it takes (``None``: the kind's
        default, see the module's documentation; an ``owned`` option given at creation wins)."""
        m = self._m + "acquire"
        if owned is not None:
            code = self._call(m, bool(blocking), timeout, *self._owned_pad, bool(owned))
        elif timeout is None:
            code = self._call(m, bool(blocking))
        else:
            code = self._call(m, bool(blocking), timeout)
        if code:
            self.owner_died = code == ACQUIRED_OWNER_DIED
        return cast("int", code)

    def acquire(
        self,
        blocking: bool = True,
        timeout: Optional[float] = None,
        *,
        owned: Optional[bool] = None,
    ) -> bool:
        """Acquires, waiting (up to ``timeout`` seconds) unless ``blocking`` is false.

        Returns ``True`` when acquired, ``False`` otherwise. ``ValueError`` for a timeout with
        ``blocking`` false. ``owned`` as for :meth:`acquire_status`."""
        return self.acquire_status(blocking, timeout, owned=owned) != NOT_ACQUIRED

    def release(self) -> None:
        """Releases; ``RuntimeError`` when not held (by this thread, for an ``RLock``)."""
        self._call(self._m + "release")

    def __enter__(self) -> bool:
        # What a with block takes is owned: a process dying inside the block gives it back.
        return self.acquire_status(True, None, owned=True) != NOT_ACQUIRED

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire_then(
        self, proxy: BaseProxy, method: str, *args: Any, timeout: Optional[float] = None
    ) -> Tuple[bool, Any]:
        """Acquires (owned, waiting up to ``timeout`` seconds, ``None``: no limit), then runs
        ``method`` of ``proxy`` with ``args`` in the manager the moment it is granted, all
        in one round trip (a ``chain``, ``PROTOCOL.md`` section 4.16): a critical section's
        first read costs no round trip of its own, and under contention it is done before
        this thread has even woken up.

        ``method`` is the wire method of the proxy's kind (``PROTOCOL.md`` section 4) without
        the kind: ``"get"`` or ``"getitem"`` for a dict, ``"get"`` for a ``Value``.

        Returns ``(True, result)`` once acquired, ``(False, None)`` at the timeout (the call
        not run). When the call fails, what was acquired is released and its error raised.
        :attr:`owner_died` is set as by :meth:`acquire`::

            ok, n = lock.acquire_then(db, "getitem", "count")
            if n > 0:
                lock.release_after(db, "setitem", "count", n - 1)
            else:
                lock.release()
        """
        conn = self._connection_with(proxy)
        acquire = self._step("acquire", True, timeout, *self._owned_pad, True)
        got, then = _chain_results(conn.call("chain", (acquire, proxy._step(method, *args))))
        if isinstance(got, BaseException):
            raise got
        if got is _NOT_RUN:
            raise ProtocolError("the manager did not run the first call of a chain")
        if not got:
            return False, None
        self.owner_died = got == ACQUIRED_OWNER_DIED
        if then is _NOT_RUN:
            raise ProtocolError("the manager did not run a chain's call after a grant")
        if isinstance(then, BaseException):
            self.release()
            raise then
        return True, then

    def release_after(
        self, proxy: BaseProxy, method: str, *args: Any, wait: bool = True
    ) -> Any:
        """Runs ``method`` of ``proxy`` with ``args`` (as :meth:`acquire_then` names it),
        then releases, in one round trip, and returns the call's result: a critical
        section's last write and its release cost one round trip together. The release
        happens whether the call succeeds or fails; the call's error is raised after it.

        ``wait=False`` sends both without waiting for their replies (as a ``with`` block's
        release of a ``Lock`` is sent): no round trip at all, the manager runs this thread's
        next call after them, and an error in either is logged when the next call reads
        the replies; it returns ``None``."""
        conn = self._connection_with(proxy)
        last, release = proxy._step(method, *args), self._step("release")
        if not wait:
            conn.calls_detached((last, release))
            return None
        result, released = _chain_results(conn.call("chain", (last, release)))
        if released is _NOT_RUN:  # the call failed, which stopped the chain before the release
            self.release()
        elif isinstance(released, BaseException):
            raise released
        if isinstance(result, BaseException):
            raise result
        return result


#: A chain entry's call did not run.
_NOT_RUN = object()


def _chain_results(entries: Any) -> Tuple[Any, Any]:
    """The two results of a two-call chain's reply: each the call's result, the exception
    it failed with, or :data:`_NOT_RUN`."""
    if not isinstance(entries, list) or len(entries) != 2:
        raise ProtocolError(f"a chain of two calls answered {entries!r}")
    return _chain_entry(entries[0]), _chain_entry(entries[1])


def _chain_entry(entry: Any) -> Any:
    if entry is None:
        return _NOT_RUN
    if not isinstance(entry, list) or len(entry) != 2:
        raise ProtocolError(f"a chain's entry is not [error, result]: {entry!r}")
    error, result = entry
    return result if error is None else from_wire(error)


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
        return cast("bool", self._call(self._m + "locked"))

    def token(self) -> int:
        """The fencing token of this thread's holding: a number that grows with every grant
        of the lock. Send it with each write to what the lock guards, and have that refuse a
        token below the highest it has seen, so that a holder that lost the lock while it
        stalled cannot write over its successor (PROTOCOL.md, "Fencing tokens").
        ``RuntimeError`` when this thread does not hold the lock."""
        return cast("int", self._call(self._m + "token"))

    def __exit__(self, *exc: object) -> None:
        # The release is sent without waiting for its reply: the manager runs this thread's
        # calls in order, so its next call comes after the release, and other processes see
        # the lock free as soon as the manager reads it. The reply is read with the next
        # call's; an error in it (the block released the lock itself) is logged, not raised.
        # An explicit release() waits, and raises when the lock is not held.
        self._call_detached(self._m + "release")


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
    _owned_pad = ()

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
        return cast("int", self._call(self._m + "get_value"))


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
            return cast("bool", self._call(self._m + "wait"))
        return cast("bool", self._call(self._m + "wait", timeout))

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
        return cast("bool", self._call(self._m + "locked"))


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
        return cast("bool", self._call("event.is_set"))

    def set(self) -> None:
        """Sets the flag and wakes every waiter."""
        self._call("event.set")

    def clear(self) -> None:
        """Clears the flag."""
        self._call("event.clear")

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits until the flag is set (up to ``timeout`` seconds); returns the flag."""
        if timeout is None:
            return cast("bool", self._call("event.wait"))
        return cast("bool", self._call("event.wait", timeout))


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
            return cast("int", self._call("barrier.wait"))
        return cast("int", self._call("barrier.wait", timeout))

    def abort(self) -> None:
        """Breaks the barrier: waiters get ``BrokenBarrierError``."""
        self._call("barrier.abort")

    def reset(self) -> None:
        """Makes the barrier whole again; current waiters get ``BrokenBarrierError``."""
        self._call("barrier.reset")

    @property
    def parties(self) -> int:
        """How many callers the barrier waits for."""
        return cast("int", self._call("barrier.parties"))

    @property
    def n_waiting(self) -> int:
        """How many callers are waiting now."""
        return cast("int", self._call("barrier.n_waiting"))

    @property
    def broken(self) -> bool:
        """True when the barrier is broken."""
        return cast("bool", self._call("barrier.broken"))


class MutexGuard:
    """The lock of a :class:`MutexProxy` and a local copy of its value.

    Read and write the copy through :attr:`value`; assigning it marks it changed. Leaving the
    ``with`` block (or :meth:`unlock`) writes a changed value back and unlocks in one call, or
    only unlocks. :meth:`commit` writes the value now and keeps the lock, so that a process
    killed later leaves that value. Mutating the value in place (``g.value.append(1)``) is not
    seen: assign it (``g.value = g.value + [1]``) or call :meth:`mark_changed`.
    """

    __slots__ = ("_mutex", "_value", "_changed", "_held", "poisoned")

    def __init__(self, mutex: "MutexProxy", value: Any, poisoned: bool) -> None:
        self._mutex = mutex
        self._value = value
        self._changed = False
        self._held = True
        #: True when this lock came poisoned: a holder died holding the mutex, and the value
        #: may be half updated.
        self.poisoned = poisoned

    @property
    def value(self) -> Any:
        """The guarded value (the local copy)."""
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value
        self._changed = True

    def mark_changed(self) -> None:
        """Writes the value back on unlock even though it was not assigned (it was mutated in
        place)."""
        self._changed = True

    def commit(self) -> None:
        """Writes the value to the manager now, keeping the lock."""
        self._mutex._call("mutex.set", self._value)
        self._changed = False

    def unlock(self) -> None:
        """Writes a changed value back and unlocks; ``RuntimeError`` when not held any more."""
        if not self._held:
            raise RuntimeError("this mutex guard was already unlocked")
        self._held = False
        if self._changed:
            self._mutex._call("mutex.set_unlock", self._value)
        else:
            self._mutex._call("mutex.unlock")

    def __enter__(self) -> "MutexGuard":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._held:
            self.unlock()


#: The guards a thread took with ``with mutex as g:``, innermost last, per mutex id, so that
#: ``__exit__`` unlocks the one its ``__enter__`` took.
_entered = threading.local()


class MutexProxy(BaseProxy):
    """A shared value and its lock as one object, poisoned by a holder's death (Rust's
    ``std::sync::Mutex``; no ``multiprocessing`` equivalent).

    ``with mx as g:`` locks (waiting in FIFO order) and gives a :class:`MutexGuard`: ``g.value``
    is the value, assigning it writes it back when the block ends. If a process died (even
    by ``SIGKILL``) holding the mutex, the mutex is **poisoned**: every later lock, by any
    process, gives a guard with ``g.poisoned`` true (the lock is held all the same), and
    :attr:`poisoned` is true, until someone calls :meth:`clear_poison`.
    """

    __slots__ = ()
    _kind = "mutex"
    _typeid = "Mutex"

    def _referent_repr(self) -> str:
        # Python has no such object; shaped as its locks show theirs.
        state = "locked" if self.locked() else "unlocked"
        poisoned = ", poisoned" if self.poisoned else ""
        return f"<{state} agora.Mutex object at {self._id:#x}{poisoned}>"

    def acquire(
        self, blocking: bool = True, timeout: Optional[float] = None
    ) -> Optional[MutexGuard]:
        """Locks, waiting (up to ``timeout`` seconds) unless ``blocking`` is false. Returns the
        guard, or ``None`` when not locked. ``ValueError`` for a timeout with ``blocking``
        false."""
        if timeout is None:
            got = self._call("mutex.lock", bool(blocking))
        else:
            got = self._call("mutex.lock", bool(blocking), timeout)
        if got is None:
            return None
        poisoned, value = got
        return MutexGuard(self, value, bool(poisoned))

    def __enter__(self) -> MutexGuard:
        guard = self.acquire()
        if guard is None:  # a blocking lock without a timeout always locks
            raise RuntimeError("mutex.lock without a timeout answered nil")
        stacks = _entered.__dict__.setdefault("stacks", {})
        stacks.setdefault(self._id, []).append(guard)
        return guard

    def __exit__(self, *exc: object) -> None:
        stack = _entered.__dict__.get("stacks", {}).get(self._id)
        if stack:
            guard = stack.pop()
            if guard._held:
                guard.unlock()

    @property
    def poisoned(self) -> bool:
        """True when a holder died holding the mutex and nobody cleared the poison since."""
        return bool(self._call("mutex.is_poisoned"))

    def clear_poison(self) -> None:
        """Clears the poison: later locks are plain again. Call it once the value is repaired."""
        self._call("mutex.clear_poison")

    def locked(self) -> bool:
        """True when someone holds the lock."""
        return bool(self._call("mutex.locked"))
