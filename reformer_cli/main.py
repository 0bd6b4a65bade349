"""The `reformer` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines `add_parser(subparsers)`, which registers its subcommand
# and sets `func` (taking the parsed arguments, returning an exit code).
SUBCOMMANDS = ("demo", "train", "generate", "convert", "parity")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reformer",
        description="Train, convert, verify and run Reformer language models in PyTorch and JAX/Flax.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"reformer_cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
