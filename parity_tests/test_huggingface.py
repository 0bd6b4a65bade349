"""The installed Hugging Face Reformer as an oracle for both of our models.

Weights travel canonical -> `save_huggingface` -> `from_pretrained`, so the
exporter is tested by the same runs. Both sides hash with the same rotations:
ours take `rotations=`, Hugging Face's `LSHSelfAttention._hash_vectors`
draws them with `torch.randn`, which is replaced for the length of that one
call. Hugging Face backpropagates only in train() mode, so every gradient run
is in train() mode with every drop rate 0, at a length the training path
accepts (a multiple of the chunk lengths, the whole axial grid).

Compared: logits, and the gradient of sum(logits * C) for a fixed random C
with respect to every parameter, the token embedding table included. Our
configs use `lsh_same_bucket_only=False`, Hugging Face's chunk window.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the Hugging Face oracle needs the transformers package")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from reformer_spec.config import AttentionKind, ReformerConfig  # noqa: E402
from reformer_spec.hashing import portable_rotations  # noqa: E402
from reformer_spec.tolerances import tolerance  # noqa: E402
from weights_convert.arrays import torch_to_numpy  # noqa: E402
from weights_convert.compare import Difference, compare_arrays, compare_trees, worst  # noqa: E402
from weights_convert.convert import canonical_to_flax_params, cast_canonical, flax_params_to_canonical, load_into_torch  # noqa: E402
from weights_convert.errors import ConversionError  # noqa: E402
from weights_convert.huggingface import (  # noqa: E402
    HF_DEFAULTS,
    config_from_huggingface,
    config_to_huggingface,
    huggingface_state_to_canonical,
    load_huggingface,
    save_huggingface,
)
from weights_convert.mapping import weight_rules  # noqa: E402
from weights_convert.parity import full_precision  # noqa: E402

from parity_tests.helpers import random_canonical  # noqa: E402

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def hf_config(**changes) -> ReformerConfig:
    """A small config Hugging Face can train on: distinct sizes, LSH chunk 8, local chunk 6, length 24 = 4 * 6."""
    base = dict(
        vocab_size=37, d_model=30, n_heads=3, d_head=10, d_ff=22, attention_layers=("lsh", "local", "lsh"),
        lsh_chunk_length=8, local_chunk_length=6, n_buckets=6, n_hashes=2, lsh_same_bucket_only=False,
        axial_shape=(4, 6), axial_dims=(14, 16), max_length=24, activation="gelu_tanh",
    )
    base.update(changes)
    return ReformerConfig(**base)


# ------------------------------------------------------------------ the oracle


def load_hf_model(config: ReformerConfig, canonical: dict, folder: Path, dtype: str):
    """Export `canonical` with `save_huggingface` and load it back with `from_pretrained`, in `dtype`."""
    save_huggingface(config, canonical, folder)
    model_class = transformers.ReformerModelWithLMHead if config.causal else transformers.ReformerForMaskedLM
    model = model_class.from_pretrained(folder, dtype=TORCH_DTYPES[dtype])
    if dtype == "float64":
        # transformers 5.25 creates the axial tables as float32 parameters, and
        # from_pretrained(dtype=float64) keeps them so, rounding the loaded values.
        # Cast the whole model, then copy the file's float64 values in again.
        model.to(torch.float64)
        model.load_state_dict(safetensors.torch.load_file(folder / "model.safetensors"), strict=True)
    return model


@contextlib.contextmanager
def injected_rotations(model, config: ReformerConfig, rotations: list):
    """Make every LSH layer of the Hugging Face `model` hash with `rotations` instead of `torch.randn`."""
    originals = []
    for index, kind in enumerate(config.attention_layers):
        if kind is not AttentionKind.LSH:
            continue
        attention = model.reformer.encoder.layers[index].attention.self_attention
        rotation = torch.as_tensor(rotations[index])
        draw = attention._hash_vectors

        def hash_vectors(*args, draw=draw, rotation=rotation, **kwargs):
            def fixed_randn(shape, *, device=None, dtype=None, **_):
                assert tuple(shape) == tuple(rotation.shape), (shape, rotation.shape)
                return rotation.to(device=device, dtype=dtype)

            with mock.patch.object(torch, "randn", fixed_randn):
                return draw(*args, **kwargs)

        attention._hash_vectors = hash_vectors
        originals.append(attention)
    try:
        yield
    finally:
        for attention in originals:
            del attention._hash_vectors  # back to the class's method


@dataclasses.dataclass
class Run:
    """One model's logits and (when requested) canonical gradients of sum(logits * C)."""

    logits: np.ndarray
    gradients: dict[str, np.ndarray] | None


