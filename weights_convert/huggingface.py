"""Hugging Face Reformer checkpoints: read a folder into canonical tensors, write canonical tensors as a folder.

A Hugging Face checkpoint is a folder with `config.json` and the weights in
`model.safetensors` or `pytorch_model.bin` (each possibly split into shards
listed in a `*.index.json`). It is the layout of `ReformerModelWithLMHead`
(causal) or `ReformerForMaskedLM` (bidirectional), which share parameter names.
Hub names are never resolved: the input is always a folder on disk.

The Hugging Face model computes what our config computes with
`lsh_same_bucket_only=False` (the Trax chunk window), so an imported config
has that setting. Its deliberate differences from our models (full attention
when a sequence fits in one chunk, a padding bucket only when the mask contains
a zero, rotations drawn inside the layer) are measured in
`parity_tests/test_huggingface.py` and listed in the README.

Weight names map through one declarative table. Hugging Face `nn.Linear`
weights are (out, in), the layout of our PyTorch model, so kernels reuse
`WeightRule`'s transposes. Only the axial tables and the LM head differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from reformer_spec.config import Activation, AttentionKind, PositionKind, ReformerConfig
from weights_convert.arrays import numpy_to_torch, torch_to_numpy
from weights_convert.convert import check_canonical
from weights_convert.errors import ConversionError
from weights_convert.mapping import weight_rules

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PYTORCH_FILE = "pytorch_model.bin"

# The defaults of `transformers.ReformerConfig` (checked against the installed
# version in the tests). `save_pretrained` writes only the fields that differ
# from these, so a field missing from config.json has this value.
HF_DEFAULTS: dict[str, Any] = {
    "attention_head_size": 64,
    "attn_layers": ["local", "lsh", "local", "lsh", "local", "lsh"],
    "axial_norm_std": 1.0,
    "axial_pos_embds": True,
    "axial_pos_shape": [64, 64],
    "axial_pos_embds_dim": [64, 192],
    "chunk_size_feed_forward": 0,
    "chunk_size_lm_head": 0,
    "feed_forward_size": 512,
    "hash_seed": None,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.05,
    "hidden_size": 256,
    "initializer_range": 0.02,
    "is_decoder": False,
    "layer_norm_eps": 1e-12,
    "local_attention_probs_dropout_prob": 0.05,
    "local_attn_chunk_length": 64,
    "local_num_chunks_after": 0,
    "local_num_chunks_before": 1,
    "lsh_attention_probs_dropout_prob": 0.0,
    "lsh_attn_chunk_length": 64,
    "lsh_num_chunks_after": 0,
    "lsh_num_chunks_before": 1,
    "max_position_embeddings": 4096,
    "num_attention_heads": 12,
    "num_buckets": None,
    "num_hashes": 1,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
    "vocab_size": 320,
}

# Hugging Face activation names (`transformers.activations.ACT2FN`) by the
# function they compute. The tanh forms differ from ours only in rounding.
HF_ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation.RELU,
    "gelu": Activation.GELU,
    "gelu_python": Activation.GELU,
    "gelu_new": Activation.GELU_TANH,
    "gelu_fast": Activation.GELU_TANH,
    "gelu_accurate": Activation.GELU_TANH,
    "gelu_pytorch_tanh": Activation.GELU_TANH,
    "gelu_python_tanh": Activation.GELU_TANH,
}
# The name written on export: `torch.nn.functional.gelu(approximate="tanh")`, the function our models call.
EXPORT_ACTIVATIONS = {Activation.RELU: "relu", Activation.GELU: "gelu", Activation.GELU_TANH: "gelu_pytorch_tanh"}

# Non-persistent buffers that checkpoints written by older transformers versions
# contain: the mask constants of the attention layers, not weights.
MASK_BUFFER_SUFFIXES = (".mask_value_float16", ".mask_value_float32", ".self_mask_value_float16", ".self_mask_value_float32")

# The LM head bias. transformers 4.x ties `lm_head.bias` to `lm_head.decoder.bias`;
# 5.x keeps both but adds only the decoder's bias to the logits.
DECODER_BIAS = "lm_head.decoder.bias"
SPARE_BIAS = "lm_head.bias"


# -------------------------------------------------------------------- config


def _hf_error(field: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"Hugging Face config field {field}={value!r} cannot be represented: {fix}")


def _read_hf_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; a Hugging Face checkpoint folder needs config.json beside its weights "
            "(save one with model.save_pretrained(folder))."
        )
    data = json.loads(path.read_text())
    model_type = data.get("model_type", "reformer")
    if model_type != "reformer":
        raise ValueError(f"{str(path)!r} has model_type={model_type!r}; only Hugging Face Reformer checkpoints (model_type 'reformer') can be imported.")
    return {**HF_DEFAULTS, **data}


def _attention_dropout(hf: Mapping[str, Any], kinds: set[AttentionKind]) -> float:
    """Return the one attention-probability drop rate, read from the fields of the layer kinds in use."""
    fields = []
    if AttentionKind.LSH in kinds:
        fields.append("lsh_attention_probs_dropout_prob")
    if AttentionKind.LOCAL in kinds:
        fields.append("local_attention_probs_dropout_prob")
    rates = {float(hf[name] or 0.0) for name in fields}
    if len(rates) > 1:
        values = ", ".join(f"{name}={hf[name]}" for name in fields)
        raise _hf_error(
            "local_attention_probs_dropout_prob", hf["local_attention_probs_dropout_prob"],
            f"our config has one attention_dropout for every layer, but {values}. Set both to the same rate.",
        )
    return rates.pop() if rates else 0.0


def _check_hf_config(hf: Mapping[str, Any]) -> None:
    """Raise for the Hugging Face settings our spec has no counterpart for."""
    if hf["num_buckets"] is None:
        raise _hf_error(
            "num_buckets", None,
            "Hugging Face picks the bucket count from the first sequence length it sees. Set num_buckets "
            "explicitly in config.json (for example 2 * sequence_length // lsh_attn_chunk_length).",
        )
    if hf["hash_seed"] is not None:
        raise _hf_error(
            "hash_seed", hf["hash_seed"],
            "Hugging Face then reseeds the global torch generator before every hash, so all layers share one "
            "rotation. Set hash_seed to null and pass rotations to the model explicitly.",
        )
    if hf["hidden_act"] not in HF_ACTIVATIONS:
        raise _hf_error("hidden_act", hf["hidden_act"], f"the supported activations are {sorted(HF_ACTIVATIONS)}.")
    if hf["lsh_attn_chunk_length"] is None and "lsh" in hf["attn_layers"]:
        raise _hf_error("lsh_attn_chunk_length", None, "unchunked LSH attention is not in our spec; set a chunk length.")
    for kind in hf["attn_layers"]:
        if kind not in ("lsh", "local"):
            raise _hf_error("attn_layers", hf["attn_layers"], "Hugging Face layer kinds are 'lsh' and 'local'.")
    heads, head_width, width = hf["num_attention_heads"], hf["attention_head_size"], hf["hidden_size"]
    if heads * head_width != width:
        raise _hf_error(
            "attention_head_size", head_width,
            f"num_attention_heads * attention_head_size = {heads * head_width} but hidden_size={width}; our spec "
            "needs the heads to tile the model width exactly.",
        )
    if hf["is_decoder"]:
        for name in ("lsh_num_chunks_after", "local_num_chunks_after"):
            if hf[name]:
                raise _hf_error(name, hf[name], "with is_decoder=true the look-ahead chunks contain only masked future positions; set it to 0.")


def config_from_huggingface(hf_config: Mapping[str, Any]) -> ReformerConfig:
    """Translate a Hugging Face Reformer config dict (defaults filled in) into our config."""
    hf = {**HF_DEFAULTS, **hf_config}
    _check_hf_config(hf)
    kinds = [AttentionKind(kind) for kind in hf["attn_layers"]]
    num_buckets = hf["num_buckets"]
    axial = bool(hf["axial_pos_embds"])
    max_length = int(hf["max_position_embeddings"])
    if axial and math.prod(hf["axial_pos_shape"]) != max_length:
        # Hugging Face checks the two limits separately; our spec covers exactly the axial grid.
        logger.warning(
            "max_position_embeddings=%d differs from the axial grid %s = %d positions; using %d as max_length.",
            max_length, list(hf["axial_pos_shape"]), math.prod(hf["axial_pos_shape"]), math.prod(hf["axial_pos_shape"]),
        )
        max_length = math.prod(hf["axial_pos_shape"])
    if hf["chunk_size_lm_head"]:
        logger.info("chunk_size_lm_head=%d only splits the head's matmul; it is dropped.", hf["chunk_size_lm_head"])

    fields = dict(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_head=hf["attention_head_size"],
        d_ff=hf["feed_forward_size"],
        activation=HF_ACTIVATIONS[hf["hidden_act"]],
        attention_layers=tuple(kinds),
        causal=bool(hf["is_decoder"]),
        lsh_chunk_length=hf["lsh_attn_chunk_length"] or HF_DEFAULTS["lsh_attn_chunk_length"],
        lsh_chunks_before=hf["lsh_num_chunks_before"],
        lsh_chunks_after=hf["lsh_num_chunks_after"],
        n_buckets=tuple(num_buckets) if isinstance(num_buckets, (list, tuple)) else num_buckets,
        n_hashes=hf["num_hashes"],
        lsh_same_bucket_only=False,  # Hugging Face attends to every key in the chunk window
        local_chunk_length=hf["local_attn_chunk_length"],
        local_chunks_before=hf["local_num_chunks_before"],
        local_chunks_after=hf["local_num_chunks_after"],
        positions=PositionKind.AXIAL if axial else PositionKind.LEARNED,
        max_length=max_length,
        ff_chunk_size=hf["chunk_size_feed_forward"] or 0,
        layer_norm_eps=float(hf["layer_norm_eps"]),
        # hidden_dropout_prob drops after the first feed-forward dense too, where our config has ff_dropout.
        hidden_dropout=float(hf["hidden_dropout_prob"]),
        ff_dropout=float(hf["hidden_dropout_prob"]),
        attention_dropout=_attention_dropout(hf, set(kinds)),
        # transformers 5.25 never ties the (V, 2D) decoder to the (V, D) embedding, even with tie_word_embeddings.
        tie_embeddings=False,
        pad_token_id=0 if hf["pad_token_id"] is None else hf["pad_token_id"],
        initializer_std=float(hf["initializer_range"]),
    )
    if axial:
        fields.update(axial_shape=tuple(hf["axial_pos_shape"]), axial_dims=tuple(hf["axial_pos_embds_dim"]))
    try:
        return ReformerConfig(**fields)
    except (ValueError, TypeError) as error:
        raise ValueError(f"the Hugging Face config maps to an invalid Reformer config: {error}") from error


def config_to_huggingface(config: ReformerConfig, *, allow_window_change: bool = False) -> dict[str, Any]:
    """Translate our config into a complete Hugging Face Reformer config dict.

    Raises ValueError naming the field for settings Hugging Face cannot represent.
    `lsh_same_bucket_only=True` has no Hugging Face counterpart. With
    `allow_window_change=True` the export proceeds anyway, and the Hugging Face
    model attends to the whole chunk window, so its outputs differ from ours.
    """
    if config.lsh_same_bucket_only and AttentionKind.LSH in config.attention_layers and not allow_window_change:
        raise ValueError(
            "lsh_same_bucket_only=True cannot be represented: Hugging Face LSH attention lets a query see every "
            "key in its chunk window. Convert a model built with lsh_same_bucket_only=False, or pass "
            "allow_window_change=True (--allow-window-change) to export anyway, knowing the outputs will differ."
        )
    if AttentionKind.FULL in config.attention_layers:
        raise ValueError(
            f"attention_layers={[kind.value for kind in config.attention_layers]} contains 'full', which Hugging Face "
            "does not have (its layer kinds are 'lsh' and 'local'); retrain without full-attention layers."
        )
    if config.hidden_dropout != config.ff_dropout:
        raise ValueError(
            f"hidden_dropout={config.hidden_dropout} and ff_dropout={config.ff_dropout} differ, but Hugging Face has "
            "one hidden_dropout_prob for both sites; set them equal before exporting."
        )
    if config.positions is PositionKind.AXIAL and len(config.axial_shape) != 2:
        raise ValueError(
            f"axial_shape={config.axial_shape} has {len(config.axial_shape)} axes; Hugging Face's axial embedding "
            "runs in eval mode only with 2 axes. Use a two-axis axial_shape."
        )
    if not config.reversible:
        logger.info("reversible=False is exported as Hugging Face's reversible layers, which compute the same function.")
    if config.tie_embeddings:
        logger.info("tie_embeddings=True is exported untied: the decoder weight is the embedding repeated for both streams.")

    hf = dict(HF_DEFAULTS)
    hf.update(
        architectures=["ReformerModelWithLMHead" if config.causal else "ReformerForMaskedLM"],
        model_type="reformer",
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_attention_heads=config.n_heads,
        attention_head_size=config.d_head,
        feed_forward_size=config.d_ff,
        hidden_act=EXPORT_ACTIVATIONS[config.activation],
        attn_layers=[kind.value for kind in config.attention_layers],
        is_decoder=config.causal,
        lsh_attn_chunk_length=config.lsh_chunk_length,
        lsh_num_chunks_before=config.lsh_chunks_before,
        lsh_num_chunks_after=config.lsh_chunks_after,
        num_buckets=list(config.n_buckets) if isinstance(config.n_buckets, tuple) else config.n_buckets,
        num_hashes=config.n_hashes,
        local_attn_chunk_length=config.local_chunk_length,
        local_num_chunks_before=config.local_chunks_before,
        local_num_chunks_after=config.local_chunks_after,
        axial_pos_embds=config.positions is PositionKind.AXIAL,
        max_position_embeddings=config.max_length,
        chunk_size_feed_forward=config.ff_chunk_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=config.hidden_dropout,
        lsh_attention_probs_dropout_prob=config.attention_dropout,
        local_attention_probs_dropout_prob=config.attention_dropout,
        tie_word_embeddings=False,
        pad_token_id=config.pad_token_id,
        eos_token_id=None,  # our models have no end-of-sequence token
        initializer_range=config.initializer_std,
    )
    if config.positions is PositionKind.AXIAL:
        hf.update(axial_pos_shape=list(config.axial_shape), axial_pos_embds_dim=list(config.axial_dims))
    return hf


# ------------------------------------------------------------------- weights


class Layout(str, enum.Enum):
    """The storage layout of a canonical tensor in a Hugging Face checkpoint."""

    SAME = "same"  # norms, biases, embeddings, the learned position table
    LINEAR = "linear"  # an nn.Linear weight: (out, in), as in our PyTorch model
    AXIAL = "axial"  # axial table (s_i, d_i) stored as (1, .., s_i, .., 1, d_i)


@dataclasses.dataclass(frozen=True)
class HuggingFaceRule:
    """One canonical tensor's Hugging Face name and layout."""

    canonical: str
    hf_name: str
    layout: Layout
    hf_shape: tuple[int, ...]
    to_hf: Callable[[np.ndarray], np.ndarray]
    from_hf: Callable[[np.ndarray], np.ndarray]


