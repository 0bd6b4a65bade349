"""The one configuration both models are built from.

`ReformerConfig` is frozen and validated once, at construction: every model,
converter and test reads it and none defines defaults of its own.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from reformer_spec.axes import MAX_SORT_KEY


class AttentionKind(str, enum.Enum):
    """Attention used by one layer."""

    LSH = "lsh"  # shared-QK attention within hash buckets, chunked
    LOCAL = "local"  # separate Q, K, V attention within fixed chunks of positions
    FULL = "full"  # separate Q, K, V attention over the whole sequence (quadratic baseline)


class Activation(str, enum.Enum):
    """Feed-forward nonlinearity."""

    RELU = "relu"
    GELU = "gelu"  # exact, with erf
    GELU_TANH = "gelu_tanh"  # tanh approximation (Trax FastGelu, HF gelu_new)


class PositionKind(str, enum.Enum):
    """Positional embedding added to the token embedding."""

    AXIAL = "axial"  # factorised table: one small table per axis, features concatenated
    LEARNED = "learned"  # one (max_length, D) table


@dataclasses.dataclass(frozen=True)
class ReformerConfig:
    """Hyperparameters of a Reformer language model.

    Widths are counts of features, lengths are counts of tokens. Sequences whose
    length is not a multiple of `length_multiple` are padded at the end with
    masked positions and the outputs trimmed back, identically in both models.
    """

    vocab_size: int = 256  # number of token ids; ids must lie in [0, vocab_size)
    d_model: int = 256  # width D of each of the two residual streams
    n_heads: int = 4  # attention heads H
    d_head: int = 64  # width K of one head; n_heads * d_head must equal d_model
    d_ff: int = 1024  # hidden width F of the feed-forward block
    activation: Activation = Activation.RELU  # feed-forward nonlinearity
    attention_layers: tuple[AttentionKind, ...] = (AttentionKind.LOCAL, AttentionKind.LSH)  # one entry per layer
    causal: bool = True  # True: a position sees only itself and earlier positions

    lsh_chunk_length: int = 64  # tokens per chunk of sorted slots in LSH layers
    lsh_chunks_before: int = 1  # earlier chunks each LSH chunk also attends to
    lsh_chunks_after: int = 0  # later chunks each LSH chunk also attends to (bidirectional only)
    n_buckets: int | tuple[int, ...] = 32  # even bucket count, or even factors whose product is the count
    n_hashes: int = 2  # hash rounds R whose outputs are combined
    # True: a query sees only keys of its own round and bucket within the chunk
    # window, which keeps causal LSH strictly causal. False: every key in the
    # window, as Trax and Hugging Face do (there a later token's bucket can move
    # the chunk boundaries that earlier tokens see).
    lsh_same_bucket_only: bool = True

    local_chunk_length: int = 64  # tokens per chunk in local layers
    local_chunks_before: int = 1  # earlier chunks each local chunk also attends to
    local_chunks_after: int = 0  # later chunks each local chunk also attends to (bidirectional only)

    positions: PositionKind = PositionKind.AXIAL  # kind of positional embedding
    axial_shape: tuple[int, ...] = (64, 64)  # axial table sizes; their product is the maximum length
    axial_dims: tuple[int, ...] = (128, 128)  # feature widths per axis; they sum to d_model
    max_length: int = 4096  # maximum sequence length; for axial positions the product of axial_shape

    ff_chunk_size: int = 0  # positions per feed-forward chunk; 0 runs the whole sequence at once
    layer_norm_eps: float = 1e-6  # added to the variance in every layer norm (Trax's value)
    hidden_dropout: float = 0.0  # drop rate after embeddings, attention output, feed-forward output, final norm
    attention_dropout: float = 0.0  # drop rate on attention probabilities
    ff_dropout: float = 0.0  # drop rate after the first feed-forward dense, before the activation
    tie_embeddings: bool = False  # True: the output matrix is the token embedding applied to both streams
    pad_token_id: int = 0  # id written into positions added to reach length_multiple
    reversible: bool = True  # True: reversible layers whose backward recomputes activations
    initializer_std: float = 0.02  # standard deviation of the normal init of dense kernels and embeddings

    def __post_init__(self) -> None:
        _coerce_enums(self)
        _validate(self)

    # ------------------------------------------------------------------ derived

    @property
    def n_layers(self) -> int:
        return len(self.attention_layers)

    @property
    def bucket_factors(self) -> tuple[int, ...]:
        """The bucket count as factors: (n,) for an integer count."""
        if isinstance(self.n_buckets, int):
            return (self.n_buckets,)
        return tuple(self.n_buckets)

    @property
    def n_buckets_total(self) -> int:
        """Buckets a position can hash to, before the padding bucket is added."""
        return math.prod(self.bucket_factors)

    @property
    def rotation_width(self) -> int:
        """Columns of one hash round's rotation: sum of factors (each split into +/- halves)."""
        return sum(self.bucket_factors)

    @property
    def length_multiple(self) -> int:
        """Sequence lengths are padded up to a multiple of this (lcm of the chunk lengths in use)."""
        multiple = 1
        kinds = set(self.attention_layers)
        if AttentionKind.LSH in kinds:
            multiple = math.lcm(multiple, self.lsh_chunk_length)
        if AttentionKind.LOCAL in kinds:
            multiple = math.lcm(multiple, self.local_chunk_length)
        if self.ff_chunk_size:
            multiple = math.lcm(multiple, self.ff_chunk_size)
        return multiple

    def padded_length(self, length: int) -> int:
        """The length a sequence of `length` tokens is padded to before the layers."""
        return -(-length // self.length_multiple) * self.length_multiple

    # --------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = [v.value if isinstance(v, enum.Enum) else v for v in value]
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ReformerConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown config fields {unknown}; the known fields are {sorted(known)}. "
                "Remove or rename them."
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ReformerConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON, atomically (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReformerConfig":
        return cls.from_json(Path(path).read_text())

    def replace(self, **changes: Any) -> "ReformerConfig":
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------- checks


def _coerce_enums(config: ReformerConfig) -> None:
    """Turn strings and lists from JSON or keyword arguments into enums and tuples."""

    def convert(name: str, enum_type: type[enum.Enum], value: Any) -> Any:
        try:
            return enum_type(value)
        except ValueError:
            choices = [member.value for member in enum_type]
            raise ValueError(f"{name}={value!r} is invalid; use one of {choices}.") from None

    set_field = object.__setattr__  # the dataclass is frozen; this runs once, during construction
    set_field(config, "activation", convert("activation", Activation, config.activation))
    set_field(config, "positions", convert("positions", PositionKind, config.positions))
    if isinstance(config.attention_layers, (str, AttentionKind)):
        raise TypeError(
            f"attention_layers={config.attention_layers!r} must be a sequence with one kind per layer, "
            f"for example ('local', 'lsh')."
        )
    set_field(
        config,
        "attention_layers",
        tuple(convert("attention_layers", AttentionKind, kind) for kind in config.attention_layers),
    )
    for name in ("axial_shape", "axial_dims"):
        set_field(config, name, tuple(getattr(config, name)))
    if isinstance(config.n_buckets, Sequence) and not isinstance(config.n_buckets, str):
        set_field(config, "n_buckets", tuple(config.n_buckets))
        if len(config.n_buckets) == 1:
            set_field(config, "n_buckets", config.n_buckets[0])


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_int(config: ReformerConfig, name: str, minimum: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an int.")
    _require(value >= minimum, f"{name}={value} is invalid; it must be at least {minimum}.")


def _validate(config: ReformerConfig) -> None:
    for name in ("vocab_size", "d_model", "n_heads", "d_head", "d_ff", "n_hashes"):
        _require_int(config, name, 1)
    for name in ("lsh_chunk_length", "local_chunk_length", "max_length"):
        _require_int(config, name, 1)
    for name in ("lsh_chunks_before", "lsh_chunks_after", "local_chunks_before", "local_chunks_after"):
        _require_int(config, name, 0)
    _require_int(config, "ff_chunk_size", 0)
    _require_int(config, "pad_token_id", 0)

    _require(
        config.n_heads * config.d_head == config.d_model,
        f"n_heads * d_head = {config.n_heads} * {config.d_head} = {config.n_heads * config.d_head} "
        f"but d_model={config.d_model}; set d_head={config.d_model // config.n_heads} "
        f"or change n_heads so that n_heads * d_head == d_model.",
    )
    _require(len(config.attention_layers) >= 1, "attention_layers is empty; give at least one layer kind.")
    _require(
        config.pad_token_id < config.vocab_size,
        f"pad_token_id={config.pad_token_id} is outside the vocabulary [0, {config.vocab_size}); "
        "choose an id below vocab_size.",
    )

    for factor in config.bucket_factors:
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise TypeError(f"n_buckets={config.n_buckets!r} must be an int or a sequence of ints.")
        _require(
            factor >= 2 and factor % 2 == 0,
            f"n_buckets={config.n_buckets!r} is invalid: every bucket count or factor must be even and "
            f"at least 2 (hashing takes the argmax over [xR, -xR]); use {max(2, factor + factor % 2)} "
            f"instead of {factor}.",
        )

    if config.causal:
        for name in ("lsh_chunks_after", "local_chunks_after"):
            _require(
                getattr(config, name) == 0,
                f"{name}={getattr(config, name)} with causal=True: look-ahead chunks hold only future "
                f"positions, which the causal mask hides. Set {name}=0 or causal=False.",
            )

    _require(
        not config.lsh_same_bucket_only or config.lsh_chunks_before + config.lsh_chunks_after >= 1,
        "lsh_same_bucket_only=True with lsh_chunks_before=0 and lsh_chunks_after=0 lets a query see only itself: "
        "the same-bucket window reaches lsh_chunk_length * lsh_chunks_before sorted places back. "
        "Set lsh_chunks_before=1 or lsh_same_bucket_only=False.",
    )

    for name in ("hidden_dropout", "attention_dropout", "ff_dropout"):
        rate = getattr(config, name)
        _require(0.0 <= rate < 1.0, f"{name}={rate} is invalid; a drop rate must lie in [0, 1).")
    _require(config.layer_norm_eps > 0, f"layer_norm_eps={config.layer_norm_eps} must be positive.")
    _require(config.initializer_std > 0, f"initializer_std={config.initializer_std} must be positive.")

    if config.positions is PositionKind.AXIAL:
        _require(
            len(config.axial_shape) >= 1 and len(config.axial_shape) == len(config.axial_dims),
            f"axial_shape={config.axial_shape} and axial_dims={config.axial_dims} must be non-empty "
            "and of equal length (one width per axis).",
        )
        _require(
            all(isinstance(s, int) and s >= 1 for s in config.axial_shape + config.axial_dims),
            f"axial_shape={config.axial_shape} and axial_dims={config.axial_dims} must hold positive ints.",
        )
        _require(
            sum(config.axial_dims) == config.d_model,
            f"axial_dims={config.axial_dims} sum to {sum(config.axial_dims)} but d_model={config.d_model}; "
            "the axial features are concatenated, so their widths must sum to d_model.",
        )
        _require(
            math.prod(config.axial_shape) == config.max_length,
            f"max_length={config.max_length} but axial_shape={config.axial_shape} covers "
            f"{math.prod(config.axial_shape)} positions; set max_length={math.prod(config.axial_shape)}.",
        )

    multiple = config.length_multiple
    _require(
        config.max_length % multiple == 0,
        f"max_length={config.max_length} is not a multiple of {multiple} (the lcm of the chunk lengths "
        f"in use), so the longest sequence could not be padded to whole chunks; use "
        f"max_length={config.max_length // multiple * multiple or multiple}.",
    )
    largest_key = config.n_hashes * (config.n_buckets_total + 1) * config.max_length - 1
    _require(
        AttentionKind.LSH not in config.attention_layers or largest_key <= MAX_SORT_KEY,
        f"n_hashes * (n_buckets + 1) * max_length = {largest_key + 1} exceeds 2**31, the range of the "
        "int32 sort key JAX uses without x64; lower n_buckets, n_hashes or max_length.",
    )
