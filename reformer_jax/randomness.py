"""Dropout driven by an explicit key, so the reversible backward can replay it.

Library code never draws from an implicit stream here: the model splits the
`dropout` key it is given into one key per layer half, and the backward pass
hands each half the same key again to redraw the same masks.

A key is either a `jax.random` key (the native path) or a `PortableKey`, which
computes the masks of `reformer_spec.dropout` bit for bit, so the PyTorch model
given the same `dropout_seed` drops the same units.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np

from reformer_spec import dropout as portable

Array = jax.Array


@flax.struct.dataclass
class PortableKey:
    """Names one portable draw (seed, stream, draw), or a stack of them along a leading axis.

    The fields are uint32 arrays, so a stack of keys can be the scanned input of
    `nn.scan`, and a key can be an input of `jax.custom_vjp`.
    """

    seed: Array
    stream: Array
    draw: Array

    @classmethod
    def create(cls, seed: int, stream: int) -> "PortableKey":
        """Make the key of draw 0 in `stream`."""
        seed = portable.check_seed(seed)
        return cls(jnp.asarray(seed, jnp.uint32), jnp.asarray(stream, jnp.uint32), jnp.asarray(0, jnp.uint32))


DropoutKey = Array | PortableKey


def split_key(key: DropoutKey, n: int, draws_each: int = 1) -> DropoutKey:
    """Split `key` into `n` keys stacked along a new leading axis.

    A portable key's child j starts at draw `draw + j * draws_each`, so a
    child that makes `draws_each` draws numbers them exactly as the PyTorch
    model's sequential stream does.
    """
    if isinstance(key, PortableKey):
        offsets = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(draws_each)  # (n,)
        return PortableKey(
            jnp.broadcast_to(key.seed, (n,)), jnp.broadcast_to(key.stream, (n,)), key.draw + offsets
        )
    return jax.random.split(key, n)


def unstack_keys(keys: DropoutKey, n: int) -> list[DropoutKey]:
    """Split a stack made by `split_key` back into its `n` keys."""
    return [jax.tree.map(lambda leaf, i=i: leaf[i], keys) for i in range(n)]


def mix32(x: Array) -> Array:
    """`reformer_spec.dropout.mix32` on uint32 arrays (jnp multiplication wraps)."""
    x = x ^ (x >> portable.MIX_SHIFTS[0])
    x = x * jnp.uint32(portable.MIX_MULTIPLIERS[0])
    x = x ^ (x >> portable.MIX_SHIFTS[1])
    x = x * jnp.uint32(portable.MIX_MULTIPLIERS[1])
    return x ^ (x >> portable.MIX_SHIFTS[2])


def portable_keep_mask(shape: tuple[int, ...], rate: float, key: PortableKey) -> Array:
    """Boolean keep-mask of one portable draw, equal to `reformer_spec.dropout.keep_mask`."""
    draw_key = mix32(mix32(mix32(key.seed + jnp.uint32(portable.GOLDEN)) ^ key.stream) ^ key.draw)
    index = jnp.arange(portable.mask_size(shape), dtype=jnp.uint32)
    hashed = mix32(index * jnp.uint32(portable.GOLDEN) + draw_key)
    return (hashed >> (32 - portable.KEEP_BITS) >= np.uint32(portable.keep_threshold(rate))).reshape(shape)


def dropout_mask(shape: tuple[int, ...], rate: float, key: DropoutKey, dtype: jnp.dtype) -> Array:
    """Keep-mask scaled by 1 / (1 - rate), drawn from `key`, in `dtype`."""
    if isinstance(key, PortableKey):
        keep = portable_keep_mask(shape, rate, key)
    else:
        # Drawn flat and reshaped: XLA:CPU compiles a rank-5 draw slowly under the
        # default jax_threefry_partitionable=True (about 9 s for (2, 3, 6, 8, 16)
        # against 0.5 s flat, jax 0.10.2 on 2 CPU cores).
        keep = jax.random.uniform(key, (math.prod(shape),)).reshape(shape) >= rate
    return keep.astype(dtype) / (1.0 - rate)


def dropout(x: Array, rate: float, key: DropoutKey | None) -> Array:
    """Elementwise dropout; a no-op when there is no key (deterministic) or the rate is 0."""
    if key is None or rate == 0.0:
        return x
    return x * dropout_mask(x.shape, rate, key, x.dtype)
