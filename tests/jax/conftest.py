"""Strict rank promotion for every test in this folder, and a float64 switch.

Rank promotion raises, so an accidental broadcast between arrays of different
rank (for example a (V,) bias added to (B, L, V) logits) fails instead of
silently doing something else. Dtype promotion stays standard: under "strict"
Flax's own LayerNorm (flax 0.12.8) rejects float64 inputs.
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def strict_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture
def float64():
    """Turn on 64-bit types for one test and restore the previous setting after it."""
    with jax.enable_x64(True):
        yield
