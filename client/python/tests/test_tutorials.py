"""The tutorials' programs (``tests/tutorials/``), run against the Rust manager.

Each program runs as a fresh Python process in a scratch directory, with the ``fork`` start
method the tutorials were written for (they are Linux tutorials; some have no
``if __name__ == '__main__'`` guard), and its invariant is asserted from its output.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
from typing import List

from _support import HERE, WAIT, manager_binary, subprocess_env

TUTORIALS = os.path.join(HERE, "tutorials")

# Runs a program as __main__ after pinning the fork start method.
_RUNNER = (
    "import multiprocessing, runpy, sys\n"
    "if 'fork' in multiprocessing.get_all_start_methods():\n"
    "    multiprocessing.set_start_method('fork')\n"
    "path = sys.argv[1]\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(path, run_name='__main__')\n"
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TutorialCase(unittest.TestCase):
    def setUp(self) -> None:
        manager_binary()
        self._dir = tempfile.TemporaryDirectory(prefix="agora-tutorial-")
        self.addCleanup(self._dir.cleanup)
        self.cwd = self._dir.name

    def run_program(self, name: str, *args: str) -> List[str]:
        """Runs ``tutorials/<name>``; returns its stdout lines (ANSI colours removed) after
        checking that it ended well."""
        path = os.path.join(TUTORIALS, name)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _RUNNER, path, *args],
                cwd=self.cwd,
                env=subprocess_env(),
                capture_output=True,
                text=True,
                timeout=2 * WAIT,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(f"{name} did not end within {e.timeout} s; its output:\n{e.stdout}\n{e.stderr}")
        self.assertEqual(
            done.returncode, 0, f"{name} failed:\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        self.stderr = done.stderr
        return [_ANSI.sub("", line).strip() for line in done.stdout.splitlines() if line.strip()]


class Tutorials(TutorialCase):
    def test_print_lock_serialises_the_workers(self) -> None:
        lines = self.run_program("print_lock.py")
        self.assertEqual(len(lines), 6)
        for running, done in zip(lines[::2], lines[1::2]):
            pid = running.split()[0]
            self.assertEqual((running, done), (f"{pid} is running", f"{pid} is done"))
        self.assertEqual(len({line.split()[0] for line in lines}), 3)

    def test_ticket_grab_with_a_file_sells_exactly_the_tickets(self) -> None:
        with open(os.path.join(self.cwd, "db.txt"), "w") as f:
            json.dump({"count": 7}, f)
        lines = self.run_program("ticket_grab_file.py")
        self.assertEqual(lines.count("ticket Success"), 7)
        with open(os.path.join(self.cwd, "db.txt")) as f:
            self.assertEqual(json.load(f), {"count": 0})

    def test_ticket_grab_with_a_dict_sells_exactly_the_tickets(self) -> None:
        lines = self.run_program("ticket_grab_dict.py", "10")
        self.assertEqual(lines.count("ticket Success"), 10)
        self.assertEqual(lines[-1], "left: 0")
        votes = [int(line.split()[-1]) for line in lines if line.startswith("remaining votes")]
        self.assertEqual(len(votes), 100)
        self.assertTrue(all(0 <= v <= 10 for v in votes))

    def test_queue_basics(self) -> None:
        self.assertEqual(self.run_program("queue_basics.py"), ["True", "3", "3", "3", "True"])

    def test_producer_consumer_loses_and_duplicates_nothing(self) -> None:
        lines = self.run_program("producer_consumer.py")
        produced = [line.split()[-1] for line in lines if " produced " in line]
        eaten = [line.split()[-1] for line in lines if " eat " in line]
        expected = [f"{name}{i}" for name in ("bun", "bones", "swill") for i in range(10)]
        self.assertEqual(sorted(produced), sorted(expected))
        self.assertEqual(sorted(eaten), sorted(expected))
        self.assertIn("master", lines)

    def test_joinable_queue_program_ends(self) -> None:
        lines = self.run_program("joinable_queue.py")
        produced = [line.split(" Produced ")[1] for line in lines if " Produced " in line]
        eaten = [line.split(" Ate ")[1] for line in lines if " Ate " in line]
        self.assertEqual(len(produced), 6)
        self.assertEqual(sorted(eaten), sorted(produced))
        self.assertEqual(lines[-1], "Main process")

    def test_manager_queue_task_done_and_join(self) -> None:
        lines = self.run_program("manager_queue_join.py")
        self.assertEqual(lines[-1], "squares: " + str(sorted(n * n for n in range(20))))

    def test_first_ten_users_get_in(self) -> None:
        lines = self.run_program("first_ten_users.py")
        users = [line.split()[-1] for line in lines if line.startswith("No.")]
        self.assertEqual(lines[0], "queued: 10")
        self.assertEqual(len(users), 9)
        self.assertEqual(len(set(users)), 9)
        self.assertEqual(lines[-1], "still queued: 1")

    def test_semaphore_room_never_holds_more_than_five(self) -> None:
        lines = self.run_program("semaphore_room.py")
        occupancy = [int(line.split()[-1]) for line in lines if " Room " in line]
        self.assertEqual(len(occupancy), 30)
        self.assertLessEqual(max(occupancy), 5)
        self.assertGreaterEqual(min(occupancy), 1)

    def test_rlock_threads_do_not_deadlock(self) -> None:
        lines = self.run_program("rlock_threads.py")
        per_thread = collections.Counter(line.split(" Get it ")[0] for line in lines)
        self.assertEqual(len(per_thread), 3)
        self.assertEqual(set(per_thread.values()), {4})

    def test_manager_dict_and_list(self) -> None:
        lines = self.run_program("manager_dict_list.py")
        self.assertEqual(ast.literal_eval(lines[0]), {f"arg{i}": i * i for i in range(10)})
        self.assertEqual(ast.literal_eval(lines[1]), [11, 12, 13, 14, 15])

    def test_queue_add_lists(self) -> None:
        lines = self.run_program("queue_add_lists.py")
        result = ast.literal_eval(lines[-1])
        self.assertEqual(result[:3], [1, 2, 3])
        self.assertEqual(sorted(result[3:]), list(range(20, 40)))

    def test_lock_threads_vs_processes(self) -> None:
        lines = self.run_program("lock_threads_vs_processes.py")
        main_pid = lines[0].split()[-1]
        threads = [line.split()[1] for line in lines if line.startswith("thread ")]
        processes = [line.split()[1] for line in lines if line.startswith("process ")]
        self.assertEqual(threads, [main_pid] * 5)
        self.assertEqual(len(set(processes)), 5)
        self.assertNotIn(main_pid, processes)

    def test_queue_in_out_delivers_each_item_once(self) -> None:
        lines = self.run_program("queue_in_out.py")
        got = [line.split("(get):", 1)[1] for line in lines if "(get):" in line]
        self.assertEqual(len(got), 10)
        putters = [item.split("(put):")[0] for item in got]
        self.assertEqual(len(set(putters)), 10)


if __name__ == "__main__":
    unittest.main()
