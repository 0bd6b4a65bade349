"""Training checkpoints in a run folder, written so that a crash never leaves a partial one.

Layout of a run folder:

    RUN/checkpoints/step-00000400/model.safetensors      weights and config (weights_convert format)
    RUN/checkpoints/step-00000400/config.json            the same config, for reading by eye
    RUN/checkpoints/step-00000400/optimizer.safetensors  the framework's optimizer state
    RUN/checkpoints/step-00000400/state.json             step, framework, settings, loss history
    RUN/latest                                           the name of the newest finished checkpoint

A checkpoint is written into a temporary sibling folder and renamed to its
final name only when complete; `latest` is then rewritten the same way. A
folder without `state.json` is therefore never a finished checkpoint, and the
temporary folders of a crashed run are deleted on the next save.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from reformer_cli.errors import CommandError

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
STATE_FORMAT = 1  # version of state.json; bump it when the fields change meaning

_STEP_FOLDER = re.compile(r"^step-(\d{8})$")
_TEMPORARY_MARK = ".tmp-"


class CheckpointError(CommandError):
    """A checkpoint that is missing, unfinished or damaged; the message names it and the way out."""


class Savable(Protocol):
    """The methods a trainer provides so its state can be checkpointed."""

    def save_model(self, path: Path) -> None: ...

    def save_optimizer(self, path: Path) -> None: ...

    def save_config(self, path: Path) -> None: ...


@dataclasses.dataclass
class TrainingState:
    """The contents of state.json: everything besides tensors needed to resume a run."""

    step: int  # optimizer steps completed
    framework: str
    settings: dict[str, Any]
    history: dict[str, list[list[float]]]  # "train": [step, loss, tokens/s, lr] rows; "eval": [step, loss] rows
    elapsed_seconds: float = 0.0  # training time summed over all sessions of the run
    corpus: dict[str, Any] = dataclasses.field(default_factory=dict)
    format: int = STATE_FORMAT


def step_folder_name(step: int) -> str:
    return f"step-{step:08d}"


def write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}{_TEMPORARY_MARK}{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def finished_checkpoints(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders of a run, oldest first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_FOLDER.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def remove_unfinished(run_dir: Path) -> None:
    """Delete temporary checkpoint folders left behind by a crashed or killed run."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _TEMPORARY_MARK in path.name:
            logger.info("Deleting unfinished checkpoint %s from an earlier run", path)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(run_dir: Path, trainer: Savable, state: TrainingState, keep: int) -> Path:
    """Write a finished checkpoint for `state.step`, point `latest` at it and delete all but the newest `keep`."""
    folder = run_dir / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_folder_name(state.step)
    if (final / STATE_FILE).is_file():
        # A step number always has the same weights, so an existing checkpoint is already correct.
        write_text_atomically(run_dir / LATEST, final.name + "\n")
        return final
    remove_unfinished(run_dir)
    temporary = folder / f".{final.name}{_TEMPORARY_MARK}{os.getpid()}"
    temporary.mkdir()
    trainer.save_model(temporary / MODEL_FILE)
    trainer.save_config(temporary / CONFIG_FILE)
    trainer.save_optimizer(temporary / OPTIMIZER_FILE)
    (temporary / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state), indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)  # an unfinished folder under the final name, from an older version or by hand
    os.replace(temporary, final)
    write_text_atomically(run_dir / LATEST, final.name + "\n")

    for old in finished_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Return the checkpoint `latest` names, or the newest finished one when `latest` is missing or stale."""
    pointer = run_dir / LATEST
    if pointer.is_file():
        candidate = run_dir / CHECKPOINTS / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
        logger.warning("%s names %s, which is not a finished checkpoint; using the newest finished one", pointer, candidate)
    finished = finished_checkpoints(run_dir)
    return finished[-1] if finished else None


def read_state(checkpoint: Path) -> TrainingState:
    """Read state.json of a checkpoint folder, with an error naming the file when it is damaged."""
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing, so {checkpoint} is not a finished checkpoint. "
            f"Delete that folder to resume from an earlier checkpoint."
        )
    try:
        data = json.loads(path.read_text())
        state = TrainingState(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is damaged ({error}). Delete {checkpoint} to resume from an earlier checkpoint, "
            "or start a new run without --resume."
        ) from error
    if state.format != STATE_FORMAT:
        raise CheckpointError(f"{path} has format {state.format}, but this version reads format {STATE_FORMAT}; start a new run.")
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint / name} is missing. Delete {checkpoint} to resume from an earlier checkpoint.")
    return state


def resolve_model_file(path: str | os.PathLike) -> Path:
    """Find the model weights a user pointed at: a .safetensors file, a checkpoint folder or a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    if path.is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is not None:
            return checkpoint / MODEL_FILE
        raise CheckpointError(
            f"{path} contains no finished checkpoint (no {CHECKPOINTS}/step-*/{STATE_FILE}); "
            "train a model there with `reformer train --out` or pass a model .safetensors file."
        )
    raise CheckpointError(f"Checkpoint {str(path)!r} does not exist; pass a model .safetensors file, a checkpoint folder or a run folder.")
