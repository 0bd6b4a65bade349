"""The feed-forward half of a Reformer layer, optionally in chunks of positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reformer_spec.config import Activation, ReformerConfig
from reformer_torch.randomness import DropoutSource, dropout


def activate(x: Tensor, activation: Activation) -> Tensor:
    if activation is Activation.RELU:
        return F.relu(x)
    if activation is Activation.GELU:
        return F.gelu(x, approximate="none")
    return F.gelu(x, approximate="tanh")


class ChunkedFeedForward(nn.Module):
    """LayerNorm -> Dense(D, F) -> dropout -> activation -> Dense(F, D) -> dropout.

    Dropout before the activation follows Trax. With `ff_chunk_size` > 0 the
    positions are processed in chunks, so the (B, L, F) hidden activations of
    the whole sequence never exist at once; positions are independent, so the
    result is the same as unchunked (with dropout off; masks are drawn per chunk,
    in chunk order).
    """

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dense_in = nn.Linear(config.d_model, config.d_ff)
        self.dense_out = nn.Linear(config.d_ff, config.d_model)

    def block(self, x: Tensor, dropout_source: DropoutSource | None) -> Tensor:
        config = self.config
        hidden = self.dense_in(self.norm(x))  # (B, C, F)
        hidden = activate(dropout(hidden, config.ff_dropout, dropout_source), config.activation)
        return dropout(self.dense_out(hidden), config.hidden_dropout, dropout_source)  # (B, C, D)

    def forward(self, x: Tensor, dropout_source: DropoutSource | None = None) -> Tensor:
        chunk = self.config.ff_chunk_size
        if chunk == 0 or chunk >= x.shape[1]:
            return self.block(x, dropout_source)
        return torch.cat([self.block(part, dropout_source) for part in x.split(chunk, dim=1)], dim=1)
