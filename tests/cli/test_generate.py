"""Generation: the byte choice, reproducibility, agreement across frameworks, and the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import weights_convert
from reformer_cli.generate import Sampling, choose_byte, first_difference, generate
from reformer_cli.jax_backend import JaxRunner
from reformer_cli.torch_backend import TorchRunner
from reformer_spec.config import ReformerConfig
from reformer_torch import ReformerLM

PROMPT = "def add(a, b):\n    return".encode("utf-8")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny local+LSH model whose weights are scaled up, so its logits are far from uniform and rarely tie."""
    config = ReformerConfig(
        d_model=32, n_heads=2, d_head=16, d_ff=48, attention_layers=("local", "lsh"), lsh_chunk_length=32,
        local_chunk_length=32, n_buckets=4, axial_shape=(8, 16), axial_dims=(16, 16), max_length=128,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    model = ReformerLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    weights_convert.save_torch_model(model, path)
    return path


def test_greedy_is_argmax():
    logits = np.array([0.1, 2.0, -1.0, 2.0])
    assert choose_byte(logits, Sampling(), np.random.default_rng(0)) == 1  # first maximum on a tie


def test_top_k_one_is_greedy():
    logits = np.random.default_rng(1).normal(size=256)
    rng = np.random.default_rng(2)
    picks = {choose_byte(logits, Sampling(temperature=1.5, top_k=1), rng) for _ in range(20)}
    assert picks == {int(np.argmax(logits))}


def test_top_k_limits_choices():
    logits = np.arange(256, dtype=np.float64) / 10.0
    rng = np.random.default_rng(3)
    picks = {choose_byte(logits, Sampling(temperature=5.0, top_k=3), rng) for _ in range(200)}
    assert picks == {253, 254, 255}


def test_first_difference():
    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abc", b"abd") == 2
    assert first_difference(b"ab", b"abc") == 2


def test_greedy_identical_across_frameworks(model_file: Path):
    torch_run = generate(TorchRunner.from_file(model_file), PROMPT, 40)
    jax_run = generate(JaxRunner.from_file(model_file), PROMPT, 40)
    assert len(torch_run.continuation) == 40
    assert first_difference(torch_run.continuation, jax_run.continuation) is None


def test_sampling_reproducible_from_seed(model_file: Path):
    runner = TorchRunner.from_file(model_file)
    sampling = Sampling(temperature=1.0, top_k=20, seed=11)
    first = generate(runner, PROMPT, 30, sampling)
    again = generate(runner, PROMPT, 30, sampling)
    other = generate(runner, PROMPT, 30, Sampling(temperature=1.0, top_k=20, seed=12))
    assert first.continuation == again.continuation
    assert first.continuation != other.continuation


def test_prompt_longer_than_context(model_file: Path):
    runner = TorchRunner.from_file(model_file)
    long_prompt = PROMPT * 10  # 250 bytes, more than max_length=128
    result = generate(runner, long_prompt, 5)
    assert len(result.continuation) == 5


def test_generate_command_prints_continuation(run_cli, model_file: Path, capsysbinary: pytest.CaptureFixture):
    assert run_cli("generate", model_file, "--prompt", "def ", "--max-new-bytes", "12") == 0
    output = capsysbinary.readouterr().out
    assert len(output) == 13  # 12 bytes and a newline


def test_generate_command_compares_frameworks(run_cli, model_file: Path, capsys: pytest.CaptureFixture):
    assert run_cli("generate", model_file, "--prompt", "def ", "--max-new-bytes", "10", "--framework", "both") == 0
    assert "identical in both frameworks" in capsys.readouterr().out


def test_generate_command_rejects_empty_prompt(run_cli, model_file: Path, caplog: pytest.LogCaptureFixture):
    assert run_cli("generate", model_file, "--prompt", "") == 1
    assert "prompt is empty" in caplog.text


def test_generate_command_reports_missing_model(run_cli, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert run_cli("generate", tmp_path / "missing.safetensors", "--prompt", "x") == 1
    assert "does not exist" in caplog.text
    assert run_cli("generate", tmp_path, "--prompt", "x") == 1
    assert "contains no finished checkpoint" in caplog.text


def test_generate_command_ctrl_c_exits_130(run_cli, model_file: Path, monkeypatch: pytest.MonkeyPatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("reformer_cli.generate.generate", interrupted)
    assert run_cli("generate", model_file, "--prompt", "def ") == 130