# Canonical name fragments -> Hugging Face name fragments. Per-layer rows apply
# after "layers.{i}." -> "reformer.encoder.layers.{i}.".
TOP_LEVEL_NAMES = {
    "embeddings.token.embedding": "reformer.embeddings.word_embeddings.weight",
    "embeddings.position_table": "reformer.embeddings.position_embeddings.embedding.weight",
    "final_norm.scale": "reformer.encoder.layer_norm.weight",
    "final_norm.bias": "reformer.encoder.layer_norm.bias",
    "lm_head.kernel": "lm_head.decoder.weight",
    "lm_head.bias": DECODER_BIAS,
}
LAYER_NAMES = {
    "attention.norm.scale": "attention.layer_norm.weight",
    "attention.norm.bias": "attention.layer_norm.bias",
    "attention.query_key.kernel": "attention.self_attention.query_key.weight",
    "attention.query.kernel": "attention.self_attention.query.weight",
    "attention.key.kernel": "attention.self_attention.key.weight",
    "attention.value.kernel": "attention.self_attention.value.weight",
    "attention.output.kernel": "attention.output.dense.weight",
    "feed_forward.norm.scale": "feed_forward.layer_norm.weight",
    "feed_forward.norm.bias": "feed_forward.layer_norm.bias",
    "feed_forward.dense_in.kernel": "feed_forward.dense.dense.weight",
    "feed_forward.dense_in.bias": "feed_forward.dense.dense.bias",
    "feed_forward.dense_out.kernel": "feed_forward.output.dense.weight",
    "feed_forward.dense_out.bias": "feed_forward.output.dense.bias",
}


