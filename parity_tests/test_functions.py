"""Each pure LSH step: PyTorch and JAX on identical float64 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reformer_jax import lsh as jax_lsh
from reformer_spec.tolerances import tolerance
from reformer_torch import lsh as torch_lsh
from weights_convert.compare import compare_arrays

TIGHT = tolerance("float64", "output")


def both(array):
    return torch.as_tensor(array), jnp.asarray(array)


def check(name, expected, actual):
    difference = compare_arrays(name, expected, actual)
    print(difference)
    assert difference.within(TIGHT), str(difference)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("factors", [(4,), (2, 4), (6, 2, 2)])
def test_hash_vectors(rng, factors):
    vectors = rng.standard_normal((2, 3, 13, 5))
    rotations = rng.standard_normal((3, 5, 3, sum(factors) // 2))
    mask = rng.random((2, 13)) > 0.2
    t_buckets = torch_lsh.hash_vectors(*both(vectors)[:1], torch.as_tensor(rotations), factors, torch.as_tensor(mask))
    j_buckets = jax_lsh.hash_vectors(jnp.asarray(vectors), jnp.asarray(rotations), factors, jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(j_buckets), t_buckets.numpy())


def test_sort_and_undo(rng):
    buckets = rng.integers(0, 5, size=(2, 3, 2, 11))
    t_slots, t_undo = torch_lsh.sort_by_bucket(torch.as_tensor(buckets), 4)
    j_slots, j_undo = jax_lsh.sort_by_bucket(jnp.asarray(buckets), 4)
    np.testing.assert_array_equal(np.asarray(j_slots), t_slots.numpy())
    np.testing.assert_array_equal(np.asarray(j_undo), t_undo.numpy())


def test_gather_chunks_and_look_adjacent(rng):
    x = rng.standard_normal((2, 3, 12, 5))
    positions = rng.integers(0, 12, size=(2, 3, 24))
    t_x, j_x = both(x)
    t_gathered = torch_lsh.gather_slots(t_x, torch.as_tensor(positions))
    j_gathered = jax_lsh.gather_slots(j_x, jnp.asarray(positions))
    check("gather_slots", t_gathered, j_gathered)
    for before, after in [(0, 0), (1, 0), (2, 1)]:
        t_window = torch_lsh.look_adjacent(torch_lsh.split_chunks(t_gathered, 4), before, after)
        j_window = jax_lsh.look_adjacent(jax_lsh.split_chunks(j_gathered, 4), before, after)
        check(f"look_adjacent({before}, {after})", t_window, j_window)


def test_normalize_keys_and_combine_rounds(rng):
    vectors = rng.standard_normal((2, 3, 7, 5))
    check("normalize_keys", torch_lsh.normalize_keys(torch.as_tensor(vectors)), jax_lsh.normalize_keys(jnp.asarray(vectors)))
    outputs = rng.standard_normal((2, 3, 4, 7, 5))
    lse = rng.standard_normal((2, 3, 4, 7)) * 3
    check(
        "combine_hash_rounds",
        torch_lsh.combine_hash_rounds(*both(outputs)[:1], torch.as_tensor(lse)),
        jax_lsh.combine_hash_rounds(jnp.asarray(outputs), jnp.asarray(lse)),
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("same_bucket_only", [True, False])
@pytest.mark.parametrize("n_rounds", [1, 2, 4])
def test_lsh_attention_and_gradients(rng, causal, same_bucket_only, n_rounds):
    length, chunk = 24, 4
    query_keys = rng.standard_normal((2, 3, length, 5))
    values = rng.standard_normal((2, 3, length, 5))
    rotations = rng.standard_normal((3, 5, n_rounds, 2))
    mask = np.ones((2, length), bool)
    mask[1, 19:] = False
    kwargs = dict(n_buckets=4, chunk_length=chunk, chunks_before=1, chunks_after=0 if causal else 1, causal=causal, same_bucket_only=same_bucket_only)
    cotangent = rng.standard_normal((2, 3, length, 5))

    t_qk = torch.as_tensor(query_keys).requires_grad_(True)
    t_v = torch.as_tensor(values).requires_grad_(True)
    t_buckets = torch_lsh.hash_vectors(t_qk.detach(), torch.as_tensor(rotations), (4,), torch.as_tensor(mask))
    t_out = torch_lsh.lsh_attention(t_qk, t_v, t_buckets, torch.as_tensor(mask), **kwargs)
    t_out.backward(torch.as_tensor(cotangent))

    j_buckets = jax_lsh.hash_vectors(jnp.asarray(query_keys), jnp.asarray(rotations), (4,), jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(j_buckets), t_buckets.numpy())

    def run(qk, v):
        return jax_lsh.lsh_attention(qk, v, j_buckets, jnp.asarray(mask), **kwargs)

    j_out, vjp = jax.vjp(run, jnp.asarray(query_keys), jnp.asarray(values))
    j_grad_qk, j_grad_v = vjp(jnp.asarray(cotangent))
    check("lsh_attention", t_out, j_out)
    check("grad query_keys", t_qk.grad, j_grad_qk)
    check("grad values", t_v.grad, j_grad_v)


def test_local_attention(rng):
    q, k, v = (rng.standard_normal((2, 3, 16, 5)) for _ in range(3))
    mask = rng.random((2, 16)) > 0.3
    for causal, after in [(True, 0), (False, 1)]:
        kwargs = dict(chunk_length=4, chunks_before=1, chunks_after=after, causal=causal)
        t_out = torch_lsh.local_attention(*(torch.as_tensor(a) for a in (q, k, v)), torch.as_tensor(mask), **kwargs)
        j_out = jax_lsh.local_attention(*(jnp.asarray(a) for a in (q, k, v)), jnp.asarray(mask), **kwargs)
        check(f"local_attention causal={causal}", t_out, j_out)
