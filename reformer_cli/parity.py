"""`reformer parity`: run both frameworks on one set of weights and print where they differ."""

from __future__ import annotations

import argparse
import sys
import textwrap

import numpy as np

DESCRIPTION = textwrap.dedent(
    """\
    Build the PyTorch and the JAX model from the same weights, feed both the
    same token ids and the same hash rotations, and compare them: the
    embeddings, each layer fed identical inputs (outputs and gradients of its
    inputs and parameters), the logits, the loss and every parameter's
    gradient. JAX is given PyTorch's buckets for these, so the arithmetic is
    compared on identical attention patterns. The share of buckets that agree
    when each framework hashes its own activations is reported apart.

    The weights come from CHECKPOINT (any format `reformer convert` reads), or
    are drawn at random for the model that --config describes.
    """
)

EPILOG = textwrap.dedent(
    """\
    examples:
      reformer parity runs/demo/model.safetensors
      reformer parity --config config.json --dtype float32 --length 200
      reformer parity runs/demo/model.safetensors --dropout-seed 7

    exit status: 0 when every check is within the spec's tolerance, 1 when one
    is not, 2 on bad arguments.
    """
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "parity",
        help="compare the PyTorch and JAX models on the same weights",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="weights file (.safetensors, .pt, .msgpack)")
    source.add_argument("--config", metavar="JSON", help="config file; weights are drawn at random")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="precision of both models (default: float64)")
    parser.add_argument("--batch", type=int, default=2, help="sequences per batch (default: 2)")
    parser.add_argument("--length", type=int, help="tokens per sequence (default: min(max_length, 4 chunks of the model))")
    parser.add_argument("--seed", type=int, default=0, help="seed of the token ids, weights and hash rotations (default: 0)")
    parser.add_argument(
        "--dropout-seed",
        type=int,
        metavar="N",
        help="run both models in training mode with the config's dropout rates, both drawing the portable "
        "masks of seed N, an int in [0, 2**32) (default: dropout off)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reformer_spec.config import ReformerConfig
    from weights_convert import ConversionError, read_weights
    from weights_convert.parity import compare_frameworks

    try:
        if args.checkpoint:
            config, canonical = read_weights(args.checkpoint)
        else:
            config = ReformerConfig.load(args.config)
            canonical = _random_weights(config, args.seed)
    except (ConversionError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    length = args.length or min(config.max_length, 4 * config.length_multiple)
    if not 1 <= length <= config.max_length or args.batch < 1:
        print(f"error: --length must lie in [1, {config.max_length}] and --batch must be at least 1.", file=sys.stderr)
        return 2
    ids = np.random.default_rng(args.seed).integers(0, config.vocab_size, size=(args.batch, length))
    if args.dropout_seed is not None and not 0 <= args.dropout_seed < 2**32:
        print(f"error: --dropout-seed {args.dropout_seed} is invalid; use an int in [0, 2**32).", file=sys.stderr)
        return 2
    report = compare_frameworks(config, canonical, ids, seed=args.seed, dtype=args.dtype, dropout_seed=args.dropout_seed)
    print(report.to_markdown())
    print()
    print(f"worst output difference:   {report.worst_output}")
    print(f"worst gradient difference: {report.worst_gradient}")
    print("parity: PASS" if report.passed else "parity: FAIL (a difference exceeds the tolerance)")
    return 0 if report.passed else 1


def _random_weights(config, seed: int) -> dict[str, np.ndarray]:
    """Weights as the PyTorch model initialises them, drawn from `seed`."""
    import torch

    from reformer_torch import ReformerLM
    from weights_convert import torch_state_to_canonical

    torch.manual_seed(seed)
    return torch_state_to_canonical(config, ReformerLM(config).state_dict())
