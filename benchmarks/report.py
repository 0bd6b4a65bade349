"""Tables, targets and plots from a run's results, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

REFERENCE = "ours-torch"  # ratio columns compare against our PyTorch model ...
BASELINE = "full-attention"  # ... and against the quadratic baseline
GIB = 2**30


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(temporary path) and rename the file into place, so readers never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates files readable by their owner only
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def write_json(path: Path, results: dict[str, Any]) -> None:
    write_text(path, json.dumps(results, indent=1) + "\n")


# ----------------------------------------------------------------- lookups


def ok(results: dict[str, Any], sweep: str) -> list[dict[str, Any]]:
    return [m for m in results["measurements"] if m["sweep"] == sweep and m["status"] == "ok"]


def find(results: dict[str, Any], sweep: str, system: str, mode: str, **shape: Any) -> dict[str, Any] | None:
    for m in ok(results, sweep):
        if m["system"] == system and m["mode"] == mode and all(m["shape"].get(k) == v for k, v in shape.items()):
            return m
    return None


def label(results: dict[str, Any], system: str) -> str:
    return results["settings"]["systems"].get(system, system)


def length_label(length: int) -> str:
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def systems_in(results: dict[str, Any], sweep: str) -> list[str]:
    seen: list[str] = []
    for m in results["measurements"]:
        if m["sweep"] == sweep and m["system"] not in seen:
            seen.append(m["system"])
    return seen


def lengths_in(results: dict[str, Any]) -> list[int]:
    return sorted({m["shape"]["length"] for m in results["measurements"] if m["sweep"] == "length"})


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "–"
    return f"{numerator / denominator:.2f}x"


# ------------------------------------------------------------------ tables


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def length_tables(results: dict[str, Any], mode: str) -> str:
    """Tokens per second and peak memory per system and length, with the ratio columns."""
    lengths = lengths_in(results)
    systems = systems_in(results, "length")
    header = ["system"] + [length_label(n) for n in lengths]

    def cell_rows(value: Callable[[dict[str, Any]], str]) -> list[list[str]]:
        rows = []
        for system in systems:
            row = [label(results, system)]
            for length in lengths:
                m = find(results, "length", system, mode, length=length)
                row.append(value(m, system, length) if m else "–")
            rows.append(row)
        return rows

    def reference(system_name: str, length: int) -> dict[str, Any] | None:
        return find(results, "length", system_name, mode, length=length)

    speed = cell_rows(lambda m, s, n: f"{m['tokens_per_second']:,.0f}")
    versus_ours = cell_rows(lambda m, s, n: ratio(m["tokens_per_second"], (reference(REFERENCE, n) or {}).get("tokens_per_second")))
    versus_full = cell_rows(lambda m, s, n: ratio(m["tokens_per_second"], (reference(BASELINE, n) or {}).get("tokens_per_second")))
    memory = cell_rows(lambda m, s, n: f"{m['peak_memory_bytes'] / GIB:.2f}")
    memory_versus_ours = cell_rows(
        lambda m, s, n: ratio(m["peak_memory_bytes"], (reference(REFERENCE, n) or {}).get("peak_memory_bytes"))
    )
    step = "training step (forward and backward)" if mode == "train" else "inference (one forward pass over all tokens)"
    parts = [
        f"#### {step}: tokens per second",
        markdown_table(header, speed),
        f"#### {step}: throughput relative to {label(results, REFERENCE)}",
        markdown_table(header, versus_ours),
        f"#### {step}: throughput relative to {label(results, BASELINE)}",
        markdown_table(header, versus_full),
        f"#### {step}: peak memory (GiB)",
        markdown_table(header, memory),
        f"#### {step}: peak memory relative to {label(results, REFERENCE)}",
        markdown_table(header, memory_versus_ours),
    ]
    return "\n\n".join(parts)


def stop_table(results: dict[str, Any]) -> str:
    """Tabulate where each series stopped, and why."""
    rows = []
    seen = set()
    for m in results["measurements"]:
        key = (m["sweep"], m["system"], m["mode"])
        if m["status"] != "ok" and key not in seen:
            seen.add(key)
            where = m["shape"].get("length", "")
            rows.append([m["sweep"], label(results, m["system"]), m["mode"], str(where), m["status"], m.get("reason", "")])
    if not rows:
        return "Every planned measurement finished."
    return markdown_table(["sweep", "system", "mode", "first length not measured", "status", "reason"], rows)


def notes_table(results: dict[str, Any]) -> str:
    """Parameter counts, JAX compile times and each system's note, from its first measurement."""
    rows = []
    for system in systems_in(results, "length"):
        for mode in ("train", "infer"):
            first = next((m for m in ok(results, "length") if m["system"] == system and m["mode"] == mode), None)
            if first is None:
                continue
            compiles = [
                f"{length_label(m['shape']['length'])}: {m['compile_seconds']:.1f}"
                for m in ok(results, "length")
                if m["system"] == system and m["mode"] == mode and m.get("compile_seconds") is not None
            ]
            rows.append([label(results, system), mode, f"{first['n_parameters'] / 1e6:.2f}M",
                         ", ".join(compiles) or "–", first.get("note", "")])
    return markdown_table(["system", "mode", "parameters (at the first length)", "compile seconds, by length", "note"], rows)


