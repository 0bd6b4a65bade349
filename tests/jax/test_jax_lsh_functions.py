"""The pure LSH steps in reformer_jax.lsh, each against plain jnp math."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from reformer_spec.axes import KEY_NORM_EPS, MASK_VALUE, SELF_MASK_VALUE
from reformer_jax import lsh


# Compiled once per shape and setting: XLA:CPU takes seconds per program, far longer than op by op would.
lsh_attention = jax.jit(
    lsh.lsh_attention,
    static_argnames=("n_buckets", "chunk_length", "chunks_before", "chunks_after", "causal", "same_bucket_only"),
)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_hash_single_factor_is_argmax_of_rotated_and_negated(rng, float64):
    vectors = rng.standard_normal((2, 3, 11, 5))
    rotations = rng.standard_normal((3, 5, 2, 3))
    buckets = np.asarray(lsh.hash_vectors(jnp.asarray(vectors), jnp.asarray(rotations), (6,)))
    assert buckets.shape == (2, 3, 2, 11)
    for b, h, r, t in [(0, 0, 0, 0), (1, 2, 1, 10), (0, 1, 1, 5)]:
        z = vectors[b, h, t] @ rotations[h, :, r]
        assert buckets[b, h, r, t] == np.argmax(np.concatenate([z, -z]))


def test_hash_factorized_first_factor_is_least_significant(rng, float64):
    vectors = rng.standard_normal((1, 2, 13, 4))
    rotations = rng.standard_normal((2, 4, 1, 1 + 2))  # factors (2, 4): widths 1 and 2
    buckets = np.asarray(lsh.hash_vectors(jnp.asarray(vectors), jnp.asarray(rotations), (2, 4)))
    z = np.einsum("BHLK,HKRZ->BHRLZ", vectors, rotations)
    low = np.argmax(np.concatenate([z[..., :1], -z[..., :1]], -1), -1)
    high = np.argmax(np.concatenate([z[..., 1:], -z[..., 1:]], -1), -1)
    np.testing.assert_array_equal(buckets, low + 2 * high)
    assert buckets.max() < 8


def test_hash_padding_bucket_ignores_content(rng):
    vectors = jnp.asarray(rng.standard_normal((2, 3, 7, 4)), jnp.float32)
    rotations = jnp.asarray(rng.standard_normal((3, 4, 2, 2)), jnp.float32)
    mask = jnp.asarray([[True] * 5 + [False] * 2, [True] * 7])
    buckets = np.asarray(lsh.hash_vectors(vectors, rotations, (4,), mask))
    assert (buckets[0, :, :, 5:] == 4).all()
    assert (buckets[0, :, :, :5] < 4).all()
    changed = vectors.at[0, :, 5:].set(100.0)
    np.testing.assert_array_equal(np.asarray(lsh.hash_vectors(changed, rotations, (4,), mask)), buckets)


def test_sort_orders_by_round_bucket_position_and_undo_inverts():
    buckets = jnp.asarray([[[[2, 0, 2, 1], [0, 0, 3, 0]]]])  # (B=1, H=1, R=2, L=4)
    slots, undo = lsh.sort_by_bucket(buckets, n_buckets=4)
    # Round 0: bucket 0 (t=1), bucket 1 (t=3), bucket 2 (t=0, t=2); round 1: bucket 0 (t=0, 1, 3), bucket 3 (t=2).
    assert np.asarray(slots)[0, 0].tolist() == [1, 3, 0, 2, 4, 5, 7, 6]
    np.testing.assert_array_equal(np.asarray(jnp.take_along_axis(slots, undo, axis=-1))[0, 0], np.arange(8))


def test_sort_key_fits_int32_at_the_largest_config():
    """The largest key the config allows, n_hashes * (n_buckets + 1) * max_length - 1, sorts correctly in int32."""
    n_buckets, length = 2**10, 2**14
    n_rounds = (2**31 - 1) // ((n_buckets + 1) * length)
    buckets = jnp.full((1, 1, n_rounds, length), n_buckets, dtype=jnp.int32)  # every slot in the padding bucket
    buckets = buckets.at[0, 0, -1, 0].set(0)
    slots, _ = lsh.sort_by_bucket(buckets, n_buckets)
    assert slots.dtype == jnp.int32
    # The one real slot of the last round sorts first within that round.
    assert int(slots[0, 0, (n_rounds - 1) * length]) == (n_rounds - 1) * length


def test_look_adjacent_wraps_in_trax_order():
    x = jnp.arange(4).reshape(1, 1, 4, 1)  # four chunks of length 1
    window = lsh.look_adjacent(x, 1, 1)
    assert np.asarray(window)[0, 0].tolist() == [[3, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 0]]
    assert lsh.look_adjacent(x, 0, 0) is x


def test_same_bucket_window_keeps_own_bucket_within_reach(rng):
    """Every allowed key shares the query's (round, bucket) and lies at most C * before places back."""
    buckets = jnp.asarray(rng.integers(0, 3, size=(1, 2, 2, 12)))
    chunk, before, after = 4, 1, 1
    slots, _ = lsh.sort_by_bucket(buckets, 3)
    allowed = np.asarray(lsh.same_bucket_window(buckets, slots, 3, chunk, before, after))  # (B, H, N, C, W)
    round_buckets = np.asarray(buckets)[:, :, :, :] + 4 * np.arange(2)[None, None, :, None]
    sorted_buckets = np.take_along_axis(round_buckets.reshape(1, 2, -1), np.asarray(slots), axis=2)
    n_chunks, places = 6, 24
    for h in range(2):
        for query_place in range(places):
            n, c = divmod(query_place, chunk)
            window_places = [((n + shift) % n_chunks) * chunk + i for shift in range(-before, after + 1) for i in range(chunk)]
            for w, key_place in enumerate(window_places):
                expected = (
                    sorted_buckets[0, h, key_place] == sorted_buckets[0, h, query_place]
                    and query_place - chunk * before <= key_place <= query_place + chunk * after
                )
                assert allowed[0, h, n, c, w] == expected, (h, query_place, key_place)


