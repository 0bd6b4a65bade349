"""The suite must catch real bugs: each deliberately broken variant has to fail parity."""

import numpy as np
import pytest

import weights_convert.parity as parity
from reformer_jax import lsh as jax_lsh
from reformer_torch.reversible import ReversibleStack

from parity_tests.helpers import make_config, random_canonical

# A square model: every projection is (30, 30) once heads are flattened, so a
# transposed kernel still has the right shape and only the numbers can tell.
CONFIG = make_config(attention_layers=("lsh", "local"), n_hashes=2)


def run_parity() -> parity.ParityReport:
    canonical = random_canonical(CONFIG, seed=4)
    ids = np.random.default_rng(8).integers(0, CONFIG.vocab_size, size=(2, 32))
    return parity.compare_frameworks(CONFIG, canonical, ids, seed=2, dtype="float64")


def break_flax_weights(monkeypatch, change):
    original = parity.canonical_to_flax_params

    def broken(config, canonical):
        canonical = dict(canonical)
        change(canonical)
        return original(config, canonical)

    monkeypatch.setattr(parity, "canonical_to_flax_params", broken)


def assert_fails(report: parity.ParityReport):
    failed = [row.name for row in report.rows if not row.passed]
    print(report.to_markdown())
    assert failed, "the broken variant passed parity"
    return failed


def test_unbroken_passes():
    report = run_parity()
    assert report.passed, report.to_markdown()


def test_transposed_projection_fails(monkeypatch):
    def transpose_value(canonical):
        name = "layers.0.attention.value.kernel"
        kernel = canonical[name]
        canonical[name] = kernel.reshape(30, 30).T.reshape(kernel.shape).copy()

    break_flax_weights(monkeypatch, transpose_value)
    assert "layer 0 (lsh)" in assert_fails(run_parity())


def test_flipped_head_sign_fails(monkeypatch):
    def flip_head(canonical):
        name = "layers.1.attention.output.kernel"
        kernel = canonical[name].copy()
        kernel[1] = -kernel[1]  # (H, K, D): head 1's contribution changes sign
        canonical[name] = kernel

    break_flax_weights(monkeypatch, flip_head)
    assert "layer 1 (local)" in assert_fails(run_parity())


def test_swapped_positions_fail(monkeypatch):
    original = jax_lsh.lsh_attention

    def swapped(*args, **kwargs):
        output = original(*args, **kwargs)  # (B, H, L, K)
        order = np.arange(output.shape[2])
        order[[3, 4]] = order[[4, 3]]
        return output[:, :, order]

    monkeypatch.setattr(jax_lsh, "lsh_attention", swapped)
    assert "layer 0 (lsh)" in assert_fails(run_parity())


def test_missing_self_mask_fails(monkeypatch):
    original = jax_lsh.attend

    def without_self_mask(*args, mask_self, **kwargs):
        return original(*args, mask_self=False, **kwargs)

    monkeypatch.setattr(jax_lsh, "attend", without_self_mask)
    assert "layer 0 (lsh)" in assert_fails(run_parity())


def test_dropped_layer_gradient_fails(monkeypatch):
    original = ReversibleStack.backward

    def drop_first_layer(ctx, grad_y1, grad_y2):
        grads = list(original(ctx, grad_y1, grad_y2))
        first_layer = {id(p) for p in ctx.layers[0].parameters()}
        parameters = [p for layer in ctx.layers for p in layer.parameters()]
        for offset, parameter in enumerate(parameters):
            if id(parameter) in first_layer:
                grads[6 + offset] = None
        return tuple(grads)

    monkeypatch.setattr(ReversibleStack, "backward", staticmethod(drop_first_layer))
    assert assert_fails(run_parity()) == ["loss and parameter gradients"]
