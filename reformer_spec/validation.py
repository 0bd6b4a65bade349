"""Input checks shared by both models, so that both raise the same message.

Each framework computes the facts (shape, dtype kind, smallest and largest id)
and passes plain Python values here; these functions raise `TypeError` or
`ValueError` naming the value and the fix, before any computation.
"""

from __future__ import annotations

from typing import Sequence

from reformer_spec.config import ReformerConfig


def check_input_ids(shape: Sequence[int], dtype_name: str, is_integer: bool, config: ReformerConfig) -> None:
    """Check the rank, dtype and length of a batch of token ids."""
    if not is_integer:
        raise TypeError(
            f"input_ids has dtype {dtype_name}; token ids must be an integer tensor of shape (batch, length). "
            "Convert with .long() in PyTorch or .astype(jnp.int32) in JAX."
        )
    if len(shape) != 2:
        raise ValueError(
            f"input_ids has shape {tuple(shape)}; expected rank 2 (batch, length). "
            "Add a batch axis with input_ids[None] for a single sequence."
        )
    batch, length = shape
    if batch < 1 or length < 1:
        raise ValueError(f"input_ids has shape {tuple(shape)}; batch and length must both be at least 1.")
    if length > config.max_length:
        raise ValueError(
            f"input_ids has length {length} but the model covers at most max_length={config.max_length} "
            f"positions (axial_shape={config.axial_shape}); truncate the input or build the model with a "
            "larger axial_shape / max_length."
        )


def check_token_range(min_id: int, max_id: int, config: ReformerConfig) -> None:
    """Check that every id lies in [0, vocab_size)."""
    if min_id < 0 or max_id >= config.vocab_size:
        bad = min_id if min_id < 0 else max_id
        raise ValueError(
            f"input_ids contains token id {bad}, outside the vocabulary [0, {config.vocab_size}); "
            "check the tokenizer or build the model with a larger vocab_size."
        )


def check_attention_mask(mask_shape: Sequence[int], ids_shape: Sequence[int], dtype_name: str, ok_dtype: bool) -> None:
    """Check that the padding mask has the ids' shape and a boolean or integer dtype."""
    if not ok_dtype:
        raise TypeError(
            f"attention_mask has dtype {dtype_name}; use bool or integer values (1 = real token, 0 = padding)."
        )
    if tuple(mask_shape) != tuple(ids_shape):
        raise ValueError(
            f"attention_mask has shape {tuple(mask_shape)} but input_ids has shape {tuple(ids_shape)}; "
            "give one entry per token (1 = real token, 0 = padding)."
        )


def check_rotations(rotations: Sequence, expected: Sequence[tuple | None]) -> None:
    """Check one rotation tensor per layer: the right shape at LSH layers, None elsewhere."""
    if len(rotations) != len(expected):
        raise ValueError(
            f"rotations has {len(rotations)} entries but the model has {len(expected)} layers; "
            "give one entry per layer (None for layers that are not LSH)."
        )
    for i, (given, shape) in enumerate(zip(rotations, expected)):
        if shape is None:
            continue
        if given is None:
            raise ValueError(f"rotations[{i}] is None but layer {i} is an LSH layer; give a tensor of shape {shape}.")
        if tuple(given.shape) != tuple(shape):
            raise ValueError(
                f"rotations[{i}] has shape {tuple(given.shape)}; layer {i} expects (H, K, R, Z) = {shape}."
            )


def check_buckets(buckets: Sequence, expected: Sequence[tuple | None]) -> None:
    """Check one bucket tensor per layer: (B, H, R, L_padded) at LSH layers, None elsewhere."""
    if len(buckets) != len(expected):
        raise ValueError(
            f"buckets has {len(buckets)} entries but the model has {len(expected)} layers; "
            "give one entry per layer (None for layers that are not LSH)."
        )
    for i, (given, shape) in enumerate(zip(buckets, expected)):
        if shape is None or given is None:
            continue
        if tuple(given.shape) != tuple(shape):
            raise ValueError(
                f"buckets[{i}] has shape {tuple(given.shape)}; layer {i} expects (B, H, R, L_padded) = {shape}, "
                "where L_padded is the input length rounded up to config.length_multiple."
            )
