"""JAX/Flax side of the commands: running a ReformerLM and training it with optax's AdamW.

The same numpy boundary as `torch_backend`. Every model call is jit-compiled,
once per input shape; callers pad inputs to whole chunks so few shapes occur.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import weights_convert
from reformer_cli.errors import CommandError
from reformer_cli.options import Framework, TrainSettings
from reformer_jax import ReformerLM as FlaxReformerLM
from reformer_spec.config import ReformerConfig

_INIT_STREAM = 0  # fold_in index of the initialisation key
_STEP_STREAM = 1  # fold_in index of the per-step keys (hashing and dropout)


def _rotations(rotations: Sequence) -> list[jax.Array | None]:
    """Cast portable float64 rotations to float32, rounding to nearest as the torch side does."""
    return [None if r is None else jnp.asarray(np.asarray(r, dtype=np.float32)) for r in rotations]


# Compiled once per (module, input shapes): Linen modules hash and compare by
# their config, so every runner of one config shares the compiled code.
@functools.partial(jax.jit, static_argnums=0)
def _logits(module: FlaxReformerLM, params: Any, ids: jax.Array, mask: jax.Array | None, rotations: list) -> jax.Array:
    return module.apply({"params": params}, ids, attention_mask=mask, rotations=rotations, deterministic=True).logits


@functools.partial(jax.jit, static_argnums=0)
def _loss(module: FlaxReformerLM, params: Any, ids: jax.Array, rotations: list) -> jax.Array:
    return module.apply({"params": params}, ids, labels=ids, rotations=rotations, deterministic=True).loss


@functools.partial(jax.jit, static_argnums=0)
def _buckets(module: FlaxReformerLM, params: Any, ids: jax.Array, rotations: list) -> list:
    return module.apply({"params": params}, ids, rotations=rotations, deterministic=True).buckets


class JaxRunner:
    """A Flax ReformerLM and its parameters: logits, buckets and held-out loss."""

    framework = Framework.JAX

    def __init__(self, module: FlaxReformerLM, params: Any) -> None:
        self.module = module
        self.params = jax.tree_util.tree_map(jnp.asarray, params)

    @classmethod
    def from_file(cls, path: str | Path) -> "JaxRunner":
        try:
            module, params = weights_convert.load_flax_model(path)
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(f"Cannot load the model in {path}: {error}") from error
        return cls(module, params)

    @property
    def config(self) -> ReformerConfig:
        return self.module.config

    def logits(self, ids: np.ndarray, mask: np.ndarray | None, rotations: Sequence) -> np.ndarray:
        """(B, L, V) float32 logits; position t scores the token at t + 1."""
        mask_array = None if mask is None else jnp.asarray(mask, dtype=bool)
        output = _logits(self.module, self.params, jnp.asarray(ids, dtype=jnp.int32), mask_array, _rotations(rotations))
        return np.asarray(output, dtype=np.float32)

    def mean_loss(self, windows: np.ndarray, rotations: Sequence) -> float:
        """Mean next-token loss in nats over (N, L) windows, one window per call to bound memory."""
        rotations = _rotations(rotations)
        losses = [float(_loss(self.module, self.params, jnp.asarray(w[None], dtype=jnp.int32), rotations)) for w in windows]
        return float(np.mean(losses))

    def buckets(self, ids: np.ndarray, rotations: Sequence) -> list[np.ndarray | None]:
        """Per layer, (B, H, R, L_padded) int buckets for LSH layers and None for the others."""
        output = _buckets(self.module, self.params, jnp.asarray(ids, dtype=jnp.int32), _rotations(rotations))
        return [None if b is None else np.asarray(b) for b in output]

    def save_model(self, path: Path) -> None:
        weights_convert.save_flax_model(self.config, jax.device_get(self.params), path)

    def save_config(self, path: Path) -> None:
        self.config.save(path)


def _decay_mask(params: Any) -> Any:
    """True for matrices (kernels, embeddings, position tables), which get weight decay, as on the torch side."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def adamw(clip_norm: float, weight_decay: float, params: Any) -> optax.GradientTransformation:
    """Clipping then AdamW without the learning rate, which the step applies so it can change every step.

    The defaults (b1=0.9, b2=0.999, eps=1e-8) and the decoupled decay
    p <- p - lr * (adam_update + weight_decay * p) match torch.optim.AdamW.
    """
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
        optax.add_decayed_weights(weight_decay, mask=_decay_mask(params)),
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train_step(
    module: FlaxReformerLM,
    clip_norm: float,
    weight_decay: float,
    params: Any,
    opt_state: Any,
    ids: jax.Array,
    key: jax.Array,
    learning_rate: jax.Array,
) -> tuple[Any, Any, jax.Array]:
    hash_key, dropout_key = jax.random.split(key)

    def loss_of(p: Any) -> jax.Array:
        rngs = {"hash": hash_key, "dropout": dropout_key}
        return module.apply({"params": p}, ids, labels=ids, deterministic=False, rngs=rngs).loss

    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = adamw(clip_norm, weight_decay, params).update(grads, opt_state, params)
    updates = jax.tree_util.tree_map(lambda u: -learning_rate * u, updates)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnums=0)
