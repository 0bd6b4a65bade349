"""The spec: config validation, JSON round-trip, parameter table, portable rotations."""

import json
import subprocess
import sys

import numpy as np
import pytest

from reformer_spec import ReformerConfig, parameter_count, parameter_table, portable_rotations, rotation_shape
from reformer_spec.config import Activation, AttentionKind, PositionKind


def small(**changes):
    base = dict(
        vocab_size=37, d_model=30, n_heads=3, d_head=10, d_ff=22, attention_layers=("lsh", "local"),
        lsh_chunk_length=8, local_chunk_length=8, n_buckets=4, axial_shape=(8, 8), axial_dims=(14, 16), max_length=64,
    )
    base.update(changes)
    return ReformerConfig(**base)


def test_defaults_are_valid():
    config = ReformerConfig()
    assert config.n_layers == 2
    assert config.max_length >= 4096


def test_strings_become_enums():
    config = small(activation="gelu_tanh", positions="axial", attention_layers=["lsh", "full"])
    assert config.activation is Activation.GELU_TANH
    assert config.positions is PositionKind.AXIAL
    assert config.attention_layers == (AttentionKind.LSH, AttentionKind.FULL)


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(n_buckets=5), ["n_buckets=5", "even", "use 6"]),
        (dict(n_buckets=(4, 3)), ["n_buckets=(4, 3)", "even"]),
        (dict(d_head=11), ["n_heads * d_head", "d_model=30", "d_head=10"]),
        (dict(axial_dims=(14, 15)), ["axial_dims=(14, 15)", "sum to 29"]),
        (dict(axial_shape=(8, 4)), ["max_length=64", "axial_shape=(8, 4)", "set max_length=32"]),
        (dict(lsh_chunks_after=1), ["lsh_chunks_after=1", "causal=True"]),
        (dict(activation="swish"), ["activation='swish'", "relu"]),
        (dict(attention_layers=()), ["attention_layers is empty"]),
        (dict(hidden_dropout=1.0), ["hidden_dropout=1.0", "[0, 1)"]),
        (dict(vocab_size=0), ["vocab_size=0", "at least 1"]),
        (dict(pad_token_id=37), ["pad_token_id=37", "vocab_size"]),
        (dict(max_length=60, positions="learned"), ["max_length=60", "multiple of 8"]),
    ],
)
def test_invalid_config_names_field_and_fix(changes, words):
    with pytest.raises(ValueError) as error:
        small(**changes)
    for word in words:
        assert word in str(error.value)


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="n_heads"):
        small(n_heads=3.0)
    with pytest.raises(TypeError, match="attention_layers='lsh'"):
        small(attention_layers="lsh")


def test_sort_key_overflow_rejected():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        ReformerConfig(
            n_buckets=(64, 128), n_hashes=8, axial_shape=(512, 1024), axial_dims=(128, 128), max_length=512 * 1024,
            lsh_chunk_length=64, local_chunk_length=64,
        )


def test_json_round_trip(tmp_path):
    config = small(n_buckets=[2, 4], activation="gelu", causal=False, lsh_chunks_after=1, tie_embeddings=True)
    assert ReformerConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["n_buckets"] == [2, 4]
    path = tmp_path / "config.json"
    config.save(path)
    assert ReformerConfig.load(path) == config
    assert not list(tmp_path.glob("*.tmp"))


def test_unknown_json_field_rejected():
    data = small().to_dict()
    data["num_hashes"] = 2
    with pytest.raises(ValueError, match="num_hashes"):
        ReformerConfig.from_dict(data)


def test_length_multiple_and_padding():
    config = small(lsh_chunk_length=8, local_chunk_length=4, ff_chunk_size=0)
    assert config.length_multiple == 8
    assert config.padded_length(29) == 32
    assert config.padded_length(32) == 32


def test_parameter_table_names_unique_and_tied_head():
    untied = parameter_table(small())
    names = [spec.name for spec in untied]
    assert len(names) == len(set(names))
    assert "lm_head.kernel" in names
    tied = [spec.name for spec in parameter_table(small(tie_embeddings=True))]
    assert "lm_head.kernel" not in tied
    assert parameter_count(small()) - parameter_count(small(tie_embeddings=True)) == 2 * 30 * 37


def test_parameter_table_shapes():
    table = {spec.name: spec.shape for spec in parameter_table(small())}
    assert table["layers.0.attention.query_key.kernel"] == (30, 3, 10)
    assert table["layers.1.attention.query.kernel"] == (30, 3, 10)
    assert table["layers.0.attention.output.kernel"] == (3, 10, 30)
    assert table["embeddings.axial_1"] == (8, 16)
    assert table["final_norm.scale"] == (60,)


def test_portable_rotations_are_deterministic_and_per_layer():
    config = small(attention_layers=("lsh", "local", "lsh"), n_hashes=3, n_buckets=(2, 4))
    first = portable_rotations(config, 7)
    again = portable_rotations(config, 7)
    other = portable_rotations(config, 8)
    assert first[1] is None
    assert first[0].shape == rotation_shape(config) == (3, 10, 3, 3)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], first[2])
    assert not np.array_equal(first[0], other[0])
    with pytest.raises(ValueError, match="seed=-1"):
        portable_rotations(config, -1)


def test_portable_rotations_fixed_values():
    """The procedure is a format: these values must never change between releases."""
    config = small(attention_layers=("lsh",), n_buckets=4, n_hashes=1)
    rotation = portable_rotations(config, 0)[0]
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0, 0]))).standard_normal((3, 10, 1, 2))
    np.testing.assert_array_equal(rotation, expected)


def test_spec_imports_no_framework():
    code = "import sys, reformer_spec, reformer_spec.hashing, reformer_spec.validation; print(sorted(m for m in ('torch', 'jax', 'flax') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert output == "[]"


def test_models_do_not_import_each_other():
    code = (
        "import sys, reformer_torch; assert 'jax' not in sys.modules, 'reformer_torch imported jax'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys, reformer_jax; assert 'torch' not in sys.modules, 'reformer_jax imported torch'\n"
    subprocess.run([sys.executable, "-c", code], check=True)