def depth_table(results: dict[str, Any]) -> str:
    depths = sorted({m["shape"]["depth"] for m in results["measurements"] if m["sweep"] == "depth"})
    systems = systems_in(results, "depth")
    if not depths:
        return "Not measured."
    rows = []
    for depth in depths:
        row = [str(depth)]
        for system in systems:
            m = find(results, "depth", system, "train", depth=depth)
            row += [f"{m['step_seconds']:.2f}", f"{m['peak_memory_bytes'] / GIB:.2f}"] if m else ["–", "–"]
        rows.append(row)
    header = ["depth"]
    for system in systems:
        header += [f"{label(results, system)}: step s", "peak GiB"]
    length = next(m["shape"]["length"] for m in results["measurements"] if m["sweep"] == "depth")
    return f"Training step at {length_label(length)} tokens.\n\n" + markdown_table(header, rows)


def conversion_table(results: dict[str, Any]) -> str:
    m = next(iter(ok(results, "conversion")), None)
    if m is None:
        failed = next((x for x in results["measurements"] if x["sweep"] == "conversion"), None)
        return f"Not measured ({failed['status']}: {failed.get('reason', '')})." if failed else "Not measured."
    rows = [[step.replace("_", " "), f"{seconds:.2f}"] for step, seconds in m["seconds"].items()]
    rows.append(["total", f"{m['total_seconds']:.2f}"])
    config = m["config"]
    return (
        f"{m['n_parameters'] / 1e6:.1f}M parameters (width {config['d_model']}, {len(config['attention_layers'])} layers, "
        f"vocabulary {config['vocab_size']}), float32; peak RSS {m['peak_memory_bytes'] / GIB:.2f} GiB "
        f"(of which {m['rss_with_model_bytes'] / GIB:.2f} GiB with the PyTorch model built), "
        f"safetensors file {m['file_bytes'] / 1e6:.0f} MB, round trip bit-exact: {m['round_trip_exact']}.\n\n"
        + markdown_table(["step", "seconds"], rows)
    )


