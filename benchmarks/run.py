"""Run the benchmarks: `python -m benchmarks.run [--quick] [--out reports/benchmarks]`.

Three sweeps, each measurement in a fresh process (`benchmarks.launch`):

* depth: our PyTorch model, reversible and not, training step at one length.
* conversion: torch -> Flax -> safetensors for one larger model.
* length: every system, training step and inference, at lengths doubling
  from the first to the last, depth 6. A system stops doubling at its first
  failure (out of memory, a cap, an error) or when its next size would
  probably pass the time cap, and the reason is recorded for the sizes left.

Results go to `results.json` after every measurement (so a cut-off run keeps
its figures), then to `results.md` and PNG plots, each written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks import machine, report
from benchmarks.launch import ForkServerLauncher, SubprocessLauncher, available_memory_bytes
from benchmarks.systems import MODES, SYSTEMS, TRAX_PYTHON, Shape, quadratic

FULL_LENGTHS = [1024 * 2**i for i in range(7)]  # 1K .. 64K
QUICK_LENGTHS = [1024, 2048]
FULL_DEPTHS = [2, 4, 6, 8, 10, 12]
QUICK_DEPTHS = [2, 4]
# About 100M parameters: 12 layers of width 768 with 12 heads, d_ff 3072, a vocabulary of 8192.
FULL_CONVERSION = dict(d_model=768, depth=12, vocab_size=8192, max_length=4096)
QUICK_CONVERSION = dict(d_model=128, depth=2, vocab_size=256, max_length=1024)
# Next size's time over this size's: linear systems roughly double, the quadratic
# baseline roughly quadruples; the margin covers start-up and noise.
GROWTH = {False: 2.2, True: 4.4}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="lengths 1K and 2K, depths 2 and 4, a small conversion model")
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks"), help="output folder (default: %(default)s)")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS), help="systems in the length sweep")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="steps to measure in the length sweep")
    parser.add_argument("--lengths", nargs="+", type=int, help="lengths of the length sweep, powers of two (default: 1K to 64K)")
    parser.add_argument("--length-depth", type=int, default=6, help="layers in the length sweep (default: %(default)s)")
    parser.add_argument("--depths", nargs="*", type=int, help="depths of the depth sweep (default: 2 to 12); none: skip it")
    parser.add_argument("--depth-length", type=int, default=4096, help="length of the depth sweep in tokens (default: %(default)s)")
    parser.add_argument("--depth-systems", nargs="+", choices=["ours-torch", "ours-torch-plain", "ours-jax"],
                        default=["ours-torch", "ours-torch-plain"], help="systems in the depth sweep")
    parser.add_argument("--no-conversion", action="store_true", help="skip the conversion measurement")
    parser.add_argument("--time-cap", type=float, default=240.0,
                        help="seconds one measurement may run, start-up included (default: %(default)s)")
    parser.add_argument("--memory-cap-gib", type=float,
                        help="resident memory one measurement may use in GiB (default: 85%% of the memory available at start)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds to aim for per measurement (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=5, help="most timed steps per measurement (default: %(default)s)")
    parser.add_argument("--budget-minutes", type=float,
                        help="wall minutes for the whole run; measurements not started by then are recorded as skipped")
    parser.add_argument("--trax-python", default=TRAX_PYTHON, help="Python of Trax's virtual environment (default: %(default)s)")
    return parser.parse_args(argv)


@dataclasses.dataclass
class Settings:
    lengths: list[int]
    length_depth: int
    depths: list[int]
    depth_length: int
    conversion: dict[str, int] | None
    time_cap: float
    memory_cap: int
    min_seconds: float
    max_steps: int


def settings_from(arguments: argparse.Namespace) -> Settings:
    lengths = arguments.lengths or (QUICK_LENGTHS if arguments.quick else FULL_LENGTHS)
    depths = arguments.depths
    if depths is None:
        depths = QUICK_DEPTHS if arguments.quick else FULL_DEPTHS
    depth_length = min(arguments.depth_length, max(lengths)) if arguments.quick else arguments.depth_length
    for length in sorted(set(lengths)) + [depth_length]:
        Shape(length)  # raises ValueError naming the invalid length
    memory_cap = (
        int(arguments.memory_cap_gib * 2**30) if arguments.memory_cap_gib else int(0.85 * available_memory_bytes())
    )
    conversion = QUICK_CONVERSION if arguments.quick else FULL_CONVERSION
    if arguments.no_conversion:
        conversion = None
    return Settings(sorted(set(lengths)), arguments.length_depth, sorted(set(depths)), depth_length, conversion, arguments.time_cap, memory_cap,
                    arguments.min_seconds, arguments.max_steps)


def plan(arguments: argparse.Namespace, settings: Settings) -> list[dict[str, Any]]:
    """List every measurement of the run, in order.

    The depth sweep and the conversion come first because they are short and
    bounded. The length sweep then goes by length, so a run whose budget ends
    early still has every system's smaller sizes.
    """
    measurements = []
    for depth in settings.depths:
        for name in arguments.depth_systems:
            shape = Shape(settings.depth_length, depth=depth, reversible=SYSTEMS[name].reversible)
            measurements.append({"sweep": "depth", "system": name, "mode": "train", "shape": dataclasses.asdict(shape)})
    if settings.conversion:
        measurements.append({"sweep": "conversion", "system": "conversion", "mode": "convert", "shape": settings.conversion})
    for length in settings.lengths:
        for name in arguments.systems:
            for mode in arguments.modes:
                shape = Shape(length, depth=settings.length_depth, reversible=SYSTEMS[name].reversible)
                measurements.append({"sweep": "length", "system": name, "mode": mode, "shape": dataclasses.asdict(shape)})
    return measurements


def series_key(measurement: dict[str, Any]) -> tuple[str, str, str]:
    return (measurement["sweep"], measurement["system"], measurement["mode"])


def projected_seconds(previous: dict[str, Any], system: str) -> float:
    """Estimate the least wall time of the next doubling: start-up, then build, warm-up and one step, grown."""
    growing = previous["build_seconds"] + previous["warmup_seconds"] + previous["step_seconds"]
    start_up = previous["wall_seconds"] - growing - previous["step_seconds"] * (previous["timed_steps"] - 1)
    return max(start_up, 0.0) + growing * GROWTH[quadratic(system)]


class Runner:
    """Runs planned measurements, stopping each series at its first failure."""

    def __init__(self, settings: Settings, trax_python: str, budget_seconds: float | None = None) -> None:
        self.settings = settings
        self.deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
        self.trax_python = trax_python
        self.launchers: dict[str, Any] = {}
        self.stopped: dict[tuple[str, str, str], str] = {}
        self.last_ok: dict[tuple[str, str, str], dict[str, Any]] = {}

    def launcher(self, system: str):
        kind = "trax" if system == "trax" else "python"
        if kind not in self.launchers:
            self.launchers[kind] = ForkServerLauncher(self.trax_python) if kind == "trax" else SubprocessLauncher()
        return self.launchers[kind]

    def skip_reason(self, measurement: dict[str, Any]) -> str | None:
        key = series_key(measurement)
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "the run's time budget (--budget-minutes) was spent"
        if measurement["system"] == "trax" and not os.path.exists(self.trax_python):
            return f"not installed: {self.trax_python} is missing"
        if key in self.stopped:
            return self.stopped[key]
        previous = self.last_ok.get(key)
        if measurement["sweep"] == "length" and previous is not None:
            estimate = projected_seconds(previous, measurement["system"])
            if estimate > self.settings.time_cap:
                return f"projected {estimate:.0f} s, over the {self.settings.time_cap:.0f} s time cap"
        return None

    def request(self, measurement: dict[str, Any]) -> dict[str, Any]:
        if measurement["sweep"] == "conversion":
            return {"kind": "conversion", **measurement["shape"]}
        return {
            "kind": "step",
            "system": measurement["system"],
            "mode": measurement["mode"],
            "shape": measurement["shape"],
            "min_seconds": self.settings.min_seconds,
            "max_steps": self.settings.max_steps,
            "budget_seconds": 0.8 * self.settings.time_cap,
        }

    def run(self, measurement: dict[str, Any]) -> dict[str, Any]:
        key = series_key(measurement)
        reason = self.skip_reason(measurement)
        if reason:
            # Later sizes of a stopped series record where it stopped and why.
            if self.deadline is None or time.monotonic() <= self.deadline:
                self.stopped.setdefault(key, f"stopped at length {measurement['shape'].get('length')}: {reason}")
            return {**measurement, "status": "skipped", "reason": reason}
        # Conversion keeps more than one model in memory, so it gets twice the time cap.
        time_cap = self.settings.time_cap * (2 if measurement["sweep"] == "conversion" else 1)
        result = self.launcher(measurement["system"]).run(self.request(measurement), time_cap, self.settings.memory_cap)
        if result["status"] == "ok":
            self.last_ok[key] = result
        else:
            self.stopped[key] = f"stopped at length {measurement['shape'].get('length')}: {result['status']} ({result.get('reason', '')})"
        return {**measurement, **result}

    def close(self) -> None:
        for launcher in self.launchers.values():
            launcher.close()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    settings = settings_from(arguments)
    measurements = plan(arguments, settings)
    results: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "started": now(),
        "load_average_start": machine.load_average(),
        "machine": machine.describe(arguments.trax_python),
        "settings": {**dataclasses.asdict(settings), "systems": {name: SYSTEMS[name].label for name in SYSTEMS}},
        "measurements": [],
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    budget = None if arguments.budget_minutes is None else 60 * arguments.budget_minutes
    runner = Runner(settings, arguments.trax_python, budget)
    try:
        with tqdm(measurements, unit="measurement", dynamic_ncols=True) as bar:
            for measurement in bar:
                bar.set_description(f"{measurement['system']} {measurement['mode']} {measurement['shape'].get('length', '')}")
                results["measurements"].append(runner.run(measurement))
                report.write_json(arguments.out / "results.json", results)
    finally:
        runner.close()
    results["finished"] = now()
    results["load_average_end"] = machine.load_average()
    report.write_all(arguments.out, results)
    print(f"wrote {arguments.out / 'results.md'}, results.json and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
