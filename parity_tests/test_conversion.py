"""Weight conversion: bit-exact round trips, complete maps, clear failures, atomic files."""

import numpy as np
import pytest
import torch

import weights_convert as wc
from reformer_cli.main import main as cli
from reformer_jax import ReformerLM as FlaxReformerLM
from reformer_torch import ReformerLM as TorchReformerLM
from weights_convert.arrays import BFLOAT16
from weights_convert.mapping import weight_rules

from parity_tests.helpers import make_config, random_canonical

CONFIGS = {
    "lsh_local": make_config(),
    "full_tied_learned": make_config(attention_layers=("full", "lsh"), tie_embeddings=True, positions="learned"),
    "factorized": make_config(attention_layers=("lsh", "lsh", "local"), n_buckets=(2, 4)),
}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bytes of an array, so comparisons are bit for bit (NaN payloads and signed zeros included)."""
    return np.ascontiguousarray(array).view(np.uint8)


@pytest.mark.parametrize("name", CONFIGS)
def test_map_covers_both_frameworks_exactly(name):
    import jax

    config = CONFIGS[name]
    rules = weight_rules(config)
    assert len({r.torch_name for r in rules}) == len(rules)
    assert len({r.flax_path for r in rules}) == len(rules)
    torch_shapes = {k: tuple(v.shape) for k, v in TorchReformerLM(config).state_dict().items()}
    assert torch_shapes == {r.torch_name: r.torch_shape for r in rules}
    params = FlaxReformerLM(config).init(
        {"params": jax.random.key(0), "hash": jax.random.key(1)}, np.zeros((1, 8), np.int32)
    )["params"]
    flat = {"/".join(path): tuple(leaf.shape) for path, leaf in wc.convert._flatten(params).items()}
    assert flat == {"/".join(r.flax_path): r.spec.shape for r in rules}


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", CONFIGS)
def test_torch_flax_torch_is_bit_exact(name, dtype):
    import jax

    config = CONFIGS[name]
    model = TorchReformerLM(config).to(TORCH_DTYPES[dtype])
    state = model.state_dict()
    with jax.enable_x64(dtype == "float64"):
        params = wc.canonical_to_flax_params(config, wc.torch_state_to_canonical(config, state))
        assert str(jax.tree_util.tree_leaves(params)[0].dtype) == dtype
        back = wc.canonical_to_torch_state(config, wc.flax_params_to_canonical(config, params))
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype, key
        assert torch.equal(back[key].view(torch.uint8), tensor.contiguous().view(torch.uint8)), key


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_flax_torch_flax_is_bit_exact(dtype):
    import jax

    config = CONFIGS["lsh_local"]
    np_dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    canonical = random_canonical(config, seed=3, dtype=np_dtype)
    with jax.enable_x64(dtype == "float64"):
        params = wc.canonical_to_flax_params(config, canonical)
        state = wc.canonical_to_torch_state(config, wc.flax_params_to_canonical(config, params))
        again = wc.flax_params_to_canonical(config, wc.canonical_to_flax_params(config, wc.torch_state_to_canonical(config, state)))
    for name, array in canonical.items():
        assert again[name].dtype == array.dtype
        assert np.array_equal(bits(again[name]), bits(array)), name


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".msgpack"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_files_round_trip_bit_exact(tmp_path, suffix, dtype):
    config = CONFIGS["full_tied_learned"]
    np_dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    canonical = random_canonical(config, dtype=np_dtype)
    path = tmp_path / f"model{suffix}"
    wc.write_weights(path, config, canonical)
    loaded_config, loaded = wc.read_weights(path)
    assert loaded_config == config
    assert loaded.keys() == canonical.keys()
    for name in canonical:
        assert loaded[name].dtype == np_dtype
        assert np.array_equal(bits(loaded[name]), bits(canonical[name])), name


def test_tied_embeddings_have_no_output_matrix(tmp_path):
    config = CONFIGS["full_tied_learned"]
    canonical = random_canonical(config)
    assert "lm_head.kernel" not in canonical
    model = wc.load_torch_model(_saved(tmp_path, config, canonical))
    assert not hasattr(model.lm_head, "kernel")
    assert "lm_head.kernel.weight" not in model.state_dict()


def _saved(tmp_path, config, canonical):
    path = tmp_path / "model.safetensors"
    wc.save_checkpoint(path, config, canonical)
    return path


def test_missing_tensor_is_named():
    config = CONFIGS["lsh_local"]
    state = TorchReformerLM(config).state_dict()
    del state["layers.1.attention.key.weight"]
    with pytest.raises(wc.ConversionError, match="lacks 1 tensor.*layers.1.attention.key.weight"):
        wc.torch_state_to_canonical(config, state)


def test_unread_tensor_is_named():
    config = CONFIGS["lsh_local"]
    canonical = random_canonical(config)
    canonical["layers.2.attention.value.kernel"] = np.zeros((30, 3, 10))
    with pytest.raises(wc.ConversionError, match="does not use.*layers.2.attention.value.kernel"):
        wc.canonical_to_torch_state(config, canonical)


def test_shape_mismatch_names_both_shapes():
    config = CONFIGS["lsh_local"]
    state = TorchReformerLM(config).state_dict()
    state["layers.0.feed_forward.dense_in.weight"] = state["layers.0.feed_forward.dense_in.weight"].T
    with pytest.raises(wc.ConversionError, match=r"dense_in.weight' has shape \(30, 22\) but the model expects \(22, 30\)"):
        wc.torch_state_to_canonical(config, state)


def test_mixed_dtypes_rejected():
    config = CONFIGS["lsh_local"]
    canonical = random_canonical(config)
    canonical["final_norm.bias"] = canonical["final_norm.bias"].astype(np.float32)
    with pytest.raises(wc.ConversionError, match="final_norm.bias.*float32"):
        wc.check_canonical(config, canonical)


def test_loading_into_model_of_other_dtype_rejected():
    config = CONFIGS["lsh_local"]
    model = TorchReformerLM(config)  # float32
    with pytest.raises(wc.ConversionError, match="float64.*model.to"):
        wc.load_into_torch(model, random_canonical(config, dtype=np.float64))


def test_float64_to_jax_without_x64_rejected():
    import jax

    config = CONFIGS["lsh_local"]
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="jax_enable_x64"):
            wc.canonical_to_flax_params(config, random_canonical(config, dtype=np.float64))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import safetensors.torch

    config = CONFIGS["lsh_local"]
    canonical = random_canonical(config)

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        wc.save_checkpoint(tmp_path / "model.safetensors", config, canonical)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_file_reports_path(tmp_path):
    config = CONFIGS["lsh_local"]
    path = _saved(tmp_path, config, random_canonical(config))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(wc.ConversionError, match="not a readable safetensors file"):
        wc.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        wc.load_checkpoint(tmp_path / "absent.safetensors")


def test_cli_convert_chain(tmp_path, capsys):
    config = CONFIGS["lsh_local"]
    canonical = random_canonical(config, dtype=np.float32)
    source = _saved(tmp_path, config, canonical)
    assert cli(["convert", str(source), str(tmp_path / "m.pt")]) == 0
    assert cli(["convert", str(tmp_path / "m.pt"), str(tmp_path / "m.msgpack")]) == 0
    assert cli(["convert", str(tmp_path / "m.msgpack"), str(tmp_path / "back.safetensors")]) == 0
    _, back = wc.load_checkpoint(tmp_path / "back.safetensors")
    for name in canonical:
        assert np.array_equal(bits(back[name]), bits(canonical[name])), name
    assert "wrote" in capsys.readouterr().out

    assert cli(["convert", str(source), str(tmp_path / "m.pt")]) == 1
    assert "--force" in capsys.readouterr().err
    assert cli(["convert", str(source), str(tmp_path / "m.h5")]) == 1
    assert "extension '.h5'" in capsys.readouterr().err
    assert cli(["convert", str(source), str(tmp_path / "half.safetensors"), "--dtype", "bfloat16"]) == 0
    _, half = wc.load_checkpoint(tmp_path / "half.safetensors")
    assert half["final_norm.scale"].dtype == BFLOAT16
