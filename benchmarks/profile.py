"""Profile one training step of our PyTorch model: `python -m benchmarks.profile [--length 16384]`.

Prints torch.profiler's table of operators by self CPU time, after one
untimed warm-up step, for the standard configuration of `benchmarks.systems`.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.systems import Shape, build_ours_torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=16384, help="tokens per sequence, a power of two (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=6, help="layers (default: %(default)s)")
    parser.add_argument("--mode", choices=("train", "infer"), default="train", help="step to profile (default: %(default)s)")
    parser.add_argument("--plain", action="store_true", help="profile without reversible layers")
    parser.add_argument("--rows", type=int, default=25, help="operators to list (default: %(default)s)")
    arguments = parser.parse_args(argv)

    built = build_ours_torch(Shape(arguments.length, depth=arguments.depth, reversible=not arguments.plain), arguments.mode)
    built.step()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as profiler:
        built.step()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=arguments.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
