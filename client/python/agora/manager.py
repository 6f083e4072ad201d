"""The manager: start ``agora-manager`` as a child process, or connect to a running one, and
create shared objects on it.

``agora.Manager()`` is the counterpart of ``multiprocessing.Manager()``: it starts a private
manager (a Unix socket in a fresh 0700 directory, a fresh random authkey) and shuts it down on
``shutdown()``, at the end of a ``with`` block, or when the program exits.
``agora.connect(address, authkey)`` uses a manager that is already running, for instance one
started with the ``agora-manager`` command, so that unrelated programs can share named objects.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import tempfile
import time
from multiprocessing import util as mp_util
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union, cast

from ._dist import MANAGER_BIN_NAME, installed_manager_binary
from .connection import (
    _SPIN_US,
    SPIN_MAX_US,
    AddressList,
    Client,
    Connection,
    client_for,
    parse_address,
    parse_authkey,
)
from .proxies import (
    ArrayProxy,
    BaseProxy,
    DictProxy,
    ListProxy,
    NamespaceProxy,
    SetProxy,
    ValueProxy,
    proxy_class,
)
from .queues import JoinableQueueProxy, QueueProxy
from .synchronize import (
    BarrierProxy,
    BoundedSemaphoreProxy,
    ConditionProxy,
    EventProxy,
    LockProxy,
    MutexProxy,
    RLockProxy,
    SemaphoreProxy,
)

__all__ = ["Manager", "Named", "connect", "find_manager_binary"]

log = logging.getLogger("agora")

_P = TypeVar("_P", bound=BaseProxy)

#: The write ends of the lifelines (the managers' stdin pipes) of the managers this process
#: started and has not stopped. Only this process may hold them: a forked child that kept a
#: copy would keep its parent's manager alive after the parent died.
_LIFELINES: "set[int]" = set()


def _release_lifelines_in_child() -> None:
    """After a fork, in the child: points every inherited lifeline write end at ``/dev/null``.
    The number stays open (the inherited ``Popen`` object closes it in its own time, and no
    other file can take the number meanwhile), but the pipe is no longer held."""
    if not _LIFELINES:
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        null = -1
    for fd in _LIFELINES:
        try:
            if null >= 0:
                os.dup2(null, fd)
            else:
                os.close(fd)
        except OSError:
            pass
    if null >= 0:
        os.close(null)
    _LIFELINES.clear()


os.register_at_fork(after_in_child=_release_lifelines_in_child)

#: Environment variable naming the ``agora-manager`` binary.
MANAGER_BIN_ENV = "AGORA_MANAGER_BIN"


def find_manager_binary(executable: Optional[str] = None) -> str:
    """The ``agora-manager`` binary to run: ``executable``, else ``$AGORA_MANAGER_BIN``, else the
    one ``pip install`` put beside this package, else ``agora-manager`` on ``PATH``."""
    candidate = executable or os.environ.get(MANAGER_BIN_ENV)
    if candidate:
        if not os.access(candidate, os.X_OK):
            raise FileNotFoundError(f"the agora manager binary {candidate!r} is not executable")
        return candidate
    found = installed_manager_binary() or shutil.which(MANAGER_BIN_NAME)
    if found is None:
        raise FileNotFoundError(
            "cannot find the agora-manager binary: this agora was not installed with pip "
            "(`pip install ./client/python` builds and installs it), and there is none on PATH "
            f"nor in {MANAGER_BIN_ENV} (`cargo build --release -p agora-manager` builds one)"
        )
    return found


def _read_ready_line(proc: "subprocess.Popen[bytes]", timeout: float) -> str:
    """The manager's ready line, read from its stdout within ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"agora-manager was not ready within {timeout} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = proc.wait()
            raise RuntimeError(
                f"agora-manager exited with status {code} before it was ready "
                "(its messages are on stderr)"
            )
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _parse_ready_line(line: str) -> str:
    words = line.split()
    if words[:2] != ["agora-manager", "ready"] or len(words) < 3:
        raise RuntimeError(f"unexpected first line from agora-manager: {line!r}")
    return words[2]


