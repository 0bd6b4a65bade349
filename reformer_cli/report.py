"""The demo report: report.md, plots as PNG, and metrics.json, written into a folder atomically.

The folder is assembled under a temporary name beside its final name and
renamed into place once complete, so a crash never leaves a partial report
under the final name. An older report of the same name is replaced.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)
import numpy as np  # noqa: E402

from reformer_cli.generate import Generation, first_difference  # noqa: E402

_BUCKET_PLOT_POSITIONS = 128  # positions shown in the bucket plot; a full context would be unreadable


@dataclasses.dataclass
class SamplePair:
    """The same generation request run in both frameworks."""

    description: str  # e.g. "greedy" or "sampled, temperature 0.8, top-k 40"
    greedy: bool
    trained: Generation  # in the framework that trained the model
    converted: Generation  # in the other framework, from converted weights

    @property
    def difference(self) -> int | None:
        return first_difference(self.trained.continuation, self.converted.continuation)


@dataclasses.dataclass
class ReportData:
    """Everything report.md shows; metrics.json contains the numeric part."""

    trained_framework: str
    converted_framework: str
    settings: dict[str, Any]
    config: dict[str, Any]
    corpus: dict[str, Any]
    history: dict[str, list[list[float]]]  # as in checkpoints.TrainingState.history, losses in nats
    unigram_entropy_bits: float  # entropy of the training text's byte frequencies
    unigram_held_out_bits: float  # those frequencies' bits per byte on the held-out text
    held_out_bits: dict[str, float]  # framework label -> model's held-out bits per byte
    round_trip_exact: bool  # saving the converted weights reproduced the trained file's tensors bit for bit
    parity_markdown: str | None  # the parity table, None when the check raised an error
    parity_passed: bool
    parity_note: str
    samples: list[SamplePair]
    prompt: bytes
    bucket_passage: bytes
    bucket_layer: int | None  # index of the plotted LSH layer, None when the model has none
    timings: dict[str, float]  # stage -> seconds
    bucket_plot: Any = None  # (H, R, L) int array of the plotted layer's buckets for the passage

    def metrics(self) -> dict[str, Any]:
        return {
            "trained_framework": self.trained_framework,
            "converted_framework": self.converted_framework,
            "steps": self.history["train"][-1][0] if self.history["train"] else 0,
            "held_out_bits_per_byte": self.held_out_bits,
            "unigram_entropy_bits_per_byte": self.unigram_entropy_bits,
            "unigram_held_out_bits_per_byte": self.unigram_held_out_bits,
            "round_trip_exact": self.round_trip_exact,
            "parity_passed": self.parity_passed,
            "samples": [
                {
                    "description": pair.description,
                    "identical": pair.difference is None,
                    "first_difference": pair.difference,
                    pair.trained.framework.value: pair.trained.text,
                    pair.converted.framework.value: pair.converted.text,
                }
                for pair in self.samples
            ],
            "timings_seconds": self.timings,
        }


# ------------------------------------------------------------------- plots


def plot_training_curve(data: ReportData, path: Path) -> None:
    """Train and held-out bits per byte against steps, with the unigram entropy as a reference line."""
    to_bits = 1.0 / math.log(2.0)
    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    train = np.asarray(data.history["train"], dtype=np.float64).reshape(-1, 4)
    if train.size:
        axes.plot(train[:, 0], train[:, 1] * to_bits, color="tab:blue", alpha=0.35, linewidth=0.8, label="train (per step)")
        window = max(1, len(train) // 20)
        if window > 1:
            smoothed = np.convolve(train[:, 1], np.ones(window) / window, mode="valid") * to_bits
            axes.plot(train[window - 1 :, 0], smoothed, color="tab:blue", label=f"train (mean of {window} steps)")
    held_out = np.asarray(data.history["eval"], dtype=np.float64).reshape(-1, 2)
    if held_out.size:
        axes.plot(held_out[:, 0], held_out[:, 1] * to_bits, "o-", color="tab:orange", label="held-out")
    axes.axhline(data.unigram_entropy_bits, color="gray", linestyle="--", label=f"unigram entropy {data.unigram_entropy_bits:.2f}")
    axes.set_xlabel("step")
    axes.set_ylabel("bits per byte")
    axes.set_title(f"Training in {data.trained_framework}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def shared_bucket_counts(buckets: np.ndarray) -> np.ndarray:
    """(L, L) count of hash rounds in which positions i and j fall in the same bucket, from (R, L) buckets."""
    return (buckets[:, :, None] == buckets[:, None, :]).sum(axis=0)


def most_spread_head(buckets: np.ndarray) -> int:
    """Return the head whose (R, L) buckets take the most distinct values, summed over rounds.

    A trained head may put nearly every position of a passage in one bucket,
    which makes a dull plot, so the plot shows the head that spreads them most.
    """
    return int(np.argmax([sum(np.unique(rounds).size for rounds in head) for head in buckets]))


def plot_buckets(buckets: np.ndarray, layer: int, passage: bytes, path: Path) -> None:
    """Plot one head's buckets of one LSH layer for the first positions of a passage.

    `buckets` is (H, R, L) for the passage. Left: the bucket of each position
    in each hash round. Right: how many rounds each pair of positions shares a
    bucket in, for keys at or before the query, the only ones a causal query
    can attend to.
    """
    positions = min(_BUCKET_PLOT_POSITIONS, buckets.shape[-1], len(passage))
    head_index = most_spread_head(buckets[:, :, :positions])
    head = buckets[head_index, :, :positions]  # (R, positions)
    rounds = head.shape[0]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=120)
    for r in range(rounds):
        left.scatter(np.arange(positions), head[r], s=10, label=f"round {r + 1}")
    left.set_xlabel("position in passage")
    left.set_ylabel("bucket")
    left.set_title(f"LSH layer {layer}, head {head_index} of {buckets.shape[0]}: bucket per position")
    left.legend(fontsize="small")
    left.grid(alpha=0.3)

    counts = shared_bucket_counts(head).astype(np.float64)
    counts[np.triu_indices(positions, k=1)] = np.nan  # later keys, hidden from a causal query, stay blank
    colors = plt.get_cmap("viridis", rounds + 1).with_extremes(bad="white")
    image = right.imshow(counts, cmap=colors, vmin=-0.5, vmax=rounds + 0.5, origin="upper")
    right.set_xlabel("key position")
    right.set_ylabel("query position")
    right.set_title(f"rounds (of {rounds}) in which two positions share a bucket")
    figure.colorbar(image, ax=right, ticks=range(rounds + 1))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ---------------------------------------------------------------- markdown


def _code(text: str) -> str:
    """Wrap text in an HTML <pre> block, so multi-line text can sit in a table cell."""
    return f"<pre>{html.escape(text)}</pre>"


def _settings_table(rows: dict[str, Any]) -> list[str]:
    lines = ["| setting | value |", "| --- | --- |"]
    lines += [f"| {name} | `{value}` |" for name, value in rows.items()]
    return lines


def render_markdown(data: ReportData) -> str:
    trained, converted = data.trained_framework, data.converted_framework
    held_out = data.held_out_bits[trained]
    below = held_out < data.unigram_entropy_bits
    lines = [
        "# Reformer demo report",
        "",
        f"A byte-level Reformer LM trained in {trained}, converted to {converted}, checked for parity and "
        "sampled in both frameworks.",
        "",
        "## Result",
        "",
        "| measure | bits per byte |",
        "| --- | --- |",
    ]
    for label, value in data.held_out_bits.items():
        lines.append(f"| held-out, model in {label} | {value:.3f} |")
    lines += [
        f"| unigram entropy of the training text | {data.unigram_entropy_bits:.3f} |",
        f"| unigram frequencies on the held-out text | {data.unigram_held_out_bits:.3f} |",
        "",
        f"The model is {'below' if below else 'NOT below'} the unigram entropy on held-out text "
        f"({held_out:.3f} vs {data.unigram_entropy_bits:.3f} bits per byte).",
        "",
        "![training curve](training_curve.png)",
        "",
        "## Conversion and parity",
        "",
        f"Weights saved from {converted} after conversion match the trained file bit for bit: "
        f"{'yes' if data.round_trip_exact else 'NO'}.",
        "",
    ]
    if data.parity_markdown is None:
        lines += [f"Per-layer parity FAILED: {data.parity_note}", ""]
    else:
        verdict = "passed" if data.parity_passed else "FAILED"
        lines += [f"Per-layer parity {verdict}. {data.parity_note}", "", data.parity_markdown.strip(), ""]

    lines += ["## Samples", "", "Prompt (start of a held-out file):", "", _code(data.prompt.decode("utf-8", errors="replace")), ""]
    for pair in data.samples:
        difference = pair.difference
        same = "identical" if difference is None else f"differ from byte {difference} on"
        lines += [
            f"### {pair.description.capitalize()}: {same}",
            "",
            "<table>",
            f"<tr><th>{pair.trained.framework.label} (trained)</th><th>{pair.converted.framework.label} (converted)</th></tr>",
            f"<tr><td>{_code(pair.trained.text)}</td><td>{_code(pair.converted.text)}</td></tr>",
            "</table>",
            "",
        ]

    lines += ["## LSH buckets", ""]
    if data.bucket_layer is None:
        lines += ["The model has no LSH layer.", ""]
    else:
        lines += [
            f"Buckets of LSH layer {data.bucket_layer} for the first {_BUCKET_PLOT_POSITIONS} bytes of a held-out "
            "passage, with rotations drawn from the run's seed. The plot shows the head whose buckets are most "
            "spread out:",
            "",
            "![LSH buckets](lsh_buckets.png)",
            "",
            _code(data.bucket_passage[:_BUCKET_PLOT_POSITIONS].decode("utf-8", errors="replace")),
            "",
        ]

    lines += ["## Settings", ""]
    lines += _settings_table({f"train.{k}": v for k, v in data.settings.items()})
    lines += _settings_table({f"model.{k}": v for k, v in data.config.items()})[2:]
    lines += _settings_table({f"text.{k}": v for k, v in data.corpus.items()})[2:]
    lines += ["", "## Time", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in data.timings.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- write


def write_report(folder: Path, data: ReportData) -> Path:
    """Write report.md, the plots and metrics.json into `folder`, replacing any older report there."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        plot_training_curve(data, temporary / "training_curve.png")
        if data.bucket_layer is not None:
            plot_buckets(data.bucket_plot, data.bucket_layer, data.bucket_passage, temporary / "lsh_buckets.png")
        (temporary / "report.md").write_text(render_markdown(data))
        (temporary / "metrics.json").write_text(json.dumps(data.metrics(), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

    # A directory cannot replace a non-empty one in one rename, so the old report
    # moves aside first. The final name never points at a partial report.
    previous = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, previous)
    os.replace(temporary, folder)
    shutil.rmtree(previous, ignore_errors=True)
    return folder
