"""The whole Flax model: parameter tree, init, causality, padding, shapes, dtypes, randomness, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reformer_spec import portable_rotations
from reformer_spec.parameters import Init, parameter_table
from reformer_jax import IGNORE_INDEX, ReformerLM, next_token_loss

from tests.jax.helpers import loss_and_grads, make_config, model_output, random_ids, random_params

# ------------------------------------------------------------ parameter tree

TREE_CASES = {
    "lsh_local_axial": dict(attention_layers=("lsh", "local")),
    "all_kinds_learned": dict(attention_layers=("full", "lsh", "local"), positions="learned"),
    "tied_factorized": dict(attention_layers=("lsh", "lsh"), tie_embeddings=True, n_buckets=(2, 4)),
    "full_only_three_axes": dict(
        attention_layers=("full",), axial_shape=(2, 4, 8), axial_dims=(6, 10, 14), tie_embeddings=True
    ),
}


def flat_shapes(variables: dict) -> dict[str, tuple[int, ...]]:
    """{"layers.0.attention.norm.scale": shape, ...}, the canonical spelling of a Flax params tree."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
        name = ".".join(entry.key for entry in path)
        flat[name.replace("layers_", "layers.")] = tuple(leaf.shape)
    return flat


@pytest.mark.parametrize("case", TREE_CASES)
def test_parameter_tree_matches_canonical_table(case):
    config = make_config(**TREE_CASES[case])
    ids = np.zeros((1, 8), np.int32)
    # eval_shape traces init without compiling or allocating anything.
    variables = jax.eval_shape(
        lambda key: ReformerLM(config).init(key, ids, rotations=portable_rotations(config, 0)), jax.random.key(0)
    )
    assert set(variables) == {"params"}
    assert flat_shapes(variables) == {spec.name: spec.shape for spec in parameter_table(config)}


def test_init_follows_canonical_distributions():
    config = make_config(attention_layers=("full",), d_model=60, n_heads=4, d_head=15, d_ff=70, axial_dims=(28, 32))
    ids = np.zeros((1, 8), np.int32)
    variables = jax.jit(lambda key: ReformerLM(config).init(key, ids))(jax.random.key(0))
    names = flat_shapes(variables)  # insertion order follows the flattened leaves
    leaves = {name: np.asarray(leaf) for name, leaf in zip(names, jax.tree.leaves(variables["params"]))}
    for spec in parameter_table(config):
        values = leaves[spec.name]
        assert values.dtype == np.float32, spec.name
        if spec.init is Init.ONES:
            np.testing.assert_array_equal(values, 1.0, err_msg=spec.name)
        elif spec.init is Init.ZEROS:
            np.testing.assert_array_equal(values, 0.0, err_msg=spec.name)
        else:
            # Every normal table has at least 150 entries, so its sample std is within 25% of the target.
            assert abs(values.std() / config.initializer_std - 1.0) < 0.25, (spec.name, values.std())
            assert abs(values.mean()) < 3 * config.initializer_std / np.sqrt(values.size) + 1e-3, spec.name


# ------------------------------------------------------------------ causality


def largest_change_before(config, variables, ids, rotations, positions):
    """Largest change of any logit before t when token t alone changes, over the given t."""
    before = np.asarray(model_output(config, variables, ids, rotations=rotations).logits)
    worst = 0.0
    for t in positions:
        changed = ids.copy()
        changed[:, t] = (changed[:, t] + 1) % config.vocab_size
        after = np.asarray(model_output(config, variables, changed, rotations=rotations).logits)
        assert not np.array_equal(after[:, t:], before[:, t:])
        worst = max(worst, float(np.abs(after[:, :t] - before[:, :t]).max()) if t else 0.0)
    return worst


def test_causality_bit_identical_without_lsh(float64):
    """Changing token t leaves every logit before t bit-identical."""
    config = make_config(attention_layers=("full", "local"))
    variables = random_params(config, dtype=np.float64)
    ids = random_ids(config, 2, 32)
    assert largest_change_before(config, variables, ids, None, range(32)) == 0.0


def test_causality_through_lsh(float64):
    """Through LSH layers a later token changes earlier logits by float64 round-off at most.

    Earlier queries see exactly the same keys, but a later token's bucket can
    shift where they sit in the chunk window, which reorders the sums: the
    results agree to the last few bits, not bit for bit.
    """
    config = make_config(attention_layers=("local", "lsh", "lsh"))
    variables = random_params(config, dtype=np.float64)
    ids = random_ids(config, 2, 32)
    worst = largest_change_before(config, variables, ids, portable_rotations(config, 11), range(32))
    print(f"largest change before t through LSH: {worst:.3g}")
    assert worst < 1e-12


