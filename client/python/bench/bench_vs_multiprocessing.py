"""The same small workloads through ``multiprocessing.Manager()`` and through agora, side by side.

Workloads (each run against a proxy of the contender's manager, the same code for both):

* ``dict get+set``: ``d[k] = i`` then ``d[k]``, from one process;
* ``lock acquire+release``: ``lock.acquire()`` then ``lock.release()``;
* ``queue put+get``: ``q.put(i)`` then ``q.get()``;
* ``ticket grab, 4 procs``: the tutorials' ticket grab without its sleeps: 4 processes loop on
  ``with lock: n = db['count']; if n > 0: db['count'] = n - 1`` until the tickets are gone
  (4 calls per ticket); timed from a start barrier to the last process's finish.

Two floors are measured in the same rounds: a bare socket round trip between this process and a
Python echo process (what any synchronous call to another process costs on this machine), and a
bare agora round trip (the ``ping`` method, no proxy). So is the ticket grab the way agora allows
it without a lock: one atomic ``fetch_add`` per ticket. And, in a race of its own, where agora's
contended ticket spends its time: each grabber stamps its critical section, which gives the
hand-off from one holder to the next (the release, the manager's grant, the waiter's wake-up),
the read and the write under the lock, and the release (:func:`ticket_phases`).

Three contenders: ``multiprocessing.Manager()``; agora as it comes, whose calls poll for their
reply for up to ``AGORA_SPIN_US`` (50 µs) before sleeping; and agora with polling off
(``spin_us=0``, client and manager), which shows what the polling buys on this machine.

The contenders run back to back for each workload in every round (who goes first rotates each
round), so that the machine's load, which can change several times over within a minute on a
shared VM, hits all alike (the run ends by saying what share of the CPU time the hypervisor
gave to other machines meanwhile). Each time is the median over the rounds (per operation;
per ticket for the grab). The speed-up is the median of the rounds' paired ratios (multiprocessing's time
over agora's in the same round), given with its interquartile range; the spread of the rounds
((max - min) / median) says how noisy the run was.

Run, after ``pip install ./client/python``:
``python3 client/python/bench/bench_vs_multiprocessing.py`` (``--quick`` for a smoke run;
``--json FILE`` to keep the figures; ``AGORA_MANAGER_BIN=...`` to measure another build of the
manager).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

try:
    import agora
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import agora

CTX = multiprocessing.get_context("fork")

#: multiprocessing's manager; agora as it comes (its calls poll for their replies for up to
#: AGORA_SPIN_US before sleeping); agora with polling off (spin_us=0), client and manager.
CONTENDERS = ("multiprocessing", "agora", "agora, no polling")


def bench_dict(m: Any, ops: int) -> float:
    d = m.dict()
    d["k"] = 0
    start = time.perf_counter()
    for i in range(ops // 2):
        d["k"] = i
        d["k"]
    return (time.perf_counter() - start) / ops


def bench_lock(m: Any, ops: int) -> float:
    lock = m.Lock()
    start = time.perf_counter()
    for _ in range(ops // 2):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / ops


def bench_queue(m: Any, ops: int) -> float:
    q = m.Queue()
    start = time.perf_counter()
    for i in range(ops // 2):
        q.put(i)
        q.get()
    return (time.perf_counter() - start) / ops


def bench_ping(m: Any, ops: int) -> float:
    """agora only: one bare round trip (the ping method, no proxy), the floor of every call."""
    client = m._client
    start = time.perf_counter()
    for _ in range(ops):
        client.call("ping")
    return (time.perf_counter() - start) / ops


def _echo(sock: Any) -> None:
    buf = bytearray(65536)
    while True:
        n = sock.recv_into(buf)
        if not n:
            return
        sock.sendall(buf[:n])


class EchoFloor:
    """The machine's floor for any synchronous call to another process: a bare socket
    ping-pong with a Python echo process, with a message the size of a dict get."""

    def __init__(self) -> None:
        import socket

        self.sock, theirs = socket.socketpair()
        self.proc = CTX.Process(target=_echo, args=(theirs,), daemon=True)
        self.proc.start()
        theirs.close()
        self.buf = bytearray(65536)

    def run(self, ops: int) -> float:
        msg, sock, buf = b"\x94\x00\x01\xa8dict.get\x92\x01\xa1k", self.sock, self.buf
        start = time.perf_counter()
        for _ in range(ops):
            sock.sendall(msg)
            sock.recv_into(buf)
        return (time.perf_counter() - start) / ops

    def close(self) -> None:
        self.sock.close()
        self.proc.terminate()  # a forked child holds a copy of our end: it never sees EOF
        self.proc.join()


def _grabber(lock: Any, db: Any, barrier: Any, done: Any) -> None:
    db.get("count")  # connect before the clock starts
    sold = 0
    barrier.wait()
    while True:
        with lock:
            n = db["count"]
            if n > 0:
                db["count"] = n - 1
                sold += 1
        if n <= 0:
            break
    done.put((time.monotonic(), sold))


def _grabber_chained(lock: Any, db: Any, barrier: Any, done: Any) -> None:
    """The same critical section in one round trip: the acquire and the read as one chain,
    the write and the release sent without waiting for their replies."""
    db.get("count")
    sold = 0
    barrier.wait()
    while True:
        _, n = lock.acquire_then(db, "getitem", "count")
        if n <= 0:
            lock.release()
            break
        lock.release_after(db, "setitem", "count", n - 1, wait=False)
        sold += 1
    done.put((time.monotonic(), sold))


def _grabber_atomic(count: Any, barrier: Any, done: Any) -> None:
    count.get()  # connect before the clock starts
    sold = 0
    barrier.wait()
    while count.fetch_add(-1) > 0:
        sold += 1
    done.put((time.monotonic(), sold))


#: A ticket as its seller timed it, in ``time.monotonic_ns()`` (one clock for every process on
#: the machine): lock acquired, count read, count written, block left (the release sent), and
#: the seller's process id.
Stamp = Tuple[int, int, int, int, int]


def _grabber_timed(lock: Any, db: Any, barrier: Any, done: Any) -> None:
    """:func:`_grabber`, stamping each ticket it sells (:data:`Stamp`) instead of counting."""
    db.get("count")
    me, stamps, clock = os.getpid(), [], time.monotonic_ns
    barrier.wait()
    while True:
        with lock:
            acquired = clock()
            n = db["count"]
            read = clock()
            if n > 0:
                db["count"] = n - 1
            written = clock()
        if n <= 0:
            break
        stamps.append((acquired, read, written, clock(), me))
    done.put((time.monotonic(), stamps))


def _run_race(target: Callable[..., None], shared: Tuple[Any, ...],
              workers: int) -> Tuple[float, List[Tuple[float, Any]]]:
    """Runs ``workers`` processes of ``target(*shared, barrier, done)`` from a common start;
    the start, and what each process put in ``done``: (its finish, what it sold)."""
    barrier, done = CTX.Barrier(workers + 1), CTX.Queue()
    procs = [CTX.Process(target=target, args=(*shared, barrier, done)) for _ in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.monotonic()
    results = [done.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return start, results


def _race(target: Callable[..., None], shared: Tuple[Any, ...], tickets: int, workers: int) -> float:
    """The time per ticket from a common start of ``workers`` processes of ``target`` to the
    last one's finish, once every ticket is sold (:func:`_run_race`)."""
    start, results = _run_race(target, shared, workers)
    sold = sum(s for _, s in results)
    if sold != tickets:
        raise AssertionError(f"sold {sold} of {tickets} tickets")
    return (max(t for t, _ in results) - start) / tickets


