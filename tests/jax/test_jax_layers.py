"""The Flax blocks on their own: LSH attention layer, chunked feed-forward, axial table, activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from reformer_spec import Activation
from reformer_jax.attention import LSHSelfAttention
from reformer_jax.embeddings import axial_table
from reformer_jax.feed_forward import ChunkedFeedForward, activate

from tests.jax.helpers import assert_trees_close, make_config, random_like


@pytest.mark.slow
@pytest.mark.parametrize("n_hashes", [1, 2, 4])
def test_lsh_layer_finite_difference_gradients(float64, n_hashes):
    """Reverse-mode derivatives of the whole LSH layer (input and weights) match finite differences.

    Slow (about 13 s each on 2 CPU cores, mostly compiling); the fast suite
    checks lsh_attention itself the same way.
    """
    config = make_config(
        n_hashes=n_hashes, causal=n_hashes != 2, lsh_chunks_after=int(n_hashes == 2), lsh_same_bucket_only=n_hashes != 4
    )
    layer = LSHSelfAttention(config)
    rng = np.random.default_rng(n_hashes)
    hidden = jnp.asarray(rng.standard_normal((2, 16, 30)))
    rotations = jnp.asarray(rng.standard_normal((3, 10, n_hashes, 2)))
    params = random_like(jax.eval_shape(lambda: layer.init(jax.random.key(0), hidden, None, rotations=rotations)), 1, jnp.float64)
    _, buckets = layer.apply(params, hidden, None, rotations=rotations)
    mask = jnp.arange(16)[None, :] < jnp.asarray([[16], [13]])

    @jax.jit
    def run(params, x):
        # Fixed buckets: hashing is piecewise constant, so finite differences
        # across a bucket boundary would measure a jump, not a derivative.
        return layer.apply(params, x, mask, buckets=buckets)[0]

    check_grads(run, (params, hidden), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_given_buckets_replay_hashing(float64):
    """Passing a call's own buckets back reproduces that call exactly (what the reversible backward relies on)."""
    config = make_config()
    layer = LSHSelfAttention(config)
    rng = np.random.default_rng(5)
    hidden = jnp.asarray(rng.standard_normal((2, 16, 30)))
    rotations = jnp.asarray(rng.standard_normal((3, 10, 2, 2)))
    params = random_like(jax.eval_shape(lambda: layer.init(jax.random.key(0), hidden, None, rotations=rotations)), 1, jnp.float64)
    hashed, buckets = layer.apply(params, hidden, None, rotations=rotations)
    replayed, same_buckets = layer.apply(params, hidden, None, buckets=buckets)
    np.testing.assert_array_equal(replayed, hashed)
    assert same_buckets is buckets
    with pytest.raises(ValueError, match="needs rotations"):
        layer.apply(params, hidden, None)


def test_chunked_feed_forward_equals_unchunked(float64):
    config = make_config(ff_chunk_size=0, activation="gelu")
    whole = ChunkedFeedForward(config)
    chunked = ChunkedFeedForward(config.replace(ff_chunk_size=4))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 24, 30)))
    params = random_like(jax.eval_shape(whole.init, jax.random.key(0), x), seed=1, dtype=jnp.float64)
    assert jax.tree.map(jnp.shape, jax.eval_shape(chunked.init, jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)

    def outputs_and_grads(module):
        def total(params, x):
            output = module.apply(params, x)
            return jnp.sum(jnp.sin(output)), output

        return jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))(params, x)

    (_, whole_output), whole_grads = outputs_and_grads(whole)
    (_, chunked_output), chunked_grads = outputs_and_grads(chunked)
    np.testing.assert_allclose(chunked_output, whole_output, rtol=1e-12, atol=1e-12)
    assert_trees_close(chunked_grads, whole_grads, rtol=1e-10, atol=1e-12)


def test_chunked_feed_forward_dropout_is_reproducible():
    config = make_config(ff_chunk_size=4, ff_dropout=0.3, hidden_dropout=0.2)
    module = ChunkedFeedForward(config)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 30)), jnp.float32)
    params = random_like(jax.eval_shape(module.init, jax.random.key(0), x), seed=1, dtype=jnp.float32)
    apply = jax.jit(module.apply)
    first = apply(params, x, jax.random.key(3))
    np.testing.assert_array_equal(apply(params, x, jax.random.key(3)), first)
    assert not np.array_equal(apply(params, x, jax.random.key(4)), first)
    assert not np.array_equal(jax.jit(lambda p, x: module.apply(p, x))(params, x), first)  # no key: dropout off


def test_axial_table_is_row_major():
    first = jnp.arange(3 * 2, dtype=jnp.float32).reshape(3, 2)
    second = 100 + jnp.arange(4 * 1, dtype=jnp.float32).reshape(4, 1)
    table = np.asarray(axial_table([first, second]))
    assert table.shape == (12, 3)
    for position in range(12):
        a, b = divmod(position, 4)  # the last axis varies fastest
        np.testing.assert_array_equal(table[position], np.concatenate([first[a], second[b]]))


def test_activations(float64):
    x = jnp.linspace(-3.0, 3.0, 13)
    np.testing.assert_array_equal(activate(x, Activation.RELU), np.maximum(x, 0.0))
    erf_gelu = 0.5 * x * (1.0 + jax.scipy.special.erf(x / np.sqrt(2.0)))
    np.testing.assert_allclose(activate(x, Activation.GELU), erf_gelu, rtol=1e-12, atol=1e-15)
    tanh_gelu = 0.5 * x * (1.0 + jnp.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(activate(x, Activation.GELU_TANH), tanh_gelu, rtol=1e-12, atol=1e-15)
