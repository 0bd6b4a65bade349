"""Dropout driven by an explicit source, so the reversible backward can replay it.

Library code never seeds or reads the global generator here. The caller hands
each layer half a `DropoutSeed`; the half builds its source from it (a
`torch.Generator` seeded with that seed, or a `PortableStream`), and the
backward pass builds a fresh source from the same seed to redraw the same
masks in the same order.

The portable source computes the masks of `reformer_spec.dropout` bit for bit,
so the JAX model given the same `dropout_seed` drops the same units.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from reformer_spec import dropout as portable

SEED_RANGE = 2**62  # seeds are drawn uniformly from [0, SEED_RANGE)


class PortableStream:
    """One stream of portable dropout masks; draws are numbered 0, 1, 2, ... in call order."""

    def __init__(self, seed: int, stream: int) -> None:
        self.seed = portable.check_seed(seed)
        self.stream = stream
        self.draws = 0

    def next_key(self) -> int:
        key = portable.draw_key(self.seed, self.stream, self.draws)
        self.draws += 1
        return key


DropoutSource = torch.Generator | PortableStream


@dataclasses.dataclass(frozen=True)
class DropoutSeed:
    """The seed of one layer half's dropout masks; `source` starts a fresh source for a replay."""

    seed: int
    stream: int | None = None  # None: a torch.Generator seeded with `seed`; an int: that portable stream

    def source(self, device: torch.device) -> DropoutSource:
        if self.stream is None:
            return seeded_generator(self.seed, device)
        return PortableStream(self.seed, self.stream)


def draw_seed(generator: torch.Generator | None, device: torch.device) -> int:
    """Draw one seed from `generator` (the default generator of `device` when None)."""
    source_device = generator.device if generator is not None else device
    return int(torch.randint(0, SEED_RANGE, (), generator=generator, device=source_device).item())


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _multiply32(x: Tensor, multiplier: int) -> Tensor:
    """x * multiplier mod 2**32 for int64 x in [0, 2**32).

    torch has no wrapping uint32 product, and the full 64-bit product can
    overflow int64, so the multiplier is split into 16-bit halves: of the high
    half's product only the 16 bits that land below bit 32 are kept.
    """
    low, high = multiplier & 0xFFFF, multiplier >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & portable.MASK32


def mix32(x: Tensor) -> Tensor:
    """`reformer_spec.dropout.mix32` on int64 tensors holding 32-bit values."""
    x = x ^ (x >> portable.MIX_SHIFTS[0])
    x = _multiply32(x, portable.MIX_MULTIPLIERS[0])
    x = x ^ (x >> portable.MIX_SHIFTS[1])
    x = _multiply32(x, portable.MIX_MULTIPLIERS[1])
    return x ^ (x >> portable.MIX_SHIFTS[2])


def portable_keep_mask(shape: tuple[int, ...], rate: float, key: int, device: torch.device) -> Tensor:
    """Boolean keep-mask of the draw with 32-bit `key`, equal to `reformer_spec.dropout.keep_mask`."""
    index = torch.arange(portable.mask_size(shape), dtype=torch.int64, device=device)
    hashed = mix32((_multiply32(index, portable.GOLDEN) + key) & portable.MASK32)
    return (hashed >> (32 - portable.KEEP_BITS) >= portable.keep_threshold(rate)).reshape(shape)


def dropout_mask(shape: tuple[int, ...], rate: float, source: DropoutSource | None, like: Tensor) -> Tensor | None:
    """Keep-mask scaled by 1 / (1 - rate), in the dtype and device of `like`.

    Returns None when there is no source (eval) or the rate is 0. A portable
    stream still counts that draw, so every later mask keeps its number.
    """
    if source is None:
        return None
    if isinstance(source, PortableStream):
        key = source.next_key()
        if rate == 0.0:
            return None
        keep = portable_keep_mask(shape, rate, key, like.device)
    else:
        if rate == 0.0:
            return None
        keep = torch.rand(shape, generator=source, device=like.device) >= rate
    return keep.to(like.dtype) / (1.0 - rate)


def dropout(x: Tensor, rate: float, source: DropoutSource | None) -> Tensor:
    """Elementwise dropout; a no-op when there is no source (eval) or the rate is 0."""
    mask = dropout_mask(tuple(x.shape), rate, source, x)
    return x if mask is None else x * mask
