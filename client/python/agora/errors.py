"""Exceptions raised by agora, and the mapping from the protocol's error names to them.

Errors that a ``multiprocessing.managers`` proxy would raise keep their Python type
(``KeyError``, ``queue.Empty``, ``threading.BrokenBarrierError``, ...). Errors that only agora
has derive from :class:`AgoraError`; where Python has a close equivalent they also derive from
it, so existing ``except`` clauses keep working:

* :class:`AuthenticationError` is a ``multiprocessing.AuthenticationError``;
* :class:`PermissionDenied` is a ``PermissionError``;
* :class:`UnknownObjectError`, :class:`UnknownMethodError`, :class:`ArgumentCountError`,
  :class:`ProtocolError` and :class:`LimitError` are ``multiprocessing.managers.RemoteError``
  (what Python raises when the manager cannot run a call);
* :class:`ConnectionLost` and :class:`ShutdownError` are both ``ConnectionError`` and
  ``EOFError`` (Python raises one or the other when its manager goes away).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from multiprocessing.managers import RemoteError
from typing import Callable, Dict, Optional

__all__ = [
    "AgoraError",
    "AuthenticationError",
    "ArgumentCountError",
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
]


class AgoraError(Exception):
    """Base class of the errors that only agora raises."""


class _RemoteError(AgoraError, RemoteError):
    """An agora error that is also a ``multiprocessing.managers.RemoteError``, for existing
    ``except`` clauses, without the traceback frame ``RemoteError`` draws around its message
    (there is no remote traceback: the message says it all)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


class AuthenticationError(AgoraError, multiprocessing.AuthenticationError):
    """The manager refused the authkey (or a call came before authentication)."""


class PermissionDenied(AgoraError, PermissionError):
    """A call reserved to the operator (``shutdown``, ``stats``) made with the worker authkey
    of a manager that has an admin authkey (the protocol's ``PermissionError``). A manager
    that ``agora.Manager()`` started has one: :attr:`agora.Manager.admin_authkey`."""


class UnknownObjectError(_RemoteError):
    """No object with that id or name: it was deleted, or the manager was restarted."""


class UnknownMethodError(_RemoteError):
    """The manager does not know the method (a client/manager version mismatch)."""


class ArgumentCountError(_RemoteError):
    """The manager got the wrong number of params for a method (a client bug)."""


class ProtocolError(_RemoteError):
    """The manager could not read what was sent, or sent something this client cannot read."""


class LimitError(_RemoteError):
    """A message went over one of the manager's configured limits. Raised before sending for
    a request over the limits the manager reported in ``hello``: the connection stays usable.
    ``limit`` names the limit (``"max_message_bytes"``, ``"max_depth"``,
    ``"max_container_len"``), ``max`` is
    its value and ``size`` the request's (``None`` when the manager raised it)."""

    def __init__(
        self,
        message: str,
        limit: Optional[str] = None,
        max: Optional[int] = None,
        size: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.max = max
        self.size = size


class Closed(AgoraError):
    """A put on a closed queue, or a get on a closed queue that has been drained."""


class ConnectionLost(AgoraError, ConnectionError, EOFError):
    """The connection to the manager broke (the manager stopped or is unreachable)."""


class ShutdownError(ConnectionLost):
    """The manager shut down while the call was waiting."""


class ManagerTimeout(ConnectionLost, TimeoutError):
    """The manager did not answer within a deadline (``AGORA_CALL_TIMEOUT``,
    :func:`agora.deadline`, or the handshake's): it is stopped, hung or unreachable. The
    connection is closed, as the answer may still come; the call may or may not have been
    carried out. The next call opens a new connection."""


class NotAManagerError(AgoraError, ConnectionError):
    """The peer at the address did not answer the handshake as an agora manager does (a web
    server on that port, say), or not within ``AGORA_HANDSHAKE_TIMEOUT``."""


class TLSError(AgoraError, ConnectionError):
    """The TLS handshake with the manager at a ``tls:`` address failed: its certificate is not
    valid for the address's host or not signed by a trusted CA (``AGORA_TLS_CA``, or the
    ``tls_ca`` argument), or the peer does not speak TLS."""


def _no_args(cls: type) -> Callable[[str], BaseException]:
    # queue.Empty, queue.Full and BrokenBarrierError carry no message in Python.
    return lambda message: cls()


#: Protocol error name -> factory taking the manager's message.
ERRORS: Dict[str, Callable[[str], BaseException]] = {
    "KeyError": KeyError,
    "IndexError": IndexError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "OverflowError": OverflowError,
    "AttributeError": AttributeError,
    "RuntimeError": RuntimeError,
    "TimeoutError": TimeoutError,
    "Empty": _no_args(queue.Empty),
    "Full": _no_args(queue.Full),
    "BrokenBarrierError": _no_args(threading.BrokenBarrierError),
    "Closed": Closed,
    "AuthenticationError": AuthenticationError,
    "PermissionError": PermissionDenied,
    "UnknownObjectError": UnknownObjectError,
    "UnknownMethodError": UnknownMethodError,
    "ArgumentCountError": ArgumentCountError,
    "ProtocolError": ProtocolError,
    "LimitError": LimitError,
    "ShutdownError": ShutdownError,
}


def from_wire(error: object) -> BaseException:
    """The exception for a response's error field (``[name, message]``)."""
    if (
        isinstance(error, (list, tuple))
        and len(error) == 2
        and isinstance(error[0], str)
        and isinstance(error[1], str)
    ):
        name, message = error
        factory = ERRORS.get(name)
        if factory is not None:
            return factory(message)
        return AgoraError(f"{name}: {message}")
    return ProtocolError(f"the manager sent a malformed error: {error!r}")
