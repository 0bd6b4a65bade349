"""Loading text: the held-out split, the encoding policy and the errors for unusable corpora."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from reformer_cli.corpus import (
    CorpusError,
    evaluation_windows,
    load_corpus,
    sample_windows,
    step_rng,
    unigram_cross_entropy_bits,
    unigram_entropy_bits,
)

from .conftest import TINY_MODEL


def test_split_holds_out_whole_files(text_dir: Path):
    corpus = load_corpus([text_dir], context=128, held_out_fraction=0.3)
    assert len(corpus.held_out_files) == 2  # ceil(0.3 * 6)
    assert not set(corpus.held_out_files) & set(corpus.train_files)
    assert sorted(corpus.held_out_files + corpus.train_files) == [f"part_{i}.txt" for i in range(6)]
    held_out_bytes = b"".join((text_dir / name).read_bytes() for name in corpus.held_out_files)
    assert corpus.held_out.tobytes() == held_out_bytes


def test_split_is_deterministic(text_dir: Path):
    first = load_corpus([text_dir], context=128)
    second = load_corpus([text_dir], context=128)
    assert first.held_out_files == second.held_out_files
    assert np.array_equal(first.train, second.train)


def test_default_corpus_is_stdlib_source():
    corpus = load_corpus(None, context=4096)
    assert corpus.train.size > 1_000_000
    assert corpus.held_out.size >= 4096
    assert all(name.endswith(".py") for name in corpus.train_files)
    assert not any("site-packages" in name for name in corpus.train_files)


def test_named_non_utf8_file_rejected(text_dir: Path, tmp_path: Path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 ".encode("latin-1") * 100)
    with pytest.raises(CorpusError, match="latin1.txt.*not valid UTF-8"):
        load_corpus([text_dir, latin1], context=128)


def test_non_utf8_file_in_folder_skipped(text_dir: Path, caplog: pytest.LogCaptureFixture):
    (text_dir / "latin1.txt").write_bytes("caf\u00e9 ".encode("latin-1") * 100)
    with caplog.at_level(logging.WARNING):
        corpus = load_corpus([text_dir], context=128)
    assert corpus.skipped_files == ("latin1.txt",)
    assert "latin1.txt" not in corpus.train_files + corpus.held_out_files
    assert "latin1.txt" in caplog.text


def test_empty_folder_rejected(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("")
    with pytest.raises(CorpusError, match="No UTF-8 text found"):
        load_corpus([empty], context=128)


def test_missing_path_rejected(tmp_path: Path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus([tmp_path / "nowhere"], context=128)


def test_single_file_rejected(text_dir: Path):
    with pytest.raises(CorpusError, match="at least 2"):
        load_corpus([text_dir / "part_0.txt"], context=128)


def test_text_shorter_than_context_rejected(text_dir: Path):
    with pytest.raises(CorpusError, match="fewer than one context of 4096 bytes"):
        load_corpus([text_dir], context=4096)


def test_invalid_held_out_fraction_rejected(text_dir: Path):
    with pytest.raises(CorpusError, match="held-out-fraction"):
        load_corpus([text_dir], context=128, held_out_fraction=1.0)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "No UTF-8 text found"),
        ("short", "fewer than one context"),
        ("latin1", "not valid UTF-8"),
    ],
)
def test_train_command_reports_bad_text(run_cli, tmp_path: Path, caplog: pytest.LogCaptureFixture, setup: str, message: str):
    folder = tmp_path / "bad"
    folder.mkdir()
    target: Path = folder
    if setup == "short":
        for index in range(3):
            (folder / f"{index}.txt").write_text("tiny")
    elif setup == "latin1":
        target = folder / "latin1.txt"
        target.write_bytes("caf\u00e9".encode("latin-1") * 200)
    status = run_cli("train", "--out", tmp_path / "run", "--text", target, "--steps", "2", *TINY_MODEL)
    assert status == 1
    assert message in caplog.text
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unigram_entropy_limits():
    assert unigram_entropy_bits(np.zeros(100, dtype=np.uint8)) == 0.0
    assert unigram_entropy_bits(np.arange(256, dtype=np.uint8)) == pytest.approx(8.0)
    assert unigram_cross_entropy_bits(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8)) == pytest.approx(8.0)


def test_windows_depend_only_on_seed_and_step():
    data = np.arange(1000, dtype=np.int64).astype(np.uint8)
    first = sample_windows(data, 64, 3, step_rng(7, 5, 0))
    again = sample_windows(data, 64, 3, step_rng(7, 5, 0))
    other = sample_windows(data, 64, 3, step_rng(7, 6, 0))
    assert first.shape == (3, 64)
    assert first.dtype == np.int32
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_evaluation_windows_cover_the_ends():
    data = np.arange(200, dtype=np.uint8)
    windows = evaluation_windows(data, 50, 3)
    assert windows[0, 0] == 0
    assert windows[-1, -1] == 199
