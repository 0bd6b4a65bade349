"""The portable dropout definition: its statistics, its identity rules and its input checks."""

import numpy as np
import pytest

from reformer_spec import dropout as portable


def test_rate_zero_keeps_everything():
    assert portable.keep_mask((7, 11), 0.0, seed=3, stream=1, draw=0).all()


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kept_fraction_matches_rate(rate):
    mask = portable.keep_mask((200_003,), rate, seed=5, stream=2, draw=4)
    spread = 5 * np.sqrt(rate * (1 - rate) / mask.size)  # five binomial standard deviations
    assert abs(mask.mean() - (1 - rate)) < spread


@pytest.mark.parametrize("change", [{"seed": 6}, {"stream": 3}, {"draw": 1}])
def test_each_identity_part_gives_an_independent_mask(change):
    """Masks that differ in seed, stream or draw agree about as often as independent coin flips."""
    base = dict(seed=5, stream=2, draw=0)
    first = portable.keep_mask((100_001,), 0.5, **base)
    second = portable.keep_mask((100_001,), 0.5, **{**base, **change})
    agreement = np.mean(first == second)
    assert abs(agreement - 0.5) < 5 * np.sqrt(0.25 / first.size)


def test_neighbouring_elements_are_uncorrelated():
    mask = portable.keep_mask((100_000,), 0.5, seed=0, stream=0, draw=0).astype(float)
    correlation = np.corrcoef(mask[:-1], mask[1:])[0, 1]
    assert abs(correlation) < 5 / np.sqrt(mask.size)


def test_mask_is_a_reshaped_flat_mask():
    flat = portable.keep_mask((60,), 0.3, seed=9, stream=4, draw=2)
    shaped = portable.keep_mask((3, 4, 5), 0.3, seed=9, stream=4, draw=2)
    np.testing.assert_array_equal(shaped.reshape(-1), flat)


def test_definition_is_pinned():
    """Changing the hash would silently change every portable mask: these values pin it."""
    assert portable.draw_key(0, 0, 0) == 2488251732
    assert portable.draw_key(7, 3, 1) == 1794881517
    expected = [1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    np.testing.assert_array_equal(portable.keep_mask((16,), 0.5, seed=42, stream=3, draw=1), expected)


def test_threshold_is_a_24_bit_fraction():
    assert portable.keep_threshold(0.0) == 0
    assert portable.keep_threshold(0.5) == 2**23
    assert portable.keep_threshold(0.1) == round(0.1 * 2**24)


def test_streams_are_distinct_per_site():
    n_layers = 3
    streams = [portable.EMBEDDING_STREAM, portable.head_stream(n_layers)]
    for i in range(n_layers):
        streams += [portable.attention_stream(i), portable.feed_forward_stream(i)]
    assert sorted(streams) == list(range(2 * n_layers + 2))


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "7"])
def test_invalid_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="dropout_seed"):
        portable.check_seed(seed)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_invalid_rate_is_rejected(rate):
    with pytest.raises(ValueError, match="rate"):
        portable.keep_threshold(rate)


def test_oversized_mask_is_rejected():
    with pytest.raises(ValueError, match="2\\*\\*32 elements"):
        portable.mask_size((2**16, 2**16, 2))
