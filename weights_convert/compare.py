"""A comparator for nested outputs: which leaf differs most, and by how much.

It walks dicts, lists, tuples and dataclasses down to arrays (numpy, torch or
JAX, converted with `np.asarray`) and reports, per leaf, the largest absolute
error, the relative error (that error over the reference's largest
magnitude), and where the worst element sits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from reformer_spec.tolerances import Tolerance


@dataclasses.dataclass(frozen=True)
class Difference:
    """The difference between one leaf of `actual` and the same leaf of `expected`."""

    path: str
    max_abs: float  # max |actual - expected|
    max_rel: float  # max_abs / max |expected|
    reference_max: float  # max |expected|
    index: tuple[int, ...]  # where the worst element sits

    def within(self, bound: Tolerance) -> bool:
        return bound.allows(self.max_abs, self.reference_max)

    def share_of(self, bound: Tolerance) -> float:
        """Return the fraction of `bound` this difference uses, max_abs / (atol + rtol * reference_max); above 1 fails."""
        allowed = bound.atol + bound.rtol * self.reference_max
        if allowed == 0:
            return 0.0 if self.max_abs == 0 else np.inf
        return self.max_abs / allowed

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: max abs {self.max_abs:.3g} (at {self.index}), rel {self.max_rel:.3g}"


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = {field.name: getattr(tree, field.name) for field in dataclasses.fields(tree)}
    if isinstance(tree, dict):
        for key in tree:
            yield from _leaves(tree[key], f"{path}.{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from _leaves(item, f"{path}[{i}]")
    elif tree is not None:
        yield path, tree


def compare_arrays(path: str, expected: Any, actual: Any) -> Difference:
    reference = _to_numpy(expected).astype(np.float64)
    other = _to_numpy(actual).astype(np.float64)
    if reference.shape != other.shape:
        raise ValueError(f"{path}: shapes differ, expected {reference.shape} but got {other.shape}.")
    if reference.size == 0:
        return Difference(path, 0.0, 0.0, 0.0, ())
    both_nan = np.isnan(reference) & np.isnan(other)  # for example the loss of a one-token sequence, on both sides
    error = np.where(both_nan, 0.0, np.abs(other - reference))
    error = np.where(np.isnan(error), np.inf, error)  # a NaN on one side only is the worst possible difference
    flat = int(np.argmax(error))
    max_abs = float(error.reshape(-1)[flat])
    reference_max = float(np.max(np.abs(np.where(both_nan, 0.0, reference))))
    if reference_max > 0:
        max_rel = max_abs / reference_max
    else:
        max_rel = 0.0 if max_abs == 0 else np.inf
    return Difference(path, max_abs, max_rel, reference_max, tuple(int(i) for i in np.unravel_index(flat, reference.shape)))


def compare_trees(expected: Any, actual: Any) -> list[Difference]:
    """Compare every leaf; the two trees must have the same structure (paths must match)."""
    expected_leaves = dict(_leaves(expected))
    actual_leaves = dict(_leaves(actual))
    if expected_leaves.keys() != actual_leaves.keys():
        missing = sorted(expected_leaves.keys() - actual_leaves.keys())
        extra = sorted(actual_leaves.keys() - expected_leaves.keys())
        raise ValueError(f"the trees differ in structure: missing {missing[:5]}, extra {extra[:5]}.")
    return [compare_arrays(path, expected_leaves[path], actual_leaves[path]) for path in expected_leaves]


def worst(differences: list[Difference], bound: Tolerance | None = None) -> Difference:
    """Return the difference that uses the largest share of `bound`.

    Without a bound: the one with the largest relative error (ties broken by
    absolute error). With one, a leaf of small magnitude, whose relative error
    can be large while atol still covers it, does not hide a larger leaf that
    breaks the bound: the returned difference is within `bound` exactly when
    all of them are.
    """
    if bound is None:
        return max(differences, key=lambda d: (d.max_rel, d.max_abs))
    return max(differences, key=lambda d: (d.share_of(bound), d.max_abs))
