"""Parity with dropout on: both models draw the portable masks of `reformer_spec.dropout`.

Each framework's own generator draws different bits from the same seed, so
these tests give both models the same `dropout_seed` and check that the masks
agree bit for bit and that the models then agree within the spec's tolerances.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reformer_jax.randomness import PortableKey, portable_keep_mask as jax_keep_mask
from reformer_spec import dropout as portable
from reformer_spec.hashing import portable_rotations
from reformer_torch import ReformerLM
from reformer_torch.randomness import portable_keep_mask as torch_keep_mask
from weights_convert.convert import load_into_torch

from parity_tests.helpers import random_canonical
from parity_tests.test_models import FAST, build_case, run_case

DROPOUT_CASE = {**FAST[0], "dropout": True}


@pytest.mark.parametrize(
    "shape, rate, seed, stream, draw",
    [((3, 5, 7), 0.1, 0, 0, 0), ((2, 3, 4, 8, 16), 0.5, 2**32 - 1, 7, 3), ((1, 9), 0.3, 12345, 2, 41)],
)
def test_three_implementations_draw_one_mask(shape, rate, seed, stream, draw):
    reference = portable.keep_mask(shape, rate, seed, stream, draw)
    from_torch = torch_keep_mask(shape, rate, portable.draw_key(seed, stream, draw), torch.device("cpu")).numpy()
    key = PortableKey(jnp.uint32(seed), jnp.uint32(stream), jnp.uint32(draw))
    from_jax = np.asarray(jax.jit(jax_keep_mask, static_argnums=(0, 1))(shape, rate, key))
    np.testing.assert_array_equal(from_torch, reference)
    np.testing.assert_array_equal(from_jax, reference)


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_models_agree_with_dropout_on(dtype):
    """The CI matrix case with every dropout rate on (it shares its shapes, so JAX reuses the compiled operations)."""
    run_case(DROPOUT_CASE, dtype)  # asserts that the report passed


def test_dropout_changes_the_logits():
    """The parity above is not vacuous: the same model and inputs without dropout give other logits."""
    config, _ = build_case(DROPOUT_CASE)
    assert config.hidden_dropout > 0
    assert config.attention_dropout > 0
    assert config.ff_dropout > 0
    model = ReformerLM(config).double()
    load_into_torch(model, random_canonical(config, seed=2))
    ids = torch.as_tensor(np.random.default_rng(4).integers(0, config.vocab_size, size=(2, 29)))
    rotations = portable_rotations(config, 3)

    dropped = model.train()(ids, rotations=rotations, dropout_seed=17).logits
    again = model(ids, rotations=rotations, dropout_seed=17).logits
    other_seed = model(ids, rotations=rotations, dropout_seed=18).logits
    plain = model.eval()(ids, rotations=rotations).logits
    assert torch.equal(dropped, again)
    assert (dropped - other_seed).abs().max() > 0.1
    assert (dropped - plain).abs().max() > 0.1
