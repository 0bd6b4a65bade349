"""Trax's ReformerLM as an oracle for both our models, and the Trax checkpoint importer.

Trax 1.4.1 itself wrote the fixtures under `fixtures/trax/`, with
`make_trax_fixtures.py` run in its own environment. These tests read them
with `weights_convert.trax.load_trax` and need no Trax. Our models agree with
Trax's logits and gradients within the float32 tolerances of
`reformer_spec.tolerances` under these conditions:

* Input shift: Trax's ReformerLM begins with ShiftRight, so ours is fed
  [0] + ids[:-1] and compared with Trax fed ids.
* Config: `lsh_same_bucket_only=False` (Trax's chunk window),
  `layer_norm_eps=1e-6`, untied output matrix, and the same activation
  (Trax's default FastGelu is our `gelu_tanh`).
* Batch size 1, with Trax's rotations injected, because Trax draws rotations
  per example and head from keys in the layer state while our models share
  one rotation tensor across the batch.
* Dropout off: the fixtures were built with dropout 0 in eval mode.

Trax computed the fixtures in float64 from float32 weights. In float32 its
attention normalises by exp(logits - logsumexp), and near the -1e5
self-mask penalty a float32 log-sum-exp is rounded to 0.008. A row whose
only keys are copies of its own token (position 0 under the causal mask, when
its copy from another hash round lands in the chunk window) is then off by
up to about 1%, an estimate from that rounding. A float32 Trax run of the
`lsh_local` configuration differed from our models by 3.1e-3 there and by at
most 1.1e-6 everywhere else. Our models normalise by the sum and have no
such error, so they are compared in float32 and in float64 against the
float64 values, each within its own tolerances.

Before any arithmetic is compared, our buckets must equal the buckets Trax
stored, which also confirms that the rotations recomputed from Trax's state
are the ones Trax drew.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_spec.tolerances import tolerance
from weights_convert import ConversionError, cast_canonical
from weights_convert.compare import compare_arrays, worst
from weights_convert.parity import full_precision
from weights_convert.trax import (
    UnsafePickleError,
    load_trax,
    read_trax_checkpoint,
    safe_unpickle,
    trax_buckets_to_canonical,
    trax_rotations_to_canonical,
    trax_weights_to_canonical,
)

from parity_tests.helpers import random_canonical

FIXTURES = Path(__file__).parent / "fixtures" / "trax"
CASES = ["lsh_local", "one_round", "four_rounds_factorized", "axial"]
COMBINATIONS = [
    (name, framework, dtype) for name in CASES for framework in ("torch", "jax") for dtype in ("float32", "float64")
]
# CI compares one case in both frameworks. Compiling the JAX model costs about
# 15 s of CPU per case and dtype, so the other combinations are marked slow.
FAST = [("lsh_local", "torch", "float32"), ("lsh_local", "torch", "float64"), ("lsh_local", "jax", "float32")]
SLOW = [combination for combination in COMBINATIONS if combination not in FAST]


# ------------------------------------------------------------------ fixtures


class TraxCase:
    """One fixture folder: its config, arrays and checkpoint files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.provenance = json.loads((folder / "provenance.json").read_text())
        self.config = ReformerConfig.from_dict(self.provenance["reformer_config"])
        with np.load(folder / "arrays.npz") as arrays:
            self.arrays = dict(arrays)

    @property
    def gradient_list(self) -> list[np.ndarray]:
        keys = sorted(key for key in self.arrays if key.startswith("gradient_"))
        return [self.arrays[key] for key in keys]

    def rotations(self) -> list[np.ndarray | None]:
        """Trax's rotations in our (H, K, R, Z) layout, one per layer (None at non-LSH layers)."""
        return [
            trax_rotations_to_canonical(self.arrays[f"rotations_layer{i}"], self.config.n_heads)
            if kind is AttentionKind.LSH
            else None
            for i, kind in enumerate(self.config.attention_layers)
        ]

    def trax_buckets(self, index: int) -> np.ndarray:
        config = self.config
        return trax_buckets_to_canonical(
            self.arrays[f"buckets_layer{index}"], config.n_heads, config.n_hashes, config.n_buckets_total
        )

    def shifted_inputs(self) -> np.ndarray:
        """What Trax's ShiftRight makes of the inputs: a 0 in front, the last token dropped."""
        inputs = self.arrays["inputs"].astype(np.int64)
        return np.concatenate([np.zeros_like(inputs[:, :1]), inputs[:, :-1]], axis=1)


