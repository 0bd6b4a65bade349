"""Command-line options shared by `reformer demo` and `reformer train`, and the settings they build.

Model and training flags default to None on the parser, so a resumed run can
tell flags given on the command line (which override the checkpoint's
settings) from flags left out (which keep them).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import math
from typing import Any

from reformer_cli.errors import CommandError
from reformer_spec.config import AttentionKind, ReformerConfig


class Framework(str, enum.Enum):
    """The implementation that trains or runs a model."""

    TORCH = "torch"
    JAX = "jax"

    @property
    def other(self) -> "Framework":
        return Framework.JAX if self is Framework.TORCH else Framework.TORCH

    @property
    def label(self) -> str:
        return "PyTorch" if self is Framework.TORCH else "JAX/Flax"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Training hyperparameters and schedule; the model itself is described by its ReformerConfig."""

    framework: Framework = Framework.TORCH
    steps: int = 200  # total optimizer steps of the run, counting steps done before a resume
    batch_size: int = 1  # windows per step; one window is `context` bytes
    context: int = 4096  # bytes per training window; equals the model's max_length
    learning_rate: float = 2e-3  # peak learning rate, reached at the end of warmup
    warmup_steps: int = 20  # linear warmup from 0 to the peak
    min_lr_ratio: float = 0.1  # the cosine decay ends at learning_rate * min_lr_ratio
    weight_decay: float = 0.01  # decoupled AdamW decay, applied to matrices only (not biases or norms)
    clip_norm: float = 1.0  # gradients are rescaled when their global L2 norm exceeds this
    eval_every: int = 40  # steps between held-out evaluations (plus one before training and one at the end)
    eval_windows: int = 4  # held-out windows of `context` bytes per evaluation
    checkpoint_every: int = 40  # steps between checkpoints (plus one at the end and one on Ctrl-C)
    keep_checkpoints: int = 2  # finished checkpoints kept in the run folder; older ones are deleted
    seed: int = 0  # seeds initialisation, data order, hashing and dropout

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["framework"] = self.framework.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSettings":
        known = {field.name for field in dataclasses.fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        values["framework"] = Framework(values.get("framework", Framework.TORCH))
        return cls(**values)


# The model `reformer demo` and `reformer train` build when no model flag is given.
# NOTE: sized so the default demo finishes in about 10 minutes on a 2-core CPU;
# a GPU can afford a wider, deeper model.
MODEL_DEFAULTS: dict[str, Any] = {
    "d_model": 128,
    "heads": 4,
    "d_ff": 512,
    "layers": "local,lsh",
    "chunk_length": 64,
    "hashes": 2,
    "dropout": 0.0,
}

# Training flag -> (TrainSettings field, help text); defaults come from TrainSettings.
_TRAINING_FLAGS = {
    "steps": ("steps", "total optimizer steps, counting those before a resume"),
    "batch_size": ("batch_size", "windows per step"),
    "context": ("context", "bytes per window, also the model's max_length; a multiple of --chunk-length"),
    "lr": ("learning_rate", "peak learning rate after warmup"),
    "warmup": ("warmup_steps", "steps of linear learning-rate warmup (default: 10%% of --steps)"),
    "min_lr_ratio": ("min_lr_ratio", "final learning rate of the cosine decay, as a fraction of the peak"),
    "weight_decay": ("weight_decay", "AdamW decoupled weight decay on matrices"),
    "clip": ("clip_norm", "maximum global L2 norm of the gradients"),
    "eval_every": ("eval_every", "steps between held-out evaluations (default: a fifth of --steps)"),
    "eval_windows": ("eval_windows", "held-out windows of one context per evaluation"),
    "checkpoint_every": ("checkpoint_every", "steps between checkpoints (default: a fifth of --steps)"),
    "keep_checkpoints": ("keep_checkpoints", "finished checkpoints to keep"),
    "seed": ("seed", "seed for initialisation, data order, hashing and dropout"),
}
# Flags whose default follows --steps in a new run: flag -> steps -> value.
_PER_STEPS_DEFAULTS = {
    "warmup": lambda steps: steps // 10,
    "eval_every": lambda steps: max(1, steps // 5),
    "checkpoint_every": lambda steps: max(1, steps // 5),
}
_FLOAT_FLAGS = {"lr", "min_lr_ratio", "weight_decay", "clip"}
_ZERO_ALLOWED = {"warmup", "seed"}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; use a positive integer.")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid; use 0 or a positive integer.")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{value} is invalid; use a number of at least 0.")
    return value


def layer_kinds(text: str) -> tuple[AttentionKind, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    choices = [kind.value for kind in AttentionKind]
    if not names or any(name not in choices for name in names):
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid; give a comma-separated list of layer kinds from {choices}, for example local,lsh."
        )
    return tuple(AttentionKind(name) for name in names)


# ----------------------------------------------------------------- arguments


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("text")
    group.add_argument(
        "--text",
        nargs="+",
        metavar="PATH",
        help="UTF-8 text files or folders to train on (default: the *.py files of the Python standard library). "
        "Files found in folders that are not UTF-8 are skipped with a warning; a named file that is not UTF-8 is an error.",
    )
    group.add_argument("--glob", help="file-name pattern for files in folders (default: * for --text, *.py for the standard library)")
    group.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.05,
        help="fraction of the files held out for evaluation and never trained on (default: %(default)s)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = MODEL_DEFAULTS
    group = parser.add_argument_group("model (a resumed run keeps the checkpoint's model)")
    group.add_argument("--d-model", type=positive_int, help=f"width of each residual stream (default: {defaults['d_model']})")
    group.add_argument("--heads", type=positive_int, help=f"attention heads; --d-model must be divisible by it (default: {defaults['heads']})")
    group.add_argument("--d-ff", type=positive_int, help=f"feed-forward hidden width (default: {defaults['d_ff']})")
    group.add_argument(
        "--layers",
        type=layer_kinds,
        help=f"comma-separated attention kind per layer, each lsh, local or full (default: {defaults['layers']})",
    )
    group.add_argument("--chunk-length", type=positive_int, help=f"tokens per chunk in LSH and local layers (default: {defaults['chunk_length']})")
    group.add_argument("--hashes", type=positive_int, help=f"LSH hash rounds (default: {defaults['hashes']})")
    group.add_argument("--buckets", type=positive_int, help="LSH buckets, even (default: context / chunk length, rounded up to even)")
    group.add_argument("--dropout", type=non_negative_float, help=f"hidden, attention and feed-forward drop rate (default: {defaults['dropout']})")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainSettings()
    group = parser.add_argument_group("training (a resumed run keeps its settings except the flags given)")
    group.add_argument(
        "--framework",
        type=Framework,
        choices=list(Framework),
        help=f"framework that trains the model (default: {defaults.framework.value})",
    )
    for flag, (field, text) in _TRAINING_FLAGS.items():
        if flag in _FLOAT_FLAGS:
            kind = non_negative_float
        elif flag in _ZERO_ALLOWED:
            kind = non_negative_int
        else:
            kind = positive_int
        default_text = "" if flag in _PER_STEPS_DEFAULTS else f" (default: {getattr(defaults, field)})"
        group.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, help=text + default_text)
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")


# ------------------------------------------------------------------ settings


def settings_from_args(args: argparse.Namespace, base: TrainSettings | None = None) -> TrainSettings:
    """Overlay the training flags that were given on `base` (a resumed run's settings).

    Without `base`, flags left out take TrainSettings defaults, except those in
    _PER_STEPS_DEFAULTS, which follow --steps.
    """
    changes: dict[str, Any] = {}
    if base is None:
        base = TrainSettings()
        steps = args.steps if getattr(args, "steps", None) is not None else base.steps
        for flag, default in _PER_STEPS_DEFAULTS.items():
            changes[_TRAINING_FLAGS[flag][0]] = default(steps)
    if getattr(args, "framework", None) is not None:
        changes["framework"] = Framework(args.framework)
    for flag, (field, _) in _TRAINING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            changes[field] = value
    settings = dataclasses.replace(base, **changes)
    if settings.min_lr_ratio > 1.0:
        raise CommandError(f"--min-lr-ratio={settings.min_lr_ratio} is invalid; use a fraction between 0 and 1.")
    if settings.warmup_steps > settings.steps:
        raise CommandError(f"--warmup={settings.warmup_steps} exceeds --steps={settings.steps}; use fewer warmup steps.")
    return settings


def model_flags_given(args: argparse.Namespace) -> list[str]:
    names = ("d_model", "heads", "d_ff", "layers", "chunk_length", "hashes", "buckets", "dropout")
    return ["--" + name.replace("_", "-") for name in names if getattr(args, name, None) is not None]


def axial_shape_for(length: int) -> tuple[int, int]:
    """Return the factor pair (rows, columns) of `length` closest to a square, rows <= columns."""
    rows = max(d for d in range(1, math.isqrt(length) + 1) if length % d == 0)
    return rows, length // rows


def config_from_args(args: argparse.Namespace, context: int) -> ReformerConfig:
    """Build a causal byte-level model config with axial positions covering `context` bytes.

    Raises CommandError naming the flag to change when the flags do not fit together.
    """

    def value(name: str) -> Any:
        flag_value = getattr(args, name, None)
        return MODEL_DEFAULTS.get(name) if flag_value is None else flag_value

    d_model, heads, chunk_length = value("d_model"), value("heads"), value("chunk_length")
    layers = value("layers")
    if isinstance(layers, str):
        layers = layer_kinds(layers)
    if d_model % heads:
        raise CommandError(f"--d-model={d_model} is not divisible by --heads={heads}; choose values where it is.")
    if d_model % 2:
        raise CommandError(f"--d-model={d_model} is odd; the two axial position tables split it in half, so use an even width.")
    if context % chunk_length:
        raise CommandError(
            f"--context={context} is not a multiple of --chunk-length={chunk_length}; "
            f"use --context={-(-context // chunk_length) * chunk_length}."
        )
    buckets = value("buckets")
    if buckets is None:
        buckets = max(2, context // chunk_length)
        buckets += buckets % 2
    dropout = value("dropout")
    try:
        return ReformerConfig(
            vocab_size=256,
            d_model=d_model,
            n_heads=heads,
            d_head=d_model // heads,
            d_ff=value("d_ff"),
            attention_layers=layers,
            causal=True,
            lsh_chunk_length=chunk_length,
            local_chunk_length=chunk_length,
            n_buckets=buckets,
            n_hashes=value("hashes"),
            axial_shape=axial_shape_for(context),
            axial_dims=(d_model // 2, d_model // 2),
            max_length=context,
            hidden_dropout=dropout,
            attention_dropout=dropout,
            ff_dropout=dropout,
            reversible=True,
        )
    except (TypeError, ValueError) as error:
        raise CommandError(f"The model flags do not form a valid Reformer: {error}") from error
