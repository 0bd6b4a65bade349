"""The reversible stack: its custom VJP against plain autodiff, bucket replay, and memory that does not grow with depth."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reformer_spec import portable_rotations
from reformer_spec.hashing import rotation_shape
from reformer_jax import ReformerLM, lsh
from reformer_jax.reversible import LayerRandomness, ReformerLayer, reversible_stack

from tests.jax.helpers import assert_trees_close, loss_and_grads, make_config, random_ids, random_params


def test_reversible_gradients_equal_plain_autodiff(float64):
    """The recomputing backward gives autodiff's gradients, dropout included (masks replayed from the same keys)."""
    config = make_config(
        attention_layers=("lsh", "local"), ff_chunk_size=4, hidden_dropout=0.2, attention_dropout=0.2, ff_dropout=0.2
    )
    variables = random_params(config, dtype=np.float64)
    ids = random_ids(config, 2, 29)
    rotations = portable_rotations(config, 5)
    key = jax.random.key(9)

    loss_reversible, grads_reversible = loss_and_grads(config, variables, ids, ids, rotations, key)
    loss_plain, grads_plain = loss_and_grads(config.replace(reversible=False), variables, ids, ids, rotations, key)
    np.testing.assert_allclose(loss_reversible, loss_plain, rtol=1e-13)
    assert_trees_close(grads_reversible, grads_plain, rtol=1e-9, atol=1e-11)


def layer_variables(config, variables):
    return [variables["params"][f"layers_{i}"] for i in range(config.n_layers)]


def test_reversible_input_gradient_and_buckets_replayed(float64, monkeypatch):
    """Gradients with respect to the stack's input match autodiff, and hashing runs only in the forward."""
    config = make_config(attention_layers=("lsh", "local"))
    params = layer_variables(config, random_params(config, dtype=np.float64))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 30)))
    randomness = [
        LayerRandomness(None if r is None else jnp.asarray(r), None, None, None) for r in portable_rotations(config, 1)
    ]

    hash_calls = []
    original = lsh.hash_vectors
    monkeypatch.setattr(lsh, "hash_vectors", lambda *args: hash_calls.append(1) or original(*args))

    def reversible(params, x):
        y1, y2, buckets = reversible_stack(config, params, x, x, None, randomness)
        return jnp.sum(y1 * y2), buckets

    def plain(params, x):
        x1 = x2 = x
        buckets = []
        for index, (layer_params, layer_randomness) in enumerate(zip(params, randomness)):
            x1, x2, layer_buckets = ReformerLayer(config, index).apply({"params": layer_params}, x1, x2, None, layer_randomness)
            buckets.append(layer_buckets)
        return jnp.sum(x1 * x2), buckets

    jax.eval_shape(reversible, params, x)
    forward_calls = len(hash_calls)
    assert forward_calls > 0
    hash_calls.clear()
    (_, buckets), grads_reversible = jax.jit(jax.value_and_grad(reversible, argnums=(0, 1), has_aux=True))(params, x)
    # Tracing the gradient hashes no more often than tracing the forward: the backward replays the buckets.
    assert len(hash_calls) == forward_calls
    (_, plain_buckets), grads_plain = jax.jit(jax.value_and_grad(plain, argnums=(0, 1), has_aux=True))(params, x)
    assert_trees_close(grads_reversible, grads_plain, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(buckets[0], plain_buckets[0])
    assert buckets[1] is None


def saved_for_backward(layers: tuple[str, ...], reversible: bool) -> tuple[int, int]:
    """Return the bytes that jax.vjp of the loss keeps for the backward, and the bytes of the parameters.

    jax.eval_shape traces the VJP without compiling or running it. The leaves
    of the VJP function are its residuals, the JAX counterpart of the tensors
    torch autograd saves.
    """
    config = make_config(attention_layers=layers, reversible=reversible)
    variables = random_params(config)
    ids = random_ids(config, 2, 64)
    rotations = portable_rotations(config, 0)

    def loss(variables):
        return ReformerLM(config).apply(variables, ids, labels=ids, rotations=rotations).loss

    residuals = jax.tree.leaves(jax.eval_shape(lambda v: jax.vjp(loss, v)[1], variables))
    return sum(leaf.size * leaf.dtype.itemsize for leaf in residuals), sum(leaf.nbytes for leaf in jax.tree.leaves(variables))


def test_reversible_stack_saves_no_per_layer_activations():
    """Two more reversible LSH layers add only their parameters, buckets and rotations to what the backward keeps."""
    shallow, deep = ("lsh",) * 2, ("lsh",) * 4
    saved_shallow, params_shallow = saved_for_backward(shallow, reversible=True)
    saved_deep, params_deep = saved_for_backward(deep, reversible=True)
    config = make_config()
    int_bytes = jnp.zeros((), int).dtype.itemsize
    buckets = 2 * config.n_heads * config.n_hashes * 64 * int_bytes  # (B, H, R, L) per layer
    rotations = 4 * np.prod(rotation_shape(config))  # float32 (H, K, R, Z) per layer
    assert saved_deep - saved_shallow == (params_deep - params_shallow) + 2 * (buckets + rotations)

    plain_shallow, _ = saved_for_backward(shallow, reversible=False)
    plain_deep, _ = saved_for_backward(deep, reversible=False)
    activations = 2 * 64 * config.d_model * 4  # one (B, L, D) float32 array
    assert plain_deep - plain_shallow > 2 * 10 * activations  # plain autodiff keeps many per layer


def gradient_memory(layers: tuple[str, ...], reversible: bool, length: int = 64) -> dict[str, int]:
    """XLA's memory_analysis of one compiled gradient step, in bytes."""
    config = make_config(attention_layers=layers, reversible=reversible, max_length=length, axial_shape=(8, length // 8))
    variables = random_params(config)
    ids = random_ids(config, 2, length)
    rotations = portable_rotations(config, 0)
    grad_step = functools.partial(loss_and_grads.__wrapped__, config)
    analysis = jax.jit(grad_step).lower(variables, ids, ids, rotations).compile().memory_analysis()
    return {
        "temp": analysis.temp_size_in_bytes,
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
    }


@pytest.mark.slow
def test_compiled_gradient_memory_flat_in_depth():
    """XLA's temporary memory for a gradient step at 2, 4 and 8 LSH layers (run with -s to see the figures).

    Reversible layers still add their buckets and parameter gradients, so the
    bound is a small fraction of what plain autodiff adds, not zero.
    """
    temp = {}
    for depth in (2, 4, 8):
        for reversible in (True, False):
            memory = gradient_memory(("lsh",) * depth, reversible)
            temp[depth, reversible] = memory["temp"]
            print(f"{depth} LSH layers, reversible={reversible}: {memory}")
    assert temp[8, True] - temp[2, True] < 0.1 * (temp[8, False] - temp[2, False])
