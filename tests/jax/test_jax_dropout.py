"""Portable dropout in the JAX model: key splitting keeps PyTorch's draw numbers, and the reversible backward replays the masks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reformer_spec import dropout as portable
from reformer_spec import portable_rotations
from reformer_jax import ReformerLM
from reformer_jax.randomness import PortableKey, split_key, unstack_keys

from tests.jax.helpers import assert_trees_close, make_config, random_ids, random_params


def test_split_numbers_draws_like_a_sequential_stream():
    """Chunk c of a feed-forward half owns draws 2c and 2c + 1, as in PyTorch's call order."""
    key = PortableKey.create(5, portable.feed_forward_stream(1))
    chunks = split_key(key, 3, draws_each=2)
    draws = [[int(k.draw) for k in unstack_keys(split_key(chunk, 2), 2)] for chunk in unstack_keys(chunks, 3)]
    assert draws == [[0, 1], [2, 3], [4, 5]]
    assert {int(k.stream) for k in unstack_keys(chunks, 3)} == {portable.feed_forward_stream(1)}


@functools.partial(jax.jit, static_argnums=(0, 4))
def portable_loss_and_grads(config, variables, ids, rotations, dropout_seed):
    def loss(variables):
        output = ReformerLM(config).apply(
            variables, ids, labels=ids, rotations=rotations, deterministic=False, dropout_seed=dropout_seed
        )
        return output.loss

    return jax.value_and_grad(loss)(variables)


def test_reversible_replays_portable_masks(float64):
    config = make_config(
        attention_layers=("lsh", "local"), ff_chunk_size=4, hidden_dropout=0.2, attention_dropout=0.2, ff_dropout=0.2
    )
    variables = random_params(config, dtype=np.float64)
    ids = random_ids(config, 2, 29)
    rotations = portable_rotations(config, 5)

    loss_reversible, grads_reversible = portable_loss_and_grads(config, variables, ids, rotations, 11)
    loss_plain, grads_plain = portable_loss_and_grads(config.replace(reversible=False), variables, ids, rotations, 11)
    np.testing.assert_allclose(loss_reversible, loss_plain, rtol=1e-13)
    assert_trees_close(grads_reversible, grads_plain, rtol=1e-9, atol=1e-11)
    loss_other, _ = portable_loss_and_grads(config, variables, ids, rotations, 12)
    assert abs(float(loss_other) - float(loss_reversible)) > 1e-6


def test_invalid_dropout_seed_is_rejected():
    config = make_config(hidden_dropout=0.1)
    with pytest.raises(ValueError, match="dropout_seed"):
        ReformerLM(config).apply(
            random_params(config), random_ids(config, 1, 16), rotations=portable_rotations(config, 0),
            deterministic=False, dropout_seed=-1,
        )
