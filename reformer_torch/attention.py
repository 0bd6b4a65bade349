"""Attention blocks: layer norm, projections, and one of the attention kinds.

Each block maps (B, L, D) to (B, L, D). The arithmetic lives in `lsh.py`;
these modules hold the weights, draw dropout masks and split heads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_torch import lsh
from reformer_torch.randomness import DropoutSource, dropout, dropout_mask


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, L, H*K) -> (B, H, L, K), head-major features."""
    batch, length, width = x.shape
    return x.reshape(batch, length, n_heads, width // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, K) -> (B, L, H*K)."""
    batch, heads, length, head_width = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_width)


class LSHSelfAttention(nn.Module):
    """Shared-QK attention over hash buckets (Reformer, Kitaev et al. 2020, section 3)."""

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__()
        self.config = config
        width = config.n_heads * config.d_head
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.query_key = nn.Linear(config.d_model, width, bias=False)
        self.value = nn.Linear(config.d_model, width, bias=False)
        self.output = nn.Linear(width, config.d_model, bias=False)

    def forward(
        self,
        hidden: Tensor,
        padding_mask: Tensor | None,
        *,
        rotations: Tensor | None = None,
        buckets: Tensor | None = None,
        dropout_source: DropoutSource | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend within buckets; returns the output (B, L, D) and the buckets (B, H, R, L).

        Either `rotations` (H, K, R, Z) to hash with, or `buckets` from an
        earlier call (the reversible backward replays them instead of hashing
        reconstructed activations, where a last-bit change could flip a bucket).
        """
        config = self.config
        normed = self.norm(hidden)  # (B, L, D)
        query_keys = split_heads(self.query_key(normed), config.n_heads)  # (B, H, L, K)
        values = split_heads(self.value(normed), config.n_heads)  # (B, H, L, K)

        if buckets is None:
            if rotations is None:
                raise ValueError("LSHSelfAttention needs rotations (H, K, R, Z) or precomputed buckets (B, H, R, L).")
            with torch.no_grad():
                # argmax has no gradient; hashing outside autograd also saves memory.
                buckets = lsh.hash_vectors(query_keys, rotations.to(query_keys.dtype), config.bucket_factors, padding_mask)

        batch, heads, rounds, length = buckets.shape
        n_chunks = rounds * length // config.lsh_chunk_length
        window = (1 + config.lsh_chunks_before + config.lsh_chunks_after) * config.lsh_chunk_length
        shape = (batch, heads, n_chunks, config.lsh_chunk_length, window)
        mask = dropout_mask(shape, config.attention_dropout, dropout_source, query_keys)  # None without dropout

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
        return dropout(output, config.hidden_dropout, dropout_source), buckets


class LocalSelfAttention(nn.Module):
    """Attention within fixed chunks of positions; `full=True` makes the one chunk the whole sequence."""

    def __init__(self, config: ReformerConfig, *, full: bool = False) -> None:
        super().__init__()
        self.config = config
        self.full = full
        width = config.n_heads * config.d_head
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.query = nn.Linear(config.d_model, width, bias=False)
        self.key = nn.Linear(config.d_model, width, bias=False)
        self.value = nn.Linear(config.d_model, width, bias=False)
        self.output = nn.Linear(width, config.d_model, bias=False)

    def chunking(self, length: int) -> tuple[int, int, int]:
        """(chunk length, chunks before, chunks after) for a sequence of `length`."""
        if self.full:
            return length, 0, 0
        config = self.config
        return config.local_chunk_length, config.local_chunks_before, config.local_chunks_after

    def forward(
        self,
        hidden: Tensor,
        padding_mask: Tensor | None,
        *,
        rotations: Tensor | None = None,
        buckets: Tensor | None = None,
        dropout_source: DropoutSource | None = None,
    ) -> tuple[Tensor, None]:
        """Returns the output (B, L, D) and None (no buckets); rotations and buckets are ignored."""
        config = self.config
        normed = self.norm(hidden)  # (B, L, D)
        queries = split_heads(self.query(normed), config.n_heads)  # (B, H, L, K)
        keys = split_heads(self.key(normed), config.n_heads)
        values = split_heads(self.value(normed), config.n_heads)
        chunk_length, before, after = self.chunking(hidden.shape[1])

        batch, heads, length, _ = queries.shape
        shape = (batch, heads, length // chunk_length, chunk_length, (1 + before + after) * chunk_length)
        mask = dropout_mask(shape, config.attention_dropout, dropout_source, queries)  # None without dropout

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
        return dropout(output, config.hidden_dropout, dropout_source), None


def make_attention(kind: AttentionKind, config: ReformerConfig) -> nn.Module:
    if kind is AttentionKind.LSH:
        return LSHSelfAttention(config)
    return LocalSelfAttention(config, full=kind is AttentionKind.FULL)