def test_trax_chunk_window_leaks_future_tokens(float64):
    """The Trax and Hugging Face window (any bucket in the chunk) is not causal; this is why it is not the default."""
    config = make_config(attention_layers=("lsh", "lsh"), lsh_same_bucket_only=False)
    variables = random_params(config, dtype=np.float64)
    ids = random_ids(config, 2, 32)
    worst = largest_change_before(config, variables, ids, portable_rotations(config, 11), range(32))
    print(f"largest change before t in the Trax window: {worst:.3g}")
    assert worst > 1e-6


# -------------------------------------------------------------------- padding


@pytest.mark.parametrize("causal", [True, False])
def test_padding_invariance(causal):
    """What sits in padded positions never changes the outputs at real positions."""
    config = make_config(
        attention_layers=("lsh", "local", "full"), causal=causal,
        lsh_chunks_after=0 if causal else 1, local_chunks_after=0 if causal else 1,
    )
    variables = random_params(config)
    ids = random_ids(config, 2, 32)
    mask = np.ones((2, 32), dtype=bool)
    mask[0, 20:] = False
    mask[1, 9:12] = False  # a masked run in the middle
    mask[1, 27:] = False
    rotations = portable_rotations(config, 2)
    reference = np.asarray(model_output(config, variables, ids, mask, rotations).logits)
    for seed in range(3):
        noisy = ids.copy()
        noisy[~mask] = np.random.default_rng(seed).integers(0, 37, int((~mask).sum()))
        logits = np.asarray(model_output(config, variables, noisy, mask, rotations).logits)
        np.testing.assert_array_equal(logits[mask], reference[mask])


def test_one_params_tree_serves_two_shapes_under_jit():
    """29 tokens run as 32 with 3 masked tail positions; they equal an explicit pad, and the trim restores 29."""
    config = make_config(attention_layers=("lsh", "local"))
    variables = random_params(config)
    ids = random_ids(config, 2, 29, seed=1)
    rotations = portable_rotations(config, 4)
    output = model_output(config, variables, ids, None, rotations)
    assert output.logits.shape == (2, 29, 37)
    assert output.buckets[0].shape == (2, 3, 2, 32)  # buckets keep the padded length
    padded = np.pad(ids, ((0, 0), (0, 3)), constant_values=config.pad_token_id)
    mask = np.ones((2, 32), dtype=bool)
    mask[:, 29:] = False
    explicit = model_output(config, variables, padded, mask, rotations).logits
    np.testing.assert_array_equal(output.logits, explicit[:, :29])


# --------------------------------------------------------------- dtypes, loss


def test_float32_and_float64_agree():
    config = make_config()
    ids = random_ids(config, 2, 16)
    rotations = portable_rotations(config, 0)
    variables32 = random_params(config, dtype=np.float32)
    out32 = model_output(config, variables32, ids, None, rotations)
    assert out32.logits.dtype == jnp.float32
    with jax.enable_x64(True):
        variables64 = random_params(config, dtype=np.float64)
        # Shared buckets: this compares arithmetic only (float32 may hash a near-tie differently).
        out64 = model_output(config, variables64, ids, None, None, out32.buckets)
        assert out64.logits.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out32.logits), np.asarray(out64.logits), rtol=1e-4, atol=1e-4)


def test_loss_skips_ignore_index(float64):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 5, 7)))
    labels = rng.integers(0, 7, (2, 5))
    labels[0, 2] = labels[1, 4] = IGNORE_INDEX
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    expected = [-log_probs[b, t - 1, labels[b, t]] for b in range(2) for t in range(1, 5) if labels[b, t] != IGNORE_INDEX]
    np.testing.assert_allclose(next_token_loss(logits, jnp.asarray(labels)), np.mean(expected), rtol=1e-12)
    assert np.isnan(next_token_loss(logits, jnp.full((2, 5), IGNORE_INDEX)))


def test_tied_embeddings_use_token_matrix():
    """The tied head has no kernel of its own, and the loss gradient reaches the token embedding through it."""
    config = make_config(attention_layers=("local",), tie_embeddings=True)
    variables = random_params(config)
    assert set(variables["params"]["lm_head"]) == {"bias"}
    ids = random_ids(config, 1, 16)
    loss, grads = loss_and_grads(config, variables, ids, ids)
    assert np.isfinite(loss)
    assert np.abs(np.asarray(grads["params"]["embeddings"]["token"]["embedding"])).max() > 0