def run_huggingface(model, config, ids, mask, rotations, cotangent, train: bool) -> Run:
    model.train(train)
    model.zero_grad()
    ids_t = torch.as_tensor(ids)
    mask_t = None if mask is None else torch.as_tensor(mask, dtype=torch.long)
    with injected_rotations(model, config, rotations), torch.set_grad_enabled(train):
        logits = model(input_ids=ids_t, attention_mask=mask_t).logits
        if not train:
            return Run(torch_to_numpy(logits), None)
        (logits * torch.as_tensor(cotangent, dtype=logits.dtype)).sum().backward()
    state = {name: torch_to_numpy(p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
    return Run(torch_to_numpy(logits.detach()), huggingface_state_to_canonical(config, state, "Hugging Face gradients"))


def run_torch(config, weights, ids, mask, rotations, cotangent, dtype: str, train: bool) -> Run:
    from reformer_torch import ReformerLM

    model = ReformerLM(config).to(TORCH_DTYPES[dtype])
    load_into_torch(model, weights)
    model.train(train)
    mask_t = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    with torch.set_grad_enabled(train):
        logits = model(torch.as_tensor(ids), mask_t, rotations=rotations).logits
        if not train:
            return Run(torch_to_numpy(logits), None)
        (logits * torch.as_tensor(cotangent, dtype=logits.dtype)).sum().backward()
    grads = {name: torch_to_numpy(p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
    return Run(torch_to_numpy(logits.detach()), {rule.spec.name: rule.torch_to_canonical(grads[rule.torch_name]) for rule in weight_rules(config)})


def run_jax(config, weights, ids, mask, rotations, cotangent, train: bool) -> Run:
    from reformer_jax import ReformerLM

    model = ReformerLM(config)
    params = canonical_to_flax_params(config, weights)
    jax_mask = None if mask is None else jnp.asarray(mask)
    jax_rotations = [None if r is None else jnp.asarray(r, dtype=weights["lm_head.bias"].dtype) for r in rotations]

    def objective(p):
        logits = model.apply({"params": p}, jnp.asarray(ids), jax_mask, rotations=jax_rotations).logits
        return jnp.sum(logits * cotangent), logits

    if not train:
        return Run(np.asarray(objective(params)[1]), None)
    (_, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return Run(np.asarray(logits), flax_params_to_canonical(config, grads))


@dataclasses.dataclass
class OracleReport:
    """Our models against Hugging Face: the logits difference and every parameter's gradient difference, per side."""

    logits: dict[str, Difference]
    gradients: dict[str, list[Difference]]

    def lines(self) -> list[str]:
        out = [f"{side} logits: {diff}" for side, diff in self.logits.items()]
        out += [f"{side} gradients, worst: {worst(diffs)}" for side, diffs in self.gradients.items()]
        return out


def compare_with_huggingface(
    config, folder, *, length, batch=2, mask=None, dtype="float64", reference_dtype=None, train=True, seed=0,
    sides=("torch", "jax"),
) -> OracleReport:
    """Run Hugging Face, our PyTorch model and our JAX model on the same weights, inputs and rotations.

    Our models run in `dtype`, Hugging Face in `reference_dtype` (default: the
    same) on the same values, so a float32 run can be measured against an
    exact float64 reference. `sides` names which of our models run.
    """
    reference_dtype = reference_dtype or dtype
    np_dtype = np.float64 if dtype == "float64" else np.float32
    weights = cast_canonical(random_canonical(config, seed=seed), np_dtype)
    generator = np.random.default_rng(seed + 1)
    ids = generator.integers(0, config.vocab_size, size=(batch, length))
    cotangent = generator.standard_normal((batch, length, config.vocab_size)).astype(np_dtype)
    rotations = [None if r is None else r.astype(np_dtype) for r in portable_rotations(config, seed + 2)]

    # The reference gets the same values, widened when it runs in float64.
    ref_np_dtype = np.float64 if reference_dtype == "float64" else np.float32
    ref_weights = cast_canonical(weights, ref_np_dtype)
    ref_rotations = [None if r is None else r.astype(ref_np_dtype) for r in rotations]
    with full_precision(reference_dtype):
        hf_model = load_hf_model(config, ref_weights, folder, reference_dtype)
        reference = run_huggingface(hf_model, config, ids, mask, ref_rotations, cotangent.astype(ref_np_dtype), train)
    ours = {}
    with full_precision(dtype):
        if "torch" in sides:
            ours["torch"] = run_torch(config, weights, ids, mask, rotations, cotangent, dtype, train)
        if "jax" in sides:
            ours["jax"] = run_jax(config, weights, ids, mask, rotations, cotangent, train)
    logits = {side: compare_arrays(f"{side} logits", reference.logits, run.logits) for side, run in ours.items()}
    gradients = {}
    if train:
        gradients = {side: compare_trees(reference.gradients, run.gradients) for side, run in ours.items()}
    report = OracleReport(logits, gradients)
    print(f"{dtype} against Hugging Face in {reference_dtype}:")
    print("\n".join(report.lines()))
    return report


def assert_agrees(report: OracleReport, dtype: str) -> None:
    for side, diff in report.logits.items():
        assert diff.within(tolerance(dtype, "output")), f"{side}: {diff}"
    for side, diffs in report.gradients.items():
        for diff in diffs:
            assert diff.within(tolerance(dtype, "gradient")), f"{side}: {diff}"


def padding_mask(batch: int, length: int) -> np.ndarray:
    """Ones, with the last 5 positions of the second example padded."""
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1, length - 5 :] = 0
    return mask


# ------------------------------------------------------------- oracle cases

CAUSAL_STACK = dict(attention_layers=("lsh", "local", "lsh"), causal=True)
BIDIRECTIONAL_STACK = dict(attention_layers=("local", "lsh"), causal=False, lsh_chunks_after=1, local_chunks_after=1)


# CI compares only our PyTorch model with Hugging Face, because the JAX model's
# first run compiles every operation (about 45 s on a 2-core machine shared with
# other jobs), and CI checks JAX against PyTorch elsewhere. The slow cases run both.


def test_causal_stack_float64(tmp_path):
    config = hf_config(**CAUSAL_STACK)
    report = compare_with_huggingface(config, tmp_path / "hf", length=24, mask=padding_mask(2, 24), sides=("torch",))
    assert_agrees(report, "float64")


def test_bidirectional_stack_float64(tmp_path):
    """A mask of ones: Hugging Face then adds no padding bucket, and ours puts no position in it."""
    config = hf_config(**BIDIRECTIONAL_STACK, n_buckets=(2, 4), n_hashes=4)
    mask = np.ones((2, 24), dtype=np.int64)
    report = compare_with_huggingface(config, tmp_path / "hf", length=24, mask=mask, sides=("torch",))
    assert_agrees(report, "float64")


def test_causal_stack_float32_against_float64(tmp_path):
    """Our float32 models against Hugging Face in float64; its own float32 run rounds (see the test below)."""
    report = compare_with_huggingface(
        hf_config(**CAUSAL_STACK), tmp_path / "hf", length=24, dtype="float32", reference_dtype="float64",
        sides=("torch",),
    )
    assert_agrees(report, "float32")


@pytest.mark.slow
@pytest.mark.parametrize("n_hashes", [1, 2, 4])
@pytest.mark.parametrize("n_buckets", [6, (2, 4)], ids=["buckets=6", "buckets=2x4"])
@pytest.mark.parametrize("stack", ["causal", "bidirectional"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_oracle_matrix_float64(tmp_path, n_hashes, n_buckets, stack, masked):
    layers = CAUSAL_STACK if stack == "causal" else BIDIRECTIONAL_STACK
    config = hf_config(**layers, n_hashes=n_hashes, n_buckets=n_buckets)
    mask = padding_mask(2, 24) if masked else None
    assert_agrees(compare_with_huggingface(config, tmp_path / "hf", length=24, mask=mask, seed=n_hashes), "float64")


@pytest.mark.slow
@pytest.mark.parametrize("n_hashes", [1, 4])
@pytest.mark.parametrize("stack", ["causal", "bidirectional"])
def test_oracle_float32_against_float64(tmp_path, n_hashes, stack):
    layers = CAUSAL_STACK if stack == "causal" else BIDIRECTIONAL_STACK
    config = hf_config(**layers, n_hashes=n_hashes)
    report = compare_with_huggingface(
        config, tmp_path / "hf", length=24, mask=padding_mask(2, 24), dtype="float32", reference_dtype="float64"
    )
    assert_agrees(report, "float32")


@pytest.mark.slow
def test_learned_positions_chunked_feed_forward(tmp_path):
    config = hf_config(**CAUSAL_STACK, positions="learned", ff_chunk_size=12, activation="relu")
    assert_agrees(compare_with_huggingface(config, tmp_path / "hf", length=24), "float64")


@pytest.mark.slow
def test_tied_embeddings_export(tmp_path):
    """A tied head is exported as an untied decoder [E, E], which gives the same logits."""
    config = hf_config(**CAUSAL_STACK, tie_embeddings=True)
    report = compare_with_huggingface(config, tmp_path / "hf", length=24, train=False)
    assert_agrees(report, "float64")


# ------------------------------------------------------ where Hugging Face differs


@pytest.mark.slow
def test_eval_padding_matches(tmp_path):
    """In eval Hugging Face pads 21 tokens to 24 with a zero mask (so a padding bucket), as our models do."""
    config = hf_config(**CAUSAL_STACK)
    report = compare_with_huggingface(config, tmp_path / "hf", length=21, train=False)
    assert_agrees(report, "float64")


def test_short_sequence_path_agrees(tmp_path):
    """At L <= lsh_chunk_length Hugging Face skips hashing and attends to every key.

    Ours pads to one chunk and hashes. That chunk's window then contains every
    key of the sequence (twice with two rounds), which gives the same softmax.
    Measured: 4e-15 at L = 5 and L = 8, two rounds.
    """
    config = hf_config(attention_layers=("lsh",), n_hashes=2)
    for length in (5, 8):
        report = compare_with_huggingface(config, tmp_path / f"hf_{length}", length=length, train=False, sides=("torch",))
        assert_agrees(report, "float64")


@pytest.mark.slow
def test_huggingface_float32_rounds_self_only_rows(tmp_path):
    """Hugging Face's float32 run misses by 0.2% where ours does not.

    It normalises with exp(logit - logsumexp). A row whose allowed keys are
    only copies of the query itself (here the causal position 2 finds its own
    token from both rounds, both at the self-mask value -1e5) has logsumexp
    -1e5 + log 2, and float32 spacing near 1e5 is 2**-7, so the probabilities
    sum to 0.99784 instead of 1. Ours normalises by the sum. Measured: Hugging
    Face float32 against float64 2.2e-3 relative on logits; ours against
    Hugging Face float64 6e-7.
    """
    config = hf_config(**CAUSAL_STACK)
    own = compare_with_huggingface(config, tmp_path / "f64", length=24, dtype="float32", reference_dtype="float64", train=False, sides=("torch",))
    assert_agrees(own, "float32")
    against_f32 = compare_with_huggingface(config, tmp_path / "f32", length=24, dtype="float32", train=False, sides=("torch",))
    measured = against_f32.logits["torch"]
    assert not measured.within(tolerance("float32", "output")), measured
    assert measured.index[:2] == (0, 2), measured  # example 0, position 2


# ------------------------------------------------------ import and export


def test_defaults_match_installed_transformers():
    installed = transformers.ReformerConfig()
    for name, value in HF_DEFAULTS.items():
        actual = getattr(installed, name)
        assert (list(actual) if isinstance(actual, tuple) else actual) == value, name


def test_export_loads_bit_exact(tmp_path):
    config = hf_config(**CAUSAL_STACK, n_buckets=(2, 4))
    weights = random_canonical(config, seed=3, dtype=np.float32)
    save_huggingface(config, weights, tmp_path / "hf")
    model = transformers.ReformerModelWithLMHead.from_pretrained(tmp_path / "hf")
    state = {name: torch_to_numpy(tensor) for name, tensor in model.state_dict().items()}
    assert huggingface_state_to_canonical(config, state).keys() == weights.keys()
    for name, array in huggingface_state_to_canonical(config, state).items():
        assert np.array_equal(array, weights[name]), name
    hf = model.config
    assert (hf.is_decoder, hf.num_buckets, hf.layer_norm_eps, hf.hidden_act) == (True, [2, 4], 1e-6, "gelu_pytorch_tanh")
    assert (hf.lsh_attn_chunk_length, hf.local_attn_chunk_length, hf.axial_pos_shape) == (8, 6, (4, 6))


def test_import_of_save_pretrained(tmp_path):
    """A folder written by transformers itself (its config.json lists only non-default fields) imports exactly."""
    hf = transformers.ReformerConfig(
        vocab_size=41, hidden_size=28, num_attention_heads=2, attention_head_size=14, feed_forward_size=18,
        attn_layers=["local", "lsh"], is_decoder=True, num_buckets=[2, 6], num_hashes=3, lsh_attn_chunk_length=4,
        local_attn_chunk_length=8, axial_pos_shape=[4, 8], axial_pos_embds_dim=[12, 16], max_position_embeddings=32,
        hidden_act="gelu_new", layer_norm_eps=1e-6, hidden_dropout_prob=0.1, local_attention_probs_dropout_prob=0.0,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    model = transformers.ReformerModelWithLMHead(hf)
    with torch.no_grad():
        model.lm_head.decoder.bias.normal_()
    model.save_pretrained(tmp_path / "saved")
    config, canonical = load_huggingface(tmp_path / "saved")

    assert config.attention_layers == (AttentionKind.LOCAL, AttentionKind.LSH)
    assert (config.causal, config.n_buckets, config.n_hashes, config.lsh_same_bucket_only) == (True, (2, 6), 3, False)
    assert (config.lsh_chunk_length, config.local_chunk_length, config.axial_shape, config.axial_dims) == (4, 8, (4, 8), (12, 16))
    assert (config.activation.value, config.layer_norm_eps, config.pad_token_id) == ("gelu_tanh", 1e-6, 3)
    assert (config.hidden_dropout, config.ff_dropout, config.attention_dropout) == (0.1, 0.1, 0.0)
    state = {name: torch_to_numpy(tensor) for name, tensor in model.state_dict().items()}
    assert np.array_equal(canonical["lm_head.bias"], state["lm_head.decoder.bias"])  # the bias the logits use
    assert np.array_equal(canonical["embeddings.axial_1"], state["reformer.embeddings.position_embeddings.weights.1"][0])
    assert np.array_equal(
        canonical["layers.1.attention.query_key.kernel"],
        state["reformer.encoder.layers.1.attention.self_attention.query_key.weight"].T.reshape(28, 2, 14),
    )

    # Written back, the folder contains the same tensors under the same names.
    save_huggingface(config, canonical, tmp_path / "again")
    again = safetensors.torch.load_file(tmp_path / "again" / "model.safetensors")
    for name, tensor in model.state_dict().items():
        expected = state["lm_head.decoder.bias"] if name == "lm_head.bias" else state[name]
        assert np.array_equal(torch_to_numpy(again[name]), expected), name


def test_import_pytorch_bin(tmp_path):
    config = hf_config(**BIDIRECTIONAL_STACK)
    weights = random_canonical(config, seed=4, dtype=np.float32)
    save_huggingface(config, weights, tmp_path / "hf")
    folder = tmp_path / "hf"
    state = safetensors.torch.load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    loaded_config, loaded = load_huggingface(folder)
    assert loaded_config == config
    for name in weights:
        assert np.array_equal(loaded[name], weights[name]), name


def test_import_rejects_mismatched_weights(tmp_path):
    config = hf_config(**CAUSAL_STACK)
    weights = random_canonical(config, seed=4, dtype=np.float32)
    save_huggingface(config, weights, tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    state = safetensors.torch.load_file(path)

    extra = dict(state, **{"reformer.encoder.layers.9.attention.layer_norm.weight": torch.ones(30)})
    safetensors.torch.save_file(extra, path, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="does not use"):
        load_huggingface(tmp_path / "hf")

    short = {name: tensor for name, tensor in state.items() if not name.startswith("lm_head.decoder")}
    short.pop("lm_head.bias")
    safetensors.torch.save_file(short, path, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="no LM head"):
        load_huggingface(tmp_path / "hf")

    wrong = dict(state, **{"reformer.encoder.layer_norm.weight": torch.ones(31)})
    safetensors.torch.save_file(wrong, path, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"shape \(31,\) but the config expects \(60,\)"):
        load_huggingface(tmp_path / "hf")

    two_biases = dict(state, **{"lm_head.bias": state["lm_head.bias"] + 1})
    safetensors.torch.save_file(two_biases, path, metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="different non-zero values"):
        load_huggingface(tmp_path / "hf")


def test_import_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_huggingface(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_huggingface(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(config_to_huggingface(hf_config())))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        load_huggingface(tmp_path / "empty")


VALID_HF = config_to_huggingface(hf_config(**CAUSAL_STACK))


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(num_buckets=None), "num_buckets=None"),
        (dict(hash_seed=7), "hash_seed=7"),
        (dict(hidden_act="silu"), "hidden_act='silu'"),
        (dict(lsh_attention_probs_dropout_prob=0.1, local_attention_probs_dropout_prob=0.2), "attention_dropout"),
        (dict(lsh_num_chunks_after=1), "lsh_num_chunks_after=1"),
        (dict(attention_head_size=12), "attention_head_size=12"),
        (dict(lsh_attn_chunk_length=None), "lsh_attn_chunk_length=None"),
        (dict(num_buckets=5), "n_buckets=5"),
    ],
)
def test_import_rejects_unrepresentable_config(changes, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        config_from_huggingface({**VALID_HF, **changes})


def test_import_ignores_unused_attention_dropout():
    config = config_from_huggingface({**VALID_HF, "attn_layers": ["lsh"], "local_attention_probs_dropout_prob": 0.3})
    assert config.attention_dropout == VALID_HF["lsh_attention_probs_dropout_prob"]


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(lsh_same_bucket_only=True), "lsh_same_bucket_only=True"),
        (dict(attention_layers=("lsh", "full")), "'full'"),
        (dict(hidden_dropout=0.1, ff_dropout=0.0), "hidden_dropout=0.1"),
        (dict(axial_shape=(2, 3, 4), axial_dims=(10, 10, 10)), "axial_shape=(2, 3, 4)"),
    ],
)
def test_export_rejects_unrepresentable_config(tmp_path, changes, field):
    config = hf_config(**{**CAUSAL_STACK, **changes})
    with pytest.raises(ValueError, match=re.escape(field)):
        save_huggingface(config, random_canonical(config), tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_export_window_change_needs_consent(tmp_path):
    config = hf_config(**CAUSAL_STACK, lsh_same_bucket_only=True)
    save_huggingface(config, random_canonical(config), tmp_path / "hf", allow_window_change=True)
    loaded, _ = load_huggingface(tmp_path / "hf")
    assert loaded == config.replace(lsh_same_bucket_only=False)


def test_export_is_atomic(tmp_path):
    config = hf_config(**CAUSAL_STACK)
    weights = random_canonical(config, seed=1, dtype=np.float32)
    target = tmp_path / "hf"
    save_huggingface(config, weights, target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_huggingface(config, weights, target)

    broken = dict(weights)
    broken.pop("final_norm.scale")
    with pytest.raises(ConversionError, match="final_norm.scale"):
        save_huggingface(config, broken, target, overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf"]  # the old folder is untouched, no leftovers
    assert load_huggingface(target)[0] == config

    changed = {name: array + 1 for name, array in weights.items()}
    save_huggingface(config, changed, target, overwrite=True)
    assert np.array_equal(load_huggingface(target)[1]["final_norm.scale"], changed["final_norm.scale"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf"]
