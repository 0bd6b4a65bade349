"""`reformer convert` with Hugging Face folders as SRC and DST."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from reformer_spec.config import ReformerConfig
from reformer_spec.parameters import parameter_table
from weights_convert import load_checkpoint, load_huggingface, save_checkpoint, save_huggingface


def small_config(**changes) -> ReformerConfig:
    base = dict(
        vocab_size=23, d_model=12, n_heads=2, d_head=6, d_ff=14, attention_layers=("lsh", "local"),
        lsh_chunk_length=4, local_chunk_length=4, n_buckets=4, axial_shape=(2, 8), axial_dims=(5, 7),
        max_length=16, lsh_same_bucket_only=False,
    )  # fmt: skip
    base.update(changes)
    return ReformerConfig(**base)


def random_weights(config: ReformerConfig, seed: int = 0) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    return {spec.name: generator.standard_normal(spec.shape).astype(np.float32) for spec in parameter_table(config)}


def assert_same_tensors(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_safetensors_to_folder_and_back(tmp_path, run_cli):
    config, weights = small_config(), random_weights(small_config())
    save_checkpoint(tmp_path / "model.safetensors", config, weights)

    assert run_cli("convert", tmp_path / "model.safetensors", tmp_path / "hf") == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["is_decoder"] is True
    loaded_config, loaded = load_huggingface(tmp_path / "hf")
    assert loaded_config == config
    assert_same_tensors(loaded, weights)

    assert run_cli("convert", tmp_path / "hf", tmp_path / "back.safetensors") == 0
    back_config, back = load_checkpoint(tmp_path / "back.safetensors")
    assert back_config == config
    assert_same_tensors(back, weights)


def test_named_formats_and_dtype(tmp_path, run_cli):
    config = small_config(causal=False, lsh_chunks_after=1)
    save_huggingface(config, random_weights(config), tmp_path / "src")
    # --to names the format of a DST with an extension; --dtype casts on the way.
    assert run_cli("convert", tmp_path / "src", tmp_path / "out.hf", "--to", "huggingface", "--dtype", "float64") == 0
    loaded_config, loaded = load_huggingface(tmp_path / "out.hf")
    assert loaded_config == config
    assert {array.dtype for array in loaded.values()} == {np.dtype(np.float64)}


def test_same_bucket_only_needs_flag(tmp_path, run_cli, capsys):
    config = small_config(lsh_same_bucket_only=True)
    save_checkpoint(tmp_path / "model.safetensors", config, random_weights(config))

    assert run_cli("convert", tmp_path / "model.safetensors", tmp_path / "hf") == 1
    assert "lsh_same_bucket_only=True" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()

    assert run_cli("convert", tmp_path / "model.safetensors", tmp_path / "hf", "--allow-window-change") == 0
    assert load_huggingface(tmp_path / "hf")[0] == config.replace(lsh_same_bucket_only=False)


def test_existing_folder_needs_force(tmp_path, run_cli, capsys):
    config = small_config()
    save_checkpoint(tmp_path / "model.safetensors", config, random_weights(config))
    (tmp_path / "hf").mkdir()  # an empty folder may be filled
    assert run_cli("convert", tmp_path / "model.safetensors", tmp_path / "hf") == 0

    assert run_cli("convert", tmp_path / "model.safetensors", tmp_path / "hf") == 1
    assert "--force" in capsys.readouterr().err
    save_checkpoint(tmp_path / "other.safetensors", config, random_weights(config, seed=1))
    assert run_cli("convert", tmp_path / "other.safetensors", tmp_path / "hf", "--force") == 0
    assert_same_tensors(load_huggingface(tmp_path / "hf")[1], random_weights(config, seed=1))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hf", "model.safetensors", "other.safetensors"]


def test_bad_sources(tmp_path, run_cli, capsys):
    (tmp_path / "plain").mkdir()
    assert run_cli("convert", tmp_path / "plain", tmp_path / "out.safetensors") == 1
    assert "without config.json" in capsys.readouterr().err

    (tmp_path / "plain" / "config.json").write_text(json.dumps({"model_type": "reformer", "num_buckets": None}))
    assert run_cli("convert", tmp_path / "plain", tmp_path / "out.safetensors") == 1
    assert "num_buckets=None" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_help_mentions_huggingface():
    result = subprocess.run(
        [sys.executable, "-m", "reformer_cli.main", "convert", "--help"], capture_output=True, text=True, check=True
    )
    assert "Hugging Face" in result.stdout
    assert "--allow-window-change" in result.stdout
