"""Framework-free specification of the Reformer: config, parameters, hashing randomness, tolerances.

Nothing here imports torch or jax.
"""

from reformer_spec.config import Activation, AttentionKind, PositionKind, ReformerConfig
from reformer_spec.hashing import portable_rotations, rotation_shape
from reformer_spec.parameters import ParameterSpec, parameter_count, parameter_table

__all__ = [
    "Activation",
    "AttentionKind",
    "ParameterSpec",
    "PositionKind",
    "ReformerConfig",
    "parameter_count",
    "parameter_table",
    "portable_rotations",
    "rotation_shape",
]
