"""The comparator: it names the worst leaf and its worst element."""

import numpy as np
import pytest
import torch

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
