"""The comparator: it names the worst leaf and its worst element."""

import numpy as np
import pytest
import torch

from reformer_spec.tolerances import Tolerance
from weights_convert.compare import compare_arrays, compare_trees, worst


def test_worst_leaf_is_named_with_index():
    expected = {"logits": np.ones((2, 3)), "grads": [np.ones(4), np.full(2, 10.0)]}
    actual = {"logits": np.ones((2, 3)), "grads": [np.ones(4), torch.tensor([10.0, 10.5], dtype=torch.float64)]}
    actual["logits"][1, 2] = 1.001
    found = worst(compare_trees(expected, actual))
    assert found.path == "grads[1]"
    assert found.index == (1,)
    assert found.max_abs == pytest.approx(0.5)
    assert found.max_rel == pytest.approx(0.05)


def test_nan_on_one_side_is_worst():
    assert compare_arrays("x", np.array([1.0, np.nan]), np.array([1.0, 2.0])).max_abs == np.inf
    assert compare_arrays("x", np.array(np.nan), np.array(np.nan)).max_abs == 0.0


def test_structure_and_shape_mismatch_raise():
    with pytest.raises(ValueError, match="missing"):
        compare_trees({"a": np.ones(1), "b": np.ones(1)}, {"a": np.ones(1)})
    with pytest.raises(ValueError, match=r"shapes differ, expected \(2,\) but got \(3,\)"):
        compare_arrays("a", np.ones(2), np.ones(3))


def test_bounded_worst_finds_failing_leaf():
    """A tiny leaf with a large relative error but covered by atol must not hide a large leaf that fails."""
    bound = Tolerance(atol=1e-5, rtol=1e-5)
    expected = {"small": np.full(3, 1e-3), "large": np.full(3, 10.0)}
    actual = {"small": np.full(3, 1e-3 + 1e-6), "large": np.full(3, 10.0 + 3e-4)}
    differences = compare_trees(expected, actual)
    assert worst(differences).path == "small"  # by relative error alone
    found = worst(differences, bound)
    assert found.path == "large"
    assert not found.within(bound)
    assert found.share_of(bound) == pytest.approx(3e-4 / (1e-5 + 1e-5 * 10.0))
