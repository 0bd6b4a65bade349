"""Conversions between a PyTorch state_dict, a Flax parameter pytree and canonical tensors.

Canonical tensors are a flat dict {canonical name: numpy array} (see
`reformer_spec.parameters`). Every conversion checks the whole set: a tensor
the model needs but the source lacks, a source tensor nothing reads, and a
shape or dtype that differs all raise `ConversionError` naming the tensor.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from reformer_spec.config import ReformerConfig
from weights_convert.arrays import jax_to_numpy, numpy_to_jax, numpy_to_torch, torch_to_numpy
from weights_convert.errors import ConversionError
from weights_convert.mapping import WeightRule, weight_rules


def _check_complete(expected: Iterable[str], given: Iterable[str], source: str) -> None:
    expected, given = list(expected), set(given)
    missing = [name for name in expected if name not in given]
    unread = sorted(given - set(expected))
    if missing:
        raise ConversionError(
            f"{source} lacks {len(missing)} tensor(s) the model needs, first {missing[0]!r}: {missing[:5]}. "
            "Check that the weights were saved from a model with this config."
        )
    if unread:
        raise ConversionError(
            f"{source} has {len(unread)} tensor(s) the model does not use, first {unread[0]!r}: {unread[:5]}. "
            "The weights belong to a different config (layer count, attention kinds, tied embeddings?)."
        )


def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...], source: str) -> None:
    if tuple(shape) != tuple(expected):
        raise ConversionError(f"{source} tensor {name!r} has shape {tuple(shape)} but the model expects {tuple(expected)}.")


def _check_one_dtype(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Raise unless every tensor of the set has one dtype, because mixed dtypes mean a half-converted set."""
    first_name, first = next(iter(arrays.items()))
    for name, array in arrays.items():
        if array.dtype != first.dtype:
            raise ConversionError(
                f"{source} tensor {name!r} has dtype {array.dtype} but {first_name!r} has {first.dtype}; "
                "cast the whole set to one dtype before converting."
            )


def check_canonical(config: ReformerConfig, canonical: Mapping[str, np.ndarray], source: str = "canonical weights") -> None:
    rules = weight_rules(config)
    _check_complete((rule.spec.name for rule in rules), canonical, source)
    for rule in rules:
        _check_shape(rule.spec.name, canonical[rule.spec.name].shape, rule.spec.shape, source)
    _check_one_dtype(canonical, source)


# ------------------------------------------------------------------ PyTorch


def torch_state_to_canonical(config: ReformerConfig, state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Convert a `reformer_torch.ReformerLM` state_dict into canonical numpy tensors."""
    rules = weight_rules(config)
    _check_complete((rule.torch_name for rule in rules), state_dict, "PyTorch state_dict")
    canonical = {}
    for rule in rules:
        array = torch_to_numpy(state_dict[rule.torch_name])
        _check_shape(rule.torch_name, array.shape, rule.torch_shape, "PyTorch state_dict")
        canonical[rule.spec.name] = rule.torch_to_canonical(array)
    _check_one_dtype(canonical, "PyTorch state_dict")
    return canonical


def canonical_to_torch_state(config: ReformerConfig, canonical: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Convert canonical tensors into a state_dict for `reformer_torch.ReformerLM(config)`."""
    check_canonical(config, canonical)
    return {rule.torch_name: numpy_to_torch(rule.canonical_to_torch(canonical[rule.spec.name])) for rule in weight_rules(config)}


def load_into_torch(model, canonical: Mapping[str, np.ndarray]) -> None:
    """Copy canonical tensors into an existing PyTorch model, refusing dtype changes."""
    state = canonical_to_torch_state(model.config, canonical)
    current = model.state_dict()
    for name, tensor in state.items():
        if tensor.dtype != current[name].dtype:
            raise ConversionError(
                f"tensor {name!r} has dtype {tensor.dtype} but the model has {current[name].dtype}; "
                f"convert the model first (model.to({tensor.dtype}))."
            )
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------- Flax


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def flax_params_to_canonical(config: ReformerConfig, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Convert a `reformer_jax.ReformerLM` parameter pytree (the "params" collection) into canonical tensors."""
    if "params" in params and len(params) == 1:
        params = params["params"]  # accept the whole variables dict too
    flat = _flatten(params)
    rules = weight_rules(config)
    by_path = {rule.flax_path: rule for rule in rules}
    _check_complete(("/".join(rule.flax_path) for rule in rules), ("/".join(path) for path in flat), "Flax params")
    canonical = {}
    for path, value in flat.items():
        rule = by_path[path]
        array = jax_to_numpy(value)
        _check_shape("/".join(path), array.shape, rule.spec.shape, "Flax params")
        canonical[rule.spec.name] = array
    canonical = {rule.spec.name: canonical[rule.spec.name] for rule in rules}
    _check_one_dtype(canonical, "Flax params")
    return canonical


def canonical_to_flax_params(config: ReformerConfig, canonical: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Convert canonical tensors into the "params" pytree of `reformer_jax.ReformerLM(config)`."""
    check_canonical(config, canonical)
    tree: dict[str, Any] = {}
    for rule in weight_rules(config):
        node = tree
        for key in rule.flax_path[:-1]:
            node = node.setdefault(key, {})
        node[rule.flax_path[-1]] = numpy_to_jax(canonical[rule.spec.name])
    return tree


def cast_canonical(canonical: Mapping[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    return {name: np.asarray(array).astype(dtype) for name, array in canonical.items()}


__all__ = [
    "WeightRule",
    "canonical_to_flax_params",
    "canonical_to_torch_state",
    "cast_canonical",
    "check_canonical",
    "flax_params_to_canonical",
    "load_into_torch",
    "torch_state_to_canonical",
]