def _median(xs: List[float]) -> Optional[float]:
    """The median, or ``None`` when nothing was measured."""
    return statistics.median(xs) if xs else None


def ticket_phases(stamps: List[Stamp]) -> Dict[str, Optional[float]]:
    """Where a contended ticket's time goes, from every seller's stamps: the medians (µs) of
    the ``hand-off`` (from the holder's write done to the next holder's acquire returning,
    over the tickets that changed hands: the release, the manager's grant, the waiter's
    wake-up), the ``read`` and the ``write`` under the lock, and the ``release`` (leaving the
    block: the release is sent without waiting for its reply); and the share of tickets that
    changed hands. ``None`` where nothing was measured."""
    ev = sorted(stamps)
    pairs = list(zip(ev, ev[1:]))
    handoffs = [(b[0] - a[2]) / 1e3 for a, b in pairs if a[4] != b[4]]
    return {
        "hand-off": _median(handoffs),
        "read": _median([(e[1] - e[0]) / 1e3 for e in ev]),
        "write": _median([(e[2] - e[1]) / 1e3 for e in ev]),
        "release": _median([(e[3] - e[2]) / 1e3 for e in ev]),
        "changed hands": len(handoffs) / len(pairs) if pairs else None,
    }


def bench_tickets(m: Any, tickets: int, workers: int, grabber: Callable[..., None] = _grabber) -> float:
    lock, db = m.Lock(), m.dict(count=tickets)
    per_ticket = _race(grabber, (lock, db), tickets, workers)
    if db["count"] != 0:
        raise AssertionError(f"{db['count']} tickets left")
    return per_ticket


