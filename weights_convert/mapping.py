"""The declarative weight map: canonical parameter -> PyTorch name and layout, Flax path.

Canonical tensors use Flax's layout (kernels are (inputs..., outputs...)), so
the Flax side only renames. A PyTorch `nn.Linear` stores (out, in), so a
canonical kernel whose first `n_inputs` axes are inputs becomes
`kernel.reshape(prod(inputs), prod(outputs)).T` there. Every rule is a pure
reshape or transpose, which is why conversions are bit-exact.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from reformer_spec.config import ReformerConfig
from reformer_spec.parameters import ParameterSpec, parameter_table


@dataclasses.dataclass(frozen=True)
class WeightRule:
    """The location and layout of one canonical parameter in each framework."""

    spec: ParameterSpec
    torch_name: str
    flax_path: tuple[str, ...]
    # 0: the PyTorch tensor has the canonical layout. n > 0: the first n
    # canonical axes are a Linear's inputs, stored transposed and flattened.
    torch_linear_inputs: int = 0

    @property
    def torch_shape(self) -> tuple[int, ...]:
        if not self.torch_linear_inputs:
            return self.spec.shape
        inputs = self.spec.shape[: self.torch_linear_inputs]
        outputs = self.spec.shape[self.torch_linear_inputs :]
        return (math.prod(outputs), math.prod(inputs))

    def canonical_to_torch(self, array: np.ndarray) -> np.ndarray:
        if not self.torch_linear_inputs:
            return array
        inputs = math.prod(self.spec.shape[: self.torch_linear_inputs])
        return np.ascontiguousarray(array.reshape(inputs, -1).T)

    def torch_to_canonical(self, array: np.ndarray) -> np.ndarray:
        if not self.torch_linear_inputs:
            return array
        return np.ascontiguousarray(array.T).reshape(self.spec.shape)


def _flax_path(canonical: str) -> tuple[str, ...]:
    """'layers.3.attention.norm.scale' -> ('layers_3', 'attention', 'norm', 'scale')."""
    parts = canonical.split(".")
    path: list[str] = []
    for part in parts:
        if part.isdigit():
            path[-1] = f"{path[-1]}_{part}"  # Flax names list members layers_0, layers_1, ...
        else:
            path.append(part)
    return tuple(path)


def _torch_rule(spec: ParameterSpec) -> tuple[str, int]:
    """PyTorch name and number of Linear input axes for a canonical parameter."""
    head, leaf = spec.name.rsplit(".", 1)
    if spec.name == "embeddings.token.embedding":
        return "embeddings.token.weight", 0
    if spec.name == "lm_head.kernel":
        return "lm_head.kernel.weight", 1
    if leaf == "scale":
        return f"{head}.weight", 0
    if leaf == "kernel":
        # Attention output kernels are (H, K, D): two input axes. Every other
        # kernel has one input axis: (D, H, K) projections, (D, F) and (F, D) denses.
        n_inputs = 2 if head.endswith("attention.output") else 1
        return f"{head}.weight", n_inputs
    return spec.name, 0  # biases, axial tables, the learned position table


def weight_rules(config: ReformerConfig) -> list[WeightRule]:
    """Return one rule per canonical parameter, in the canonical table's order."""
    rules = []
    for spec in parameter_table(config):
        torch_name, n_inputs = _torch_rule(spec)
        rules.append(WeightRule(spec, torch_name, _flax_path(spec.name), n_inputs))
    return rules
