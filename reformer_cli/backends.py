"""Pick the PyTorch or JAX implementation, importing only the framework that is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from reformer_cli.options import Framework, TrainSettings
from reformer_spec.config import ReformerConfig


class Runner(Protocol):
    """A model of either framework behind numpy inputs and outputs."""

    framework: Framework
    config: ReformerConfig

    def logits(self, ids: np.ndarray, mask: np.ndarray | None, rotations: Sequence) -> np.ndarray: ...

    def mean_loss(self, windows: np.ndarray, rotations: Sequence) -> float: ...

    def buckets(self, ids: np.ndarray, rotations: Sequence) -> list[np.ndarray | None]: ...

    def save_model(self, path: Path) -> None: ...


class Trainer(Runner, Protocol):
    """A Runner with an optimizer."""

    settings: TrainSettings
    consistent: bool  # False while parameters are half-updated

    def train_step(self, windows: np.ndarray, learning_rate: float, step: int) -> float: ...

    def save_optimizer(self, path: Path) -> None: ...

    def save_config(self, path: Path) -> None: ...


def _classes(framework: Framework) -> tuple[Any, Any]:
    if Framework(framework) is Framework.TORCH:
        from reformer_cli.torch_backend import TorchRunner, TorchTrainer

        return TorchRunner, TorchTrainer
    from reformer_cli.jax_backend import JaxRunner, JaxTrainer

    return JaxRunner, JaxTrainer


def load_runner(framework: Framework, model_file: str | Path) -> Runner:
    """Load a model .safetensors file into `framework`, converting the weights from canonical layout."""
    return _classes(framework)[0].from_file(model_file)


def create_trainer(config: ReformerConfig, settings: TrainSettings) -> Trainer:
    return _classes(settings.framework)[1].create(config, settings)


def resume_trainer(checkpoint: Path, settings: TrainSettings) -> Trainer:
    return _classes(settings.framework)[1].resume(checkpoint, settings)
