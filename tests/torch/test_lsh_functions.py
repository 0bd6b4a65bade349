"""The pure LSH steps in reformer_torch.lsh, each against plain tensor math."""

import math

import pytest
import torch

from reformer_spec.axes import KEY_NORM_EPS, SELF_MASK_VALUE
from reformer_torch import lsh
from reformer_torch.attention import LSHSelfAttention

from tests.torch.helpers import make_config


def test_hash_single_factor_is_argmax_of_rotated_and_negated():
    vectors = torch.randn(2, 3, 11, 5, dtype=torch.float64)
    rotations = torch.randn(3, 5, 2, 3, dtype=torch.float64)
    buckets = lsh.hash_vectors(vectors, rotations, (6,))
    assert buckets.shape == (2, 3, 2, 11)
    for b, h, r, t in [(0, 0, 0, 0), (1, 2, 1, 10), (0, 1, 1, 5)]:
        z = vectors[b, h, t] @ rotations[h, :, r]
        assert buckets[b, h, r, t] == torch.argmax(torch.cat([z, -z]))


def test_hash_factorized_first_factor_is_least_significant():
    vectors = torch.randn(1, 2, 13, 4, dtype=torch.float64)
    rotations = torch.randn(2, 4, 1, 1 + 2, dtype=torch.float64)  # factors (2, 4): widths 1 and 2
    buckets = lsh.hash_vectors(vectors, rotations, (2, 4))
    z = torch.einsum("BHLK,HKRZ->BHRLZ", vectors, rotations)
    low = torch.argmax(torch.cat([z[..., :1], -z[..., :1]], -1), -1)
    high = torch.argmax(torch.cat([z[..., 1:], -z[..., 1:]], -1), -1)
    torch.testing.assert_close(buckets, low + 2 * high, rtol=0, atol=0)
    assert int(buckets.max()) < 8


def test_hash_padding_bucket_ignores_content():
    vectors = torch.randn(2, 3, 7, 4)
    rotations = torch.randn(3, 4, 2, 2)
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    buckets = lsh.hash_vectors(vectors, rotations, (4,), mask)
    assert (buckets[0, :, :, 5:] == 4).all()
    assert (buckets[0, :, :, :5] < 4).all()
    changed = vectors.clone()
    changed[0, :, 5:] = 100.0
    torch.testing.assert_close(lsh.hash_vectors(changed, rotations, (4,), mask), buckets, rtol=0, atol=0)


def test_sort_orders_by_round_bucket_position_and_undo_inverts():
    buckets = torch.tensor([[[[2, 0, 2, 1], [0, 0, 3, 0]]]])  # (B=1, H=1, R=2, L=4)
    slots, undo = lsh.sort_by_bucket(buckets, n_buckets=4)
    # Round 0: bucket 0 (t=1), bucket 1 (t=3), bucket 2 (t=0, t=2); round 1: bucket 0 (t=0, 1, 3), bucket 3 (t=2).
    assert slots[0, 0].tolist() == [1, 3, 0, 2, 4, 5, 7, 6]
    assert torch.equal(torch.gather(slots, -1, undo), torch.arange(8).expand(1, 1, 8))


def test_look_adjacent_wraps_in_trax_order():
    x = torch.arange(4).reshape(1, 1, 4, 1)  # four chunks of length 1
    window = lsh.look_adjacent(x, 1, 1)
    assert window[0, 0, :, :].tolist() == [[3, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 0]]
    assert lsh.look_adjacent(x, 0, 0) is x


def test_combine_rounds_equals_one_softmax_over_union():
    """Two rounds' windows merged by their log-sum-exps equal softmax over both windows at once."""
    query = torch.randn(5, dtype=torch.float64)
    keys = [torch.randn(3, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)]
    values = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)]
    outputs, lses = [], []
    for k, v in zip(keys, values):
        logits = k @ query
        outputs.append(torch.softmax(logits, 0) @ v)
        lses.append(torch.logsumexp(logits, 0))
    combined = lsh.combine_hash_rounds(torch.stack(outputs)[None, None, :, None], torch.stack(lses)[None, None, :, None])
    union = torch.softmax(torch.cat(keys) @ query, 0) @ torch.cat(values)
    torch.testing.assert_close(combined[0, 0, 0], union, rtol=1e-12, atol=1e-12)


