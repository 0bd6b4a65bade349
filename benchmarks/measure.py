"""The timing loop and the result line a worker process prints.

Standard library only, so the Trax worker can import it from Trax's own
virtual environment.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from typing import Any, Callable

RESULT_MARKER = "BENCHMARK_RESULT "  # prefix of the one stdout line the parent parses


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def time_steps(step: Callable[[], None], min_seconds: float, max_steps: int, budget_seconds: float) -> dict[str, Any]:
    """Run one untimed warm-up step, then timed steps until `min_seconds` of them or `max_steps`.

    At least one step is timed. A further step is skipped when it would
    probably end after `budget_seconds` (counted from this call), so a slow
    size still reports its first timings inside the parent's time cap.
    """
    start = time.perf_counter()
    step()
    warmup_seconds = time.perf_counter() - start

    times: list[float] = []
    while len(times) < max_steps:
        elapsed = time.perf_counter() - start
        last = times[-1] if times else warmup_seconds
        if times and (sum(times) >= min_seconds or elapsed + last > budget_seconds):
            break
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return {
        "warmup_seconds": warmup_seconds,
        "step_seconds": statistics.median(times),
        "step_seconds_min": min(times),
        "timed_steps": len(times),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the result line for the parent process."""
    sys.stdout.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
