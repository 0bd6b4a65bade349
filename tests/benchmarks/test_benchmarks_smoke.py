"""The benchmark runner end to end at its smallest sizes, and its stopping rules.

No timing is asserted: the machine running the tests is shared and slow.
These check that every output is written and well-formed and that a failed
size stops its series with a recorded reason.
"""

import json

import pytest

from benchmarks import report, run
from benchmarks.systems import Shape

SYSTEMS = ["ours-torch", "full-attention"]
LENGTHS = [128, 256]
# The JAX model goes through the depth sweep only: one compile instead of two keeps the test quick.
DEPTH_SYSTEMS = ["ours-torch", "ours-jax"]


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmarks")
    arguments = [
        "--quick", "--out", str(folder), "--systems", *SYSTEMS, "--modes", "train",
        "--lengths", *map(str, LENGTHS), "--length-depth", "2",
        "--depths", "2", "--depth-length", "128", "--depth-systems", *DEPTH_SYSTEMS,
        "--min-seconds", "0", "--max-steps", "1", "--time-cap", "300",
    ]
    assert run.main(arguments) == 0
    return folder


def test_run_writes_every_output(output):
    for name in ("results.json", "results.md", "length_train.png", "depth.png"):
        path = output / name
        assert path.is_file(), name
        assert path.stat().st_size > 0, name
    assert (output / "length_train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(output.glob("*.tmp")), "a temporary file was left behind"


def test_every_measurement_succeeds(output):
    results = json.loads((output / "results.json").read_text())
    failed = [(m["system"], m["shape"], m["status"], m.get("reason")) for m in results["measurements"] if m["status"] != "ok"]
    assert failed == []
    planned = {(m["system"], m["shape"].get("length")) for m in results["measurements"] if m["sweep"] == "length"}
    assert planned == {(system, length) for system in SYSTEMS for length in LENGTHS}
    assert {m["system"] for m in results["measurements"] if m["sweep"] == "depth"} == set(DEPTH_SYSTEMS)
    assert [m["sweep"] for m in results["measurements"]].count("conversion") == 1


def test_measurements_are_plausible(output):
    results = json.loads((output / "results.json").read_text())
    for m in results["measurements"]:
        if m["sweep"] == "conversion":
            assert m["round_trip_exact"] is True
            assert m["total_seconds"] > 0
            continue
        assert m["tokens_per_second"] == pytest.approx(m["shape"]["length"] / m["step_seconds"])
        assert m["peak_memory_bytes"] >= m["rss_before_model_bytes"] > 0
        assert m["n_parameters"] > 0
        assert (m["compile_seconds"] is not None) == (m["system"] == "ours-jax")


def test_markdown_has_tables_and_ratios(output):
    text = (output / "results.md").read_text()
    for heading in ("## Targets", "## Sequence length", "## Depth, reversible and not", "## Weight conversion"):
        assert heading in text
    assert "Load average" in text
    assert "![length_train](length_train.png)" in text
    # Our PyTorch model is the reference row of the ratio table, so its own ratio is exactly 1.
    ratio_table = text.split("throughput relative to ours, PyTorch (reversible)")[1].split("####")[0]
    assert "| ours, PyTorch (reversible) | 1.00x | 1.00x |" in ratio_table


class FailingLauncher:
    """Fails at one length and records every request it gets."""

    def __init__(self, failing_length):
        self.failing_length = failing_length
        self.requests = []

    def run(self, request, time_cap, memory_cap):
        self.requests.append(request)
        if request["shape"]["length"] == self.failing_length:
            return {"status": "out of memory", "reason": "MemoryError", "wall_seconds": 1.0}
        return {"status": "ok", "wall_seconds": 1.0, "build_seconds": 0.1, "warmup_seconds": 0.1,
                "step_seconds": 0.1, "timed_steps": 1}

    def close(self):
        pass


def test_series_stops_at_first_failure():
    arguments = run.parse_arguments(["--systems", "ours-torch", "--modes", "train", "--lengths", "1024", "2048", "4096",
                                     "--depths", "--no-conversion"])
    settings = run.settings_from(arguments)
    runner = run.Runner(settings, arguments.trax_python)
    launcher = FailingLauncher(failing_length=2048)
    runner.launchers["python"] = launcher
    results = [runner.run(m) for m in run.plan(arguments, settings)]
    assert [r["status"] for r in results] == ["ok", "out of memory", "skipped"]
    assert [request["shape"]["length"] for request in launcher.requests] == [1024, 2048]
    assert "stopped at length 2048" in results[2]["reason"]


def test_series_skips_size_projected_over_cap():
    arguments = run.parse_arguments(["--systems", "full-attention", "--modes", "train", "--lengths", "1024", "2048",
                                     "--depths", "--no-conversion", "--time-cap", "10"])
    settings = run.settings_from(arguments)
    runner = run.Runner(settings, arguments.trax_python)
    runner.launchers["python"] = FailingLauncher(failing_length=None)
    first = runner.run(run.plan(arguments, settings)[0])
    runner.last_ok[run.series_key(first)]["step_seconds"] = 5.0  # 4x growth makes the next size about 20 s
    second = runner.run(run.plan(arguments, settings)[1])
    assert second["status"] == "skipped"
    assert "over the 10 s time cap" in second["reason"]


def test_targets_missing_figures_are_not_verdicts():
    results = {"measurements": [], "settings": {"systems": {}}}
    rows = report.targets(results)
    assert rows
    assert all(row["met"] is None and row["value"] is None for row in rows)


@pytest.mark.parametrize("length", [100, 64, 3 * 1024])
def test_shape_rejects_invalid_length(length):
    with pytest.raises(ValueError, match=f"length={length}"):
        Shape(length)
