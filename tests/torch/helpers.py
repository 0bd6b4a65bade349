"""Shared test helpers for the PyTorch model."""

from tests.configs import make_config  # noqa: F401  (re-exported for this suite's tests)
