"""Checkpoint files: the framework-neutral safetensors file, and each framework's native file.

A canonical checkpoint is one `.safetensors` file: tensors under their
canonical names, the config as JSON in the metadata key "reformer_config".
A PyTorch checkpoint (`.pt`, `.pth`) is `torch.save` of
{"reformer_config": JSON, "state_dict": ...}, read back with `weights_only=True`.
A Flax checkpoint (`.msgpack`) is `flax.serialization.msgpack_serialize` of
{"reformer_config": JSON, "params": ...}.

Every writer writes a temporary file beside the target and renames it into
place, so a failed or interrupted write never leaves a partial file under the
final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from reformer_spec.config import ReformerConfig
from weights_convert.arrays import numpy_to_torch, torch_to_numpy
from weights_convert.convert import (
    canonical_to_flax_params,
    canonical_to_torch_state,
    check_canonical,
    flax_params_to_canonical,
    torch_state_to_canonical,
)
from weights_convert.errors import ConversionError
from weights_convert.mapping import weight_rules

CONFIG_KEY = "reformer_config"
FORMATS = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".msgpack": "flax"}


def infer_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConversionError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix!r}; use one of "
            f"{sorted(FORMATS)} or name the format explicitly (safetensors, torch, flax)."
        )
    return FORMATS[suffix]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path or train a model first.")


# -------------------------------------------------------------- safetensors


def save_checkpoint(path: str | os.PathLike, config: ReformerConfig, canonical: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write canonical tensors and their config to one safetensors file, atomically."""
    from safetensors.torch import save_file

    check_canonical(config, canonical)
    tensors = {name: numpy_to_torch(array) for name, array in canonical.items()}
    info = {CONFIG_KEY: config.to_json(), **(metadata or {})}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=info)


def load_checkpoint(path: str | os.PathLike) -> tuple[ReformerConfig, dict[str, np.ndarray]]:
    """Read a canonical safetensors checkpoint: (config, canonical tensors)."""
    from safetensors import safe_open

    path = Path(path)
    _require_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            canonical = {name: torch_to_numpy(handle.get_tensor(name)) for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for damaged files
        raise ConversionError(f"{str(path)!r} is not a readable safetensors file ({error}); it may be truncated or corrupted.") from error
    if CONFIG_KEY in metadata:
        config = ReformerConfig.from_json(metadata[CONFIG_KEY])
    elif (path.parent / "config.json").is_file():
        config = ReformerConfig.load(path.parent / "config.json")
    else:
        raise ConversionError(f"{str(path)!r} has no {CONFIG_KEY!r} metadata and no config.json beside it; the config is needed to rebuild the model.")
    check_canonical(config, canonical, str(path))
    return config, canonical


# ------------------------------------------------------------------ PyTorch


def save_torch_file(path: str | os.PathLike, config: ReformerConfig, canonical: Mapping[str, np.ndarray]) -> None:
    import torch

    payload = {CONFIG_KEY: config.to_json(), "state_dict": canonical_to_torch_state(config, canonical)}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_torch_file(path: str | os.PathLike) -> tuple[ReformerConfig, dict[str, np.ndarray]]:
    import torch

    path = Path(path)
    _require_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConversionError(f"{str(path)!r} is not a readable PyTorch checkpoint ({error}).") from error
    if not isinstance(payload, dict) or CONFIG_KEY not in payload or "state_dict" not in payload:
        raise ConversionError(f"{str(path)!r} is not a Reformer PyTorch checkpoint: expected a dict with {CONFIG_KEY!r} and 'state_dict'.")
    config = ReformerConfig.from_json(payload[CONFIG_KEY])
    return config, torch_state_to_canonical(config, payload["state_dict"])


# --------------------------------------------------------------------- Flax


def save_flax_file(path: str | os.PathLike, config: ReformerConfig, canonical: Mapping[str, np.ndarray]) -> None:
    from flax import serialization

    check_canonical(config, canonical)
    # numpy arrays go in directly: no JAX device copy, and float64 stays float64 with x64 off.
    params: dict[str, Any] = {}
    rules = {rule.spec.name: rule for rule in weight_rules(config)}
    for name, array in canonical.items():
        node = params
        flax_path = rules[name].flax_path
        for key in flax_path[:-1]:
            node = node.setdefault(key, {})
        node[flax_path[-1]] = np.asarray(array)
    data = serialization.msgpack_serialize({CONFIG_KEY: config.to_json(), "params": params})
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def load_flax_file(path: str | os.PathLike) -> tuple[ReformerConfig, dict[str, np.ndarray]]:
    from flax import serialization

    path = Path(path)
    _require_file(path)
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
    except Exception as error:
        raise ConversionError(f"{str(path)!r} is not a readable Flax msgpack checkpoint ({error}).") from error
    if not isinstance(payload, dict) or CONFIG_KEY not in payload or "params" not in payload:
        raise ConversionError(f"{str(path)!r} is not a Reformer Flax checkpoint: expected {CONFIG_KEY!r} and 'params'.")
    config = ReformerConfig.from_json(payload[CONFIG_KEY])
    return config, flax_params_to_canonical(config, payload["params"])


READERS = {"safetensors": load_checkpoint, "torch": load_torch_file, "flax": load_flax_file}
WRITERS = {"safetensors": save_checkpoint, "torch": save_torch_file, "flax": save_flax_file}


def read_weights(path: str | os.PathLike, format: str | None = None) -> tuple[ReformerConfig, dict[str, np.ndarray]]:
    return READERS[format or infer_format(path)](path)


def write_weights(path: str | os.PathLike, config: ReformerConfig, canonical: Mapping[str, np.ndarray], format: str | None = None) -> None:
    WRITERS[format or infer_format(path)](path, config, canonical)


# --------------------------------------------------------- model shortcuts


def save_torch_model(model, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Save a `reformer_torch.ReformerLM` as a canonical safetensors checkpoint."""
    save_checkpoint(path, model.config, torch_state_to_canonical(model.config, model.state_dict()), metadata)


def load_torch_model(path: str | os.PathLike, device: Any = None):
    """Build a `reformer_torch.ReformerLM` from a checkpoint in any format, in the checkpoint's dtype."""
    from reformer_torch import ReformerLM

    config, canonical = read_weights(path)
    model = ReformerLM(config)
    dtype = numpy_to_torch(next(iter(canonical.values()))[:0]).dtype
    model.to(dtype)
    model.load_state_dict(canonical_to_torch_state(config, canonical), strict=True)
    return model.to(device) if device is not None else model


def save_flax_model(config: ReformerConfig, params: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    save_checkpoint(path, config, flax_params_to_canonical(config, params), metadata)


def load_flax_model(path: str | os.PathLike):
    """Build a `reformer_jax.ReformerLM` and its params pytree from a checkpoint in any format."""
    from reformer_jax import ReformerLM

    config, canonical = read_weights(path)
    return ReformerLM(config), canonical_to_flax_params(config, canonical)