def bench_ticket_phases(m: Any, tickets: int, workers: int) -> Dict[str, Optional[float]]:
    """agora only: the ticket grab timed inside its critical section (:func:`ticket_phases`);
    a race of its own, so that the stamps cost the timed grab nothing."""
    lock, db = m.Lock(), m.dict(count=tickets)
    _, results = _run_race(_grabber_timed, (lock, db), workers)
    stamps = [stamp for _, sold in results for stamp in sold]
    if len(stamps) != tickets or db["count"] != 0:
        raise AssertionError(f"sold {len(stamps)} of {tickets} tickets, {db['count']} left")
    return ticket_phases(stamps)


def bench_tickets_atomic(m: Any, tickets: int, workers: int) -> float:
    """agora only: the ticket grab with one atomic fetch_add per ticket instead of a lock and
    three calls."""
    return _race(_grabber_atomic, (m.Value("q", tickets, strict=True),), tickets, workers)


def cpu_counters(stat: Optional[str] = None) -> Optional[Tuple[int, int]]:
    """All CPUs' time and the part of it stolen by the hypervisor (``/proc/stat``'s ``cpu``
    line: user nice system idle iowait irq softirq steal), in clock ticks; ``None`` where it
    cannot be read. ``stat``: the file's text, read when not given."""
    if stat is None:
        try:
            with open("/proc/stat") as f:
                stat = f.read()
        except OSError:
            return None
    for line in stat.splitlines():
        if line.startswith("cpu "):
            try:
                fields = [int(x) for x in line.split()[1:9]]
            except ValueError:
                return None
            return (sum(fields), fields[7]) if len(fields) == 8 else None
    return None