def load_case(name: str, root: Path = FIXTURES) -> TraxCase:
    return TraxCase(root / name)


def run_torch(case: TraxCase, canonical: dict[str, np.ndarray], dtype: str):
    """Logits, buckets and canonical gradients of sum(logits * cotangent) from our PyTorch model."""
    import torch

    from reformer_torch import ReformerLM
    from weights_convert import load_into_torch
    from weights_convert.arrays import torch_to_numpy
    from weights_convert.mapping import weight_rules

    model = ReformerLM(case.config).to(getattr(torch, dtype))
    load_into_torch(model, cast_canonical(canonical, dtype))
    model.eval()
    output = model(torch.as_tensor(case.shifted_inputs()), rotations=case.rotations())
    (output.logits * torch.as_tensor(case.arrays["cotangent"])).sum().backward()
    parameters = dict(model.named_parameters())
    gradients = {
        rule.spec.name: rule.torch_to_canonical(torch_to_numpy(parameters[rule.torch_name].grad))
        for rule in weight_rules(case.config)
    }
    buckets = [None if b is None else b.numpy() for b in output.buckets]
    return output.logits.detach().numpy(), buckets, gradients


def run_jax(case: TraxCase, canonical: dict[str, np.ndarray], dtype: str):
    """Logits, buckets and canonical gradients of sum(logits * cotangent) from our JAX model."""
    with full_precision(dtype):
        return _run_jax(case, canonical, dtype)


def _run_jax(case: TraxCase, canonical: dict[str, np.ndarray], dtype: str):
    import jax
    import jax.numpy as jnp

    from reformer_jax import ReformerLM
    from weights_convert import canonical_to_flax_params, flax_params_to_canonical

    model = ReformerLM(case.config)
    params = canonical_to_flax_params(case.config, cast_canonical(canonical, dtype))
    inputs = case.shifted_inputs()  # numpy, so the model's input checks see concrete values under jit
    rotations = case.rotations()
    cotangent = jnp.asarray(case.arrays["cotangent"])

    def scalar(params):
        output = model.apply({"params": params}, inputs, rotations=rotations)
        return jnp.sum(output.logits * cotangent), output

    # One compilation of the whole model costs about half the CPU time of
    # running it eagerly, where every operation is compiled on first use.
    (_, output), gradients = jax.jit(jax.value_and_grad(scalar, has_aux=True))(params)
    buckets = [None if b is None else np.asarray(b) for b in output.buckets]
    return np.asarray(output.logits), buckets, flax_params_to_canonical(case.config, gradients)


RUNNERS = {"torch": run_torch, "jax": run_jax}


def check_against_trax(case: TraxCase, framework: str, dtype: str) -> None:
    canonical = load_trax(case.folder / "model.pkl.gz", case.config)
    logits, buckets, gradients = RUNNERS[framework](case, canonical, dtype)

    for index, kind in enumerate(case.config.attention_layers):
        if kind is AttentionKind.LSH:
            expected = case.trax_buckets(index)
            agreement = float(np.mean(buckets[index] == expected))
            assert agreement == 1.0, f"layer {index}: only {agreement:.2%} of buckets equal Trax's"

    output_bound = tolerance(dtype, "output")
    gradient_bound = tolerance(dtype, "gradient")
    logits_difference = compare_arrays("logits", case.arrays["logits"], logits)
    expected_gradients = trax_weights_to_canonical(case.gradient_list, case.config)
    gradient_differences = [compare_arrays(name, expected_gradients[name], gradients[name]) for name in expected_gradients]
    largest_absolute = max(gradient_differences, key=lambda d: d.max_abs)
    largest_relative = worst(gradient_differences)
    print(
        f"{case.folder.name} {framework} {dtype}: {logits_difference}; gradients: largest absolute difference "
        f"{largest_absolute}; largest relative difference {largest_relative}"
    )

    assert logits_difference.within(output_bound), str(logits_difference)
    for difference in gradient_differences:
        assert difference.within(gradient_bound), str(difference)


# ------------------------------------------------------- oracle comparisons


