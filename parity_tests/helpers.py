"""Configs and weights shared by the parity tests."""

import numpy as np

from reformer_spec import ReformerConfig
from tests.configs import make_config  # noqa: F401  (re-exported for this suite's tests)


def random_canonical(config: ReformerConfig, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Canonical weights with every entry random (norm scales and biases too), so no layout hides behind ones or zeros."""
    from reformer_spec.parameters import parameter_table

    generator = np.random.default_rng(seed)
    weights = {}
    for spec in parameter_table(config):
        scale = 0.3 if spec.kind in ("kernel", "embedding") or spec.name.startswith("embeddings.") else 0.1
        values = generator.standard_normal(spec.shape) * scale
        if spec.kind == "scale":
            values = 1.0 + values
        weights[spec.name] = values.astype(dtype)
    return weights
