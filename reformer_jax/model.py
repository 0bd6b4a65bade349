"""The Reformer language model in JAX/Flax Linen."""

from __future__ import annotations

import math
from typing import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from reformer_spec import dropout as portable
from reformer_spec import validation
from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_spec.hashing import rotation_shape
from reformer_jax.embeddings import Embeddings
from reformer_jax.randomness import DropoutKey, PortableKey, dropout
from reformer_jax.reversible import LayerRandomness, ReformerLayer, run_layers

Array = jax.Array

IGNORE_INDEX = -100  # label value left out of the loss, as in torch's cross_entropy and Hugging Face


@flax.struct.dataclass
class ReformerOutput:
    """Model outputs (a pytree, so `jax.jit` can return it).

    logits (B, L, V): position t scores the token at t + 1.
    loss: mean next-token cross-entropy in nats, when labels were given.
    buckets: per layer, (B, H, R, L_padded) integer buckets for LSH layers, None for others.
    """

    logits: Array
    loss: Array | None = None
    buckets: list[Array | None] = flax.struct.field(default_factory=list)


def draw_rotations(config: ReformerConfig, hash_key: Array, dtype: jnp.dtype = jnp.float32) -> list[Array | None]:
    """Draw fresh rotations for every LSH layer from `hash_key` (the native path).

    Layer i draws `jax.random.normal(fold_in(hash_key, i), (H*K*R*Z,))`
    reshaped to `rotation_shape(config)` = (H, K, R, Z), so adding or removing
    a layer leaves the other layers' rotations unchanged. The flat draw compiles
    faster on XLA:CPU (see `randomness.dropout_mask`).
    """
    shape = rotation_shape(config)
    return [
        jax.random.normal(jax.random.fold_in(hash_key, i), (math.prod(shape),), dtype).reshape(shape)
        if kind is AttentionKind.LSH
        else None
        for i, kind in enumerate(config.attention_layers)
    ]


def _is_integer(dtype: np.dtype) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.integer))