# ----------------------------------------------------------------- randomness


def test_native_rotations_follow_hash_key():
    config = make_config()
    model = ReformerLM(config)
    variables = random_params(config)
    ids = random_ids(config, 1, 32)

    @jax.jit
    def hashed(key):
        return model.apply(variables, ids, rngs={"hash": key})

    first, again, other = hashed(jax.random.key(1)), hashed(jax.random.key(1)), hashed(jax.random.key(2))
    np.testing.assert_array_equal(first.logits, again.logits)
    np.testing.assert_array_equal(first.buckets[0], again.buckets[0])
    assert not np.array_equal(first.buckets[0], other.buckets[0])
    with pytest.raises(ValueError, match="neither rotations nor a 'hash' key"):
        model.apply(variables, ids)


def test_dropout_only_when_not_deterministic():
    config = make_config(attention_layers=("lsh",), hidden_dropout=0.1, attention_dropout=0.2, ff_dropout=0.1)
    model = ReformerLM(config)
    variables = random_params(config)
    ids = random_ids(config, 2, 16)
    rotations = portable_rotations(config, 0)

    @functools.partial(jax.jit, static_argnums=1)
    def logits(key, deterministic):
        rngs = {"dropout": key}
        return model.apply(variables, ids, rotations=rotations, deterministic=deterministic, rngs=rngs).logits

    train = logits(jax.random.key(0), False)
    np.testing.assert_array_equal(logits(jax.random.key(0), False), train)
    assert not np.array_equal(logits(jax.random.key(1), False), train)
    evaluation = logits(jax.random.key(0), True)
    np.testing.assert_array_equal(logits(jax.random.key(1), True), evaluation)  # the key is ignored
    assert not np.array_equal(evaluation, train)


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def small_model():
    config = make_config()
    return ReformerLM(config), random_params(config), portable_rotations(config, 0)


@pytest.mark.parametrize(
    "ids, error, words",
    [
        (np.array([[1, 2, 37]]), ValueError, ["token id 37", "[0, 37)"]),
        (np.array([[1, -1, 3]]), ValueError, ["token id -1"]),
        (np.array([1, 2, 3]), ValueError, ["shape (3,)", "rank 2", "input_ids[None]"]),
        (np.array([[1.0, 2.0]], np.float32), TypeError, ["float32", ".astype(jnp.int32)"]),
        (np.zeros((1, 65), np.int32), ValueError, ["length 65", "max_length=64"]),
        ([[1, 2, 3]], TypeError, ["jax.Array or numpy array", "list"]),
    ],
)
def test_bad_input_ids(small_model, ids, error, words):
    model, variables, rotations = small_model
    with pytest.raises(error) as raised:
        model.apply(variables, ids if isinstance(ids, list) else jnp.asarray(ids), rotations=rotations)
    for word in words:
        assert word in str(raised.value)


def test_bad_mask_rotations_and_buckets(small_model):
    model, variables, rotations = small_model
    ids = random_ids(model.config, 2, 16)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 15\)"):
        model.apply(variables, ids, np.ones((2, 15), bool), rotations=rotations)
    with pytest.raises(TypeError, match="attention_mask has dtype float32"):
        model.apply(variables, ids, np.ones((2, 16), np.float32), rotations=rotations)
    with pytest.raises(ValueError, match="rotations has 1 entries"):
        model.apply(variables, ids, rotations=[None])
    with pytest.raises(ValueError, match=r"rotations\[0\] has shape \(3, 10, 2, 3\)"):
        model.apply(variables, ids, rotations=[np.zeros((3, 10, 2, 3)), None])
    with pytest.raises(ValueError, match=r"buckets\[0\] has shape \(2, 3, 2, 15\)"):
        model.apply(variables, ids, rotations=rotations, buckets=[np.zeros((2, 3, 2, 15), np.int32), None])


def test_token_range_unchecked_under_jit():
    """Under jit the ids are abstract, so an out-of-range id is not rejected (the embedding lookup clamps it)."""
    config = make_config(attention_layers=("local",))
    model, variables = ReformerLM(config), random_params(config)
    ids = np.array([[1, 2, 37, 4]], np.int32)
    with pytest.raises(ValueError, match="token id 37"):
        model.apply(variables, ids)
    logits = jax.jit(lambda ids: model.apply(variables, ids).logits)(ids)
    assert logits.shape == (1, 4, 37)
