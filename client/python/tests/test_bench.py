"""The comparison with ``multiprocessing.Manager`` (``bench/bench_vs_multiprocessing.py``): its
noise figure, and a smoke run, so that the script the README quotes keeps running."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest
from types import ModuleType

from _support import IMPORT_ROOT, manager_binary

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "bench_vs_multiprocessing.py")

STAT = "cpu  100 5 50 800 10 1 2 32 7 0\ncpu0 50 2 25 400 5 0 1 16 3 0\nintr 1 2\n"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_vs_multiprocessing", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StealTest(unittest.TestCase):
    def test_the_sum_line_and_its_steal(self) -> None:
        bench = load_bench()
        before = bench.cpu_counters(STAT)
        self.assertEqual(before, (1000, 32))
        after = bench.cpu_counters(STAT.replace("cpu  100 5 50 800 10 1 2 32",
                                                "cpu  150 5 50 1690 10 1 2 92"))
        self.assertEqual(bench.stolen_percent(before, after), 6.0)

    def test_what_cannot_be_told(self) -> None:
        bench = load_bench()
        self.assertIsNone(bench.cpu_counters("cpu0 1 2 3 4 5 6 7 8\n"))
        self.assertIsNone(bench.cpu_counters("cpu  1 2 3 4 5 6 7\n"))
        self.assertIsNone(bench.cpu_counters("cpu  1 2 x 4 5 6 7 8\n"))
        self.assertIsNone(bench.stolen_percent((1000, 32), (1000, 32)))
        self.assertIsNone(bench.stolen_percent((1000, 32), (900, 40)))
        self.assertIsNone(bench.stolen_percent(None, (1000, 32)))


class TicketPhasesTest(unittest.TestCase):
    def test_hand_offs_are_timed_between_different_holders_only(self) -> None:
        bench = load_bench()
        us = 1000  # the stamps are in nanoseconds
        stamps = [
            # acquired, read, written, released, seller
            (0 * us, 10 * us, 30 * us, 35 * us, 1),
            (40 * us, 50 * us, 60 * us, 62 * us, 1),  # the same holder again: no hand-off
            (100 * us, 140 * us, 160 * us, 170 * us, 2),  # 40 µs after seller 1's write
            (220 * us, 250 * us, 270 * us, 271 * us, 3),  # 60 µs after seller 2's write
        ]
        phases = bench.ticket_phases(list(reversed(stamps)))  # in any order
        self.assertEqual(phases["hand-off"], 50)
        self.assertEqual(phases["read"], 20)
        self.assertEqual(phases["write"], 20)
        self.assertEqual(phases["release"], 3.5)  # of 5, 2, 10 and 1
        self.assertAlmostEqual(phases["changed hands"], 2 / 3)

    def test_one_holder_has_no_hand_off(self) -> None:
        bench = load_bench()
        phases = bench.ticket_phases([(0, 1000, 2000, 3000, 7), (4000, 5000, 6000, 7000, 7)])
        self.assertIsNone(phases["hand-off"])
        self.assertEqual(phases["changed hands"], 0)
        self.assertIsNone(bench.ticket_phases([])["read"])


class SmokeTest(unittest.TestCase):
    def test_a_quick_run_measures_every_contender(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "bench.json")
            env = dict(os.environ, AGORA_MANAGER_BIN=manager_binary(),
                       PYTHONPATH=IMPORT_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            run = subprocess.run([sys.executable, BENCH, "--quick", "--json", out], env=env,
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn("CPU time stolen by the hypervisor", run.stdout)
            self.assertIn("where a contended ticket's time goes", run.stdout)
            with open(out) as f:
                figures = json.load(f)
        self.assertEqual(figures["rounds"], 3)
        workloads = [r["workload"] for r in figures["results"]]
        self.assertEqual(workloads, ["dict get+set", "lock acquire+release", "queue put+get",
                                     "ticket grab, 4 procs"])
        for result in figures["results"]:
            for contender, rounds in result["rounds_us"].items():
                self.assertEqual(len(rounds), 3, contender)
                self.assertTrue(all(us > 0 for us in rounds), (contender, rounds))
        for key in ("agora_ping_us", "echo_floor_us", "agora_atomic_tickets_us",
                    "agora_chained_tickets_us"):
            self.assertEqual(len(figures[key]), 3, key)
        self.assertEqual(len(figures["agora_ticket_phases_us"]), 3)
        for phases in figures["agora_ticket_phases_us"]:
            for phase in ("read", "write", "release"):
                self.assertGreater(phases[phase], 0, phases)
            self.assertTrue(0 <= phases["changed hands"] <= 1, phases)
        stolen = figures["cpu_stolen_percent"]
        self.assertTrue(stolen is None or 0 <= stolen <= 100, stolen)


if __name__ == "__main__":
    unittest.main()
