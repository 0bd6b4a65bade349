"""Token and positional embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reformer_spec.config import PositionKind, ReformerConfig
from reformer_torch.randomness import DropoutSource, dropout


def axial_table(axial_weights: list[Tensor]) -> Tensor:
    """Expand per-axis tables (s_i, d_i) into the full (prod s_i, sum d_i) position table.

    Position j = (a_1, ..., a_k) in row-major order (the last axis varies
    fastest); its features are axis 1's row a_1, then axis 2's row a_2, and so on.
    """
    sizes = [weight.shape[0] for weight in axial_weights]
    columns = []
    for axis, weight in enumerate(axial_weights):
        view = [1] * len(sizes) + [weight.shape[1]]
        view[axis] = sizes[axis]
        grid = weight.reshape(view).expand(*sizes, weight.shape[1])  # (s_1, ..., s_k, d_i)
        columns.append(grid.reshape(-1, weight.shape[1]))  # (prod s, d_i)
    return torch.cat(columns, dim=-1)  # (prod s, D)


class Embeddings(nn.Module):
    """Token embedding plus axial (or learned) positional embedding, then dropout."""

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, config.d_model)
        if config.positions is PositionKind.AXIAL:
            # Attributes axial_0, axial_1, ... so that parameter names match the canonical table.
            for axis, (size, width) in enumerate(zip(config.axial_shape, config.axial_dims)):
                setattr(self, f"axial_{axis}", nn.Parameter(torch.empty(size, width)))
        else:
            self.position_table = nn.Parameter(torch.empty(config.max_length, config.d_model))

    def positions(self, length: int) -> Tensor:
        """Return the first `length` rows of the position table: (L, D)."""
        if self.config.positions is PositionKind.AXIAL:
            weights = [getattr(self, f"axial_{axis}") for axis in range(len(self.config.axial_shape))]
            return axial_table(weights)[:length]
        return self.position_table[:length]

    def forward(self, input_ids: Tensor, dropout_source: DropoutSource | None = None) -> Tensor:
        embedded = self.token(input_ids) + self.positions(input_ids.shape[1])  # (B, L, D)
        return dropout(embedded, self.config.hidden_dropout, dropout_source)
