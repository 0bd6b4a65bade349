import jax
import pytest
import torch


@pytest.fixture(autouse=True)
def _full_precision():
    """Full float32 matmuls in both frameworks, and strict rank promotion in JAX."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    with jax.default_matmul_precision("highest"), jax.numpy_rank_promotion("raise"):
        yield
    torch.set_float32_matmul_precision(previous)