# ----------------------------------------------------------------- targets


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the performance targets, each with its measured value, or None where a figure is missing."""

    def train(system: str, length: int) -> dict[str, Any] | None:
        return find(results, "length", system, "train", length=length)

    def speed(system: str, length: int) -> float | None:
        m = train(system, length)
        return m["tokens_per_second"] if m else None

    def memory(system: str, length: int) -> float | None:
        m = train(system, length)
        return m["peak_memory_bytes"] if m else None

    def quotient(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    rows = []

    def add(name: str, value: float | None, goal: str, passed: Callable[[float], bool]) -> None:
        rows.append({"target": name, "value": value, "goal": goal, "met": None if value is None else passed(value)})

    long = 16384
    add("PyTorch throughput / Hugging Face at 16K", quotient(speed("ours-torch", long), speed("huggingface", long)), ">= 1.5", lambda v: v >= 1.5)
    add("PyTorch peak memory / Hugging Face at 16K", quotient(memory("ours-torch", long), memory("huggingface", long)), "<= 0.8", lambda v: v <= 0.8)
    fastest = max(filter(None, [speed("ours-torch", long), speed("ours-torch-plain", long), speed("ours-jax", long)]), default=None)
    add("our fastest throughput / Trax at 16K", quotient(fastest, speed("trax", long)), ">= 1.1", lambda v: v >= 1.1)
    add("JAX throughput / PyTorch at 16K", quotient(speed("ours-jax", long), speed("ours-torch", long)), ">= 1.0", lambda v: v >= 1.0)

    depth_memory = {m["shape"]["depth"]: m["peak_memory_bytes"] for m in ok(results, "depth") if m["system"] == "ours-torch"}
    add("peak memory, 12 reversible layers / 2", quotient(depth_memory.get(12), depth_memory.get(2)), "<= 1.3", lambda v: v <= 1.3)
    # The same ratio without the interpreter and libraries, which dominate peak RSS at short lengths.
    depth_growth = {
        m["shape"]["depth"]: m["peak_memory_bytes"] - m["rss_before_model_bytes"] for m in ok(results, "depth") if m["system"] == "ours-torch"
    }
    add("peak memory above the pre-model RSS, 12 reversible layers / 2", quotient(depth_growth.get(12), depth_growth.get(2)),
        "<= 1.3", lambda v: v <= 1.3)

    def step_seconds(system: str, length: int) -> float | None:
        m = train(system, length)
        return m["step_seconds"] if m else None

    add("PyTorch step time 64K / 4K", quotient(step_seconds("ours-torch", 65536), step_seconds("ours-torch", 4096)), "<= 20", lambda v: v <= 20)

    # The first length from which our model is faster at every longer length it reached. Full attention
    # counts as slower where it has no figure because its series stopped (it was too slow or ran out of memory).
    crossover = None
    reached = [n for n in lengths_in(results) if speed("ours-torch", n) is not None]
    for length in reached:
        if all(speed("ours-torch", n) > (speed(BASELINE, n) or 0) for n in reached if n >= length):
            crossover = length
            break
    rows.append({"target": "full attention slower than PyTorch from length", "value": crossover, "goal": "<= 4096",
                 "met": None if crossover is None else crossover <= 4096})
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    def show(value: float | None) -> str:
        if value is None:
            return "not measured"
        return f"{value:,}" if isinstance(value, int) else f"{value:.2f}"

    verdict = {True: "met", False: "missed", None: "–"}
    return markdown_table(["target", "measured", "goal", "result"],
                          [[r["target"], show(r["value"]), r["goal"], verdict[r["met"]]] for r in rows])


def machine_text(results: dict[str, Any]) -> str:
    info = results["machine"]
    memory = f"{info['memory_bytes'] / GIB:.1f} GiB" if info.get("memory_bytes") else "unknown"
    libraries = ", ".join(f"{name} {version}" for name, version in info["libraries"].items())
    end = results.get("load_average_end")
    return (
        f"{info['cpu']}, {info['cores']} cores, {memory} RAM, GPU: {info['gpu'] or 'none'}; {info['platform']}, "
        f"Python {info['python']}. Load average (1, 5, 15 min) at start {results['load_average_start']}, "
        f"at end {end if end else 'not reached'}. Started {results['started']}, finished {results.get('finished', 'not reached')}. "
        f"Libraries: {libraries}."
    )


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    settings = results["settings"]
    sections = [
        "# Benchmarks",
        f"Command: `{results['command']}`.",
        f"Machine: {machine_text(results)}",
        f"Configuration: width 256, 4 heads of 64, feed-forward 1024, depth {settings['length_depth']}, chunks of 64 with one chunk "
        "of look-back, 2 hash rounds, 2L/64 buckets (split into two factors above 128), axial positions, batch 1, "
        "causal, float32, dropout off. Every LSH model uses the Trax/Hugging Face chunk window "
        "(`lsh_same_bucket_only=False` in ours). Each measurement ran in its own process: one untimed warm-up step, "
        f"then the median of up to {settings['max_steps']} timed steps (stopping after {settings['min_seconds']:.0f} s); "
        f"time cap {settings['time_cap']:.0f} s per measurement, memory cap {settings['memory_cap'] / GIB:.1f} GiB. "
        "Peak memory is the process's peak RSS on CPU (interpreter and libraries included), device memory on a GPU.",
        "## Targets",
        targets_table(targets(results)),
        "## Sequence length",
        length_tables(results, "train"),
        length_tables(results, "infer"),
        "#### Where each series stopped",
        stop_table(results),
        "#### Systems",
        notes_table(results),
        "## Depth, reversible and not",
        depth_table(results),
        "## Weight conversion",
        conversion_table(results),
    ]
    if plots:
        sections += ["## Plots", "\n\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in plots)]
    return "\n\n".join(sections) + "\n"


# ------------------------------------------------------------------- plots


def plot_lengths(results: dict[str, Any], mode: str, path: Path) -> bool:
    """Log-log step time and peak memory against length, with O(n) and O(n^2) guide lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [m for m in ok(results, "length") if m["mode"] == mode]
    if not measured:
        return False
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for system in systems_in(results, "length"):
        points = sorted((m["shape"]["length"], m["step_seconds"], m["peak_memory_bytes"] / GIB) for m in measured if m["system"] == system)
        if not points:
            continue
        lengths, seconds, memory = zip(*points)
        time_axes.plot(lengths, seconds, marker="o", label=label(results, system))
        memory_axes.plot(lengths, memory, marker="o", label=label(results, system))

    lengths = sorted({m["shape"]["length"] for m in measured})
    anchor = min(m["step_seconds"] for m in measured if m["shape"]["length"] == lengths[0])
    for power, style, text in ((1, ":", "O(n)"), (2, "--", "O(n²)")):
        guide = [anchor * (n / lengths[0]) ** power for n in lengths]
        time_axes.plot(lengths, guide, color="gray", linestyle=style, label=text)
    memory_anchor = min(m["peak_memory_bytes"] / GIB for m in measured if m["shape"]["length"] == lengths[0])
    memory_axes.plot(lengths, [memory_anchor * n / lengths[0] for n in lengths], color="gray", linestyle=":", label="O(n)")

    step = "training step" if mode == "train" else "inference forward"
    for axes, ylabel in ((time_axes, f"{step} time (s)"), (memory_axes, "peak memory (GiB)")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel("sequence length (tokens)")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
    time_axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=80, format="png"))
    plt.close(figure)
    return True


