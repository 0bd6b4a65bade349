"""Dropout driven by an explicit generator, so the reversible backward can replay it.

Library code never seeds or reads the global generator here: the caller hands
each layer a `torch.Generator` seeded with that layer's own seed, and the
backward pass builds a fresh generator from the same seed to redraw the same
masks in the same order.
"""

from __future__ import annotations

import torch
from torch import Tensor

SEED_RANGE = 2**62  # seeds are drawn uniformly from [0, SEED_RANGE)


def draw_seed(generator: torch.Generator | None, device: torch.device) -> int:
    """Draw one seed from `generator` (the default generator of `device` when None)."""
    source_device = generator.device if generator is not None else device
    return int(torch.randint(0, SEED_RANGE, (), generator=generator, device=source_device).item())


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def dropout_mask(shape: tuple[int, ...], rate: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """Keep-mask scaled by 1 / (1 - rate), drawn from `generator`, in the dtype and device of `like`."""
    keep = torch.rand(shape, generator=generator, device=like.device) >= rate
    return keep.to(like.dtype) / (1.0 - rate)


def dropout(x: Tensor, rate: float, generator: torch.Generator | None) -> Tensor:
    """Elementwise dropout; a no-op when there is no generator (eval) or the rate is 0."""
    if generator is None or rate == 0.0:
        return x
    return x * dropout_mask(tuple(x.shape), rate, generator, x)
