"""Shared helpers for the JAX tests: a small config, random parameters, jit-compiled model calls, a comparator.

XLA:CPU compiles a small Reformer in seconds, not milliseconds, so the model
calls below are jit-compiled once per (config, shapes, dtype) and shared by
every test that uses the same combination.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reformer_spec import ReformerConfig
from reformer_spec.parameters import parameter_table
from reformer_jax import ReformerLM
from tests.configs import make_config  # noqa: F401  (re-exported for this suite's tests)


def random_ids(config: ReformerConfig, batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, config.vocab_size, (batch, length)).astype(np.int32)


def flax_path(canonical: str) -> tuple[str, ...]:
    """'layers.3.attention.norm.scale' -> ('layers_3', 'attention', 'norm', 'scale')."""
    return tuple(re.sub(r"^layers\.(\d+)\.", r"layers_\1.", canonical).split("."))


def random_params(config: ReformerConfig, seed: int = 0, dtype: Any = np.float32) -> dict:
    """Variables {"params": ...} with every entry random, norm scales and biases too.

    Built from the canonical table with numpy, so no initialisation has to be
    compiled, and no transposed or misplaced weight hides behind ones or zeros.
    """
    generator = np.random.default_rng(seed)
    params: dict = {}
    for spec in parameter_table(config):
        scale = 0.3 if spec.kind in ("kernel", "embedding") or spec.name.startswith("embeddings.") else 0.1
        values = generator.standard_normal(spec.shape) * scale
        if spec.kind == "scale":
            values = 1.0 + values
        node = params
        path = flax_path(spec.name)
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(values, dtype=dtype)
    return {"params": params}


def random_like(tree: Any, seed: int, dtype: Any) -> Any:
    """Random values in the shapes of `tree` (arrays or jax.ShapeDtypeStruct): N(1, 0.1^2) for norm scales, N(0, 0.3^2) else.

    Used with `jax.eval_shape(module.init, ...)`, so a test gets parameters
    without compiling an initialisation.
    """
    generator = np.random.default_rng(seed)

    def draw(path, leaf):
        if getattr(path[-1], "key", None) == "scale":
            return jnp.asarray(1.0 + 0.1 * generator.standard_normal(leaf.shape), dtype)
        return jnp.asarray(0.3 * generator.standard_normal(leaf.shape), dtype)

    return jax.tree_util.tree_map_with_path(draw, tree)


# ------------------------------------------------------------- compiled calls


@functools.partial(jax.jit, static_argnums=0)
def model_output(config: ReformerConfig, variables: dict, ids, mask=None, rotations=None, buckets=None):
    """The ReformerOutput of `ReformerLM(config)` in eval mode (dropout off)."""
    return ReformerLM(config).apply(variables, ids, mask, rotations=rotations, buckets=buckets)


@functools.partial(jax.jit, static_argnums=0)
def loss_and_grads(config: ReformerConfig, variables: dict, ids, labels, rotations=None, dropout_key=None):
    """(loss, gradients of every parameter); dropout is on when `dropout_key` is given."""

    def loss(variables):
        rngs = None if dropout_key is None else {"dropout": dropout_key}
        output = ReformerLM(config).apply(
            variables, ids, labels=labels, rotations=rotations, deterministic=dropout_key is None, rngs=rngs
        )
        return output.loss

    return jax.value_and_grad(loss)(variables)


# ---------------------------------------------------------------- comparing


def flatten(tree: Any) -> dict[str, Any]:
    """Map each leaf of a nested dict to its dot path, e.g. "params.layers_0.attention.norm.scale"."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[".".join(str(getattr(entry, "key", getattr(entry, "idx", entry))) for entry in path)] = leaf
    return flat


def assert_trees_close(actual: Any, expected: Any, *, rtol: float, atol: float) -> None:
    """Compare two trees leaf by leaf; a failure names every bad path with its max abs and relative error."""
    actual_flat, expected_flat = flatten(actual), flatten(expected)
    assert actual_flat.keys() == expected_flat.keys(), (
        f"different leaves: only in actual {sorted(actual_flat.keys() - expected_flat.keys())}, "
        f"only in expected {sorted(expected_flat.keys() - actual_flat.keys())}"
    )
    failures = []
    for path, expected_leaf in expected_flat.items():
        a = np.asarray(actual_flat[path], dtype=np.float64)
        e = np.asarray(expected_leaf, dtype=np.float64)
        assert a.shape == e.shape, f"{path}: shape {a.shape} != {e.shape}"
        error = np.abs(a - e)
        if not np.all(error <= atol + rtol * np.abs(e)):
            relative = float(np.max(error / np.maximum(np.abs(e), np.finfo(np.float64).tiny)))
            failures.append(f"{path}: max abs error {float(np.max(error)):.3e}, max relative error {relative:.3e}")
    assert not failures, "trees differ:\n" + "\n".join(failures)


def max_abs_difference(actual: Any, expected: Any) -> float:
    """The largest |a - e| over all leaves of two trees of equal structure."""
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))))
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected))
    )