def _init(module: FlaxReformerLM, rngs: dict[str, jax.Array], sample: jax.Array) -> Any:
    return module.init(rngs, sample)["params"]


class JaxTrainer(JaxRunner):
    """A JaxRunner with optax AdamW state and a jit-compiled training step."""

    def __init__(self, module: FlaxReformerLM, params: Any, settings: TrainSettings) -> None:
        super().__init__(module, params)
        self.settings = settings
        self.opt_state = adamw(settings.clip_norm, settings.weight_decay, self.params).init(self.params)
        self.consistent = True  # the step is functional, so state is only ever replaced whole
        self._step_key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), _STEP_STREAM)

    @classmethod
    def create(cls, config: ReformerConfig, settings: TrainSettings) -> "JaxTrainer":
        module = FlaxReformerLM(config)
        key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), _INIT_STREAM)
        params_key, hash_key, dropout_key = jax.random.split(key, 3)
        # Parameter shapes do not depend on the length, so one chunk suffices to initialise.
        sample = jnp.zeros((1, config.length_multiple), dtype=jnp.int32)
        params = _init(module, {"params": params_key, "hash": hash_key, "dropout": dropout_key}, sample)
        return cls(module, params, settings)

    @classmethod
    def resume(cls, checkpoint: Path, settings: TrainSettings) -> "JaxTrainer":
        runner = JaxRunner.from_file(checkpoint / "model.safetensors")
        trainer = cls(runner.module, runner.params, settings)
        trainer.load_optimizer(checkpoint / "optimizer.safetensors")
        return trainer

    def train_step(self, windows: np.ndarray, learning_rate: float, step: int) -> float:
        """One AdamW step on (B, L) windows; returns the loss in nats before the update."""
        key = jax.random.fold_in(self._step_key, step)
        ids = jnp.asarray(windows, dtype=jnp.int32)
        settings = self.settings
        params, opt_state, loss = _train_step(
            self.module, settings.clip_norm, settings.weight_decay, self.params, self.opt_state, ids, key, jnp.float32(learning_rate)
        )
        loss = float(loss)
        if not np.isfinite(loss):
            raise CommandError(f"The training loss became {loss} at step {step + 1}; lower --lr or --clip and start again.")
        self.consistent = False
        self.params, self.opt_state = params, opt_state
        self.consistent = True
        return loss

    # ------------------------------------------------------------- optimizer

    def _flat_state(self) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_flatten_with_path(self.opt_state)[0]
        return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}

    def save_optimizer(self, path: Path) -> None:
        """Write every leaf of the optax state under its tree path as jax.tree_util.keystr spells it."""
        from safetensors.numpy import save_file

        tensors = {name: np.ascontiguousarray(value) for name, value in self._flat_state().items()}
        save_file(tensors, str(path), metadata={"framework": Framework.JAX.value})

    def load_optimizer(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                saved = {name: handle.get_tensor(name) for name in handle.keys()}
        except Exception as error:  # safetensors raises several exception types for damaged files
            raise CommandError(
                f"The optimizer state {path} is damaged ({error}). Delete {path.parent} to resume from an "
                "earlier checkpoint."
            ) from error
        if metadata.get("framework") != Framework.JAX.value:
            raise CommandError(f"{path} contains {metadata.get('framework')} optimizer state, not JAX's; resume with --framework {metadata.get('framework')}.")
        leaves, treedef = jax.tree_util.tree_flatten_with_path(self.opt_state)
        restored = []
        for tree_path, leaf in leaves:
            name = jax.tree_util.keystr(tree_path)
            # Compare sizes, not shapes: safetensors stores a 0-d array (the step count) with shape (1,).
            if name not in saved or saved[name].size != np.size(leaf):
                raise CommandError(f"The optimizer state {path} does not match the model at {name}; start a new run.")
            restored.append(jnp.asarray(saved[name].reshape(np.shape(leaf)), dtype=jnp.asarray(leaf).dtype))
        self.opt_state = jax.tree_util.tree_unflatten(treedef, restored)
