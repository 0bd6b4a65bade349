"""`reformer train`: schedule, checkpoints, Ctrl-C, resume, and damaged or missing checkpoints."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from reformer_cli import checkpoints
from reformer_cli.corpus import load_corpus
from reformer_cli.options import Framework, TrainSettings
from reformer_cli.torch_backend import TorchTrainer
from reformer_cli.train import learning_rate_at, new_state, run_training
from reformer_spec.config import ReformerConfig
from weights_convert import load_checkpoint

from .conftest import TINY_MODEL

STEPS = ["--steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "5"]


def final_tensors(run_dir: Path) -> dict[str, np.ndarray]:
    return load_checkpoint(checkpoints.latest_checkpoint(run_dir) / checkpoints.MODEL_FILE)[1]


def assert_same_tensors(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def tiny_config() -> ReformerConfig:
    return ReformerConfig(
        d_model=32, n_heads=2, d_head=16, d_ff=48, attention_layers=("local", "lsh"), lsh_chunk_length=32,
        local_chunk_length=32, n_buckets=4, axial_shape=(8, 16), axial_dims=(16, 16), max_length=128,
    )  # fmt: skip


def test_learning_rate_schedule():
    settings = TrainSettings(steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    assert learning_rate_at(0, settings) == pytest.approx(1e-4)
    assert learning_rate_at(9, settings) == pytest.approx(1e-3)
    assert learning_rate_at(10, settings) == pytest.approx(1e-3)
    assert learning_rate_at(55, settings) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert learning_rate_at(100, settings) == pytest.approx(1e-4)
    rates = [learning_rate_at(step, settings) for step in range(10, 100)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_train_writes_checkpoints(run_cli, text_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "3", "--checkpoint-every", "1", *TINY_MODEL) == 0
    names = [p.name for p in checkpoints.finished_checkpoints(run_dir)]
    assert names == ["step-00000002", "step-00000003"]  # --keep-checkpoints defaults to 2
    assert (run_dir / "latest").read_text().strip() == "step-00000003"
    newest = run_dir / "checkpoints" / "step-00000003"
    for name in ("model.safetensors", "config.json", "optimizer.safetensors", "state.json"):
        assert (newest / name).is_file(), name
    state = checkpoints.read_state(newest)
    assert state.step == 3
    assert [row[0] for row in state.history["train"]] == [1, 2, 3]
    assert state.history["eval"][0][0] == 0
    assert math.isfinite(state.history["eval"][-1][1])
    config = ReformerConfig.load(newest / "config.json")
    assert config.max_length == 128
    assert config.reversible


def test_sigint_saves_and_resume_matches(run_cli, text_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    reference = tmp_path / "reference"
    assert run_cli("train", "--out", reference, "--text", text_dir, *STEPS, *TINY_MODEL) == 0

    original_step = TorchTrainer.train_step

    def step_then_interrupt(self, windows, learning_rate, step):
        loss = original_step(self, windows, learning_rate, step)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; the run stops after this step
        return loss

    monkeypatch.setattr(TorchTrainer, "train_step", step_then_interrupt)
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, *STEPS, *TINY_MODEL) == 130
    assert (run_dir / "latest").read_text().strip() == "step-00000002"
    assert checkpoints.read_state(checkpoints.latest_checkpoint(run_dir)).step == 2

    monkeypatch.setattr(TorchTrainer, "train_step", original_step)
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--no-progress") == 0
    assert checkpoints.read_state(checkpoints.latest_checkpoint(run_dir)).step == 4
    assert_same_tensors(final_tensors(run_dir), final_tensors(reference))


def test_callback_interrupt_saves_last_step(text_dir: Path, tmp_path: Path):
    settings = TrainSettings(steps=5, context=128, eval_windows=1, checkpoint_every=100, eval_every=100, warmup_steps=1)
    corpus = load_corpus([text_dir], context=128)
    trainer = TorchTrainer.create(tiny_config(), settings)

    def interrupt_at_three(step: int, trainer) -> None:
        if step == 3:
            raise KeyboardInterrupt

    result = run_training(trainer, corpus, tmp_path, new_state(settings, corpus), progress=False, callbacks=[interrupt_at_three])
    assert result.interrupted
    assert result.checkpoint == tmp_path / "checkpoints" / "step-00000003"
    assert checkpoints.read_state(result.checkpoint).step == 3


def test_interrupt_during_update_keeps_previous(run_cli, text_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torch

    calls = {"count": 0}
    original_step = torch.optim.AdamW.step

    def interrupted_update(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt  # parameters would be half-updated here
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupted_update)
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, *STEPS, *TINY_MODEL) == 130
    assert (run_dir / "latest").read_text().strip() == "step-00000001"
    assert [p.name for p in checkpoints.finished_checkpoints(run_dir)] == ["step-00000001"]


def test_new_run_refuses_existing_checkpoints(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "1", *TINY_MODEL) == 0
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "1", *TINY_MODEL) == 1
    assert "pass --resume" in caplog.text


def test_resume_without_checkpoint_rejected(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert run_cli("train", "--out", tmp_path / "empty", "--text", text_dir, "--resume", *TINY_MODEL) == 1
    assert "no finished checkpoint to resume" in caplog.text


def test_resume_in_other_framework_rejected(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "1", *TINY_MODEL) == 0
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--framework", "jax", "--steps", "2") == 1
    assert "resume with --framework torch" in caplog.text


def test_corrupted_model_reported(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "1", *TINY_MODEL) == 0
    model_file = checkpoints.latest_checkpoint(run_dir) / checkpoints.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes()[:100])
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--steps", "2", "--no-progress") == 1
    assert str(model_file) in caplog.text
    caplog.clear()
    assert run_cli("generate", run_dir, "--prompt", "def ") == 1
    assert str(model_file) in caplog.text


def test_damaged_state_reported(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "1", *TINY_MODEL) == 0
    state_file = checkpoints.latest_checkpoint(run_dir) / checkpoints.STATE_FILE
    state_file.write_text("{not json")
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--steps", "2", "--no-progress") == 1
    assert "state.json is damaged" in caplog.text


def test_unfinished_checkpoint_ignored(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, *STEPS, *TINY_MODEL) == 0
    # A crash while writing step 4 would leave a folder without state.json and a temporary folder.
    newest = run_dir / "checkpoints" / "step-00000004"
    (newest / checkpoints.STATE_FILE).unlink()
    stale = run_dir / "checkpoints" / ".step-00000005.tmp-1"
    stale.mkdir()
    assert checkpoints.latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step-00000003"
    assert "not a finished checkpoint" in caplog.text

    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--steps", "5", "--no-progress") == 0
    assert (run_dir / "latest").read_text().strip() == "step-00000005"
    assert not stale.exists()
    assert checkpoints.read_state(newest).step == 4  # rewritten whole by the resumed run


def test_resume_keeps_saved_settings(run_cli, text_dir: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--steps", "2", "--lr", "0.003", "--seed", "5", *TINY_MODEL) == 0
    assert run_cli("train", "--out", run_dir, "--text", text_dir, "--resume", "--steps", "3", "--no-progress") == 0
    state = checkpoints.read_state(checkpoints.latest_checkpoint(run_dir))
    assert state.settings["learning_rate"] == 0.003
    assert state.settings["seed"] == 5
    assert state.settings["steps"] == 3


def test_invalid_model_flags_reported(run_cli, text_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    status = run_cli("train", "--out", tmp_path / "run", "--text", text_dir, "--steps", "1", *TINY_MODEL, "--heads", "3")
    assert status == 1
    assert "--d-model=32 is not divisible by --heads=3" in caplog.text


@pytest.mark.slow
def test_jax_resume_matches_uninterrupted(text_dir: Path, tmp_path: Path):
    from reformer_cli.jax_backend import JaxTrainer

    settings = TrainSettings(
        framework=Framework.JAX, steps=3, context=128, eval_windows=1, checkpoint_every=1, eval_every=100, warmup_steps=1
    )
    corpus = load_corpus([text_dir], context=128)
    config = tiny_config()
    reference = run_training(JaxTrainer.create(config, settings), corpus, tmp_path / "reference", new_state(settings, corpus), progress=False)

    def stop_at_two(step: int, trainer) -> None:
        if step == 2:
            raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    first = run_training(JaxTrainer.create(config, settings), corpus, run_dir, new_state(settings, corpus), progress=False, callbacks=[stop_at_two])
    assert first.interrupted
    resumed = JaxTrainer.resume(first.checkpoint, settings)
    final = run_training(resumed, corpus, run_dir, checkpoints.read_state(first.checkpoint), progress=False)
    assert final.state.step == 3
    assert_same_tensors(final_tensors(run_dir), final_tensors(reference.checkpoint.parent.parent))