class ReformerLM(nn.Module):
    """Embeddings, a stack of reversible layers, and a head over both streams.

    The computation runs in the dtype of the parameters: cast the parameter
    tree to float64 (with `jax_enable_x64` on) for a float64 model.
    Randomness comes from Flax rng streams: `hash` draws the rotations of
    every LSH layer unless `rotations` is given, and `dropout` seeds every
    dropout mask when `deterministic=False`.
    """

    config: ReformerConfig

    def setup(self) -> None:
        config = self.config
        self.embeddings = Embeddings(config)
        self.layers = [ReformerLayer(config, i) for i in range(config.n_layers)]
        self.final_norm = nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False)
        self.lm_head = LMHead(config)

    # ----------------------------------------------------------------- inputs

    def _check_inputs(self, input_ids: Array, attention_mask: Array | None) -> None:
        if not isinstance(input_ids, (jax.Array, np.ndarray)):
            raise TypeError(f"input_ids must be a jax.Array or numpy array, got {type(input_ids).__name__}.")
        is_integer = _is_integer(input_ids.dtype)
        validation.check_input_ids(tuple(input_ids.shape), str(input_ids.dtype), is_integer, self.config)
        # Under jit the ids are abstract and cannot be checked; out-of-range ids
        # would then be clamped by the embedding lookup instead of rejected.
        if not isinstance(input_ids, jax.core.Tracer):
            validation.check_token_range(int(input_ids.min()), int(input_ids.max()), self.config)
        if attention_mask is not None:
            ok = attention_mask.dtype == jnp.bool_ or _is_integer(attention_mask.dtype)
            validation.check_attention_mask(
                tuple(attention_mask.shape), tuple(input_ids.shape), str(attention_mask.dtype), ok
            )

    def _must_hash(self, buckets: Sequence | None) -> bool:
        """Return whether some LSH layer must hash, because the caller gave no buckets for it."""
        return any(
            kind is AttentionKind.LSH and (buckets is None or buckets[i] is None)
            for i, kind in enumerate(self.config.attention_layers)
        )

    def _check_randomness(self, rotations: Sequence | None, buckets: Sequence | None, padded_shape: tuple[int, int]) -> None:
        """Check the given buckets and rotations, and that LSH layers without buckets can hash."""
        config = self.config
        if buckets is not None:
            batch, length = padded_shape
            shape = (batch, config.n_heads, config.n_hashes, length)
            validation.check_buckets(buckets, [shape if kind is AttentionKind.LSH else None for kind in config.attention_layers])
        if rotations is not None:
            expected = [rotation_shape(config) if kind is AttentionKind.LSH else None for kind in config.attention_layers]
            validation.check_rotations(rotations, expected)
        elif self._must_hash(buckets) and not self.is_initializing() and not self.has_rng("hash"):
            raise ValueError(
                "The model has LSH layers but got neither rotations nor a 'hash' key; pass "
                "rngs={'hash': key} to apply, or rotations=reformer_spec.hashing.portable_rotations(config, seed)."
            )

    def _prepare_rotations(
        self, rotations: Sequence | None, buckets: Sequence | None, dtype: jnp.dtype
    ) -> list[Array | None]:
        if rotations is None:
            if not self._must_hash(buckets):
                return [None] * self.config.n_layers
            return draw_rotations(self.config, self.make_rng("hash"), dtype)
        return [
            None if r is None or kind is not AttentionKind.LSH else jnp.asarray(r, dtype=dtype)
            for r, kind in zip(rotations, self.config.attention_layers)
        ]

    def _prepare_buckets(self, buckets: Sequence | None) -> list[Array | None]:
        if buckets is None:
            return [None] * self.config.n_layers
        return [
            None if b is None or kind is not AttentionKind.LSH else jnp.asarray(b).astype(int)
            for b, kind in zip(buckets, self.config.attention_layers)
        ]

    # ---------------------------------------------------------------- forward

    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        labels: Array | None = None,
        *,
        rotations: Sequence | None = None,
        buckets: Sequence | None = None,
        deterministic: bool = True,
        dropout_seed: int | None = None,
    ) -> ReformerOutput:
        """Score the next token at every position.

        input_ids (B, L) ints in [0, vocab_size). attention_mask (B, L): 1 at
        real tokens, 0 at padding, which no other position may attend to.
        labels (B, L): usually input_ids; position t's logits are scored against
        labels[t + 1], and IGNORE_INDEX entries are left out. rotations: one
        (H, K, R, Z) array per layer (None at non-LSH layers), for example
        `reformer_spec.hashing.portable_rotations`; drawn from the `hash` rng
        stream when not given. buckets: one (B, H, R, L_padded) int array per
        layer (None at non-LSH layers), used instead of hashing, for example
        the `buckets` of an earlier output. They separate arithmetic from
        hashing when two models are compared. `deterministic=False` turns
        dropout on, with keys from the `dropout` rng stream, or, when
        `dropout_seed` (an int in [0, 2**32)) is given, with the portable masks
        of `reformer_spec.dropout`, the same masks that the PyTorch model draws
        from the same seed.
        """
        self._check_inputs(input_ids, attention_mask)
        config = self.config
        batch, length = input_ids.shape
        padded_length = config.padded_length(length)
        self._check_randomness(rotations, buckets, (batch, padded_length))

        # Pad to whole chunks; padded positions are masked as keys and trimmed from the outputs.
        input_ids = jnp.asarray(input_ids)
        padding_mask = None if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
        if padded_length != length:
            extra = padded_length - length
            input_ids = jnp.pad(input_ids, ((0, 0), (0, extra)), constant_values=config.pad_token_id)
            if padding_mask is None:
                padding_mask = jnp.ones((batch, length), dtype=bool)
            padding_mask = jnp.pad(padding_mask, ((0, 0), (0, extra)), constant_values=False)

        if dropout_seed is not None:
            dropout_seed = portable.check_seed(dropout_seed)
        dropout_on = not deterministic and (
            config.hidden_dropout > 0 or config.attention_dropout > 0 or config.ff_dropout > 0
        )
        # One key per layer half, one for the embeddings and one for the head.
        keys: list[DropoutKey | None] = [None] * (2 * config.n_layers + 2)
        if dropout_on and dropout_seed is not None:
            streams = []
            for i in range(config.n_layers):
                streams += [portable.attention_stream(i), portable.feed_forward_stream(i)]
            streams += [portable.EMBEDDING_STREAM, portable.head_stream(config.n_layers)]
            keys = [PortableKey.create(dropout_seed, stream) for stream in streams]
        elif dropout_on:
            keys = list(jax.random.split(self.make_rng("dropout"), len(keys)))
        embed_key, head_key = keys[-2], keys[-1]

        hidden = self.embeddings(input_ids, embed_key)  # (B, L, D)
        layer_rotations = self._prepare_rotations(rotations, buckets, hidden.dtype)
        layer_buckets = self._prepare_buckets(buckets)
        randomness = [
            LayerRandomness(r, b, keys[2 * i], keys[2 * i + 1])
            for i, (r, b) in enumerate(zip(layer_rotations, layer_buckets))
        ]
        y1, y2, buckets = run_layers(self.layers, hidden, padding_mask, randomness, reversible=config.reversible)
        normed = self.final_norm(jnp.concatenate([y1, y2], axis=-1))  # (B, L, 2D)
        normed = dropout(normed, config.hidden_dropout, head_key)
        token_embedding = self.embeddings.token.embedding if config.tie_embeddings else None
        logits = self.lm_head(normed, token_embedding)[:, :length]  # (B, L, V)

        loss = None
        if labels is not None:
            loss = next_token_loss(logits, jnp.asarray(labels))
        return ReformerOutput(logits=logits, loss=loss, buckets=buckets)


class LMHead(nn.Module):
    """Projection of the concatenated streams (B, L, 2D) to vocabulary logits (B, L, V).

    With tied embeddings the kernel is the token embedding E (V, D) applied to
    both halves: logits = h[:, :, :D] E^T + h[:, :, D:] E^T + bias.
    """

    config: ReformerConfig

    def setup(self) -> None:
        config = self.config
        if not config.tie_embeddings:
            normal = nn.initializers.normal(stddev=config.initializer_std)
            self.kernel = self.param("kernel", normal, (2 * config.d_model, config.vocab_size))
        self.bias = self.param("bias", nn.initializers.zeros, (config.vocab_size,))

    def __call__(self, normed: Array, token_embedding: Array | None = None) -> Array:
        bias = self.bias[None, None, :]  # (1, 1, V)
        if self.config.tie_embeddings:
            first, second = jnp.split(normed, 2, axis=-1)  # (B, L, D) each
            return (first + second) @ token_embedding.T + bias
        return normed @ self.kernel + bias


def next_token_loss(logits: Array, labels: Array) -> Array:
    """Mean cross-entropy of logits[:, t] against labels[:, t + 1], skipping IGNORE_INDEX.

    Computed in at least float32. NaN when no label is left, as in torch.
    """
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    scores = logits[:, :-1].astype(dtype)  # (B, L-1, V)
    targets = labels[:, 1:]  # (B, L-1)
    valid = targets != IGNORE_INDEX
    losses = optax.softmax_cross_entropy_with_integer_labels(scores, jnp.where(valid, targets, 0))  # (B, L-1)
    return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.sum(valid).astype(dtype)
