"""Token and positional embeddings."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from reformer_spec.config import PositionKind, ReformerConfig
from reformer_jax.randomness import DropoutKey, dropout

Array = jax.Array


def axial_table(axial_weights: list[Array]) -> Array:
    """Expand per-axis tables (s_i, d_i) into the full (prod s_i, sum d_i) position table.

    Position j = (a_1, ..., a_k) in row-major order (the last axis varies
    fastest); its features are axis 1's row a_1, then axis 2's row a_2, and so on.
    """
    sizes = [weight.shape[0] for weight in axial_weights]
    columns = []
    for axis, weight in enumerate(axial_weights):
        view = [1] * len(sizes) + [weight.shape[1]]
        view[axis] = sizes[axis]
        grid = jnp.broadcast_to(weight.reshape(view), (*sizes, weight.shape[1]))  # (s_1, ..., s_k, d_i)
        columns.append(grid.reshape(-1, weight.shape[1]))  # (prod s, d_i)
    return jnp.concatenate(columns, axis=-1)  # (prod s, D)


class Embeddings(nn.Module):
    """Token embedding plus axial (or learned) positional embedding, then dropout."""

    config: ReformerConfig

    def setup(self) -> None:
        config = self.config
        normal = nn.initializers.normal(stddev=config.initializer_std)
        self.token = nn.Embed(config.vocab_size, config.d_model, embedding_init=normal)
        if config.positions is PositionKind.AXIAL:
            # Parameters axial_0, axial_1, ... so that their names match the canonical table.
            self.axial = [
                self.param(f"axial_{axis}", normal, (size, width))
                for axis, (size, width) in enumerate(zip(config.axial_shape, config.axial_dims))
            ]
        else:
            self.position_table = self.param("position_table", normal, (config.max_length, config.d_model))

    def positions(self, length: int) -> Array:
        """Return the first `length` rows of the position table: (L, D)."""
        if self.config.positions is PositionKind.AXIAL:
            return axial_table(self.axial)[:length]
        return self.position_table[:length]

    def __call__(self, input_ids: Array, dropout_key: DropoutKey | None = None) -> Array:
        embedded = self.token(input_ids) + self.positions(input_ids.shape[1])[None]  # (B, L, D)
        return dropout(embedded, self.config.hidden_dropout, dropout_key)
