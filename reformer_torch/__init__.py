"""The Reformer in PyTorch: imperative modules built from `reformer_spec.ReformerConfig`."""

from reformer_torch.model import IGNORE_INDEX, ReformerLM, ReformerOutput, next_token_loss

__all__ = ["IGNORE_INDEX", "ReformerLM", "ReformerOutput", "next_token_loss"]