@pytest.mark.parametrize("name, framework, dtype", FAST)
def test_matches_trax_fixture(name, framework, dtype):
    check_against_trax(load_case(name), framework, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("name, framework, dtype", SLOW)
def test_matches_trax_fixture_slow(name, framework, dtype):
    check_against_trax(load_case(name), framework, dtype)


def _trax_interpreter() -> str | None:
    """A Python that can import trax: this one, or the one named by TRAX_PYTHON."""
    if importlib.util.find_spec("trax") is not None:
        return sys.executable
    return os.environ.get("TRAX_PYTHON") or None


@pytest.mark.slow
def test_matches_trax_live(tmp_path):
    """Regenerate one fixture with Trax now and compare both models against it."""
    interpreter = _trax_interpreter()
    if interpreter is None:
        pytest.skip(
            "trax is not importable here and TRAX_PYTHON is unset; the committed fixtures cover the comparison. "
            "Set TRAX_PYTHON to a Python with trax==1.4.1 (for example /work/trax-venv/bin/python) to run it live."
        )
    script = FIXTURES / "make_trax_fixtures.py"
    subprocess.run([interpreter, str(script), "--out", str(tmp_path), "lsh_local"], check=True, timeout=1200)
    fresh = load_case("lsh_local", tmp_path)
    for framework in RUNNERS:
        for dtype in ("float32", "float64"):
            check_against_trax(fresh, framework, dtype)


# ------------------------------------------------------- checkpoint formats


def test_checkpoint_formats_agree():
    """save_to_file's pickle, Loop's weights file and the nested weight tuple give identical weights."""
    case = load_case("lsh_local")
    from_pickle = load_trax(case.folder / "model.pkl.gz", case.config)
    for other in ("loop.weights.npy.gz", "nested.pkl.gz"):
        loaded = load_trax(case.folder / other, case.config)
        assert loaded.keys() == from_pickle.keys()
        for name in from_pickle:
            assert np.array_equal(loaded[name], from_pickle[name]), (other, name)


def test_nested_axial_layout():
    case = load_case("axial")
    nested = load_trax(case.folder / "nested.pkl.gz", case.config)
    flat = load_trax(case.folder / "model.pkl.gz", case.config)
    assert nested["embeddings.axial_0"].shape == (4, 8)
    assert nested["embeddings.axial_1"].shape == (8, 16)
    for name in flat:
        assert np.array_equal(nested[name], flat[name]), name


def test_loop_pickle_reads_weights_file(tmp_path):
    """A Loop pickle that contains objects the unpickler rejects falls back to its weights file."""
    case = load_case("lsh_local")
    weights_file = tmp_path / "model.weights.npy.gz"
    weights_file.write_bytes((case.folder / "loop.weights.npy.gz").read_bytes())
    loop_pickle = tmp_path / "model.pkl.gz"
    with gzip.open(loop_pickle, "wb") as handle:
        handle.write(_pickle_calling("trax.shapes", "ShapeDtype"))
    loaded = load_trax(loop_pickle, case.config)
    expected = load_trax(case.folder / "model.pkl.gz", case.config)
    for name in expected:
        assert np.array_equal(loaded[name], expected[name]), name


def test_uncompressed_pickle(tmp_path):
    case = load_case("lsh_local")
    flat = read_trax_checkpoint(case.folder / "model.pkl.gz")
    plain = tmp_path / "model.pkl"
    plain.write_bytes(pickle.dumps({"flat_weights": flat}, protocol=2))
    loaded = load_trax(plain, case.config)
    expected = trax_weights_to_canonical(flat, case.config)
    for name in expected:
        assert np.array_equal(loaded[name], expected[name]), name


# ------------------------------------------------------------ safe unpickling


def _pickle_calling(module: str, name: str, argument: str = "x") -> bytes:
    """A protocol-2 pickle that calls module.name(argument) when loaded by a plain unpickler."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(argument).to_bytes(4, "little") + argument.encode() + b"\x85R."


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_rejects_os_system(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"weights": _RunsCommand(f"touch {marker}")})
    checkpoint = tmp_path / "evil.pkl"
    checkpoint.write_bytes(payload)

    with pytest.raises(UnsafePickleError) as raised:
        load_trax(checkpoint, load_case("lsh_local").config)
    assert "system" in str(raised.value)
    assert os.system.__module__ in str(raised.value)  # "posix" or "nt"
    assert str(checkpoint) in str(raised.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"), ("numpy", "load"), ("trax.shapes", "ShapeDtype")],
)
def test_unpickler_rejects_other_globals(module, name):
    import io

    with pytest.raises(UnsafePickleError, match=rf"{module}\.{name}"):
        safe_unpickle(io.BytesIO(_pickle_calling(module, name)))


def test_unpickler_allows_latin1_encode_only():
    import io

    # GLOBAL _codecs.encode, then the arguments ("x", "rot13") and REDUCE.
    payload = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_unpickle(io.BytesIO(payload))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickler_reads_numpy(protocol):
    import io

    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.float64(2.5), np.array([1, 2], dtype=np.int32)]
    loaded = safe_unpickle(io.BytesIO(pickle.dumps({"flat_weights": arrays}, protocol=protocol)))
    for got, expected in zip(loaded["flat_weights"], arrays):
        assert np.asarray(got).dtype == np.asarray(expected).dtype
        assert np.array_equal(got, expected)


def test_unpickler_reads_jax_arrays_as_numpy():
    import io

    import jax.numpy as jnp

    loaded = safe_unpickle(io.BytesIO(pickle.dumps([jnp.arange(5.0).reshape(5, 1)])))
    assert type(loaded[0]) is np.ndarray
    assert np.array_equal(loaded[0], np.arange(5.0, dtype=np.float32).reshape(5, 1))


# ------------------------------------------------------------ structure errors


def test_flat_list_missing_array_names_it():
    case = load_case("lsh_local")
    flat = read_trax_checkpoint(case.folder / "model.pkl.gz")
    with pytest.raises(ConversionError) as raised:
        trax_weights_to_canonical(flat[:-1], case.config)
    message = str(raised.value)
    assert "missing block" in message
    assert "lm_head.bias" in message
    assert f"({case.config.vocab_size},)" in message


def test_flat_list_extra_array_names_it():
    case = load_case("lsh_local")
    flat = read_trax_checkpoint(case.folder / "model.pkl.gz")
    with pytest.raises(ConversionError) as raised:
        trax_weights_to_canonical(flat + [np.zeros((3, 5), np.float32)], case.config)
    message = str(raised.value)
    assert "extra block" in message
    assert "(3, 5)" in message


def test_nested_missing_layer_names_path():
    case = load_case("lsh_local")
    tree = read_trax_checkpoint(case.folder / "nested.pkl.gz")
    truncated = tree[:5] + (tree[5][:4],) + tree[6:]  # only the first of two layers
    with pytest.raises(ConversionError) as raised:
        trax_weights_to_canonical(truncated, case.config)
    message = str(raised.value)
    assert message.startswith("[5][4]:"), message
    assert "missing block" in message
    assert f"layers.1.attention.norm.scale ({case.config.d_model},)" in message


def test_nested_extra_block_names_path():
    case = load_case("lsh_local")
    tree = read_trax_checkpoint(case.folder / "nested.pkl.gz")
    extra_bias = np.zeros((case.config.d_head,), np.float32)
    attention = tree[5][4][1] + (extra_bias,)  # an LSH layer with a bias Trax could add
    layer = (tree[5][4][0], attention)
    changed = tree[:5] + (tree[5][:4] + (layer,) + tree[5][5:],) + tree[6:]
    with pytest.raises(ConversionError) as raised:
        trax_weights_to_canonical(changed, case.config)
    message = str(raised.value)
    assert message.startswith("[5][4][1][3]:"), message
    assert "extra block" in message
    assert f"({case.config.d_head},)" in message


def test_wrong_shape_names_path_and_expected_shape():
    case = load_case("lsh_local")
    tree = read_trax_checkpoint(case.folder / "nested.pkl.gz")
    wider = case.config.replace(d_ff=case.config.d_ff + 2)
    with pytest.raises(ConversionError) as raised:
        trax_weights_to_canonical(tree, wider)
    message = str(raised.value)
    assert message.startswith("[5][2][0][1][0]:"), message
    assert f"({wider.d_model}, {wider.d_ff})" in message
    assert f"({case.config.d_model}, {case.config.d_ff})" in message


def test_tied_embeddings_rejected():
    case = load_case("lsh_local")
    with pytest.raises(ValueError, match="tie_embeddings"):
        load_trax(case.folder / "model.pkl.gz", case.config.replace(tie_embeddings=True))


# ------------------------------------------------------------ the 2020 layout


def _spring_2020_tree(config: ReformerConfig, canonical: dict[str, np.ndarray], chunked: bool) -> tuple:
    """A weight tree laid out as Trax trainers pickled it in spring 2020 (the Hugging Face converter's input)."""
    D = config.d_model

    def per_head(kernel):  # canonical (D, H, K) -> Trax (H, D, K)
        return np.transpose(kernel, (1, 0, 2))

    layers = []
    for i, kind in enumerate(config.attention_layers):
        p = f"layers.{i}"
        norm = (canonical[f"{p}.attention.norm.scale"], canonical[f"{p}.attention.norm.bias"])
        names = ("query_key", "value") if kind is AttentionKind.LSH else ("query", "key", "value")
        attention = tuple(per_head(canonical[f"{p}.attention.{n}.kernel"]) for n in names) + (canonical[f"{p}.attention.output.kernel"],)
        f = f"{p}.feed_forward"
        block = (
            (canonical[f"{f}.norm.scale"], canonical[f"{f}.norm.bias"]),
            (canonical[f"{f}.dense_in.kernel"], canonical[f"{f}.dense_in.bias"]),
            (),
            (),
            (canonical[f"{f}.dense_out.kernel"], canonical[f"{f}.dense_out.bias"]),
            (),
        )
        if chunked:
            block = ((), (), block, ())
        feed_forward_half = (((), ((), (), block), ()), ())  # (Serial(Select, Parallel, Select), Add)
        layers += [((norm,), attention), (), feed_forward_half, ()]

    if config.positions.value == "axial":
        positions = tuple(
            canonical[f"embeddings.axial_{axis}"].reshape((1,) + tuple(size if a == axis else 1 for a in range(len(config.axial_shape))) + (width,))
            for axis, (size, width) in enumerate(zip(config.axial_shape, config.axial_dims))
        )
    else:
        positions = canonical["embeddings.position_table"][None]  # (1, max_len, D)
    assert positions is not None and D > 0
    return (
        (),
        canonical["embeddings.token.embedding"],
        (),
        positions,
        (),
        tuple(layers),
        (),
        (canonical["final_norm.scale"], canonical["final_norm.bias"]),
        (),
        (canonical["lm_head.kernel"], canonical["lm_head.bias"]),
        (),  # LogSoftmax
    )


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("name", ["lsh_local", "axial"])
def test_spring_2020_layout(tmp_path, name, chunked):
    config = load_case(name).config
    canonical = random_canonical(config, seed=3, dtype=np.float32)
    tree = _spring_2020_tree(config, canonical, chunked)

    # The Hugging Face converter's paths, checked on the tree this test builds.
    assert tree[5][0][0][0][0] is canonical["layers.0.attention.norm.scale"]
    feed_forward = tree[5][2][0][1][2][2] if chunked else tree[5][2][0][1][2]
    assert feed_forward[1][0] is canonical["layers.0.feed_forward.dense_in.kernel"]
    assert tree[9][0] is canonical["lm_head.kernel"]

    checkpoint = tmp_path / "model.pkl"
    checkpoint.write_bytes(pickle.dumps({"weights": tree, "step": 1000}, protocol=2))
    loaded = load_trax(checkpoint, config)
    assert loaded.keys() == canonical.keys()
    for key in canonical:
        assert np.array_equal(loaded[key], canonical[key]), key


# ------------------------------------------------------------ hashing helpers


def test_rotation_helper_rejects_batches():
    with pytest.raises(ValueError, match="batch size 1"):
        trax_rotations_to_canonical(np.zeros((4, 3, 2, 2), np.float32), n_heads=2)


def test_bucket_helper_removes_round_offsets():
    n_heads, n_hashes, n_buckets, length = 2, 3, 4, 5
    ours = np.random.default_rng(0).integers(0, n_buckets, size=(1, n_heads, n_hashes, length))
    trax = (ours + (np.arange(n_hashes) * n_buckets)[None, None, :, None]).reshape(n_heads, n_hashes * length)
    assert np.array_equal(trax_buckets_to_canonical(trax, n_heads, n_hashes, n_buckets), ours)