def test_combine_rounds_equals_one_softmax_over_union(rng, float64):
    """Two rounds' windows merged by their log-sum-exps equal softmax over both windows at once."""
    query = rng.standard_normal(5)
    keys = [rng.standard_normal((3, 5)), rng.standard_normal((4, 5))]
    values = [rng.standard_normal((3, 2)), rng.standard_normal((4, 2))]
    outputs, lses = [], []
    for k, v in zip(keys, values):
        logits = k @ query
        outputs.append(jax.nn.softmax(logits) @ v)
        lses.append(jax.nn.logsumexp(logits))
    combined = lsh.combine_hash_rounds(jnp.stack(outputs)[None, None, :, None], jnp.stack(lses)[None, None, :, None])
    union = jax.nn.softmax(np.concatenate(keys) @ query) @ np.concatenate(values)
    np.testing.assert_allclose(combined[0, 0, 0], union, rtol=1e-12, atol=1e-12)


def shared_qk_reference(query_keys, values, causal):
    """Full shared-QK attention with the self mask, in plain jnp math: (B, H, L, K) -> (B, H, L, K)."""
    # Unit-length keys, with the spec's epsilon: q / sqrt(|q|^2 + K * eps).
    head_width = query_keys.shape[-1]
    keys = query_keys / jnp.sqrt(jnp.sum(query_keys**2, axis=-1, keepdims=True) + head_width * KEY_NORM_EPS)
    logits = query_keys @ jnp.swapaxes(keys, -1, -2)
    length = logits.shape[-1]
    if causal:
        logits = jnp.where(jnp.tril(jnp.ones((length, length), dtype=bool)), logits, MASK_VALUE)
    logits = jnp.where(jnp.eye(length, dtype=bool), SELF_MASK_VALUE, logits)
    return jax.nn.softmax(logits, axis=-1) @ values


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("same_bucket_only", [True, False])
def test_one_chunk_lsh_equals_full_shared_qk_attention(rng, float64, causal, same_bucket_only):
    length = 12
    query_keys = jnp.asarray(rng.standard_normal((2, 3, length, 5)))
    values = jnp.asarray(rng.standard_normal((2, 3, length, 5)))
    rotations = jnp.asarray(rng.standard_normal((3, 5, 1, 1)))
    before, after = 0, 0
    if same_bucket_only:
        rotations = jnp.zeros_like(rotations)  # argmax over zeros is 0: one bucket holds every token
        # The same-bucket window reaches chunk_length * chunks_before places back
        # (and * chunks_after ahead); with one chunk the window then holds each
        # key two or three times, which leaves the softmax distribution unchanged.
        before, after = 1, int(not causal)
    buckets = lsh.hash_vectors(query_keys, rotations, (2,))
    output = lsh_attention(
        query_keys, values, buckets, None, n_buckets=2, chunk_length=length, chunks_before=before, chunks_after=after,
        causal=causal, same_bucket_only=same_bucket_only,
    )
    # The sort scrambles slots inside the one chunk; attention over a whole window does not care.
    np.testing.assert_allclose(output, shared_qk_reference(query_keys, values, causal), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_rounds", [1, 3])
def test_causal_first_token_returns_its_own_value(rng, float64, n_rounds):
    query_keys = jnp.asarray(rng.standard_normal((1, 2, 16, 4)))
    values = jnp.asarray(rng.standard_normal((1, 2, 16, 4)))
    rotations = jnp.asarray(rng.standard_normal((2, 4, n_rounds, 2)))
    buckets = lsh.hash_vectors(query_keys, rotations, (4,))
    output = lsh_attention(
        query_keys, values, buckets, None, n_buckets=4, chunk_length=4, chunks_before=1, chunks_after=0, causal=True,
        same_bucket_only=True,
    )
    np.testing.assert_allclose(output[:, :, 0], values[:, :, 0], rtol=0, atol=1e-12)


def test_query_gradient_flows_through_round_weights(rng, float64, monkeypatch):
    """With several rounds, d(output)/d(query) includes the path through each round's log-sum-exp."""
    query_keys = jnp.asarray(rng.standard_normal((1, 1, 16, 4)))
    values = jnp.asarray(rng.standard_normal((1, 1, 16, 4)))
    rotations = jnp.asarray(rng.standard_normal((1, 4, 2, 2)))
    buckets = lsh.hash_vectors(query_keys, rotations, (4,))
    kwargs = dict(n_buckets=4, chunk_length=4, chunks_before=1, chunks_after=0, causal=False, same_bucket_only=False)

    def total(qk):
        return jnp.sum(lsh.lsh_attention(qk, values, buckets, None, **kwargs))

    full = jax.jit(jax.grad(total))(query_keys)
    # Same computation with the round weights frozen: the gradient must differ.
    original = lsh.combine_hash_rounds
    monkeypatch.setattr(lsh, "combine_hash_rounds", lambda out, lse: original(out, jax.lax.stop_gradient(lse)))
    frozen = jax.jit(jax.grad(total))(query_keys)
    assert float(jnp.max(jnp.abs(full - frozen))) > 1e-6


def test_local_attention_chunk_equal_length_is_full_attention(rng, float64):
    q, k, v = (jnp.asarray(rng.standard_normal((2, 3, 8, 5))) for _ in range(3))
    output = lsh.local_attention(q, k, v, None, chunk_length=8, chunks_before=0, chunks_after=0, causal=True)
    logits = q @ jnp.swapaxes(k, -1, -2) / math.sqrt(5)
    logits = jnp.where(jnp.tril(jnp.ones((8, 8), dtype=bool)), logits, MASK_VALUE)
    np.testing.assert_allclose(output, jax.nn.softmax(logits, axis=-1) @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_rounds", [1, 2, 4])
def test_lsh_attention_finite_difference_gradients(rng, float64, n_rounds):
    """Forward- and reverse-mode derivatives of lsh_attention match central finite differences."""
    query_keys = jnp.asarray(rng.standard_normal((1, 2, 16, 4)))
    values = jnp.asarray(rng.standard_normal((1, 2, 16, 4)))
    rotations = jnp.asarray(rng.standard_normal((2, 4, n_rounds, 2)))
    mask = jnp.arange(16)[None, :] < 13
    # Fixed buckets: hashing is piecewise constant, so finite differences
    # across a bucket boundary would measure a jump, not a derivative.
    buckets = lsh.hash_vectors(query_keys, rotations, (4,), mask)
    causal = n_rounds != 2
    kwargs = dict(
        n_buckets=4, chunk_length=4, chunks_before=1, chunks_after=int(not causal), causal=causal,
        same_bucket_only=n_rounds != 4,
    )

    @jax.jit
    def attention(qk, v):
        return lsh.lsh_attention(qk, v, buckets, mask, **kwargs)

    check_grads(attention, (query_keys, values), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)
