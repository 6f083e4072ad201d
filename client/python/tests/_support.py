"""Shared helpers of the test suite (not a test module: pytest and ``unittest discover`` skip it).

The suite runs the ``agora-manager`` that ``agora.Manager()`` would: ``$AGORA_MANAGER_BIN``
(``manager/tests/python.rs`` sets it to the binary of its build), else the one ``pip install``
put beside the package, else ``agora-manager`` on ``PATH``. Without one every test fails with a
message saying so, rather than being skipped.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Dict, List, Tuple

import agora
from agora.manager import find_manager_binary

HERE = os.path.dirname(os.path.abspath(__file__))
#: Where the agora under test was imported from (the source tree, or where pip installed it):
#: subprocesses import the same one.
IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(agora.__file__)))

#: Generous bound for anything that waits on another process (a loaded 2-core CI box).
WAIT = 60.0


def manager_binary() -> str:
    """The agora-manager binary the tests run, or an AssertionError explaining how to get one."""
    try:
        return find_manager_binary()
    except FileNotFoundError as e:
        raise AssertionError(
            f"the tests need the agora-manager binary ({e}); or run them with `cargo test -p "
            "agora-manager --test python`"
        ) from None


def module_manager(scope: Dict[str, Any]) -> Tuple[Callable[[], None], Callable[[], None]]:
    """``setUpModule`` and ``tearDownModule`` for a test module that shares one
    ``agora.Manager()`` as its global ``manager`` (``scope`` is the module's ``globals()``)::

        manager: Any = None
        setUpModule, tearDownModule = module_manager(globals())
    """

    def set_up() -> None:
        manager_binary()
        scope["manager"] = agora.Manager()

    def tear_down() -> None:
        scope["manager"].shutdown()

    return set_up, tear_down


def subprocess_env(**extra: str) -> dict:
    """An environment for Python subprocesses: sees the package under test and the binary,
    no manager of ours, and buffered output."""
    env = dict(os.environ)
    env["AGORA_MANAGER_BIN"] = manager_binary()
    paths = [IMPORT_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # PYTHONUNBUFFERED makes print() two writes (text, then newline), so that lines of
    # concurrent processes interleave in a shared pipe: the tutorials' output must stay whole.
    for name in ("AGORA_ADDRESS", "AGORA_AUTHKEY", "PYTHONUNBUFFERED"):
        env.pop(name, None)
    env.update(extra)
    return env


Outcome = Tuple[str, Any]


class Recorder:
    """Runs calls and records each outcome, ``("ok", result)`` or ``("raise", type)``, so that
    one scenario can be compared step by step between two managers. A step that raises does not
    end the scenario."""

    def __init__(self) -> None:
        self.outcomes: List[Tuple[str, Outcome]] = []

    def __call__(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # the point is to record it
            self.outcomes.append((label, ("raise", type(e))))
            return None
        self.outcomes.append((label, ("ok", result)))
        return result


def same_outcome(expected: Outcome, actual: Outcome) -> bool:
    """True when ``actual`` (agora) matches ``expected`` (multiprocessing): equal results, or an
    exception of the same type (agora may raise a subclass)."""
    if expected[0] != actual[0]:
        return False
    if expected[0] == "raise":
        return issubclass(actual[1], expected[1])
    return type(expected[1]) is type(actual[1]) and expected[1] == actual[1]


def run_threads(*targets: Callable[[], Any], timeout: float = WAIT) -> List[Any]:
    """Runs each target in its own thread; returns their results (or the exceptions they
    raised) in order."""
    results: List[Any] = [None] * len(targets)

    def runner(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as e:  # reported to the caller
            results[i] = e

    threads = [threading.Thread(target=runner, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            raise AssertionError(f"a thread did not finish within {timeout} s")
    return results


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.005) -> Any:
    """Polls ``predicate`` until it is true; AssertionError at the timeout. For observing
    state another process or thread changes, never for ordering."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def python() -> str:
    """The interpreter running the tests."""
    return sys.executable
