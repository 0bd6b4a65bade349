"""Early warning that the JAX and PyTorch models compute the same function.

The torch model's weights are copied into a JAX parameter tree through the
canonical parameter table (every canonical name set once, every torch tensor
read once), both models get the same ids and `portable_rotations`, and in
float64 their logits, buckets, losses and gradients must agree to rounding.
Only this test module imports torch; `reformer_jax` never does.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jax_testing import assert_trees_close, max_abs_difference, random_ids, small_config
from reformer_spec import ReformerConfig, parameter_table, portable_rotations
from reformer_jax import ReformerLM as JaxReformerLM
from reformer_torch import ReformerLM as TorchReformerLM


def torch_name(canonical: str) -> str:
    """The torch parameter that holds canonical parameter `canonical`."""
    if canonical == "lm_head.kernel":
        return "lm_head.kernel.weight"  # the untied head is an nn.Linear named kernel
    prefix, leaf = canonical.rsplit(".", 1)
    if leaf in ("kernel", "scale", "embedding"):
        return f"{prefix}.weight"
    return canonical  # biases, axial_N and position_table keep their names


def jax_path(canonical: str) -> tuple[str, ...]:
    """The key path of canonical parameter `canonical` in the Flax params tree."""
    return tuple(re.sub(r"^layers\.(\d+)\.", r"layers_\1.", canonical).split("."))


def torch_to_jax_params(model: TorchReformerLM, config: ReformerConfig) -> dict:
    """Copy every torch parameter into a float64 Flax params tree, by the canonical table."""
    torch_tensors = dict(model.named_parameters())
    unread = set(torch_tensors)
    params: dict = {}
    for spec in parameter_table(config):
        name = torch_name(spec.name)
        assert name in unread, f"{spec.name}: torch tensor {name} is missing or was already read"
        unread.discard(name)
        value = torch_tensors[name].detach().numpy()
        if spec.kind == "kernel":
            # torch Linear stores (out, in); canonical kernels are (in..., out...), head-major (H, K).
            value = value.T.reshape(spec.shape)
        assert value.shape == spec.shape, f"{spec.name}: torch {name} gives {value.shape}, canonical {spec.shape}"
        node = params
        for key in jax_path(spec.name)[:-1]:
            node = node.setdefault(key, {})
        node[jax_path(spec.name)[-1]] = jnp.asarray(value, dtype=jnp.float64)
    assert not unread, f"torch tensors not in the canonical table: {sorted(unread)}"
    return {"params": params}


def input_axes(spec) -> int:
    """How many leading axes of a canonical kernel are input axes (the output projection has two)."""
    return 2 if spec.name.endswith("output.kernel") else 1


def jax_grads_by_torch_name(grads: dict, config: ReformerConfig) -> dict[str, np.ndarray]:
    """Re-key JAX gradients by torch parameter name, in torch layout."""
    out = {}
    for spec in parameter_table(config):
        leaf = grads["params"]
        for key in jax_path(spec.name):
            leaf = leaf[key]
        leaf = np.asarray(leaf)
        if spec.kind == "kernel":
            inputs = int(np.prod(spec.shape[: input_axes(spec)]))
            leaf = leaf.reshape(inputs, -1).T  # (in..., out...) -> torch (out, in)
        out[torch_name(spec.name)] = leaf
    return out


CASES = {
    "causal_axial_untied": dict(
        attention_layers=("lsh", "local", "full", "lsh"), n_buckets=(2, 4), n_hashes=2, ff_chunk_size=8
    ),
    "bidirectional_learned_tied": dict(
        attention_layers=("local", "lsh", "full"),
        causal=False,
        lsh_chunks_after=1,
        local_chunks_after=1,
        n_hashes=3,
        n_buckets=6,
        positions="learned",
        tie_embeddings=True,
        activation="gelu_tanh",
    ),
    "plain_autodiff_gelu": dict(attention_layers=("lsh", "full"), reversible=False, n_hashes=1, activation="gelu"),
}


def build_pair(case: str) -> tuple[ReformerConfig, TorchReformerLM, dict]:
    config = small_config(**CASES[case])
    torch.manual_seed(0)
    torch_model = TorchReformerLM(config).double().eval()
    # Nonzero norms and biases, so that a transposed or misplaced one shows up.
    with torch.no_grad():
        for name, parameter in torch_model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return config, torch_model, torch_to_jax_params(torch_model, config)


def inputs(config: ReformerConfig) -> tuple[np.ndarray, np.ndarray]:
    ids = random_ids(config, 2, 21, seed=3)
    mask = np.ones_like(ids, dtype=bool)
    mask[0, 17:] = False  # trailing padding in one example
    mask[1, 5] = False  # a masked position in the middle of the other
    return ids, mask


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_torch(case, float64):
    config, torch_model, params = build_pair(case)
    ids, mask = inputs(config)
    rotations = portable_rotations(config, seed=7)

    with torch.no_grad():
        expected = torch_model(torch.from_numpy(ids).long(), torch.from_numpy(mask), rotations=rotations)
    actual = JaxReformerLM(config).apply(params, ids, mask, rotations=rotations)

    for layer, (mine, theirs) in enumerate(zip(actual.buckets, expected.buckets)):
        if theirs is None:
            assert mine is None, f"layer {layer}: JAX returned buckets for a non-LSH layer"
        else:
            np.testing.assert_array_equal(np.asarray(mine), theirs.numpy(), err_msg=f"layer {layer} buckets")
    difference = max_abs_difference(actual.logits, expected.logits.numpy())
    assert actual.logits.dtype == jnp.float64
    assert difference <= 1e-10, f"max abs logit difference {difference:.3e}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_match_torch(case, float64):
    config, torch_model, params = build_pair(case)
    ids, _ = inputs(config)
    labels = ids.copy()
    labels[0, :4] = -100  # IGNORE_INDEX
    rotations = portable_rotations(config, seed=7)

    # The loss is recomputed here in float64, because torch's next_token_loss casts logits to float32.
    logits = torch_model(torch.from_numpy(ids).long(), rotations=rotations).logits
    vocab = config.vocab_size
    torch_loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), torch.from_numpy(labels[:, 1:]).long().reshape(-1), ignore_index=-100
    )
    torch_loss.backward()
    torch_grads = {name: p.grad.numpy() for name, p in torch_model.named_parameters()}

    def loss(params):
        return JaxReformerLM(config).apply(params, ids, labels=labels, rotations=rotations).loss

    jax_loss, grads = jax.value_and_grad(loss)(params)
    assert abs(float(jax_loss) - float(torch_loss)) <= 1e-12
    assert_trees_close(jax_grads_by_torch_name(grads, config), torch_grads, rtol=1e-8, atol=1e-12)


def bad_inputs():
    """(case name, JAX input_ids, JAX mask, torch input_ids, torch mask) for each invalid input."""
    config = small_config()
    ids = random_ids(config, 2, 9)
    out_of_range = ids.copy()
    out_of_range[1, 3] = config.vocab_size
    too_long = random_ids(config, 1, config.max_length + 1)
    wrong_mask = np.ones((2, 8), dtype=bool)
    return [
        ("out_of_range", out_of_range, None),
        ("negative_id", -ids - 1, None),
        ("rank_1", ids[0], None),
        ("float_ids", ids.astype(np.float32), None),
        ("too_long", too_long, None),
        ("wrong_mask_shape", ids, wrong_mask),
        ("float_mask", ids, np.ones(ids.shape, np.float32)),
    ]


@pytest.mark.parametrize("name, ids, mask", bad_inputs(), ids=[case[0] for case in bad_inputs()])
def test_errors_match_torch(name, ids, mask):
    config = small_config()
    params = JaxReformerLM(config).init(
        jax.random.key(0), random_ids(config, 1, 8), rotations=portable_rotations(config, 0)
    )
    torch_model = TorchReformerLM(config).eval()

    with pytest.raises((TypeError, ValueError)) as torch_error:
        torch_model(torch.from_numpy(ids), None if mask is None else torch.from_numpy(mask))
    with pytest.raises((TypeError, ValueError)) as jax_error:
        JaxReformerLM(config).apply(params, jnp.asarray(ids), mask, rotations=portable_rotations(config, 0))

    assert jax_error.type is torch_error.type
    # Dtype names differ between frameworks ("torch.float32" against "float32").
    assert str(jax_error.value) == str(torch_error.value).replace("torch.", "")