def plot_depths(results: dict[str, Any], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = ok(results, "depth")
    if not measured:
        return False
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for system in systems_in(results, "depth"):
        points = sorted((m["shape"]["depth"], m["step_seconds"], m["peak_memory_bytes"] / GIB) for m in measured if m["system"] == system)
        if points:
            depths, seconds, memory = zip(*points)
            time_axes.plot(depths, seconds, marker="o", label=label(results, system))
            memory_axes.plot(depths, memory, marker="o", label=label(results, system))
    for axes, ylabel in ((time_axes, "training step time (s)"), (memory_axes, "peak memory (GiB)")):
        axes.set_xlabel("layers")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    time_axes.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=80, format="png"))
    plt.close(figure)
    return True


def write_all(folder: Path, results: dict[str, Any]) -> None:
    """Write results.json, the plots and results.md into `folder`."""
    write_json(folder / "results.json", results)
    plots = []
    for mode in ("train", "infer"):
        path = folder / f"length_{mode}.png"
        if plot_lengths(results, mode, path):
            plots.append(str(path))
    if plot_depths(results, folder / "depth.png"):
        plots.append(str(folder / "depth.png"))
    write_text(folder / "results.md", markdown(results, plots))


def main(argv: list[str] | None = None) -> int:
    """Rebuild results.md and the plots from a results.json: `python -m benchmarks.report FOLDER`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("folder", type=Path, help="folder that contains results.json")
    folder = parser.parse_args(argv).folder
    write_all(folder, json.loads((folder / "results.json").read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
