"""The small model config that every test suite builds on."""

from typing import Any

from reformer_spec import ReformerConfig


def make_config(**changes: Any) -> ReformerConfig:
    """A small config with distinct sizes, so that an axis mix-up fails loudly."""
    base = dict(
        vocab_size=37, d_model=30, n_heads=3, d_head=10, d_ff=22, attention_layers=("lsh", "local"),
        lsh_chunk_length=8, local_chunk_length=8, n_buckets=4, n_hashes=2,
        axial_shape=(8, 8), axial_dims=(14, 16), max_length=64,
    )
    base.update(changes)
    return ReformerConfig(**base)
