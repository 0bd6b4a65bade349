"""Weight conversion between PyTorch, Flax and a framework-neutral safetensors file.

Only this package and `parity_tests` import both frameworks, and each
framework is imported only by the functions that need it.
"""

from weights_convert.checkpoint import (
    infer_format,
    load_checkpoint,
    load_flax_model,
    load_torch_model,
    read_weights,
    save_checkpoint,
    save_flax_model,
    save_torch_model,
    write_weights,
)
from weights_convert.convert import (
    canonical_to_flax_params,
    canonical_to_torch_state,
    cast_canonical,
    check_canonical,
    flax_params_to_canonical,
    load_into_torch,
    torch_state_to_canonical,
)
from weights_convert.errors import ConversionError
from weights_convert.huggingface import load_huggingface, save_huggingface
from weights_convert.mapping import WeightRule, weight_rules
from weights_convert.trax import UnsafePickleError, load_trax

__all__ = [
    "ConversionError",
    "UnsafePickleError",
    "WeightRule",
    "canonical_to_flax_params",
    "canonical_to_torch_state",
    "cast_canonical",
    "check_canonical",
    "flax_params_to_canonical",
    "infer_format",
    "load_checkpoint",
    "load_flax_model",
    "load_huggingface",
    "load_into_torch",
    "load_torch_model",
    "read_weights",
    "save_checkpoint",
    "save_flax_model",
    "save_huggingface",
    "save_torch_model",
    "load_trax",
    "torch_state_to_canonical",
    "weight_rules",
]
