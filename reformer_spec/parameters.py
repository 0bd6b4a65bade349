"""The canonical parameter table: every weight of a Reformer, by name, shape and axes.

Canonical names are dot paths with Flax's leaf names (`kernel`, `bias`,
`scale`, `embedding`) and Flax's kernel layout (input axes first, output axes
last). Each framework's own names and layouts are derived from this table in
`weights_convert`, so a converter can check that every tensor is set once.
"""

from __future__ import annotations

import dataclasses
import enum

from reformer_spec.config import AttentionKind, PositionKind, ReformerConfig


class Init(str, enum.Enum):
    """How a parameter is initialised (the same distribution in both frameworks, not the same values)."""

    NORMAL = "normal"  # N(0, config.initializer_std)
    ONES = "ones"
    ZEROS = "zeros"


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One parameter: canonical name, shape, the meaning of each axis, and its init."""

    name: str
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    init: Init

    @property
    def kind(self) -> str:
        """The last path component: kernel, bias, scale or embedding (or axial_N)."""
        return self.name.rsplit(".", 1)[-1]


def _norm(prefix: str, width: int) -> list[ParameterSpec]:
    return [
        ParameterSpec(f"{prefix}.scale", (width,), ("model",), Init.ONES),
        ParameterSpec(f"{prefix}.bias", (width,), ("model",), Init.ZEROS),
    ]


def _attention(prefix: str, kind: AttentionKind, config: ReformerConfig) -> list[ParameterSpec]:
    D, H, K = config.d_model, config.n_heads, config.d_head
    # LSH shares one projection for queries and keys; the other kinds have both.
    inputs = ("query_key", "value") if kind is AttentionKind.LSH else ("query", "key", "value")
    specs = [
        ParameterSpec(f"{prefix}.{name}.kernel", (D, H, K), ("model", "heads", "head"), Init.NORMAL)
        for name in inputs
    ]
    specs.append(ParameterSpec(f"{prefix}.output.kernel", (H, K, D), ("heads", "head", "model"), Init.NORMAL))
    return specs


def _feed_forward(prefix: str, config: ReformerConfig) -> list[ParameterSpec]:
    D, F = config.d_model, config.d_ff
    return [
        ParameterSpec(f"{prefix}.dense_in.kernel", (D, F), ("model", "ff"), Init.NORMAL),
        ParameterSpec(f"{prefix}.dense_in.bias", (F,), ("ff",), Init.ZEROS),
        ParameterSpec(f"{prefix}.dense_out.kernel", (F, D), ("ff", "model"), Init.NORMAL),
        ParameterSpec(f"{prefix}.dense_out.bias", (D,), ("model",), Init.ZEROS),
    ]


def parameter_table(config: ReformerConfig) -> list[ParameterSpec]:
    """List every parameter of the model `config` describes, in a fixed order."""
    D, V = config.d_model, config.vocab_size
    specs = [ParameterSpec("embeddings.token.embedding", (V, D), ("vocab", "model"), Init.NORMAL)]
    if config.positions is PositionKind.AXIAL:
        for axis, (size, width) in enumerate(zip(config.axial_shape, config.axial_dims)):
            specs.append(
                ParameterSpec(f"embeddings.axial_{axis}", (size, width), (f"axial_{axis}", "feature"), Init.NORMAL)
            )
    else:
        specs.append(ParameterSpec("embeddings.position_table", (config.max_length, D), ("length", "model"), Init.NORMAL))

    for i, kind in enumerate(config.attention_layers):
        specs += _norm(f"layers.{i}.attention.norm", D)
        specs += _attention(f"layers.{i}.attention", kind, config)
        specs += _norm(f"layers.{i}.feed_forward.norm", D)
        specs += _feed_forward(f"layers.{i}.feed_forward", config)

    # The head reads both residual streams side by side, so it is 2D wide.
    specs += _norm("final_norm", 2 * D)
    if not config.tie_embeddings:
        specs.append(ParameterSpec("lm_head.kernel", (2 * D, V), ("model2", "vocab"), Init.NORMAL))
    specs.append(ParameterSpec("lm_head.bias", (V,), ("vocab",), Init.ZEROS))
    return specs


def parameter_count(config: ReformerConfig) -> int:
    total = 0
    for spec in parameter_table(config):
        size = 1
        for dim in spec.shape:
            size *= dim
        total += size
    return total
