"""The reversible stack: its custom VJP against plain autodiff, bucket replay, and memory that does not grow with depth."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reformer_spec import portable_rotations
from reformer_jax import lsh
from reformer_jax.reversible import LayerRandomness, ReformerLayer, reversible_stack

from tests.jax.helpers import assert_trees_close, loss_and_grads, make_config, random_ids, random_params


def test_reversible_gradients_equal_plain_autodiff(float64):
    """The recomputing backward gives autodiff's gradients, dropout included (masks replayed from the same keys)."""
    config = make_config(
        attention_layers=("lsh", "local", "full", "lsh"), hidden_dropout=0.2, attention_dropout=0.2, ff_dropout=0.2
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
    config = make_config(attention_layers=("lsh", "lsh", "local"))
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
    for layer in range(2):
        np.testing.assert_array_equal(buckets[layer], plain_buckets[layer])
    assert buckets[2] is None


def gradient_memory(layers: tuple[str, ...], reversible: bool, length: int = 64, **changes) -> dict[str, int]:
    """XLA's memory_analysis of one compiled gradient step, in bytes."""
    config = make_config(attention_layers=layers, reversible=reversible, max_length=length, axial_shape=(8, length // 8), **changes)
    variables = random_params(config)
    ids = random_ids(config, 2, length)
    rotations = portable_rotations(config, 0)
    grad_step = functools.partial(loss_and_grads.__wrapped__, config)
    compiled = jax.jit(grad_step).lower(variables, ids, ids, rotations).compile()
    analysis = compiled.memory_analysis()
    return {
        "temp": analysis.temp_size_in_bytes,
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
    }


def test_reversible_memory_does_not_grow_with_depth():
    """Temporary memory of a compiled gradient step: flat in depth when reversible, growing when not."""
    shallow, deep = ("local",) * 2, ("local",) * 6
    reversible_growth = gradient_memory(deep, True)["temp"] - gradient_memory(shallow, True)["temp"]
    plain_growth = gradient_memory(deep, False)["temp"] - gradient_memory(shallow, False)["temp"]
    print(f"temp bytes added by 4 more layers: reversible {reversible_growth}, plain {plain_growth}")
    # Four more layers of plain autodiff keep their activations; reversible keeps none of them.
    assert plain_growth > 0
    assert reversible_growth < 0.1 * plain_growth


@pytest.mark.slow
def test_reversible_memory_report_lsh_layers():
    """The figures for 2, 4 and 8 LSH layers (printed; run with -s to see them)."""
    rows = []
    for depth in (2, 4, 8):
        for reversible in (True, False):
            memory = gradient_memory(("lsh",) * depth, reversible)
            rows.append((depth, reversible, memory))
            print(f"{depth} LSH layers, reversible={reversible}: {memory}")
    temp = {(depth, reversible): memory["temp"] for depth, reversible, memory in rows}
    assert temp[(8, True)] - temp[(2, True)] < 0.1 * (temp[(8, False)] - temp[(2, False)])
