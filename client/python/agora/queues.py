"""Proxies of the shared queues: ``Queue`` and ``JoinableQueue``.

The manager parks a blocking ``get``/``put`` without tying up a thread and answers it when it
completes or times out; the timeout runs on the manager. Waiters are served first come, first
served. A waiter whose process dies is taken out of line, and an item is never lost to it: the
item stays in the queue.

A plain ``get`` is at-most-once: an item written to a consumer that dies before reading it, or
before processing it, is gone. For at-least-once delivery, take items with
:meth:`QueueProxy.get_acked` and :meth:`QueueProxy.ack` each once processed; a
:class:`JoinableQueueProxy`'s ``task_done`` is already its acknowledgement. The items a
connection took and did not finish go back to the head of the queue, in their order, when the
connection closes, however the process ends (``SIGKILL`` included), so ``join()`` still
completes. An item whose consumer acted on it and died before finishing it is processed twice.
"""

from __future__ import annotations

from typing import Any, ClassVar, List, NamedTuple, Optional, cast

from .proxies import BaseProxy

__all__ = ["Acked", "QueueProxy", "JoinableQueueProxy"]


class Acked(NamedTuple):
    """An item taken with :meth:`QueueProxy.get_acked`, with the receipt that acknowledges it
    (:meth:`QueueProxy.ack`) or puts it back (:meth:`QueueProxy.nack`)."""

    receipt: int
    item: Any


