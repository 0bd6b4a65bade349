"""The feed-forward half of a Reformer layer, optionally in chunks of positions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from reformer_spec.config import Activation, ReformerConfig
from reformer_jax.randomness import DropoutKey, dropout, split_key, unstack_keys

Array = jax.Array


def activate(x: Array, activation: Activation) -> Array:
    if activation is Activation.RELU:
        return jax.nn.relu(x)
    if activation is Activation.GELU:
        return jax.nn.gelu(x, approximate=False)
    return jax.nn.gelu(x, approximate=True)


def _chunk_step(module: "ChunkedFeedForward", carry: None, chunk_and_key: tuple) -> tuple[None, Array]:
    """Apply the block to one chunk, (B, C, D) -> (B, C, D), as one step of the scan over chunks."""
    chunk, dropout_key = chunk_and_key
    return carry, module.block(chunk, dropout_key)


class ChunkedFeedForward(nn.Module):
    """LayerNorm -> Dense(D, F) -> dropout -> activation -> Dense(F, D) -> dropout.

    Dropout before the activation follows Trax. With `ff_chunk_size` > 0 the
    positions are processed in chunks by a scan whose steps are rematerialised,
    so the (B, L, F) hidden activations of the whole sequence never exist at
    once, in the forward or in the backward. Positions are independent, so the
    result is the same as unchunked (with dropout off; masks are drawn per chunk).
    """

    config: ReformerConfig

    def setup(self) -> None:
        config = self.config
        normal = nn.initializers.normal(stddev=config.initializer_std)
        self.norm = nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False)
        self.dense_in = nn.Dense(config.d_ff, kernel_init=normal)
        self.dense_out = nn.Dense(config.d_model, kernel_init=normal)

    def block(self, x: Array, dropout_key: DropoutKey | None) -> Array:
        config = self.config
        ff_key, hidden_key = (None, None) if dropout_key is None else unstack_keys(split_key(dropout_key, 2), 2)
        hidden = self.dense_in(self.norm(x))  # (B, C, F)
        hidden = activate(dropout(hidden, config.ff_dropout, ff_key), config.activation)
        return dropout(self.dense_out(hidden), config.hidden_dropout, hidden_key)  # (B, C, D)

    def __call__(self, x: Array, dropout_key: DropoutKey | None = None) -> Array:
        """Map (B, L, D) to (B, L, D); `dropout_key` seeds dropout, which is off when it is None."""
        chunk = self.config.ff_chunk_size
        batch, length, width = x.shape
        if chunk == 0 or chunk >= length:
            return self.block(x, dropout_key)
        # The model pads sequences to a multiple of ff_chunk_size (config.length_multiple).
        assert length % chunk == 0, f"length {length} is not a multiple of ff_chunk_size {chunk}"

        n_chunks = length // chunk
        chunks = x.reshape(batch, n_chunks, chunk, width).swapaxes(0, 1)  # (N, B, C, D)
        # One dropout key per chunk; each chunk makes two draws (after dense_in and on the output).
        keys = None if dropout_key is None else split_key(dropout_key, n_chunks, draws_each=2)
        scan = nn.scan(
            nn.remat(_chunk_step, prevent_cse=False),
            variable_broadcast="params",
            split_rngs={"params": False},
        )
        _, outputs = scan(self, None, (chunks, keys))  # (N, B, C, D)
        return outputs.swapaxes(0, 1).reshape(batch, length, width)
