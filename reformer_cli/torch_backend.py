"""PyTorch side of the commands: running a ReformerLM and training it with AdamW.

Arrays cross this boundary as numpy: token ids (B, L) int32, padding masks
(B, L) bool, rotations as `reformer_spec.hashing.portable_rotations` returns
them, and logits (B, L, V) float32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import weights_convert
from reformer_cli.corpus import step_rng
from reformer_cli.errors import CommandError
from reformer_cli.options import Framework, TrainSettings
from reformer_spec.config import ReformerConfig
from reformer_torch import ReformerLM

_HASH_STREAM = 1  # step_rng stream for the rotations and dropout seeds of a training step


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


class TorchRunner:
    """A PyTorch ReformerLM in evaluation mode: logits, buckets and held-out loss."""

    framework = Framework.TORCH

    def __init__(self, model: ReformerLM, device: torch.device | None = None) -> None:
        self.device = device or default_device()
        self.model = model.to(self.device)

    @classmethod
    def from_file(cls, path: str | Path) -> "TorchRunner":
        try:
            model = weights_convert.load_torch_model(path)
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(f"Cannot load the model in {path}: {error}") from error
        return cls(model)

    @property
    def config(self) -> ReformerConfig:
        return self.model.config

    def _ids(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)

    @torch.no_grad()
    def logits(self, ids: np.ndarray, mask: np.ndarray | None, rotations: Sequence) -> np.ndarray:
        """(B, L, V) float32 logits; position t scores the token at t + 1."""
        self.model.eval()
        attention_mask = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=bool)).to(self.device)
        output = self.model(self._ids(ids), attention_mask, rotations=rotations)
        return output.logits.float().cpu().numpy()

    @torch.no_grad()
    def mean_loss(self, windows: np.ndarray, rotations: Sequence) -> float:
        """Mean next-token loss in nats over (N, L) windows, one window per forward to bound memory."""
        self.model.eval()
        losses = [float(self.model(self._ids(w[None]), labels=self._ids(w[None]), rotations=rotations).loss) for w in windows]
        return float(np.mean(losses))

    @torch.no_grad()
    def buckets(self, ids: np.ndarray, rotations: Sequence) -> list[np.ndarray | None]:
        """Per layer, (B, H, R, L_padded) int buckets for LSH layers and None for the others."""
        self.model.eval()
        output = self.model(self._ids(ids), rotations=rotations)
        return [None if b is None else b.cpu().numpy() for b in output.buckets]

    def save_model(self, path: Path) -> None:
        weights_convert.save_torch_model(self.model, path)

    def save_config(self, path: Path) -> None:
        self.config.save(path)


class TorchTrainer(TorchRunner):
    """A TorchRunner with a torch.optim.AdamW optimizer and one method per training step."""

    def __init__(self, model: ReformerLM, settings: TrainSettings, device: torch.device | None = None) -> None:
        super().__init__(model, device)
        self.settings = settings
        # Decay matrices (kernels, embeddings, position tables) only, as is usual for transformers.
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.learning_rate,
        )
        # False only while parameters are being updated in place; a checkpoint
        # taken then would mix two steps, so an interrupt there skips saving.
        self.consistent = True

    @classmethod
    def create(cls, config: ReformerConfig, settings: TrainSettings) -> "TorchTrainer":
        """A freshly initialised model; initialisation draws from a generator seeded with settings.seed."""
        with torch.random.fork_rng(devices=[]):  # seed without disturbing the caller's global generator
            torch.manual_seed(settings.seed)
            model = ReformerLM(config)
        return cls(model, settings)

    @classmethod
    def resume(cls, checkpoint: Path, settings: TrainSettings) -> "TorchTrainer":
        trainer = cls(TorchRunner.from_file(checkpoint / "model.safetensors").model, settings)
        trainer.load_optimizer(checkpoint / "optimizer.safetensors")
        return trainer

    def train_step(self, windows: np.ndarray, learning_rate: float, step: int) -> float:
        """One AdamW step on (B, L) windows; returns the loss in nats before the update."""
        self.model.train()
        generator = torch.Generator().manual_seed(_seed_from(step_rng(self.settings.seed, step, _HASH_STREAM)))
        ids = self._ids(windows)
        loss = self.model(ids, labels=ids, generator=generator).loss
        if not math.isfinite(loss.item()):
            raise CommandError(f"The training loss became {float(loss)} at step {step + 1}; lower --lr or --clip and start again.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.consistent = False
        self.optimizer.step()
        self.consistent = True
        return loss.item()

    # ------------------------------------------------------------- optimizer

    def save_optimizer(self, path: Path) -> None:
        """Write AdamW's moments and step counts as tensors, and its param groups as JSON metadata."""
        from safetensors.torch import save_file

        state = self.optimizer.state_dict()
        tensors = {
            f"state.{index}.{name}": value.detach().cpu().contiguous()
            for index, entries in state["state"].items()
            for name, value in entries.items()
            if isinstance(value, torch.Tensor)
        }
        metadata = {"framework": Framework.TORCH.value, "param_groups": json.dumps(state["param_groups"])}
        save_file(tensors, str(path), metadata=metadata)

    def load_optimizer(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            param_groups = json.loads(metadata["param_groups"])
        except Exception as error:  # safetensors raises several exception types for damaged files
            raise CommandError(
                f"The optimizer state {path} is damaged ({error}). Delete {path.parent} to resume from an "
                "earlier checkpoint."
            ) from error
        if metadata.get("framework") != Framework.TORCH.value:
            raise CommandError(f"{path} contains {metadata.get('framework')} optimizer state, not PyTorch's; resume with --framework {metadata.get('framework')}.")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            _, index, field = name.split(".", 2)
            state.setdefault(int(index), {})[field] = value
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": param_groups})
        except (ValueError, KeyError) as error:
            raise CommandError(f"The optimizer state {path} does not match the model ({error}); start a new run.") from error
