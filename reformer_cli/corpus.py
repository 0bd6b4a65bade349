"""Byte-level text corpora: loading, the held-out split by file, and training windows.

Tokens are the bytes of UTF-8 text, so token ids are 0..255 and one token is
one byte. A loss in nats per token divided by ln 2 is therefore bits per byte.

Encoding policy: a file named explicitly must be UTF-8, or loading fails with
an error naming it. Files found by walking a folder that are not UTF-8 are
skipped with a warning, because real source trees contain a few (the Python
standard library ships Latin-1 and KOI8-R test modules). Empty files are
skipped silently. A corpus left with no text is an error.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import os
import sysconfig
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from reformer_cli.errors import CommandError

logger = logging.getLogger(__name__)

# Folders under the standard library that hold installed third-party packages,
# not the library's own source.
_NOT_STDLIB = frozenset({"site-packages", "dist-packages", "__pycache__"})

# How many skipped file names a warning lists before it only counts the rest.
_SKIPPED_NAMES_SHOWN = 5


class CorpusError(CommandError):
    """A corpus that cannot be used as given, with a message that names the fix."""


@dataclasses.dataclass(frozen=True)
class TextFile:
    """One file of the corpus: where it is, the name used for the split, its bytes."""

    path: Path
    name: str  # path relative to the folder it was found in, in POSIX form
    data: bytes


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Training and held-out bytes, split by file so held-out files are never trained on."""

    source: str  # a description of where the text came from
    train: np.ndarray  # (T,) uint8, the training files concatenated in sorted order
    held_out: np.ndarray  # (E,) uint8, the held-out files concatenated in sorted order
    train_files: tuple[str, ...]
    held_out_files: tuple[str, ...]
    skipped_files: tuple[str, ...]  # names of folder files skipped because they are not UTF-8

    def describe(self) -> str:
        return (
            f"{self.source}: {len(self.train_files)} training files ({self.train.size:,} bytes), "
            f"{len(self.held_out_files)} held-out files ({self.held_out.size:,} bytes)"
        )


def default_text_root() -> Path:
    """Return the Python standard library's source folder, present wherever Python is installed."""
    return Path(sysconfig.get_paths()["stdlib"])


def find_files(paths: Sequence[Path], pattern: str) -> list[tuple[Path, str, bool]]:
    """List (path, split name, named explicitly) for every file under `paths`, sorted by name.

    Folders are walked recursively for files matching `pattern`, skipping
    hidden entries and installed-package folders; named files are taken as they are.
    """
    found: list[tuple[Path, str, bool]] = []
    for root in paths:
        root = Path(root)
        if root.is_file():
            found.append((root, root.name, True))
        elif root.is_dir():
            matches = []
            for folder, subfolders, names in os.walk(root):
                # Prune in place so os.walk never descends into skipped folders.
                subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in _NOT_STDLIB]
                for name in names:
                    if not name.startswith(".") and fnmatch.fnmatch(name, pattern):
                        path = Path(folder, name)
                        matches.append((path.relative_to(root).as_posix(), path))
            found.extend((path, name, False) for name, path in sorted(matches))
        else:
            raise CorpusError(f"Text path {str(root)!r} does not exist; pass existing files or folders with --text.")
    return found


def read_text_files(paths: Sequence[Path], pattern: str) -> tuple[list[TextFile], list[str]]:
    """Read every file as UTF-8, applying the encoding policy in the module docstring.

    Returns the non-empty files and the names of skipped non-UTF-8 folder files.
    """
    files: list[TextFile] = []
    skipped: list[str] = []
    for path, name, explicit in find_files(paths, pattern):
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CorpusError(f"Cannot read text file {str(path)!r}: {error.strerror}.") from error
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            if explicit:
                raise CorpusError(
                    f"Text file {str(path)!r} is not valid UTF-8 (byte {error.start} cannot be decoded). "
                    "Convert it to UTF-8 (for example with iconv) or leave it out of --text."
                ) from None
            skipped.append(name)
            continue
        if data:
            files.append(TextFile(path, name, data))
    if skipped:
        listed = ", ".join(skipped[:_SKIPPED_NAMES_SHOWN])
        more = f" and {len(skipped) - _SKIPPED_NAMES_SHOWN} more" if len(skipped) > _SKIPPED_NAMES_SHOWN else ""
        folders = ", ".join(str(p) for p in paths)
        logger.warning("Skipped %d files in %s that are not valid UTF-8: %s%s", len(skipped), folders, listed, more)
    return files, skipped


