"""`reformer convert`: move weights between PyTorch, Flax, safetensors files and Hugging Face folders."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

import numpy as np

logger = logging.getLogger(__name__)

DESCRIPTION = textwrap.dedent(
    """\
    Convert Reformer weights from SRC to DST. The formats come from the paths
    unless --from or --to name them:

      .safetensors   framework-neutral: canonical tensor names, the config as
                     JSON in the file's metadata (key "reformer_config")
      .pt, .pth      PyTorch: torch.save of {"reformer_config", "state_dict"}
      .msgpack       Flax: msgpack of {"reformer_config", "params"}
      folder         Hugging Face: config.json with model.safetensors or
                     pytorch_model.bin, as save_pretrained writes them. SRC is
                     read as one when it is a folder with a config.json; DST
                     is written as one when it has no extension.

    Every conversion checks the whole weight set against the config: a
    missing, unused or misshaped tensor stops it with the tensor's name.
    Values are copied bit for bit (reshapes and transposes only) unless
    --dtype requests a cast. DST is written to a temporary file or folder and
    renamed, so a failed conversion leaves nothing under the target name.

    Hugging Face folders: hub names are not downloaded; download the folder
    first. An imported model has lsh_same_bucket_only=false, the chunk window
    Hugging Face attends to. A config Hugging Face cannot represent stops the
    export with the field's name: lsh_same_bucket_only=true (unless
    --allow-window-change), 'full' attention layers, hidden_dropout differing
    from ff_dropout, axial_shape with other than 2 axes. Tied embeddings are
    exported as an untied decoder holding the embedding twice. Load a causal
    export with ReformerModelWithLMHead.from_pretrained(DST), a bidirectional
    one with ReformerForMaskedLM. transformers 5.25 loads float64 weights as
    float64 except the axial position tables, which it rounds to float32.
    """
)

EPILOG = textwrap.dedent(
    """\
    examples:
      reformer convert run/model.safetensors model.pt
      reformer convert model.pt model.msgpack --dtype bfloat16
      reformer convert weights.bin out.safetensors --from torch
      reformer convert path/to/hf-reformer model.safetensors
      reformer convert model.safetensors hf-export --allow-window-change

    exit status: 0 on success, 1 when the conversion failed, 2 on bad arguments.
    """
)

DTYPES = {"float32": np.float32, "float64": np.float64, "bfloat16": "bfloat16", "float16": np.float16}
FORMATS = ["safetensors", "torch", "flax", "huggingface"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert weights between PyTorch, Flax, safetensors and Hugging Face folders",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SRC", help="weights file or Hugging Face folder to read")
    parser.add_argument("target", metavar="DST", help="weights file or Hugging Face folder to write")
    parser.add_argument("--from", dest="source_format", choices=FORMATS, help="format of SRC (default: from its path)")
    parser.add_argument("--to", dest="target_format", choices=FORMATS, help="format of DST (default: from its path)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="cast every tensor to this dtype (default: keep)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.add_argument(
        "--allow-window-change",
        action="store_true",
        help="export a model with lsh_same_bucket_only=true to Hugging Face anyway; its LSH layers then attend to "
        "the whole chunk window, so its outputs differ from the source model's",
    )
    parser.set_defaults(func=run)


def source_format(path: str, named: str | None) -> str | None:
    """Return the format of SRC: as named, "huggingface" for a folder, else None (decided by the extension)."""
    from pathlib import Path

    from weights_convert.huggingface import is_huggingface_folder

    if named:
        return named
    if is_huggingface_folder(path):
        return "huggingface"
    if Path(path).is_dir():
        raise FileNotFoundError(f"{path} is a folder without config.json; a Hugging Face checkpoint folder needs one.")
    return None


def target_format(path: str, named: str | None) -> str | None:
    """Return the format of DST: as named, "huggingface" for a path without extension, else None (decided by the extension)."""
    from pathlib import Path

    if named:
        return named
    if not Path(path).suffix or Path(path).is_dir():
        return "huggingface"
    return None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from weights_convert import ConversionError, load_huggingface, read_weights, save_huggingface, write_weights
    from weights_convert.arrays import BFLOAT16

    target = Path(args.target)
    empty_folder = target.is_dir() and not any(target.iterdir())
    if target.exists() and not empty_folder and not args.force:
        print(f"error: {args.target} exists; pass --force to overwrite it.", file=sys.stderr)
        return 1
    try:
        from_format = source_format(args.source, args.source_format)
        to_format = target_format(args.target, args.target_format)
        if from_format == "huggingface":
            config, canonical = load_huggingface(args.source)
        else:
            config, canonical = read_weights(args.source, from_format)
        if args.dtype:
            dtype = BFLOAT16 if args.dtype == "bfloat16" else DTYPES[args.dtype]
            canonical = {name: array.astype(dtype) for name, array in canonical.items()}
        if to_format == "huggingface":
            save_huggingface(config, canonical, target, allow_window_change=args.allow_window_change, overwrite=args.force)
        else:
            write_weights(args.target, config, canonical, to_format)
    except (ConversionError, FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    count = sum(array.size for array in canonical.values())
    dtype = next(iter(canonical.values())).dtype
    print(f"wrote {args.target}: {len(canonical)} tensors, {count:,} parameters, {dtype}")
    return 0