def shared_qk_reference(query_keys, values, causal):
    """Full shared-QK attention with the self mask, in plain tensor math: (B, H, L, K) -> (B, H, L, K)."""
    # Unit-length keys, with the spec's epsilon: q / sqrt(|q|^2 + K * eps).
    head_width = query_keys.shape[-1]
    keys = query_keys / torch.sqrt((query_keys**2).sum(-1, keepdim=True) + head_width * KEY_NORM_EPS)
    logits = query_keys @ keys.transpose(-1, -2)
    length = logits.shape[-1]
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
    if causal:
        logits = logits.masked_fill(future, -1e9)
    logits = logits.masked_fill(torch.eye(length, dtype=torch.bool), SELF_MASK_VALUE)
    return torch.softmax(logits, -1) @ values


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("same_bucket_only", [True, False])
def test_one_chunk_lsh_equals_full_shared_qk_attention(causal, same_bucket_only):
    length = 12
    query_keys = torch.randn(2, 3, length, 5, dtype=torch.float64)
    values = torch.randn(2, 3, length, 5, dtype=torch.float64)
    rotations = torch.randn(3, 5, 1, 1, dtype=torch.float64)
    before, after = 0, 0
    if same_bucket_only:
        rotations.zero_()  # argmax over zeros is 0: one bucket holds every token
        # The same-bucket window reaches chunk_length * chunks_before places back
        # (and * chunks_after ahead); with one chunk the window then holds each
        # key two or three times, which leaves the softmax distribution unchanged.
        before, after = 1, int(not causal)
    buckets = lsh.hash_vectors(query_keys, rotations, (2,))
    output = lsh.lsh_attention(
        query_keys, values, buckets, None, n_buckets=2, chunk_length=length, chunks_before=before, chunks_after=after,
        causal=causal, same_bucket_only=same_bucket_only,
    )
    # The sort scrambles slots inside the one chunk; attention over a whole window does not care.
    torch.testing.assert_close(output, shared_qk_reference(query_keys, values, causal), rtol=1e-10, atol=1e-10)


def test_causal_first_token_returns_its_own_value():
    query_keys = torch.randn(1, 2, 16, 4, dtype=torch.float64)
    values = torch.randn(1, 2, 16, 4, dtype=torch.float64)
    rotations = torch.randn(2, 4, 3, 2, dtype=torch.float64)
    buckets = lsh.hash_vectors(query_keys, rotations, (4,))
    output = lsh.lsh_attention(
        query_keys, values, buckets, None, n_buckets=4, chunk_length=4, chunks_before=1, chunks_after=0, causal=True,
        same_bucket_only=True,
    )
    torch.testing.assert_close(output[:, :, 0], values[:, :, 0], rtol=0, atol=1e-12)


def test_query_gradient_flows_through_round_weights():
    """With several rounds, d(output)/d(query) includes the path through each round's log-sum-exp."""
    torch.manual_seed(3)
    query_keys = torch.randn(1, 1, 16, 4, dtype=torch.float64, requires_grad=True)
    values = torch.randn(1, 1, 16, 4, dtype=torch.float64)
    rotations = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    buckets = lsh.hash_vectors(query_keys.detach(), rotations, (4,))
    kwargs = dict(n_buckets=4, chunk_length=4, chunks_before=1, chunks_after=0, causal=False, same_bucket_only=False)

    output = lsh.lsh_attention(query_keys, values, buckets, None, **kwargs)
    (full,) = torch.autograd.grad(output.sum(), query_keys)

    # Same computation with the round weights frozen: the gradient must differ.
    original = lsh.combine_hash_rounds

    def frozen_weights(outputs, log_normalizers):
        return original(outputs, log_normalizers.detach())

    lsh.combine_hash_rounds = frozen_weights
    try:
        frozen_output = lsh.lsh_attention(query_keys, values, buckets, None, **kwargs)
        (frozen,) = torch.autograd.grad(frozen_output.sum(), query_keys)
    finally:
        lsh.combine_hash_rounds = original
    torch.testing.assert_close(frozen_output, output, rtol=0, atol=0)
    assert (full - frozen).abs().max() > 1e-6


def test_local_attention_chunk_equal_length_is_full_attention():
    q, k, v = (torch.randn(2, 3, 8, 5, dtype=torch.float64) for _ in range(3))
    output = lsh.local_attention(q, k, v, None, chunk_length=8, chunks_before=0, chunks_after=0, causal=True)
    logits = q @ k.transpose(-1, -2) / math.sqrt(5)
    logits = logits.masked_fill(torch.triu(torch.ones(8, 8, dtype=torch.bool), 1), -1e9)
    torch.testing.assert_close(output, torch.softmax(logits, -1) @ v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_hashes", [1, 2, 4])
def test_lsh_layer_gradcheck(n_hashes):
    config = make_config(
        n_hashes=n_hashes, causal=n_hashes != 2, lsh_chunks_after=int(n_hashes == 2), lsh_same_bucket_only=n_hashes != 4
    )
    layer = LSHSelfAttention(config).double()
    hidden = torch.randn(2, 16, 30, dtype=torch.float64, requires_grad=True)
    rotations = torch.randn(3, 10, n_hashes, 2, dtype=torch.float64)
    _, buckets = layer(hidden, None, rotations=rotations)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 13:] = False

    def run(x):
        # Fixed buckets: hashing is piecewise constant, so finite differences
        # across a bucket boundary would measure a jump, not a derivative.
        return layer(x, mask, buckets=buckets)[0]

    assert torch.autograd.gradcheck(run, (hidden,), eps=1e-6, atol=1e-6, rtol=1e-5)