def split_by_file(files: Sequence[TextFile], held_out_fraction: float) -> tuple[list[TextFile], list[TextFile]]:
    """Split files into (train, held-out), holding out ceil(fraction * count) files, at least one.

    Files are ranked by the CRC-32 of their split name, a fixed pseudo-random
    order, so the split does not depend on the machine and does not favour
    one folder. Both lists keep the files' sorted order.
    """
    if len(files) < 2:
        raise CorpusError(
            f"The corpus has {len(files)} non-empty text file(s); the held-out split is by file, so it needs "
            "at least 2. Pass more files or a folder with --text."
        )
    count = min(len(files) - 1, max(1, math.ceil(held_out_fraction * len(files))))
    ranked = sorted(files, key=lambda f: (zlib.crc32(f.name.encode("utf-8")), f.name))
    held_out_names = {f.name for f in ranked[:count]}
    train = [f for f in files if f.name not in held_out_names]
    held_out = [f for f in files if f.name in held_out_names]
    return train, held_out


def _concatenate(files: Iterable[TextFile]) -> np.ndarray:
    return np.frombuffer(b"".join(f.data for f in files), dtype=np.uint8).copy()  # (T,) uint8


def load_corpus(
    paths: Sequence[str | os.PathLike] | None,
    *,
    context: int,
    held_out_fraction: float = 0.05,
    pattern: str | None = None,
) -> Corpus:
    """Load text files or folders (the standard library's *.py files when `paths` is empty).

    Raises CorpusError when no text is left, or when the training or held-out
    text is shorter than one context of `context` bytes.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise CorpusError(f"--held-out-fraction={held_out_fraction} is invalid; use a value between 0 and 1.")
    if paths:
        roots = [Path(p) for p in paths]
        source = ", ".join(str(p) for p in roots)
        pattern = pattern or "*"
    else:
        roots = [default_text_root()]
        source = f"Python standard library source ({roots[0]})"
        pattern = pattern or "*.py"

    files, skipped = read_text_files(roots, pattern)
    if not files:
        raise CorpusError(
            f"No UTF-8 text found in {source} (file pattern {pattern!r}, {len(skipped)} files skipped as "
            "not UTF-8, empty files ignored). Pass files or folders with text in them with --text."
        )
    train_files, held_out_files = split_by_file(files, held_out_fraction)
    corpus = Corpus(
        source=source,
        train=_concatenate(train_files),
        held_out=_concatenate(held_out_files),
        train_files=tuple(f.name for f in train_files),
        held_out_files=tuple(f.name for f in held_out_files),
        skipped_files=tuple(skipped),
    )
    if corpus.train.size < context:
        raise CorpusError(
            f"The training text has {corpus.train.size} bytes, fewer than one context of {context} bytes. "
            "Add text with --text or lower --context."
        )
    if corpus.held_out.size < context:
        raise CorpusError(
            f"The held-out text ({len(corpus.held_out_files)} files) has {corpus.held_out.size} bytes, "
            f"fewer than one context of {context} bytes. Raise --held-out-fraction, add files with --text, "
            "or lower --context."
        )
    return corpus


# ------------------------------------------------------------------- statistics


def byte_counts(data: np.ndarray) -> np.ndarray:
    """(256,) int64 count of each byte value."""
    return np.bincount(data, minlength=256).astype(np.int64)


def unigram_entropy_bits(data: np.ndarray) -> float:
    """Entropy in bits per byte of the byte distribution of `data`.

    A model that ignores context and predicts the corpus's byte frequencies
    needs this many bits per byte; a language model must do better.
    """
    counts = byte_counts(data)
    probabilities = counts[counts > 0] / counts.sum()
    return float(-(probabilities * np.log2(probabilities)).sum())


def unigram_cross_entropy_bits(train: np.ndarray, held_out: np.ndarray) -> float:
    """Bits per byte on `held_out` of the training byte frequencies, add-one smoothed so no byte has probability 0."""
    counts = byte_counts(train) + 1
    log_probabilities = np.log2(counts / counts.sum())
    return float(-(byte_counts(held_out) * log_probabilities).sum() / held_out.size)


# ---------------------------------------------------------------------- windows


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, step, stream), so a resumed run draws the same values."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step, stream])))


def sample_windows(data: np.ndarray, context: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(batch_size, context) int32 windows starting at uniformly drawn offsets of `data`."""
    starts = rng.integers(0, data.size - context + 1, size=batch_size)
    return np.stack([data[s : s + context] for s in starts]).astype(np.int32)


def evaluation_windows(data: np.ndarray, context: int, count: int) -> np.ndarray:
    """(count, context) int32 windows at evenly spaced offsets, the same on every call."""
    starts = np.linspace(0, data.size - context, num=count).astype(np.int64)
    return np.stack([data[s : s + context] for s in starts]).astype(np.int32)
