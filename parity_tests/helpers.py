"""Configs and weights shared by the parity tests."""

import numpy as np

from reformer_spec import ReformerConfig


def make_config(**changes) -> ReformerConfig:
    """A small config with distinct sizes, so that an axis mix-up fails loudly."""
    base = dict(
        vocab_size=37, d_model=30, n_heads=3, d_head=10, d_ff=22, attention_layers=("lsh", "local"),
        lsh_chunk_length=8, local_chunk_length=8, n_buckets=4, n_hashes=2,
        axial_shape=(8, 8), axial_dims=(14, 16), max_length=64,
    )
    base.update(changes)
    return ReformerConfig(**base)


def random_canonical(config: ReformerConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Canonical weights with every entry random (norm scales and biases too), so no layout hides behind ones or zeros."""
    from reformer_spec.parameters import parameter_table

    generator = np.random.default_rng(seed)
    weights = {}
    for spec in parameter_table(config):
        scale = 0.3 if spec.kind in ("kernel", "embedding") or spec.name.startswith("embeddings.") else 0.1
        values = generator.standard_normal(spec.shape) * scale
        if spec.kind == "scale":
            values = 1.0 + values
        weights[spec.name] = values.astype(dtype)
    return weights
