"""`reformer convert`: move weights between PyTorch, Flax and safetensors files."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

import numpy as np

logger = logging.getLogger(__name__)

DESCRIPTION = textwrap.dedent(
    """\
    Convert Reformer weights from SRC to DST. The formats come from the file
    extensions unless --from or --to name them:

      .safetensors   framework-neutral: canonical tensor names, the config as
                     JSON in the file's metadata (key "reformer_config")
      .pt, .pth      PyTorch: torch.save of {"reformer_config", "state_dict"}
      .msgpack       Flax: msgpack of {"reformer_config", "params"}

    Every conversion checks the whole weight set against the config: a
    missing, unused or misshaped tensor stops it with the tensor's name.
    Values are copied bit for bit (reshapes and transposes only) unless
    --dtype requests a cast. DST is written to a temporary file and renamed,
    so a failed conversion leaves nothing under the target name.
    """
)

EPILOG = textwrap.dedent(
    """\
    examples:
      reformer convert run/model.safetensors model.pt
      reformer convert model.pt model.msgpack --dtype bfloat16
      reformer convert weights.bin out.safetensors --from torch

    exit status: 0 on success, 1 when the conversion failed, 2 on bad arguments.
    """
)

DTYPES = {"float32": np.float32, "float64": np.float64, "bfloat16": "bfloat16", "float16": np.float16}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert weights between PyTorch, Flax and safetensors",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SRC", help="weights file to read")
    parser.add_argument("target", metavar="DST", help="weights file to write")
    parser.add_argument("--from", dest="source_format", choices=["safetensors", "torch", "flax"], help="format of SRC (default: from its extension)")
    parser.add_argument("--to", dest="target_format", choices=["safetensors", "torch", "flax"], help="format of DST (default: from its extension)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast every tensor to this dtype (default: keep)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from weights_convert import ConversionError, read_weights, write_weights
    from weights_convert.arrays import BFLOAT16

    if Path(args.target).exists() and not args.force:
        print(f"error: {args.target} exists; pass --force to overwrite it.", file=sys.stderr)
        return 1
    try:
        config, canonical = read_weights(args.source, args.source_format)
        if args.dtype:
            dtype = BFLOAT16 if args.dtype == "bfloat16" else DTYPES[args.dtype]
            canonical = {name: array.astype(dtype) for name, array in canonical.items()}
        write_weights(args.target, config, canonical, args.target_format)
    except (ConversionError, FileNotFoundError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = sum(array.size for array in canonical.values())
    dtype = next(iter(canonical.values())).dtype
    print(f"wrote {args.target}: {len(canonical)} tensors, {count:,} parameters, {dtype}")
    return 0
