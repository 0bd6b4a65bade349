"""A plain full-attention transformer language model: the quadratic baseline.

Same width, heads, feed-forward width and depth as the Reformer it is compared
with, but ordinary pre-norm residual blocks (not reversible) and causal
attention over the whole sequence through
`torch.nn.functional.scaled_dot_product_attention`, which picks the fastest
kernel the device has (flash attention on CPU and GPU where available).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FullAttentionBlock(nn.Module):
    """x + Attention(LayerNorm(x)), then x + FeedForward(LayerNorm(x))."""

    def __init__(self, d_model: int, n_heads: int, d_head: int, d_ff: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.attention_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * n_heads * d_head, bias=False)
        self.output = nn.Linear(n_heads * d_head, d_model, bias=False)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.dense_in = nn.Linear(d_model, d_ff)
        self.dense_out = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        qkv = self.qkv(self.attention_norm(x))  # (B, L, 3*H*K)
        qkv = qkv.view(batch, length, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # (3, B, H, L, K)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # (B, H, L, K)
        x = x + self.output(attended.transpose(1, 2).reshape(batch, length, -1))  # (B, L, D)
        return x + self.dense_out(F.relu(self.dense_in(self.feed_forward_norm(x))))


class FullAttentionLM(nn.Module):
    """Token and learned position embeddings, `depth` blocks, a final norm and a vocabulary head."""

    def __init__(self, vocab_size: int, max_length: int, d_model: int, n_heads: int, d_head: int, d_ff: int, depth: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_length, d_model)
        self.blocks = nn.ModuleList([FullAttentionBlock(d_model, n_heads, d_head, d_ff) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Return next-token logits (B, L, V) for input_ids (B, L)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        x = self.token(input_ids) + self.position(positions)  # (B, L, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x))
