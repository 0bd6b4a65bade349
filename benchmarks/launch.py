"""Start one measurement in a fresh process and watch its time and memory.

Each measurement is its own process, so the peak memory it reports is its
own. The parent kills a process that runs past the time cap or whose resident
memory (with its children) passes the memory cap, and records why.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import RESULT_MARKER

REPOSITORY = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.2


def worker_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow, imported by Trax, logs at start otherwise
    return environment


def process_tree(pid: int) -> list[int]:
    """List the process and its descendants from Linux's /proc (only [pid] where /proc has no children lists)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in children.read_text().split()]
            except OSError:
                pass
    return found


def tree_rss_bytes(pid: int) -> int:
    """Sum the resident memory of a process and its descendants (0 where /proc is unavailable)."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/statm") as file:
                total += int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


def kill_tree(pid: int) -> None:
    for member in reversed(process_tree(pid)):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def watch(pid: int, time_cap: float, memory_cap: int, is_done) -> tuple[str | None, float]:
    """Poll until `is_done()`; kill the process past a cap. Returns (reason it was killed or None, seconds)."""
    start = time.perf_counter()
    reason = None
    while not is_done():
        elapsed = time.perf_counter() - start
        rss = tree_rss_bytes(pid)
        if elapsed > time_cap:
            reason = f"time cap: still running after {time_cap:.0f} s"
        elif rss > memory_cap:
            reason = f"memory cap: resident memory {rss / 2**30:.1f} GiB passed {memory_cap / 2**30:.1f} GiB"
        if reason:
            kill_tree(pid)
            break
        time.sleep(POLL_SECONDS)
    return reason, time.perf_counter() - start


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, or total physical memory where that is missing."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_result(output: str) -> dict[str, Any] | None:
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    return None


def failure(returncode: int, log: str) -> dict[str, Any]:
    """Build the result of a worker that printed no result line."""
    if returncode in (-signal.SIGKILL, 137):
        return {"status": "killed", "reason": "killed by SIGKILL (the kernel's out-of-memory killer?)"}
    # The exception line of the traceback, not the notes some libraries print after it.
    lines = [line for line in log.strip().splitlines() if line.strip() and not line.startswith(" ")]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line)]
    last = (errors or lines or ["no output"])[-1]
    return {"status": "error", "reason": f"exit status {returncode}: {last[:300]}"}


class SubprocessLauncher:
    """`python -m benchmarks.worker` in a new interpreter per measurement."""

    def __init__(self, python: str = sys.executable, module: str = "benchmarks.worker") -> None:
        self.python, self.module = python, module

    def run(self, request: dict[str, Any], time_cap: float, memory_cap: int) -> dict[str, Any]:
        # Output goes to files, not pipes, so a chatty library can never fill a pipe and block the worker.
        with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as log:
            process = subprocess.Popen(
                [self.python, "-m", self.module, json.dumps(request)],
                stdout=output, stderr=log, text=True, cwd=REPOSITORY, env=worker_environment(),
            )
            reason, seconds = watch(process.pid, time_cap, memory_cap, lambda: process.poll() is not None)
            process.wait()
            output.seek(0)
            log.seek(0)
            output_text, log_text = output.read(), log.read()
        if reason:
            return {"status": "stopped", "reason": reason, "wall_seconds": seconds}
        result = parse_result(output_text) or failure(process.returncode, log_text)
        result["wall_seconds"] = seconds
        return result

    def close(self) -> None:
        pass


class ForkServerLauncher:
    """Measurements forked from one server process that has already imported a slow framework (Trax)."""

    def __init__(self, python: str, module: str = "benchmarks.trax_worker") -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.server = subprocess.Popen(
            [python, "-m", module, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, cwd=REPOSITORY, env=worker_environment(),
        )
        self.count = 0

    def run(self, request: dict[str, Any], time_cap: float, memory_cap: int) -> dict[str, Any]:
        self.count += 1
        result_path = os.path.join(self.folder.name, f"result{self.count}")
        self.server.stdin.write(json.dumps({**request, "result_path": result_path}) + "\n")
        self.server.stdin.flush()
        started = self.server.stdout.readline()  # waits for the server's imports the first time
        if not started:
            return {"status": "error", "reason": f"the server exited with status {self.server.wait()}"}
        pid = json.loads(started)["pid"]
        exit_line: list[str] = []

        def is_done() -> bool:
            # The server reaps the child and prints the exit line at once; a zombie counts as ended.
            try:
                with open(f"/proc/{pid}/stat") as file:
                    if file.read().rsplit(")", 1)[1].split()[0] != "Z":
                        return False
            except (OSError, IndexError):
                pass
            exit_line.append(self.server.stdout.readline())
            return True

        reason, seconds = watch(pid, time_cap, memory_cap, is_done)
        if reason:
            exit_line.append(self.server.stdout.readline())
            return {"status": "stopped", "reason": reason, "wall_seconds": seconds}
        returncode = json.loads(exit_line[-1])["exit"] if exit_line and exit_line[-1] else -1
        output = Path(result_path).read_text() if os.path.exists(result_path) else ""
        log = Path(result_path + ".log").read_text() if os.path.exists(result_path + ".log") else ""
        result = parse_result(output) or failure(returncode, log)
        result["wall_seconds"] = seconds
        return result

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.stdin.close()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        self.folder.cleanup()
