"""Early warning that the JAX and PyTorch models compute the same function.

The torch model's weights are copied into a JAX parameter tree through the
canonical parameter table, which sets every canonical name once and reads
every torch tensor once. Both models then get the same ids and
`portable_rotations`. In float64 their buckets must be equal, and their
logits, losses and gradients must agree to rounding. Only the tests import
torch; `reformer_jax` never does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reformer_spec import ReformerConfig, parameter_table, portable_rotations
from reformer_jax import IGNORE_INDEX
from reformer_jax import ReformerLM as JaxReformerLM
from reformer_torch import ReformerLM as TorchReformerLM

from tests.jax.helpers import assert_trees_close, flax_path, make_config, max_abs_difference, random_ids, random_params


def torch_name(canonical: str) -> str:
    """Return the name of the torch parameter that contains canonical parameter `canonical`."""
    if canonical == "lm_head.kernel":
        return "lm_head.kernel.weight"  # the untied head is an nn.Linear named kernel
    prefix, leaf = canonical.rsplit(".", 1)
    if leaf in ("kernel", "scale", "embedding"):
        return f"{prefix}.weight"
    return canonical  # biases, axial_N and position_table keep their names


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
        for key in flax_path(spec.name)[:-1]:
            node = node.setdefault(key, {})
        node[flax_path(spec.name)[-1]] = jnp.asarray(value, dtype=jnp.float64)
    assert not unread, f"torch tensors not in the canonical table: {sorted(unread)}"
    return {"params": params}


def input_axes(spec) -> int:
    """Return how many leading axes of a canonical kernel are input axes (the output projection has two)."""
    return 2 if spec.name.endswith("output.kernel") else 1


def jax_grads_by_torch_name(grads: dict, config: ReformerConfig) -> dict[str, np.ndarray]:
    """Re-key JAX gradients by torch parameter name, in torch layout."""
    out = {}
    for spec in parameter_table(config):
        leaf = grads["params"]
        for key in flax_path(spec.name):
            leaf = leaf[key]
        leaf = np.asarray(leaf)
        if spec.kind == "kernel":
            inputs = int(np.prod(spec.shape[: input_axes(spec)]))
            leaf = leaf.reshape(inputs, -1).T  # (in..., out...) -> torch (out, in)
        out[torch_name(spec.name)] = leaf
    return out


CASES = {
    "causal_axial_untied_reversible": dict(
        attention_layers=("lsh", "local", "full", "lsh"), n_buckets=(2, 4), n_hashes=2, ff_chunk_size=8
    ),
    "bidirectional_learned_tied_plain": dict(
        attention_layers=("local", "lsh", "full"),
        causal=False,
        lsh_chunks_after=1,
        local_chunks_after=1,
        n_hashes=3,
        n_buckets=6,
        lsh_same_bucket_only=False,
        positions="learned",
        tie_embeddings=True,
        activation="gelu_tanh",
        reversible=False,
    ),
}


def build_pair(case: str) -> tuple[ReformerConfig, TorchReformerLM, dict]:
    config = make_config(**CASES[case])
    torch.manual_seed(0)
    torch_model = TorchReformerLM(config).double().eval()
    # Nonzero norms and biases, so that a transposed or misplaced one shows up.
    with torch.no_grad():
        for name, parameter in torch_model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return config, torch_model, torch_to_jax_params(torch_model, config)


@functools.partial(jax.jit, static_argnums=0)
def jax_loss_and_grads(config, variables, ids, mask, labels, rotations):
    def loss(variables):
        output = JaxReformerLM(config).apply(variables, ids, mask, labels, rotations=rotations)
        return output.loss, output

    return jax.value_and_grad(loss, has_aux=True)(variables)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_gradients_match_torch(case, float64):
    config, torch_model, variables = build_pair(case)
    ids = random_ids(config, 2, 21, seed=3)  # padded to 24 inside both models
    mask = np.ones_like(ids, dtype=bool)
    mask[0, 17:] = False  # trailing padding in one example
    mask[1, 5] = False  # a masked position in the middle of the other
    labels = ids.copy()
    labels[0, :4] = IGNORE_INDEX
    rotations = portable_rotations(config, seed=7)

    expected = torch_model(
        torch.from_numpy(ids).long(), torch.from_numpy(mask), torch.from_numpy(labels).long(), rotations=rotations
    )
    torch_loss = expected.loss
    assert torch_loss.dtype == torch.float64
    torch_loss.backward()
    torch_grads = {name: p.grad.numpy() for name, p in torch_model.named_parameters()}

    (jax_loss, actual), grads = jax_loss_and_grads(config, variables, ids, mask, labels, rotations)

    for layer, (mine, theirs) in enumerate(zip(actual.buckets, expected.buckets)):
        if theirs is None:
            assert mine is None, f"layer {layer}: JAX returned buckets for a non-LSH layer"
        else:
            np.testing.assert_array_equal(np.asarray(mine), theirs.numpy(), err_msg=f"layer {layer} buckets")
    assert actual.logits.dtype == jnp.float64
    difference = max_abs_difference(actual.logits, expected.logits.detach().numpy())
    print(f"{case}: max abs logit difference {difference:.3e}")
    assert difference <= 1e-10, f"max abs logit difference {difference:.3e}"
    assert abs(float(jax_loss) - torch_loss.item()) <= 1e-12
    assert_trees_close(jax_grads_by_torch_name(grads, config), torch_grads, rtol=1e-8, atol=1e-12)


BAD_INPUTS = {
    # name: (input_ids, attention_mask), each invalid in one way
    "out_of_range": (np.array([[1, 2, 37, 4]], np.int32), None),
    "negative_id": (np.array([[1, -1, 3]], np.int32), None),
    "rank_1": (np.array([1, 2, 3], np.int32), None),
    "float_ids": (np.array([[1.0, 2.0]], np.float32), None),
    "too_long": (np.zeros((1, 65), np.int32), None),
    "wrong_mask_shape": (np.ones((2, 9), np.int32), np.ones((2, 8), bool)),
    "float_mask": (np.ones((2, 9), np.int32), np.ones((2, 9), np.float32)),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_errors_match_torch(name):
    """Each invalid input raises the same exception type and message in both models (dtype names aside)."""
    ids, mask = BAD_INPUTS[name]
    config = make_config()
    rotations = portable_rotations(config, 0)

    with pytest.raises((TypeError, ValueError)) as torch_error:
        TorchReformerLM(config)(torch.from_numpy(ids), None if mask is None else torch.from_numpy(mask), rotations=rotations)
    with pytest.raises((TypeError, ValueError)) as jax_error:
        JaxReformerLM(config).apply(random_params(config), jnp.asarray(ids), mask, rotations=rotations)

    assert jax_error.type is torch_error.type
    # Dtype names differ between frameworks ("torch.float32" against "float32").
    assert str(jax_error.value) == str(torch_error.value).replace("torch.", "")
