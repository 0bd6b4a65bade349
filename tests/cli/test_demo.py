"""A shortened `reformer demo` end to end, and the report folder it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reformer_cli import report
from reformer_cli.generate import Generation
from reformer_cli.options import Framework

from .conftest import TINY_MODEL

SHORT_DEMO = ["--steps", "3", "--prompt-bytes", "24", "--generate-bytes", "8", *TINY_MODEL]


def test_demo_end_to_end(run_cli, text_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--text", text_dir, *SHORT_DEMO) == 0
    printed = capsys.readouterr().out
    assert "unigram entropy" in printed
    assert "Conversion round trip bit-identical: yes" in printed

    folder = out / "report"
    for name in ("report.md", "training_curve.png", "lsh_buckets.png", "metrics.json"):
        assert (folder / name).is_file(), name
    assert not list(out.glob(".report*"))  # no temporary or old report folders left behind

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert metrics["round_trip_exact"] is True
    assert metrics["parity_passed"] is True
    assert set(metrics["held_out_bits_per_byte"]) == {"PyTorch", "JAX/Flax"}
    assert 0 < metrics["unigram_entropy_bits_per_byte"] <= 8
    greedy = metrics["samples"][0]
    assert greedy["description"] == "greedy"
    assert greedy["identical"], greedy

    markdown = (folder / "report.md").read_text()
    for heading in ("## Result", "## Conversion and parity", "## Samples", "## LSH buckets", "## Settings"):
        assert heading in markdown
    assert (out / "model-jax.safetensors").is_file()


@pytest.mark.slow
def test_demo_trains_in_jax(run_cli, text_dir: Path, tmp_path: Path):
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--text", text_dir, "--framework", "jax", *SHORT_DEMO) == 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["trained_framework"] == "JAX/Flax"
    assert metrics["round_trip_exact"] is True
    assert metrics["samples"][0]["identical"]
    assert (out / "model-torch.safetensors").is_file()


def test_demo_interrupt_then_resume(run_cli, text_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from reformer_cli import train

    original = train.run_training

    def interrupt_after_first_step(*args, **kwargs):
        def stop(step, trainer):
            if step == 1:
                raise KeyboardInterrupt

        return original(*args, **kwargs, callbacks=[stop])

    monkeypatch.setattr("reformer_cli.demo.run_training", interrupt_after_first_step)
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--text", text_dir, *SHORT_DEMO) == 130
    assert (out / "run" / "latest").read_text().strip() == "step-00000001"
    assert not (out / "report").exists()

    monkeypatch.setattr("reformer_cli.demo.run_training", original)
    assert run_cli("demo", "--out", out, "--text", text_dir, "--resume", *SHORT_DEMO) == 0
    assert json.loads((out / "report" / "metrics.json").read_text())["steps"] == 3


def _report_data() -> report.ReportData:
    generation = Generation(Framework.TORCH, b"ab", b"cd", 0.1)
    other = Generation(Framework.JAX, b"ab", b"ce", 0.1)
    return report.ReportData(
        trained_framework="PyTorch",
        converted_framework="JAX/Flax",
        settings={"steps": 2},
        config={"d_model": 8},
        corpus={"source": "test"},
        history={"train": [[1, 5.0, 100.0, 1e-3], [2, 4.0, 100.0, 1e-3]], "eval": [[0, 5.5], [2, 4.5]]},
        unigram_entropy_bits=4.5,
        unigram_held_out_bits=4.6,
        held_out_bits={"PyTorch": 6.4, "JAX/Flax": 6.4},
        round_trip_exact=True,
        parity_markdown=None,
        parity_passed=False,
        parity_note="not run in this test.",
        samples=[report.SamplePair("greedy", True, generation, other)],
        prompt=b"ab",
        bucket_passage=b"abcd",
        bucket_layer=None,
        timings={"total": 1.0},
    )


def test_report_replaces_older_report(tmp_path: Path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "stale.txt").write_text("from an older run")
    report.write_report(folder, _report_data())
    assert not (folder / "stale.txt").exists()
    assert "differ from byte 1 on" in (folder / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_failed_report_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "plot_training_curve", fail)
    with pytest.raises(RuntimeError):
        report.write_report(tmp_path / "report", _report_data())
    assert list(tmp_path.iterdir()) == []