def stolen_percent(before: Optional[Tuple[int, int]],
                   after: Optional[Tuple[int, int]]) -> Optional[float]:
    """The share of all CPU time between two :func:`cpu_counters` readings that the hypervisor
    gave to other machines: noise a load average does not show. ``None`` when unknown."""
    if before is None or after is None or after[0] <= before[0] or after[1] < before[1]:
        return None
    return (after[1] - before[1]) * 100 / (after[0] - before[0])


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def print_phases(phases: List[Dict[str, Optional[float]]], one_call: float) -> None:
    """Prints the medians over the rounds of :func:`ticket_phases`, beside what one call costs
    without contention (``one_call``, seconds)."""
    def median(key: str) -> Optional[float]:
        return _median([x for x in (p[key] for p in phases) if x is not None])

    def us(key: str) -> str:
        x = median(key)
        return "n/a" if x is None else f"{x:.0f} µs"

    share = median("changed hands")
    print(f"agora only: where a contended ticket's time goes (stamped in the grabbers, medians): "
          f"hand-off {us('hand-off')} (write done to the next holder's acquire returned; "
          + ("n/a" if share is None else f"{share * 100:.0f}%") + " of tickets changed hands), "
          f"read {us('read')}, write {us('write')}, release {us('release')}; "
          f"one dict call without contention {one_call * 1e6:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--ops", type=int, default=4000, help="operations per micro workload")
    parser.add_argument("--tickets", type=int, default=600)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 small rounds (a smoke run)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.ops, args.tickets = 3, 1000, 300

    workloads: List[Tuple[str, Callable[[Any], float]]] = [
        ("dict get+set", lambda m: bench_dict(m, args.ops)),
        ("lock acquire+release", lambda m: bench_lock(m, args.ops)),
        ("queue put+get", lambda m: bench_queue(m, args.ops)),
        (f"ticket grab, {args.workers} procs", lambda m: bench_tickets(m, args.tickets, args.workers)),
    ]
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"agora {agora.__version__}; load average before: {loadavg()}")
    cpu_before = cpu_counters()
    print(f"{args.rounds} rounds; {args.ops} ops per micro workload, {args.tickets} tickets "
          f"for {args.workers} processes", flush=True)

    samples: Dict[str, Dict[str, List[float]]] = {
        name: {label: [] for label in CONTENDERS} for name, _ in workloads
    }
    pings: List[float] = []
    floors: List[float] = []
    atomic: List[float] = []
    chained: List[float] = []
    phases: List[Dict[str, Optional[float]]] = []
    echo = EchoFloor()
    with multiprocessing.Manager() as mp_manager, agora.Manager() as agora_manager, \
            agora.Manager(spin_us=0) as sleeping_manager:
        contenders = list(zip(CONTENDERS, [mp_manager, agora_manager, sleeping_manager]))
        for _, m in contenders:  # warm-up: connections, code paths
            bench_dict(m, 200)
            bench_lock(m, 200)
            bench_queue(m, 200)
        for r in range(args.rounds):
            # Rotate who goes first, so that no contender always follows the same one.
            order = contenders[r % 3:] + contenders[:r % 3]
            for name, run in workloads:
                for label, m in order:
                    samples[name][label].append(run(m))
            pings.append(bench_ping(agora_manager, args.ops))
            atomic.append(bench_tickets_atomic(agora_manager, args.tickets, args.workers))
            chained.append(bench_tickets(agora_manager, args.tickets, args.workers, _grabber_chained))
            phases.append(bench_ticket_phases(agora_manager, args.tickets, args.workers))
            floors.append(echo.run(args.ops))
            print(f"  round {r + 1}/{args.rounds} done (load {loadavg()})", flush=True)

    def spread(xs: List[float]) -> float:
        return (max(xs) - min(xs)) / statistics.median(xs) * 100

    def quartiles(xs: List[float]) -> Tuple[float, float]:
        q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
        return q[0], q[2]

    print()
    header = (f"{'workload':<24} {'multiprocessing':>15} {'agora':>16} {'speed-up':>9} {'(IQR)':>12}"
              f"   {'agora, no polling':>19} {'speed-up':>9}   spread of rounds (mp / agora / no polling)")
    print(header)
    print("-" * len(header))
    report = []
    for name, _ in workloads:
        rounds = samples[name]
        mp_rounds = rounds["multiprocessing"]
        unit = "µs/ticket" if name.startswith("ticket") else "µs/op"
        cells, speedups = [], {}
        for label in CONTENDERS[1:]:
            ratios = [m / a for m, a in zip(mp_rounds, rounds[label])]
            speedups[label] = (statistics.median(ratios), *quartiles(ratios))
        ratio, low, high = speedups["agora"]
        print(f"{name:<24} {statistics.median(mp_rounds) * 1e6:>6.1f} {unit:<9}"
              f"{statistics.median(rounds['agora']) * 1e6:>7.1f} {unit:<9}"
              f"{ratio:>5.1f}x  ({low:.1f}-{high:.1f}x)"
              f"   {statistics.median(rounds[CONTENDERS[2]]) * 1e6:>9.1f} {unit:<9}"
              f"{speedups[CONTENDERS[2]][0]:>5.1f}x   "
              + " / ".join(f"{spread(rounds[label]):.0f}%" for label in CONTENDERS))
        report.append({
            "workload": name,
            "median_us": {label: statistics.median(rounds[label]) * 1e6 for label in CONTENDERS},
            "speedup_median_of_paired_ratios": {k: v[0] for k, v in speedups.items()},
            "speedup_iqr": {k: [v[1], v[2]] for k, v in speedups.items()},
            "rounds_us": {k: [x * 1e6 for x in v] for k, v in rounds.items()},
        })
    echo.close()
    print(f"\nfloor: a bare socket round trip to a Python echo process "
          f"{statistics.median(floors) * 1e6:.1f} µs (spread {spread(floors):.0f}%); "
          f"a bare agora round trip (ping, no proxy) {statistics.median(pings) * 1e6:.1f} µs "
          f"(spread {spread(pings):.0f}%)")
    print(f"agora only: the ticket grab with one atomic fetch_add per ticket (no lock) "
          f"{statistics.median(atomic) * 1e6:.1f} µs/ticket (spread {spread(atomic):.0f}%)")
    grab = samples[workloads[-1][0]]["multiprocessing"]
    chained_ratios = [m / a for m, a in zip(grab, chained)]
    low, high = quartiles(chained_ratios)
    print(f"agora only: the ticket grab in one round trip a ticket (acquire_then + release_after "
          f"without waiting) {statistics.median(chained) * 1e6:.1f} µs/ticket (spread "
          f"{spread(chained):.0f}%), {statistics.median(chained_ratios):.1f}x multiprocessing's "
          f"grab ({low:.1f}-{high:.1f}x)")
    print_phases(phases, statistics.median(samples["dict get+set"]["agora"]) / 2)
    stolen = stolen_percent(cpu_before, cpu_counters())
    print(f"load average after: {loadavg()}; CPU time stolen by the hypervisor during the run: "
          + ("unknown" if stolen is None else f"{stolen:.1f}%"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": platform.python_version(), "cpus": os.cpu_count(),
                       "rounds": args.rounds, "results": report,
                       "agora_ping_us": [x * 1e6 for x in pings],
                       "echo_floor_us": [x * 1e6 for x in floors],
                       "agora_atomic_tickets_us": [x * 1e6 for x in atomic],
                       "agora_chained_tickets_us": [x * 1e6 for x in chained],
                       "agora_ticket_phases_us": phases,
                       "cpu_stolen_percent": stolen}, f, indent=2)


if __name__ == "__main__":
    main()
