"""agora: Python's ``multiprocessing.Manager`` objects, served by the Rust ``agora-manager``.

Quick start::

    import agora

    with agora.Manager() as manager:          # starts agora-manager as a child process
        scores = manager.named("scores").dict()  # named: other programs can look it up
        lock = manager.Lock()
        with lock:
            scores["alice"] = scores.get("alice", 0) + 1

The proxies have the surface of ``multiprocessing.managers``' proxies. The module also offers
drop-ins for ``multiprocessing``'s top-level objects (``Lock``, ``Queue``, ``Value``, ...) on a
default manager, and re-exports ``Process`` and friends, so that ``from agora import Process,
Lock`` is the only change a ``multiprocessing`` program needs. See ``README.md`` for the
differences from ``multiprocessing``.
"""

from multiprocessing import (
    BufferTooShort,
    Pipe,
    Pool,
    Process,
    ProcessError,
    active_children,
    cpu_count,
    current_process,
    freeze_support,
    get_start_method,
    parent_process,
    set_start_method,
)
from typing import TYPE_CHECKING

from . import _dist
from .connection import Client, Connection, client_for, deadline
from .context import (
    Array,
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    JoinableQueue,
    Lock,
    Queue,
    RLock,
    Semaphore,
    SimpleQueue,
    Value,
    default_manager,
)
from .errors import (
    AgoraError,
    ArgumentCountError,
    AuthenticationError,
    Closed,
    ConnectionLost,
    LimitError,
    ManagerTimeout,
    NotAManagerError,
    PermissionDenied,
    ProtocolError,
    ShutdownError,
    TLSError,
    UnknownMethodError,
    UnknownObjectError,
)
from .manager import Manager, connect
from .proxies import (
    ArrayProxy,
    BaseProxy,
    DictProxy,
    ListProxy,
    NamespaceProxy,
    SetProxy,
    ValueProxy,
)
from .queues import Acked, JoinableQueueProxy, QueueProxy
from .synchronize import (
    AcquirerProxy,
    BarrierProxy,
    BoundedSemaphoreProxy,
    ConditionProxy,
    EventProxy,
    LockProxy,
    MutexGuard,
    MutexProxy,
    RLockProxy,
    SemaphoreProxy,
)

if TYPE_CHECKING:
    #: The workspace version from ``Cargo.toml``, as the installed metadata (or the source tree)
    #: has it.
    __version__: str
else:

    def __getattr__(name: str) -> str:
        # __version__ is read when first asked for: importlib.metadata is slow to import (about
        # half as long again as the rest of `import agora`), and most programs never ask.
        if name == "__version__":
            version = _dist.version()
            globals()["__version__"] = version
            return version
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # managers
    "Manager",
    "connect",
    "deadline",
    "default_manager",
    # multiprocessing drop-ins
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Queue",
    "RLock",
    "Semaphore",
    "SimpleQueue",
    "Value",
    # re-exported from multiprocessing
    "BufferTooShort",
    "Pipe",
    "Pool",
    "Process",
    "ProcessError",
    "active_children",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_start_method",
    "parent_process",
    "set_start_method",
    # proxies
    "Acked",
    "AcquirerProxy",
    "ArrayProxy",
    "BarrierProxy",
    "BaseProxy",
    "BoundedSemaphoreProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "JoinableQueueProxy",
    "ListProxy",
    "LockProxy",
    "MutexGuard",
    "MutexProxy",
    "NamespaceProxy",
    "QueueProxy",
    "RLockProxy",
    "SemaphoreProxy",
    "SetProxy",
    "ValueProxy",
    # errors
    "AgoraError",
    "ArgumentCountError",
    "AuthenticationError",
    "Closed",
    "ConnectionLost",
    "LimitError",
    "ManagerTimeout",
    "NotAManagerError",
    "PermissionDenied",
    "ProtocolError",
    "ShutdownError",
    "TLSError",
    "UnknownMethodError",
    "UnknownObjectError",
    # low level
    "Client",
    "Connection",
    "client_for",
]
