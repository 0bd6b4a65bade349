"""How hashing randomness is drawn, identically in any framework.

Each LSH layer hashes with a rotation tensor of shape (H, K, R, Z): for every
head, a (K, Z) Gaussian matrix per hash round, where Z is half the rotation
width (the sum of the bucket factors, halved, because hashing takes the argmax
over [xR, -xR]). One rotation tensor is shared by every example in a batch.

Two ways to get rotations:

* The native path (training): each framework draws from its own generator
  (`torch.randn` with a `torch.Generator`, `jax.random.normal` with the `hash`
  key). Fast, but the two frameworks' streams differ, so a seed does not give
  the same buckets in PyTorch and JAX.
* The portable path (parity, reproducible generation): `portable_rotations`
  below turns one integer seed into every layer's rotations with numpy's PCG64
  generator, which gives the same float64 values on every platform. Both models
  accept the result as their `rotations` argument after a cast to the model's
  dtype (round to nearest, so the cast is the same everywhere).
"""

from __future__ import annotations

import numpy as np

from reformer_spec.config import AttentionKind, ReformerConfig


def rotation_shape(config: ReformerConfig) -> tuple[int, int, int, int]:
    """Shape (H, K, R, Z) of one LSH layer's rotations."""
    return (config.n_heads, config.d_head, config.n_hashes, config.rotation_width // 2)


def lsh_layer_indices(config: ReformerConfig) -> list[int]:
    return [i for i, kind in enumerate(config.attention_layers) if kind is AttentionKind.LSH]


def portable_rotations(config: ReformerConfig, seed: int) -> list[np.ndarray | None]:
    """Draw every layer's rotations from `seed`: a float64 array per LSH layer, None elsewhere.

    Layer i draws `standard_normal(rotation_shape)` from
    `np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, i])))`,
    so adding or removing a layer leaves the other layers' rotations unchanged.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid; use a non-negative int.")
    shape = rotation_shape(config)
    rotations: list[np.ndarray | None] = []
    for i, kind in enumerate(config.attention_layers):
        if kind is AttentionKind.LSH:
            generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), i])))
            rotations.append(generator.standard_normal(shape, dtype=np.float64))
        else:
            rotations.append(None)
    return rotations