def _check_timeout(block: Any, timeout: Optional[float]) -> None:
    # queue.Queue refuses a negative timeout (even -1) when blocking; the protocol would read
    # -1 as "no limit".
    if block and timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class QueueProxy(BaseProxy):
    """A shared FIFO queue with the surface of ``queue.Queue`` as a manager proxy exposes it:
    ``put``, ``get``, ``put_nowait``, ``get_nowait``, ``qsize``, ``empty``, ``full``, raising
    ``queue.Empty`` and ``queue.Full``.

    agora adds batched :meth:`put_many` / :meth:`get_many`, :meth:`close` (which ends
    consumers without sentinel values) and :attr:`maxsize`. ``task_done`` and ``join`` count as
    ``queue.Queue``'s do; a plain queue's gets stay at-most-once (a :class:`JoinableQueueProxy`
    redelivers what a dead consumer had not marked done).
    """

    __slots__ = ()
    _kind = "queue"
    _typeid = "Queue"
    _m: ClassVar[str] = "queue."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._m = cls._kind + "."

    def _referent_repr(self) -> str:
        # Python's manager queue is a queue.Queue, whose repr is object's (both Queue and
        # JoinableQueue); the call checks that the object is there, as Python's str() does.
        self.qsize()
        return f"<queue.Queue object at {self._id:#x}>"

    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Puts ``obj`` at the end, waiting for room (up to ``timeout`` seconds) unless
        ``block`` is false; ``queue.Full`` when there is none."""
        if not block:
            self._call(self._m + "put", obj, False)
        elif timeout is None:
            self._call(self._m + "put", obj)
        else:
            _check_timeout(block, timeout)
            self._call(self._m + "put", obj, True, timeout)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns the first item, waiting for one (up to ``timeout`` seconds)
        unless ``block`` is false; ``queue.Empty`` when there is none."""
        if not block:
            return self._call(self._m + "get", False)
        if timeout is None:
            return self._call(self._m + "get")
        _check_timeout(block, timeout)
        return self._call(self._m + "get", True, timeout)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, False)``."""
        self._call(self._m + "put_nowait", obj)

    def get_nowait(self) -> Any:
        """``get(False)``."""
        return self._call(self._m + "get_nowait")

    def qsize(self) -> int:
        """How many items the queue holds now."""
        return cast("int", self._call(self._m + "qsize"))

    def empty(self) -> bool:
        """True when the queue holds no item now."""
        return cast("bool", self._call(self._m + "empty"))

    def full(self) -> bool:
        """True when the queue is bounded and has no room now."""
        return cast("bool", self._call(self._m + "full"))

    # --- agora extensions ----------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The bound given at creation (0: unbounded)."""
        return cast("int", self._call(self._m + "maxsize"))

    def put_many(self, items: Any, block: bool = True, timeout: Optional[float] = None) -> int:
        """Puts the items in order in one call, as room appears; returns how many got in
        (all of them unless non-blocking or timed out)."""
        items = list(items)
        if not block:
            return cast("int", self._call(self._m + "put_many", items, False))
        if timeout is None:
            return cast("int", self._call(self._m + "put_many", items))
        _check_timeout(block, timeout)
        return cast("int", self._call(self._m + "put_many", items, True, timeout))

    def get_many(self, n: int, block: bool = True, timeout: Optional[float] = None) -> List[Any]:
        """Removes and returns 1 to ``n`` items in one call, waiting for the first like
        :meth:`get`."""
        if not block:
            return cast("list[Any]", self._call(self._m + "get_many", n, False))
        if timeout is None:
            return cast("list[Any]", self._call(self._m + "get_many", n))
        _check_timeout(block, timeout)
        return cast("list[Any]", self._call(self._m + "get_many", n, True, timeout))

    def get_acked(self, block: bool = True, timeout: Optional[float] = None) -> Acked:
        """Removes and returns the first item like :meth:`get`, with a receipt: the manager keeps
        the item on record until :meth:`ack` (or :meth:`nack`), and puts it back at the head of
        the queue if this connection closes first, however the process ends. A plain queue's
        method only: a :class:`JoinableQueueProxy` acknowledges with ``task_done``."""
        if not block:
            got = self._call(self._m + "get_acked", False)
        elif timeout is None:
            got = self._call(self._m + "get_acked")
        else:
            _check_timeout(block, timeout)
            got = self._call(self._m + "get_acked", True, timeout)
        receipt, item = got
        return Acked(receipt, item)

    def get_many_acked(
        self, n: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Acked]:
        """Removes and returns 1 to ``n`` items like :meth:`get_many`, each with its receipt
        like :meth:`get_acked`."""
        if not block:
            got = self._call(self._m + "get_many_acked", n, False)
        elif timeout is None:
            got = self._call(self._m + "get_many_acked", n)
        else:
            _check_timeout(block, timeout)
            got = self._call(self._m + "get_many_acked", n, True, timeout)
        return [Acked(receipt, item) for receipt, item in got]

    def ack(self, receipt: int) -> None:
        """The item of ``receipt`` is processed: the manager forgets it. Any connection may
        acknowledge it. ``ValueError`` when it is not on record (acknowledged already, or
        redelivered because the connection that took it closed)."""
        self._call(self._m + "ack", receipt)

    def nack(self, receipt: int) -> None:
        """The item of ``receipt`` goes back to the head of the queue now; ``ValueError`` as
        :meth:`ack`."""
        self._call(self._m + "nack", receipt)

    def close(self) -> None:
        """Closes the queue for everyone: later puts raise :class:`agora.Closed`; getters
        drain what is left, then get :class:`agora.Closed` (parked ones at once)."""
        self._call(self._m + "close")

    def is_closed(self) -> bool:
        """True once :meth:`close` was called."""
        return cast("bool", self._call(self._m + "is_closed"))

    def task_done(self) -> None:
        """Marks one item taken from the queue as processed, as ``queue.Queue.task_done`` does;
        ``ValueError`` if called more times than items were put. On a joinable queue it also
        finishes the oldest item this connection took and has not marked (if it took none,
        the oldest any connection took); on a plain queue it only counts, and nothing is
        redelivered."""
        self._call(self._m + "task_done")

    def join(self, timeout: Optional[float] = None) -> Optional[bool]:
        """Waits until every item put has been marked done.

        Without ``timeout`` it returns ``None``, as ``queue.Queue.join`` does; with one it
        returns ``True`` when everything was done and ``False`` at the timeout (an agora
        extension)."""
        if timeout is None:
            self._call(self._m + "join")
            return None
        return cast("bool | None", self._call(self._m + "join", timeout))


class JoinableQueueProxy(QueueProxy):
    """A :class:`QueueProxy` whose ``task_done`` is also an acknowledgement.

    Every item taken stays on record until ``task_done`` marks it, and goes back to the head
    of the queue if the connection that took it closes first. The acknowledged gets of
    :class:`QueueProxy` are not for this kind: the manager refuses them."""

    __slots__ = ()
    _kind = "joinable_queue"
    _typeid = "JoinableQueue"
