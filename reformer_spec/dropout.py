"""Portable dropout: keep-masks that numpy, PyTorch and JAX compute bit for bit alike.

`torch.Generator` and `jax.random` turn the same seed into different bits, so
two models can agree with dropout on only if both take their masks from one
definition. This module is that definition, with a numpy reference that each
framework's implementation is tested against.

A mask is identified by a seed S (an int in [0, 2**32)), a stream s and a draw
d within the stream. Its element at flat (row-major) index i is kept when

    mix32(i * GOLDEN + key) >> 8  >=  round(rate * 2**24),
    key = mix32(mix32(mix32(S + GOLDEN) ^ s) ^ d),

where `mix32` is the 32-bit integer finaliser below: two multiply-xorshift
rounds with a published low-bias pair of multipliers. Every operation is on
unsigned 32-bit integers and wraps. GOLDEN is 2**32 divided by the golden
ratio, and it is added to the seed so that seed 0 does not give key 0. The comparison
is between integers, so no float rounding can make two frameworks disagree.
A kept element is scaled by 1 / (1 - rate), as usual for
inverted dropout. A counter-based hash needs no generator state, so a
reversible backward can redraw any mask from its (S, s, d) alone.

Streams and draws are numbered by where the mask is used, in the order the
PyTorch model draws them:

* stream 0: the embeddings, draw 0;
* stream 1 + 2i: layer i's attention half, draw 0 on the attention
  probabilities, draw 1 on the attention output;
* stream 2 + 2i: layer i's feed-forward half, per feed-forward chunk c
  (c = 0 when the block is not chunked), draw 2c after the first dense layer
  and draw 2c + 1 on the output;
* stream 1 + 2n (n layers): the final norm's output, draw 0.

A draw whose rate is 0 is skipped, but it keeps its number, so a mask's
identity does not depend on which other rates are zero.
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9  # floor(2**32 / golden ratio): spreads consecutive indices over the 32-bit range
MIX_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
MIX_SHIFTS = (16, 15, 16)
KEEP_BITS = 24  # the top 24 bits of a hash are compared with the rate, as a 24-bit fraction

EMBEDDING_STREAM = 0


def attention_stream(layer_index: int) -> int:
    return 1 + 2 * layer_index


def feed_forward_stream(layer_index: int) -> int:
    return 2 + 2 * layer_index


def head_stream(n_layers: int) -> int:
    return 1 + 2 * n_layers


def keep_threshold(rate: float) -> int:
    """The integer a hash's top 24 bits must reach for its element to be kept."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate={rate!r} is invalid; a dropout rate lies in [0, 1).")
    return round(rate * 2**KEEP_BITS)


def check_seed(seed: int) -> int:
    """Return `seed` as an int after checking that it fits the portable scheme's 32 bits."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MASK32:
        raise ValueError(f"dropout_seed={seed!r} is invalid; use an int in [0, 2**32).")
    return int(seed)


def mix32(x: np.ndarray) -> np.ndarray:
    """The 32-bit finaliser on a uint32 array (wrapping multiplication)."""
    x = x ^ (x >> np.uint32(MIX_SHIFTS[0]))
    x = x * np.uint32(MIX_MULTIPLIERS[0])
    x = x ^ (x >> np.uint32(MIX_SHIFTS[1]))
    x = x * np.uint32(MIX_MULTIPLIERS[1])
    return x ^ (x >> np.uint32(MIX_SHIFTS[2]))


def _mix32_int(value: int) -> int:
    return int(mix32(np.array([value], dtype=np.uint32))[0])


def draw_key(seed: int, stream: int, draw: int) -> int:
    """The 32-bit key of draw `draw` in stream `stream` under `seed`."""
    key = _mix32_int((check_seed(seed) + GOLDEN) & MASK32)
    key = _mix32_int(key ^ (stream & MASK32))
    return _mix32_int(key ^ (draw & MASK32))


def mask_size(shape: tuple[int, ...]) -> int:
    """Element count of a mask of `shape`, checked to fit the 32-bit element index."""
    size = int(np.prod(shape, dtype=np.int64))
    if size > MASK32 + 1:
        raise ValueError(
            f"A portable dropout mask of shape {shape} has more than 2**32 elements; "
            "use a smaller batch or the framework's own dropout (no dropout_seed)."
        )
    return size


def keep_mask(shape: tuple[int, ...], rate: float, seed: int, stream: int, draw: int) -> np.ndarray:
    """The reference boolean keep-mask of one draw (True where the element is kept)."""
    size = mask_size(shape)
    index = np.arange(size, dtype=np.uint32)
    with np.errstate(over="ignore"):
        hashed = mix32(index * np.uint32(GOLDEN) + np.uint32(draw_key(seed, stream, draw)))
    return ((hashed >> np.uint32(32 - KEEP_BITS)) >= keep_threshold(rate)).reshape(shape)
