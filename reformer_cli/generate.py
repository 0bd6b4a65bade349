"""`reformer generate`: continue a prompt byte by byte, greedily or by sampling, in either framework.

There is no key/value cache: every step re-runs the model on the last
max_length bytes (at most), padded with masked positions to whole chunks, so
only one input shape per chunk count occurs.

Both frameworks get the same padded input and the same hashing rotations,
`portable_rotations(config, seed)`. The next byte is chosen in numpy from
float64 logits, so greedy decoding gives the same bytes in PyTorch and JAX.
Two exceptions remain: two logits within float32 rounding of each other, and
a rounding difference that moves a hashed vector across a bucket boundary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from reformer_cli import backends, checkpoints
from reformer_cli.errors import EXIT_FAILED, EXIT_OK, CommandError, reports_errors
from reformer_cli.options import Framework, non_negative_float, non_negative_int, positive_int
from reformer_spec.hashing import portable_rotations

logger = logging.getLogger(__name__)

_SAMPLING_STREAM = 2  # SeedSequence entry that separates sampling draws from other uses of the seed


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Rule for choosing the next byte; temperature 0 means greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0  # keep only the k most likely bytes before sampling; 0 keeps all
    seed: int = 0  # seeds the hashing rotations and the sampling draws

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def describe(self) -> str:
        if self.greedy:
            return "greedy"
        return f"sampled, temperature {self.temperature}" + (f", top-k {self.top_k}" if self.top_k else "")


@dataclasses.dataclass(frozen=True)
class Generation:
    framework: Framework
    prompt: bytes
    continuation: bytes
    seconds: float

    @property
    def text(self) -> str:
        """The continuation decoded as UTF-8; bytes that do not decode become U+FFFD."""
        return self.continuation.decode("utf-8", errors="replace")


def choose_byte(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """Pick the next byte from (V,) logits: argmax when greedy, else a draw from the tempered, top-k softmax."""
    logits = np.asarray(logits, dtype=np.float64)
    if sampling.greedy:
        return int(np.argmax(logits))  # the first maximum on ties, the same in every framework
    scaled = logits / sampling.temperature
    if 0 < sampling.top_k < scaled.size:
        threshold = np.sort(scaled)[-sampling.top_k]
        scaled = np.where(scaled >= threshold, scaled, -np.inf)
    probabilities = np.exp(scaled - scaled.max())
    probabilities /= probabilities.sum()
    return int(rng.choice(scaled.size, p=probabilities))


def generate(
    runner: "backends.Runner",
    prompt: bytes,
    max_new_bytes: int,
    sampling: Sampling = Sampling(),
    on_byte: Callable[[int], None] | None = None,
) -> Generation:
    """Continue `prompt` by `max_new_bytes` bytes; `on_byte` is called with each new byte as it is chosen."""
    if not prompt:
        raise CommandError("The prompt is empty; give at least one byte of text to continue.")
    config = runner.config
    rotations = portable_rotations(config, sampling.seed)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([sampling.seed, _SAMPLING_STREAM])))
    tokens = list(prompt)
    started = time.perf_counter()
    for _ in range(max_new_bytes):
        window = tokens[-config.max_length :]
        length = len(window)
        padded = config.padded_length(length)
        ids = np.full((1, padded), config.pad_token_id, dtype=np.int32)  # (1, L_padded)
        ids[0, :length] = window
        mask = np.zeros((1, padded), dtype=bool)
        mask[0, :length] = True
        logits = runner.logits(ids, mask, rotations)  # (1, L_padded, V)
        token = choose_byte(logits[0, length - 1], sampling, rng)
        tokens.append(token)
        if on_byte is not None:
            on_byte(token)
    return Generation(runner.framework, bytes(prompt), bytes(tokens[len(prompt) :]), time.perf_counter() - started)


def first_difference(first: bytes, second: bytes) -> int | None:
    """Index of the first differing byte, None when equal."""
    for index, (a, b) in enumerate(zip(first, second)):
        if a != b:
            return index
    return None if len(first) == len(second) else min(len(first), len(second))


def read_prompt(args: argparse.Namespace) -> bytes:
    if args.prompt_file is not None:
        try:
            return Path(args.prompt_file).read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read the prompt file {str(args.prompt_file)!r}: {error.strerror}.") from error
    return args.prompt.encode("utf-8")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="continue a prompt with a trained model",
        description="Continue a prompt byte by byte with a trained model, in PyTorch, JAX or both. "
        "With --framework both, the two continuations are compared; greedy decoding should match.",
    )
    parser.add_argument("model", type=Path, help="a model .safetensors file, a checkpoint folder, or a run folder (its newest checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="prompt text, encoded as UTF-8")
    source.add_argument("--prompt-file", type=Path, help="file whose bytes are the prompt")
    parser.add_argument("--framework", choices=["torch", "jax", "both"], default="torch", help="framework to run (default: %(default)s)")
    parser.add_argument("--max-new-bytes", type=positive_int, default=200, help="bytes to generate (default: %(default)s)")
    parser.add_argument("--temperature", type=non_negative_float, default=0.0, help="softmax temperature; 0 is greedy (default: %(default)s)")
    parser.add_argument("--top-k", type=non_negative_int, default=0, help="sample among the k most likely bytes; 0 for all (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the hashing rotations and of sampling (default: %(default)s)")
    parser.set_defaults(func=run_command)


@reports_errors
def run_command(args: argparse.Namespace) -> int:
    model_file = checkpoints.resolve_model_file(args.model)
    prompt = read_prompt(args)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    frameworks = [Framework.TORCH, Framework.JAX] if args.framework == "both" else [Framework(args.framework)]

    results = []
    for framework in frameworks:
        runner = backends.load_runner(framework, model_file)
        if len(frameworks) == 1:
            # Stream bytes as they come; the terminal decodes UTF-8 across writes.
            def show(token: int) -> None:
                sys.stdout.buffer.write(bytes([token]))
                sys.stdout.buffer.flush()

            result = generate(runner, prompt, args.max_new_bytes, sampling, on_byte=show)
            sys.stdout.write("\n")
        else:
            result = generate(runner, prompt, args.max_new_bytes, sampling)
            print(f"--- {framework.label} ({sampling.describe()}, {result.seconds:.1f} s)")
            print(result.text)
        results.append(result)

    if len(results) == 2:
        index = first_difference(results[0].continuation, results[1].continuation)
        if index is None:
            print(f"--- identical in both frameworks ({len(results[0].continuation)} bytes)")
        else:
            print(f"--- the frameworks differ from byte {index} of the continuation on")
            if sampling.greedy:
                return EXIT_FAILED
    return EXIT_OK