def _hf_name(canonical: str) -> str:
    if canonical in TOP_LEVEL_NAMES:
        return TOP_LEVEL_NAMES[canonical]
    if canonical.startswith("embeddings.axial_"):
        return f"reformer.embeddings.position_embeddings.weights.{canonical.rsplit('_', 1)[1]}"
    _, index, rest = canonical.split(".", 2)  # "layers", "3", "attention.query_key.kernel"
    return f"reformer.encoder.layers.{index}.{LAYER_NAMES[rest]}"


def _axial_shape(size: int, width: int, axis: int, n_axes: int) -> tuple[int, ...]:
    shape = [1] * n_axes + [width]
    shape[axis] = size
    return tuple(shape)


def huggingface_rules(config: ReformerConfig) -> list[HuggingFaceRule]:
    """Return one rule per canonical parameter, in the canonical table's order."""
    rules = []
    for rule in weight_rules(config):
        name, shape = rule.spec.name, rule.spec.shape
        if name.startswith("embeddings.axial_"):
            axis = int(name.rsplit("_", 1)[1])
            hf_shape = _axial_shape(*shape, axis, len(config.axial_shape))
            rules.append(
                HuggingFaceRule(
                    name, _hf_name(name), Layout.AXIAL, hf_shape,
                    to_hf=lambda array, hf_shape=hf_shape: array.reshape(hf_shape),
                    from_hf=lambda array, shape=shape: array.reshape(shape),
                )
            )
        elif rule.torch_linear_inputs:
            rules.append(HuggingFaceRule(name, _hf_name(name), Layout.LINEAR, rule.torch_shape, rule.canonical_to_torch, rule.torch_to_canonical))
        else:
            rules.append(HuggingFaceRule(name, _hf_name(name), Layout.SAME, shape, lambda array: array, lambda array: array))
    return rules


