"""The Reformer in JAX/Flax Linen: functional modules built from `reformer_spec.ReformerConfig`."""

from reformer_jax.model import IGNORE_INDEX, ReformerLM, ReformerOutput, draw_rotations, next_token_loss

__all__ = ["IGNORE_INDEX", "ReformerLM", "ReformerOutput", "draw_rotations", "next_token_loss"]
