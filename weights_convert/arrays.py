"""Moving tensors between numpy, PyTorch and JAX without changing a bit.

numpy has no bfloat16 of its own; `ml_dtypes.bfloat16` (installed with JAX)
gives it one, and bfloat16 tensors cross between frameworks as their raw
16-bit patterns, never through a float32 upcast.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def torch_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.uint16).numpy().view(BFLOAT16).copy()
    return tensor.numpy().copy()


def numpy_to_torch(array: np.ndarray):
    import torch

    array = np.ascontiguousarray(array)
    if array.dtype == BFLOAT16:
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def numpy_to_jax(array: np.ndarray):
    import jax
    import jax.numpy as jnp

    if array.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise TypeError(
            "float64 weights would be silently cast to float32 by JAX because x64 is off; "
            'call jax.config.update("jax_enable_x64", True) first, or convert the weights to float32.'
        )
    return jnp.asarray(array)


def jax_to_numpy(array) -> np.ndarray:
    return np.array(array, copy=True)
