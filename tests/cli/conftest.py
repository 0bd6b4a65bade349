"""Fixtures for the command-line tests: a small UTF-8 corpus, tiny model flags, and a way to run `reformer`."""

from __future__ import annotations

from pathlib import Path

import pytest

from reformer_cli import main as cli_main

# A model small enough that a few steps take seconds: context 128 in chunks of 32
# (so both LSH and local layers have several chunks), two heads of width 16.
TINY_MODEL = [
    "--context", "128",
    "--chunk-length", "32",
    "--d-model", "32",
    "--heads", "2",
    "--d-ff", "48",
    "--layers", "local,lsh",
    "--eval-windows", "1",
    "--no-progress",
]

_PARAGRAPHS = [
    "The Reformer replaces dot-product attention by one that uses locality-sensitive hashing. ",
    "Reversible residual layers store activations only once instead of once per layer. ",
    "def add(a, b):\n    return a + b\n\n",
    "for index, value in enumerate(values):\n    total += index * value\n",
    "Caf\u00e9, na\u00efve and \u00fcber are UTF-8 text with bytes above 127. ",
]


@pytest.fixture
def text_dir(tmp_path: Path) -> Path:
    """A folder of six UTF-8 files of about 1.5 kB each, so one is held out and each side exceeds one context."""
    folder = tmp_path / "text"
    folder.mkdir()
    for index in range(6):
        body = "".join(_PARAGRAPHS[(index + k) % len(_PARAGRAPHS)] for k in range(20))
        (folder / f"part_{index}.txt").write_text(body, encoding="utf-8")
    return folder


@pytest.fixture
def run_cli():
    """Run `reformer ARGS...` in this process and return its exit status."""

    def run(*args: str | Path) -> int:
        return cli_main.main([str(a) for a in args])

    return run