def canonical_to_huggingface_state(config: ReformerConfig, canonical: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert canonical tensors into a Hugging Face state dict of numpy arrays."""
    check_canonical(config, canonical)
    state = {rule.hf_name: np.ascontiguousarray(rule.to_hf(np.asarray(canonical[rule.canonical]))) for rule in huggingface_rules(config)}
    if config.tie_embeddings:
        # Our tied head computes (h1 + h2) E^T, which is [h1, h2] [E, E]^T: an untied (V, 2D) decoder.
        embedding = np.asarray(canonical["embeddings.token.embedding"])  # (V, D)
        state["lm_head.decoder.weight"] = np.ascontiguousarray(np.concatenate([embedding, embedding], axis=1))  # (V, 2D)
    # transformers 4.x reads the tied bias under either name; 5.x adds only the decoder's.
    state[SPARE_BIAS] = state[DECODER_BIAS].copy()
    return state


def _take_head_bias(state: dict[str, np.ndarray]) -> None:
    """Leave exactly one LM head bias under DECODER_BIAS, checking the spare copy agrees."""
    if SPARE_BIAS not in state:
        return
    spare = state.pop(SPARE_BIAS)
    if DECODER_BIAS not in state:
        state[DECODER_BIAS] = spare  # a transformers 4.x file that kept only one of the tied names
        return
    decoder = state[DECODER_BIAS]
    if spare.shape != decoder.shape:
        raise ConversionError(f"Hugging Face tensor {SPARE_BIAS!r} has shape {spare.shape} but {DECODER_BIAS!r} has {decoder.shape}.")
    # Equal: a 4.x file with the tied bias saved twice. All zero: 5.x's unused copy.
    if not (np.array_equal(spare, decoder) or not np.any(spare)):
        raise ConversionError(
            f"Hugging Face tensors {SPARE_BIAS!r} and {DECODER_BIAS!r} hold different non-zero values, so it is "
            "unclear which bias the model was trained with; transformers 5.x adds only the decoder's bias. "
            f"Delete {SPARE_BIAS!r} from the file to import the decoder's bias."
        )


def huggingface_state_to_canonical(config: ReformerConfig, state: Mapping[str, np.ndarray], source: str = "Hugging Face weights") -> dict[str, np.ndarray]:
    """Convert a Hugging Face state dict of numpy arrays into canonical tensors.

    Raises ConversionError when a tensor is missing, left unused or has the
    wrong shape. The mask buffers of old files are ignored, and the spare head
    bias is only checked against the decoder's bias.
    """
    state = {name: array for name, array in state.items() if not name.endswith(MASK_BUFFER_SUFFIXES)}
    _take_head_bias(state)
    rules = huggingface_rules(config)
    expected = [rule.hf_name for rule in rules]
    missing = [name for name in expected if name not in state]
    unread = sorted(set(state) - set(expected))
    if missing:
        hint = " The file has no LM head: save a ReformerModelWithLMHead or ReformerForMaskedLM, not a bare ReformerModel." if "lm_head.decoder.weight" in missing else ""
        raise ConversionError(f"{source} lacks {len(missing)} tensor(s) the config needs, first {missing[0]!r}: {missing[:5]}.{hint}")
    if unread:
        raise ConversionError(
            f"{source} has {len(unread)} tensor(s) the config does not use, first {unread[0]!r}: {unread[:5]}. "
            "Check that config.json belongs to these weights (attn_layers, axial_pos_embds)."
        )
    canonical = {}
    for rule in rules:
        array = state[rule.hf_name]
        if tuple(array.shape) != rule.hf_shape:
            raise ConversionError(f"{source} tensor {rule.hf_name!r} has shape {tuple(array.shape)} but the config expects {rule.hf_shape}.")
        canonical[rule.canonical] = np.ascontiguousarray(rule.from_hf(array))
    check_canonical(config, canonical, source)
    return canonical


# --------------------------------------------------------------------- files


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: torch_to_numpy(handle.get_tensor(name)) for name in handle.keys()}
    except Exception as error:  # safetensors raises several types for damaged files
        raise ConversionError(f"{str(path)!r} is not a readable safetensors file ({error}); it may be truncated or corrupted.") from error


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConversionError(f"{str(path)!r} is not a readable PyTorch weights file ({error}).") from error
    if not isinstance(state, dict):
        raise ConversionError(f"{str(path)!r} contains a {type(state).__name__}, not a state dict of tensors; save model.state_dict().")
    return {name: torch_to_numpy(tensor) for name, tensor in state.items()}


def _read_weight_files(folder: Path) -> tuple[dict[str, np.ndarray], str]:
    """Read the folder's weights, preferring safetensors; return the state and a description of the source."""
    for single, reader in ((SAFETENSORS_FILE, _read_safetensors), (PYTORCH_FILE, _read_torch_bin)):
        if (folder / single).is_file():
            return reader(folder / single), str(folder / single)
        index = folder / f"{single}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, np.ndarray] = {}
            for shard in shards:
                if not (folder / shard).is_file():
                    raise FileNotFoundError(f"{str(index)!r} lists the shard {shard!r}, which is not in {str(folder)!r}.")
                state.update(reader(folder / shard))
            return state, str(index)
    raise FileNotFoundError(
        f"{str(folder)!r} has no {SAFETENSORS_FILE} or {PYTORCH_FILE} (nor a sharded index of either); "
        "save the model with model.save_pretrained(folder)."
    )


def load_huggingface(folder: str | os.PathLike) -> tuple[ReformerConfig, dict[str, np.ndarray]]:
    """Read a Hugging Face Reformer checkpoint folder: (our config, canonical tensors).

    The folder contains config.json and model.safetensors or pytorch_model.bin
    (the latter loaded with `torch.load(..., weights_only=True)`). The config
    has `lsh_same_bucket_only=False`, Hugging Face's chunk window.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} is not a folder; give the local folder of a Hugging Face checkpoint "
            "(hub names are not downloaded)."
        )
    config = config_from_huggingface(_read_hf_config(folder))
    state, source = _read_weight_files(folder)
    return config, huggingface_state_to_canonical(config, state, source)


@contextlib.contextmanager
def _atomic_folder(folder: Path, overwrite: bool):
    """Yield a temporary folder beside `folder`; move it to `folder` only if the block succeeds."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(f"{str(folder)!r} exists and is not an empty folder; pass overwrite=True (--force) to replace it.")
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.rmdir(old)
        os.replace(folder, old)
    os.replace(temporary, folder)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def save_huggingface(
    config: ReformerConfig,
    canonical: Mapping[str, np.ndarray],
    folder: str | os.PathLike,
    *,
    allow_window_change: bool = False,
    overwrite: bool = False,
) -> None:
    """Write canonical tensors as a Hugging Face Reformer folder (config.json and model.safetensors), atomically.

    `ReformerModelWithLMHead.from_pretrained(folder)` (causal configs) or
    `ReformerForMaskedLM.from_pretrained(folder)` loads the same weights.
    Both files are written into a temporary folder beside `folder`, which is
    renamed into place only when complete. An existing empty folder is
    replaced; a non-empty one only with `overwrite=True`. Raises ValueError,
    naming the field, for settings Hugging Face cannot represent (see
    `config_to_huggingface`, which also explains `allow_window_change`).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    hf_config = config_to_huggingface(config, allow_window_change=allow_window_change)
    state = canonical_to_huggingface_state(config, canonical)
    hf_config["torch_dtype"] = str(numpy_to_torch(next(iter(state.values()))[:0]).dtype).removeprefix("torch.")
    tensors = {name: numpy_to_torch(array) for name, array in state.items()}
    with _atomic_folder(folder, overwrite) as temporary:
        (temporary / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        # transformers rejects safetensors files without a "format" entry in the metadata.
        save_file(tensors, str(temporary / SAFETENSORS_FILE), metadata={"format": "pt"})


def is_huggingface_folder(path: str | os.PathLike) -> bool:
    """Return whether `path` is a folder with a config.json, the mark of a Hugging Face checkpoint."""
    return Path(path).is_dir() and (Path(path) / CONFIG_FILE).is_file()
