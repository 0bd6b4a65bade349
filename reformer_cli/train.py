"""`reformer train`: train a byte-level Reformer LM with checkpoints, resume and held-out evaluation.

Each step draws its windows and its hashing and dropout randomness from
(seed, step) alone, so a run resumed from a checkpoint continues exactly as
the uninterrupted run would have.

The first Ctrl-C stops the run after the step in progress, which then saves a
checkpoint and exits with status 130. A second Ctrl-C stops at once. It still saves
unless parameters were half-updated, and then the previous checkpoint is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from reformer_cli import backends, checkpoints
from reformer_cli.checkpoints import CheckpointError, TrainingState
from reformer_cli.corpus import Corpus, evaluation_windows, load_corpus, sample_windows, step_rng
from reformer_cli.errors import EXIT_INTERRUPTED, EXIT_OK, CommandError, reports_errors
from reformer_cli.options import (
    TrainSettings,
    add_corpus_arguments,
    add_model_arguments,
    add_training_arguments,
    config_from_args,
    model_flags_given,
    settings_from_args,
)
from reformer_spec.hashing import portable_rotations

logger = logging.getLogger(__name__)

_DATA_STREAM = 0  # step_rng stream for the windows of a training step
_SMOOTHING = 0.9  # weight of the running average in the progress bar's loss


# Called after every completed step with (step, trainer); raising KeyboardInterrupt stops the run.
StepCallback = Callable[[int, "backends.Trainer"], None]


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """Learning rate for 0-based step `step`: linear warmup to the peak, then cosine decay to min_lr_ratio * peak."""
    peak = settings.learning_rate
    if step < settings.warmup_steps:
        return peak * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return peak * (settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine)


def bits(nats: float) -> float:
    """Convert a loss in nats per byte to bits per byte."""
    return nats / math.log(2.0)


@dataclasses.dataclass
class TrainResult:
    trainer: "backends.Trainer"
    state: TrainingState
    checkpoint: Path | None  # the newest finished checkpoint, None when none was written
    interrupted: bool


class _StopRequest:
    """Turns the first SIGINT into a request to stop after the current step; the second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Stopping after the current step and saving a checkpoint; press Ctrl-C again to stop at once.")

    @contextlib.contextmanager
    def installed(self) -> Iterator["_StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread; Ctrl-C then raises directly
            return
        previous = signal.signal(signal.SIGINT, self.handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def evaluate(trainer: "backends.Runner", corpus: Corpus, settings: TrainSettings) -> float:
    """Mean held-out loss in nats per byte, on fixed windows with rotations drawn from the seed."""
    windows = evaluation_windows(corpus.held_out, settings.context, settings.eval_windows)
    return trainer.mean_loss(windows, portable_rotations(trainer.config, settings.seed))


def corpus_summary(corpus: Corpus) -> dict:
    return {
        "source": corpus.source,
        "train_files": len(corpus.train_files),
        "train_bytes": int(corpus.train.size),
        "held_out_files": len(corpus.held_out_files),
        "held_out_bytes": int(corpus.held_out.size),
        "skipped_files": len(corpus.skipped_files),
    }


def run_training(
    trainer: "backends.Trainer",
    corpus: Corpus,
    run_dir: Path,
    state: TrainingState,
    *,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
    resume_command: str | None = None,
) -> TrainResult:
    """Train from `state.step` to `trainer.settings.steps`, evaluating and checkpointing on the way.

    Returns with `interrupted=True` after Ctrl-C (or a KeyboardInterrupt raised
    by a callback), once the checkpoint of the last completed step is saved.
    `resume_command` is the command the interrupt message suggests.
    """
    resume_command = resume_command or f"reformer train --out {run_dir} --resume"
    settings = trainer.settings
    tokens_per_step = settings.batch_size * settings.context
    saved: Path | None = checkpoints.latest_checkpoint(run_dir)
    smoothed: float | None = None
    session_start = time.perf_counter()
    elapsed_before = state.elapsed_seconds

    def save() -> Path:
        state.elapsed_seconds = elapsed_before + time.perf_counter() - session_start
        path = checkpoints.save_checkpoint(run_dir, trainer, state, settings.keep_checkpoints)
        logger.debug("Saved checkpoint %s", path)
        return path

    def record_evaluation() -> float:
        loss = evaluate(trainer, corpus, settings)
        state.history["eval"].append([state.step, loss])
        logger.info("step %d: held-out %.3f bits per byte", state.step, bits(loss))
        return loss

    stop = _StopRequest()
    # disable=None lets tqdm hide the bar when stderr is not a terminal (CI logs, redirected output).
    bar = tqdm(
        total=settings.steps,
        initial=state.step,
        disable=None if progress else True,
        unit="step",
        dynamic_ncols=True,
        desc=settings.framework.label,
    )
    try:
        with stop.installed(), logging_redirect_tqdm(), bar:
            if state.step == 0 and not state.history["eval"]:
                record_evaluation()
            while state.step < settings.steps:
                if stop.requested:
                    raise KeyboardInterrupt
                step = state.step
                learning_rate = learning_rate_at(step, settings)
                windows = sample_windows(corpus.train, settings.context, settings.batch_size, step_rng(settings.seed, step, _DATA_STREAM))
                started = time.perf_counter()
                loss = trainer.train_step(windows, learning_rate, step)
                tokens_per_second = tokens_per_step / (time.perf_counter() - started)
                state.step = step + 1
                state.history["train"].append([state.step, loss, tokens_per_second, learning_rate])

                smoothed = loss if smoothed is None else _SMOOTHING * smoothed + (1 - _SMOOTHING) * loss
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.3f}", bpb=f"{bits(smoothed):.3f}", tok_s=f"{tokens_per_second:,.0f}", refresh=False)

                if state.step % settings.eval_every == 0 or state.step == settings.steps:
                    record_evaluation()
                if state.step % settings.checkpoint_every == 0 or state.step == settings.steps:
                    saved = save()
                for callback in callbacks:
                    callback(state.step, trainer)
    except KeyboardInterrupt:
        if trainer.consistent:
            saved = save()
            logger.warning(
                "Interrupted after step %d; saved checkpoint %s. Continue with `%s`.", state.step, saved, resume_command
            )
        else:
            logger.warning(
                "Interrupted while updating parameters in step %d, so that state was not saved; the newest "
                "checkpoint is %s. Continue with `%s`.",
                state.step + 1,
                saved,
                resume_command,
            )
        return TrainResult(trainer, state, saved, interrupted=True)
    return TrainResult(trainer, state, saved, interrupted=False)


def new_state(settings: TrainSettings, corpus: Corpus) -> TrainingState:
    return TrainingState(
        step=0,
        framework=settings.framework.value,
        settings=settings.to_dict(),
        history={"train": [], "eval": []},
        corpus=corpus_summary(corpus),
    )


@dataclasses.dataclass
class RunPlan:
    """The plan of a `reformer train` run, decided before any text is loaded."""

    settings: TrainSettings
    checkpoint: Path | None = None  # the checkpoint to resume, None for a new run
    state: TrainingState | None = None  # its state.json


def plan_run(args: argparse.Namespace, run_dir: Path) -> RunPlan:
    """Check that `run_dir` suits a new run, or with --resume read its newest checkpoint's state."""
    existing = checkpoints.latest_checkpoint(run_dir)
    if not args.resume:
        if existing is not None:
            raise CommandError(
                f"{run_dir} already contains checkpoint {existing.name}; pass --resume to continue that run "
                "or choose a new folder with --out."
            )
        return RunPlan(settings_from_args(args))

    if existing is None:
        raise CheckpointError(f"{run_dir} contains no finished checkpoint to resume; leave out --resume to start a new run there.")
    state = checkpoints.read_state(existing)
    saved_settings = TrainSettings.from_dict(state.settings)
    settings = settings_from_args(args, base=saved_settings)
    if settings.framework.value != state.framework:
        raise CommandError(
            f"{existing} was trained with {state.framework}; its optimizer state belongs to that framework, "
            f"so resume with --framework {state.framework}."
        )
    if settings.context != saved_settings.context:
        raise CommandError(
            f"--context={settings.context} differs from the run's {saved_settings.context}; the context is "
            "fixed by the model, so leave out --context."
        )
    ignored = model_flags_given(args)
    if ignored:
        logger.warning("Ignoring %s: a resumed run keeps the model of its checkpoint.", ", ".join(ignored))
    if state.step >= settings.steps:
        logger.warning("%s is at step %d, already at --steps=%d; raise --steps to train further.", existing, state.step, settings.steps)
    state.settings = settings.to_dict()
    return RunPlan(settings, existing, state)


def start_trainer(plan: RunPlan, args: argparse.Namespace, corpus: Corpus) -> tuple["backends.Trainer", TrainingState]:
    """Build a new model from the flags, or load the checkpoint that `plan` resumes."""
    if plan.checkpoint is None:
        config = config_from_args(args, plan.settings.context)
        return backends.create_trainer(config, plan.settings), new_state(plan.settings, corpus)
    if plan.state.corpus and plan.state.corpus != corpus_summary(corpus):
        logger.warning(
            "The text differs from the text this run started with (%s now, %s then); pass the same --text to continue on it.",
            corpus_summary(corpus),
            plan.state.corpus,
        )
    logger.info("Resuming from %s at step %d", plan.checkpoint, plan.state.step)
    return backends.resume_trainer(plan.checkpoint, plan.settings), plan.state


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a byte-level Reformer LM with checkpoints and resume",
        description="Train a byte-level Reformer language model on UTF-8 text in PyTorch or JAX. "
        "Checkpoints go to OUT/checkpoints every --checkpoint-every steps, at the end and on Ctrl-C "
        "(which exits with status 130); --resume continues from the newest one.",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder for checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    add_corpus_arguments(parser)
    add_model_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(func=run_command)


@reports_errors
def run_command(args: argparse.Namespace) -> int:
    run_dir: Path = args.out
    plan = plan_run(args, run_dir)
    settings = plan.settings
    corpus = load_corpus(args.text, context=settings.context, held_out_fraction=args.held_out_fraction, pattern=args.glob)
    logger.info("Text: %s", corpus.describe())
    trainer, state = start_trainer(plan, args, corpus)
    result = run_training(trainer, corpus, run_dir, state, progress=not args.no_progress)
    if result.interrupted:
        return EXIT_INTERRUPTED
    held_out = result.state.history["eval"][-1][1]
    print(f"Trained the {settings.framework.label} model to step {result.state.step}: held-out {bits(held_out):.3f} bits per byte.")
    print(f"Checkpoint: {result.checkpoint}")
    return EXIT_OK