def _stop_manager(
    proc: "subprocess.Popen[bytes]",
    address: str,
    admin_authkey: bytes,
    tmpdir: Optional[str],
    creator_pid: int,
    timeout: float,
) -> None:
    """Shuts down a manager this process started: the ``shutdown`` call, then SIGTERM, then
    SIGKILL, each after ``timeout`` seconds without effect."""
    if os.getpid() != creator_pid:
        return  # a forked child: the manager belongs to its parent
    try:
        _stop_started_manager(proc, address, admin_authkey, timeout)
    finally:
        # The lifeline: closing it is what stops a manager that did not answer.
        if proc.stdin is not None:
            _LIFELINES.discard(proc.stdin.fileno())
            proc.stdin.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _stop_started_manager(
    proc: "subprocess.Popen[bytes]", address: str, admin_authkey: bytes, timeout: float
) -> None:
    if proc.poll() is None:
        try:
            conn = Connection(Client(address, admin_authkey), timeout=timeout)
            try:
                conn.call("shutdown", ())
            finally:
                conn.close()
        except Exception as e:  # it may be gone already; the signals below still apply
            log.debug("shutdown call to %s failed: %s", address, e)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("agora-manager %d did not stop after shutdown; terminating it", proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _owned_arg(owned: Optional[bool]) -> Tuple[Any, ...]:
    """The ``owned`` create arg: none at all when not given, so that the manager's default
    (each acquire says) applies and older managers still accept the create."""
    return () if owned is None else (bool(owned),)


def _typecode_args(typecode: Optional[str]) -> Optional[str]:
    if typecode is not None and not isinstance(typecode, str):
        raise TypeError(f"a typecode is a str such as 'i' or 'd', not {typecode!r}")
    return typecode


class _Factories:
    """The factories of shared objects, with ``multiprocessing.managers.SyncManager``'s
    signatures: every argument means what it means there. :class:`Manager` makes unnamed
    objects; ``manager.named(name)`` makes (or finds) the object called ``name``."""

    _client: Client
    #: The name the objects made here get; ``None`` for unnamed objects.
    _name: Optional[str] = None

    def _make(self, cls: Type[_P], kind: str, *args: Any) -> _P:
        """Creates an object of ``kind`` and returns its proxy, of ``cls`` (the kind's class)."""
        assert proxy_class(kind) is cls
        client = self._client
        # The proxy is made as the reference is counted: it holds the object from the start.
        return client.call_and_make(
            lambda ident: cls(client, ident), "create", kind, self._name, *args
        )


    def dict(self, *args: Any, **kwargs: Any) -> DictProxy:
        """A shared dict, initialised like ``dict(*args, **kwargs)`` (every keyword is data,
        ``name`` included, as in Python)."""
        if len(args) == 1 and isinstance(args[0], DictProxy):
            args = (args[0].copy(),)
        initial: Dict[Any, Any] = dict(*args, **kwargs)
        if initial:
            return self._make(DictProxy, "dict", initial)
        return self._make(DictProxy, "dict")

    def list(self, sequence: Any = ()) -> ListProxy:
        """A shared list, initialised from ``sequence``."""
        items = sequence.copy() if isinstance(sequence, ListProxy) else list(sequence)
        if items:
            return self._make(ListProxy, "list", items)
        return self._make(ListProxy, "list")

    def set(self, iterable: Any = ()) -> SetProxy:
        """A shared set (Python 3.14's ``SyncManager.set()``), initialised from ``iterable``
        (whose elements must be hashable)."""
        if isinstance(iterable, SetProxy):
            iterable = iterable.copy()
        items = list(iterable)
        for item in items:
            hash(item)
        if items:
            return self._make(SetProxy, "set", items)
        return self._make(SetProxy, "set")

    def Value(
        self,
        typecode: Optional[str],
        value: Any,
        lock: bool = True,
        *,
        strict: bool = False,
    ) -> ValueProxy:
        """A shared value with ``.value``.

        As with Python's manager, ``typecode`` is not enforced and ``lock`` is ignored; with
        ``strict=True`` the manager enforces the typecode (``TypeError`` / ``OverflowError``
        for a value that does not fit)."""
        code = _typecode_args(typecode) if strict else None
        client = self._client

        def make(ident: int) -> ValueProxy:
            # The proxy shows the typecode it was given, as Python's Value does, enforced or not.
            return ValueProxy(client, ident, typecode)

        return client.call_and_make(make, "create", "value", self._name, code, value)

    def Array(
        self, typecode: str, sequence: Any, lock: bool = True
    ) -> ArrayProxy:
        """A shared fixed-length array of ``typecode`` (``array`` module typecodes), from a
        sequence, or an int for that many zeros. ``lock`` is ignored, as in Python."""
        _typecode_args(typecode)
        if isinstance(sequence, (bytes, bytearray)) and typecode == "c":
            init: Any = bytes(sequence)
        elif isinstance(sequence, int) and not isinstance(sequence, bool):
            init = sequence
        else:
            init = list(sequence)
        client = self._client

        def make(ident: int) -> ArrayProxy:
            return ArrayProxy(client, ident, typecode)

        return client.call_and_make(make, "create", "array", self._name, typecode, init)

    def Namespace(self, **attributes: Any) -> NamespaceProxy:
        """A shared attribute bag with these initial attributes (any name, ``name`` included,
        as in Python)."""
        if attributes:
            return self._make(NamespaceProxy, "namespace", attributes)
        return self._make(NamespaceProxy, "namespace")

    def Queue(self, maxsize: int = 0) -> QueueProxy:
        """A shared FIFO queue, bounded when ``maxsize > 0``."""
        return self._make(QueueProxy, "queue", max(int(maxsize), 0))

    def JoinableQueue(self, maxsize: int = 0) -> JoinableQueueProxy:
        """A shared queue with ``task_done`` and ``join``."""
        return self._make(JoinableQueueProxy, "joinable_queue", max(int(maxsize), 0))

    def Lock(self, *, owned: Optional[bool] = None) -> LockProxy:
        """A shared ``threading.Lock``. ``owned``: ``False`` for Python's exact ownerless
        semantics (an acquire is never released by its process's exit, so a child may acquire
        and its parent release), ``True`` to release every acquire on exit; ``None``: a bare
        ``acquire()`` and a ``with`` block are both owned (see :mod:`agora.synchronize`)."""
        return self._make(LockProxy, "lock", *_owned_arg(owned))

    def RLock(self, *, owned: Optional[bool] = None) -> RLockProxy:
        """A shared ``threading.RLock``; ``owned`` as for :meth:`Lock`."""
        return self._make(RLockProxy, "rlock", *_owned_arg(owned))

    def Semaphore(self, value: int = 1, *, owned: Optional[bool] = None) -> SemaphoreProxy:
        """A shared ``threading.Semaphore``. ``owned`` as for :meth:`Lock`, but with
        ``None`` a bare ``acquire()`` is unowned (a consumption, as in Python: signalling
        works) and only a ``with`` block is owned."""
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        return self._make(SemaphoreProxy, "semaphore", value, *_owned_arg(owned))

    def BoundedSemaphore(
        self, value: int = 1, *, owned: Optional[bool] = None
    ) -> BoundedSemaphoreProxy:
        """A shared ``threading.BoundedSemaphore``; ``owned`` as for :meth:`Lock`."""
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        return self._make(BoundedSemaphoreProxy, "bounded_semaphore", value, *_owned_arg(owned))

    def Condition(self, lock: Optional[Union[LockProxy, RLockProxy]] = None) -> ConditionProxy:
        """A shared ``threading.Condition`` over a new RLock, or over ``lock`` (a ``Lock`` or
        ``RLock`` proxy of this manager)."""
        if lock is None:
            return self._make(ConditionProxy, "condition")
        if not isinstance(lock, LockProxy) or lock._client.address != self._client.address:
            raise TypeError("a Condition's lock must be a Lock or RLock proxy of the same manager")
        return self._make(ConditionProxy, "condition", lock._id)

    def Event(self) -> EventProxy:
        """A shared ``threading.Event``."""
        return self._make(EventProxy, "event")

    def Barrier(
        self,
        parties: int,
        action: Any = None,
        timeout: Optional[float] = None,
    ) -> BarrierProxy:
        """A shared ``threading.Barrier``. ``action`` is not supported: the manager runs no
        Python code (run it after ``wait()`` in the party that got index 0)."""
        if action is not None:
            raise NotImplementedError(
                "agora barriers cannot run an action: run it after wait() in the party that "
                "gets index 0"
            )
        if timeout is None:
            return self._make(BarrierProxy, "barrier", parties)
        return self._make(BarrierProxy, "barrier", parties, timeout)

    def Mutex(self, value: Any = None) -> MutexProxy:
        """A shared value and its lock as one object, poisoned when a holder dies holding it
        (see :class:`agora.MutexProxy`). Made by name, an existing mutex keeps its value."""
        return self._make(MutexProxy, "mutex", value)


class Named(_Factories):
    """The factories of :class:`Manager`, making named objects: ``manager.named("scores")
    .dict()`` is the dict called ``"scores"``, created if there is none (get-or-create: the
    arguments are ignored when it exists; ``TypeError`` when an object of another kind has the
    name). A named object lives until :meth:`Manager.delete` or until the manager stops, so
    that any process can find it by name (:meth:`Manager.lookup`)."""

    def __init__(self, client: Client, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"an object name is a str, not {type(name).__name__}")
        self._client = client
        self._name = name

    def __repr__(self) -> str:
        return f"<agora.Named {self._name!r} at {self._client.address}>"


class Manager(_Factories):
    """A handle on an agora manager, with factories for shared objects.

    ``Manager()`` starts a private ``agora-manager`` child process (``executable``, else
    ``$AGORA_MANAGER_BIN``, else the one installed with this package, else the one on ``PATH``;
    see :func:`find_manager_binary`; ``args`` are extra command-line arguments such as
    ``["--max-message-bytes", "1048576"]``) and owns it: :meth:`shutdown`, the end of a ``with``
    block and interpreter exit stop it. ``Manager(address, authkey)`` (or
    :func:`connect`) uses a running manager instead and never stops it implicitly.

    ``spin_us`` sets how long (microseconds) a call polls for its reply before sleeping, for
    this process's connections and, when this object starts the manager, for the manager too
    (``--spin-us``); 0 never polls; at most 1000 are used. The default is ``$AGORA_SPIN_US``,
    else 50 (0 when this process may run on one CPU only): polling makes a call two to four
    times faster when CPUs are idle (waking a sleeping process costs more than the call), and
    costs a few microseconds when the manager and its clients share one CPU. A manager this
    object starts polls with the same budget as this process, unless ``args`` say otherwise, so
    an ``$AGORA_SPIN_US`` that is not a whole number is logged and ignored here as in the
    client rather than stopping the manager. Child processes take ``$AGORA_SPIN_US``.

    ``tls_ca``, for a manager at a ``tls:HOST:PORT`` address, is a PEM file of the CA
    certificates its certificate must be signed by; the default is ``$AGORA_TLS_CA``, else the
    certificates the system trusts. The certificate is always verified, for ``HOST``.

    The factories have the signatures of ``multiprocessing.managers.SyncManager``'s, and every
    argument means what it means there (``dict(name="alice")`` holds ``{"name": "alice"}``).
    Named objects come from :meth:`named`: ``manager.named("scores").dict()`` is
    get-or-create, so that any process can find the object by that name (:meth:`lookup`).

    An object created without a name lives while something holds it, as with Python's
    manager: a proxy of it in any process, another object that stores it, or a pickle of a
    proxy on its way to another process (``PROTOCOL.md`` section 3.2). When the last proxy
    goes, the manager frees it. A named object lives until :meth:`delete` or until the manager
    stops, so that other programs can find it by name.
    """

    def __init__(
        self,
        address: Optional[AddressList] = None,
        authkey: Optional[Union[bytes, str]] = None,
        *,
        executable: Optional[str] = None,
        args: Sequence[str] = (),
        start_timeout: float = 30.0,
        shutdown_timeout: float = 5.0,
        spin_us: Optional[int] = None,
        tls_ca: Optional[str] = None,
        _exit_priority: int = 0,
    ) -> None:
        self._process: Optional["subprocess.Popen[bytes]"] = None
        self._admin_authkey: Optional[bytes] = None
        self._finalizer: Optional[mp_util.Finalize] = None
        if spin_us is not None and (not isinstance(spin_us, int) or spin_us < 0):
            raise ValueError(f"spin_us is a whole number of microseconds >= 0, not {spin_us!r}")
        if address is not None:
            if authkey is None:
                raise TypeError("connecting to a manager needs its authkey")
            self._client = client_for(address, authkey)
            if tls_ca is not None:
                self._client.tls_ca = tls_ca
        elif authkey is not None:
            raise TypeError("an authkey without an address: give both to connect, or neither")
        else:
            # As Rust's Manager::spawn does: the manager polls as this process does, with the
            # budget it read from AGORA_SPIN_US (a bad value already warned about and replaced
            # by the default), unless the caller's own args set one.
            budget_us = _SPIN_US if spin_us is None else spin_us
            given = any(a == "--spin-us" or a.startswith("--spin-us=") for a in args)
            spin_args = [] if given and spin_us is None else ["--spin-us", str(budget_us)]
            self._start(
                executable, [*spin_args, *args], start_timeout, shutdown_timeout, _exit_priority
            )
        if spin_us is not None:
            self._client.spin = min(spin_us, SPIN_MAX_US) / 1e6

    def _start(
        self,
        executable: Optional[str],
        args: List[str],
        start_timeout: float,
        shutdown_timeout: float,
        priority: int,
    ) -> None:
        binary = find_manager_binary(executable)
        tmpdir = tempfile.mkdtemp(prefix="agora-")
        socket_path = os.path.join(tmpdir, "manager.sock")
        # Unix socket paths are limited to about 100 bytes; fall back to loopback TCP.
        listen = "unix:" + socket_path if len(socket_path.encode()) < 100 else "tcp:127.0.0.1:0"
        # Workers get the authkey (through pickles, forks and the environment); only this
        # object keeps the admin authkey, which stopping the manager takes.
        authkey = os.urandom(32)
        admin_authkey = os.urandom(32)
        env = dict(os.environ)
        env["AGORA_AUTHKEY"] = authkey.hex()
        env["AGORA_ADMIN_AUTHKEY"] = admin_authkey.hex()
        env.setdefault("RUST_LOG", "warn")
        try:
            proc = subprocess.Popen(
                # The manager stops when its stdin closes, which the kernel does when this
                # process dies, however it dies: no orphaned managers.
                [binary, "--listen", listen, "--lifeline-stdin", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                # Its own session: a Ctrl-C in the terminal interrupts the program, which then
                # shuts the manager down, instead of killing the manager under its feet.
                start_new_session=True,
            )
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        assert proc.stdin is not None
        _LIFELINES.add(proc.stdin.fileno())
        try:
            address = parse_address(_parse_ready_line(_read_ready_line(proc, start_timeout)))
        except BaseException:
            proc.kill()
            proc.wait()
            _LIFELINES.discard(proc.stdin.fileno())
            proc.stdin.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
        self._process = proc
        self._admin_authkey = admin_authkey
        self._client = client_for(address, authkey)
        # Proxies reach the manager through the process-wide client, which keeps this object
        # alive: the manager runs until shutdown() or exit, however proxies are passed around.
        self._client._owner = self
        # Run by multiprocessing's exit handler (priority 0: before it joins child processes,
        # as Python's manager does), or by shutdown().
        self._finalizer = mp_util.Finalize(
            None,
            _stop_manager,
            args=(proc, address, admin_authkey, tmpdir, os.getpid(), shutdown_timeout),
            exitpriority=priority,
        )
        log.debug("started agora-manager %d at %s", proc.pid, address)

    # --- the manager itself ------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The manager's address, ``unix:PATH`` or ``tcp:HOST:PORT``; for a manager reached
        through a list of addresses, all of them separated by commas."""
        return self._client.address

    @property
    def authkey(self) -> bytes:
        """The manager's authkey (a secret: whoever has it may use every object). For a
        manager this object started it is a worker's key, which may not call ``shutdown`` nor
        ``stats`` (:attr:`admin_authkey` may)."""
        return self._client.authkey

    @property
    def admin_authkey(self) -> Optional[bytes]:
        """The admin authkey of a manager this object started (``None`` otherwise): the key
        that may also stop it and look at every connection (``agora-manager inspect``). It is
        not pickled nor handed to child processes."""
        return self._admin_authkey

    @property
    def pid(self) -> Optional[int]:
        """The manager process's id when this object started it, else ``None``."""
        return None if self._process is None else self._process.pid

    def shutdown(self) -> None:
        """Stops the manager: waiting calls get :class:`agora.ShutdownError`, every object is
        gone. For a manager this object started, also waits for the process to end."""
        client = self._client
        if self._finalizer is not None:
            self._finalizer()
        else:
            try:
                client.call("shutdown")
            except ConnectionError:
                pass
        client.close_all()
        if client._owner is self:
            client._owner = None

    def limits(self, **changes: float) -> Dict[str, float]:
        """The manager's limits that may change while it runs, after applying ``changes``:
        ``max_connections``, ``max_in_flight``, ``max_output_bytes`` and ``auth_timeout`` (in
        seconds), as in ``manager.limits(max_connections=500)`` (``PROTOCOL.md`` section 4.2).
        All or none: an unknown name, a limit fixed for the run (``max_depth``, say) or a value
        below its minimum raises ``ValueError`` and changes nothing. A lowered
        ``max_connections`` closes nobody; new connections are refused until fewer are open.

        Reserved to the admin key: a manager this object started is asked with its
        :attr:`admin_authkey`; one connected to with a worker's key raises
        :class:`agora.PermissionDenied`."""
        params: Tuple[Any, ...] = (changes,) if changes else ()
        return cast("Dict[str, float]", self._as_admin("limits", params))

    def _as_admin(self, method: str, params: Tuple[Any, ...]) -> Any:
        """Calls ``method`` on a connection of its own, made with the admin authkey of the
        manager this object started; without that key (a manager connected to), on this
        thread's connection, whose key the manager then judges."""
        if self._admin_authkey is None:
            return self._client.call(method, *params)
        conn = Connection(Client(self.address, self._admin_authkey))
        try:
            return conn.call(method, params)
        finally:
            conn.close()

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self.shutdown()

    def __reduce__(self) -> Any:
        # A manager passed to a child process arrives connected, not owning.
        return Manager, (self._client.address, self._client.authkey)

    def __repr__(self) -> str:
        owner = f"pid {self._process.pid}" if self._process is not None else "connected"
        return f"<agora.Manager {self.address} ({owner})>"

    # --- the registry --------------------------------------------------------------------------

    def named(self, name: str) -> Named:
        """The factories for the object called ``name``: ``manager.named("scores").dict()``
        creates the dict ``"scores"``, or returns it when it exists (see :class:`Named`)."""
        return Named(self._client, name)

    def lookup(self, name: str) -> Any:
        """The proxy of the object called ``name``; ``KeyError`` if there is none. (The name
        keeps the object alive, not this proxy.)"""
        try:
            kind, ident = self._client.call("lookup", name)
        except KeyError:
            raise KeyError(name) from None
        cls = proxy_class(kind)
        if cls is None:
            raise TypeError(f"object {name!r} is of kind {kind!r}, which this client lacks")
        return cls(self._client, ident)

    def delete(self, obj: Union[str, BaseProxy]) -> None:
        """Deletes an object (given by name or by proxy); its proxies then raise
        :class:`agora.UnknownObjectError`.

        Beside an admin authkey, a worker's delete of an object another connection holds
        (another process, or another thread of this one, each with a connection of its own)
        raises :class:`agora.PermissionDenied` and leaves the object alone (``PROTOCOL.md``
        section 4.2). A manager this object started is asked with its :attr:`admin_authkey`,
        whose delete is forced, as the manager's owner expects; each such delete opens a
        connection of its own."""
        if isinstance(obj, BaseProxy):
            # A proxy of a former run of the manager must not delete the object of this run
            # that has its id.
            conn = obj._connection()
            if self._admin_authkey is None or obj._client.address != self.address:
                conn.call("delete", (obj._id,))
            else:
                self._as_admin("delete", (obj._id,))
        else:
            self._as_admin("delete", (obj,))

    def objects(self) -> List[Tuple[int, Optional[str], str, int]]:
        """Every object of the manager, as ``(id, name or None, kind, holders)``, in the order
        they were created. ``holders`` counts what keeps the object alive (``PROTOCOL.md``
        section 3.2): the connections holding references to it (one each, however many), the
        references to it stored in other objects, and the exports not yet adopted. An object
        without a name is freed when it has none left."""
        return [
            (ident, name, kind, holders)
            for ident, name, kind, holders in self._client.call("objects")
        ]

    def ping(self) -> bool:
        """True when the manager answers."""
        return cast("bool", self._client.call("ping") == "pong")


def connect(
    address: Optional[AddressList] = None,
    authkey: Optional[Union[bytes, str]] = None,
    *,
    tls_ca: Optional[str] = None,
) -> Manager:
    """A :class:`Manager` for the running manager at ``address`` (``unix:PATH``,
    ``tcp:HOST:PORT``, ``tls:HOST:PORT`` or ``(host, port)``) with ``authkey`` (bytes, or hex
    text).

    ``address`` may name several managers that serve the same objects (one store, one run):
    a list of addresses, or a string of them separated by commas
    (``agora.connect("unix:/run/a.sock,tcp:10.0.0.2:5555", key)``). Connections go to the
    first that answers; when one breaks, the call in flight fails with
    :class:`agora.ConnectionLost` (never sent again) and the next call moves on to the next
    address, round the list. When none answers, :class:`agora.ConnectionLost` names each
    address and why.

    Either defaults to the environment: ``AGORA_ADDRESS`` and ``AGORA_AUTHKEY`` (hex). For a
    ``tls:`` address, ``tls_ca`` is a PEM file of the CA certificates the manager's certificate
    must be signed by (default: ``AGORA_TLS_CA``, else the system's trusted roots). Checks that
    the manager answers before returning.
    """
    if address is None:
        address = os.environ.get("AGORA_ADDRESS")
        if not address:
            raise ValueError("no address given and AGORA_ADDRESS is not set")
    key_from = "given to agora.connect"
    if authkey is None:
        authkey = os.environ.get("AGORA_AUTHKEY")
        if authkey is None:
            raise ValueError("no authkey given and AGORA_AUTHKEY is not set")
        key_from = "AGORA_AUTHKEY"
    try:
        key = parse_authkey(authkey)
    except ValueError as e:
        raise ValueError(f"the authkey ({key_from}): {e}") from None
    manager = Manager(address, key, tls_ca=tls_ca)
    manager._client.authkey_from = key_from
    manager.ping()
    return manager
