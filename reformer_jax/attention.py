"""Attention blocks: layer norm, projections, and one of the attention kinds.

Each block maps (B, L, D) to (B, L, D). The arithmetic lives in `lsh.py`;
these modules hold the weights, draw dropout masks and split heads.

The projections are `nn.DenseGeneral` with the canonical kernel layouts
(D, H, K) in and (H, K, D) out, so heads come out of the projection as their
own axis and `split_heads` / `merge_heads` only move that axis.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_jax import lsh
from reformer_jax.randomness import DropoutKey, dropout, dropout_mask, split_key, unstack_keys

Array = jax.Array


def split_heads(x: Array) -> Array:
    """(B, L, H, K) -> (B, H, L, K)."""
    return x.transpose(0, 2, 1, 3)


def merge_heads(x: Array) -> Array:
    """(B, H, L, K) -> (B, L, H, K), the layout the output projection contracts."""
    return x.transpose(0, 2, 1, 3)


def _projection(config: ReformerConfig) -> nn.DenseGeneral:
    """Bias-free projection (B, L, D) -> (B, L, H, K) with kernel (D, H, K)."""
    normal = nn.initializers.normal(stddev=config.initializer_std)
    return nn.DenseGeneral(features=(config.n_heads, config.d_head), use_bias=False, kernel_init=normal)


def _output_projection(config: ReformerConfig) -> nn.DenseGeneral:
    """Bias-free projection (B, L, H, K) -> (B, L, D) with kernel (H, K, D)."""
    normal = nn.initializers.normal(stddev=config.initializer_std)
    return nn.DenseGeneral(features=config.d_model, axis=(-2, -1), use_bias=False, kernel_init=normal)


def _split_key(dropout_key: DropoutKey | None) -> tuple[DropoutKey | None, DropoutKey | None]:
    """Split a dropout key into one for attention probabilities and one for the output."""
    if dropout_key is None:
        return None, None
    probabilities_key, output_key = unstack_keys(split_key(dropout_key, 2), 2)
    return probabilities_key, output_key


class LSHSelfAttention(nn.Module):
    """Shared-QK attention over hash buckets (Reformer, Kitaev et al. 2020, section 3)."""

    config: ReformerConfig

    def setup(self) -> None:
        config = self.config
        self.norm = nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False)
        self.query_key = _projection(config)
        self.value = _projection(config)
        self.output = _output_projection(config)

    def __call__(
        self,
        hidden: Array,
        padding_mask: Array | None,
        *,
        rotations: Array | None = None,
        buckets: Array | None = None,
        dropout_key: DropoutKey | None = None,
    ) -> tuple[Array, Array]:
        """Attend within buckets; returns the output (B, L, D) and the buckets (B, H, R, L).

        Either `rotations` (H, K, R, Z) to hash with, or `buckets` from an
        earlier call (the reversible backward replays them instead of hashing
        reconstructed activations, where a last-bit change could flip a bucket).
        `dropout_key` seeds dropout, which is off when it is None.
        """
        config = self.config
        normed = self.norm(hidden)  # (B, L, D)
        query_keys = split_heads(self.query_key(normed))  # (B, H, L, K)
        values = split_heads(self.value(normed))  # (B, H, L, K)

        if buckets is None:
            if rotations is None:
                raise ValueError("LSHSelfAttention needs rotations (H, K, R, Z) or precomputed buckets (B, H, R, L).")
            # argmax has no gradient; stopping it here also keeps the hash out of the backward pass.
            buckets = lsh.hash_vectors(
                jax.lax.stop_gradient(query_keys), rotations.astype(query_keys.dtype), config.bucket_factors, padding_mask
            )

        probabilities_key, output_key = _split_key(dropout_key)
        mask = None
        if probabilities_key is not None and config.attention_dropout > 0:
            batch, heads, rounds, length = buckets.shape
            n_chunks = rounds * length // config.lsh_chunk_length
            window = (1 + config.lsh_chunks_before + config.lsh_chunks_after) * config.lsh_chunk_length
            shape = (batch, heads, n_chunks, config.lsh_chunk_length, window)
            mask = dropout_mask(shape, config.attention_dropout, probabilities_key, query_keys.dtype)

        attended = lsh.lsh_attention(
            query_keys,
            values,
            buckets,
            padding_mask,
            n_buckets=config.n_buckets_total,
            chunk_length=config.lsh_chunk_length,
            chunks_before=config.lsh_chunks_before,
            chunks_after=config.lsh_chunks_after,
            causal=config.causal,
            same_bucket_only=config.lsh_same_bucket_only,
            dropout_mask=mask,
        )  # (B, H, L, K)
        output = self.output(merge_heads(attended))  # (B, L, D)
        return dropout(output, config.hidden_dropout, output_key), buckets


class LocalSelfAttention(nn.Module):
    """Attention within fixed chunks of positions; `full=True` makes the one chunk the whole sequence."""

    config: ReformerConfig
    full: bool = False

    def setup(self) -> None:
        config = self.config
        self.norm = nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False)
        self.query = _projection(config)
        self.key = _projection(config)
        self.value = _projection(config)
        self.output = _output_projection(config)

    def chunking(self, length: int) -> tuple[int, int, int]:
        """(chunk length, chunks before, chunks after) for a sequence of `length`."""
        if self.full:
            return length, 0, 0
        config = self.config
        return config.local_chunk_length, config.local_chunks_before, config.local_chunks_after

    def __call__(
        self,
        hidden: Array,
        padding_mask: Array | None,
        *,
        rotations: Array | None = None,
        buckets: Array | None = None,
        dropout_key: DropoutKey | None = None,
    ) -> tuple[Array, None]:
        """Returns the output (B, L, D) and None (no buckets); rotations and buckets are ignored."""
        config = self.config
        normed = self.norm(hidden)  # (B, L, D)
        queries = split_heads(self.query(normed))  # (B, H, L, K)
        keys = split_heads(self.key(normed))
        values = split_heads(self.value(normed))
        chunk_length, before, after = self.chunking(hidden.shape[1])

        probabilities_key, output_key = _split_key(dropout_key)
        mask = None
        if probabilities_key is not None and config.attention_dropout > 0:
            batch, heads, length, _ = queries.shape
            shape = (batch, heads, length // chunk_length, chunk_length, (1 + before + after) * chunk_length)
            mask = dropout_mask(shape, config.attention_dropout, probabilities_key, queries.dtype)

        attended = lsh.local_attention(
            queries,
            keys,
            values,
            padding_mask,
            chunk_length=chunk_length,
            chunks_before=before,
            chunks_after=after,
            causal=config.causal,
            dropout_mask=mask,
        )  # (B, H, L, K)
        output = self.output(merge_heads(attended))  # (B, L, D)
        return dropout(output, config.hidden_dropout, output_key), None


def make_attention(kind: AttentionKind, config: ReformerConfig) -> nn.Module:
    if kind is AttentionKind.LSH:
        return LSHSelfAttention(config)
    return LocalSelfAttention(config, full=kind is AttentionKind.FULL)
