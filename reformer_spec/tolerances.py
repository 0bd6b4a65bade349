"""The tolerances of every cross-framework comparison, stated once.

A comparison passes when max|a - b| <= atol + rtol * max|b| over a tensor,
where b is the reference. The relative part is measured against the largest
magnitude of the tensor, not element by element, so elements near zero do
not inflate it.

Why these values (measured with `python -m pytest -m slow -s -k test_matrix_full
parity_tests/test_models.py`, CPU, PyTorch 2.13 and JAX 0.10.2, the small
odd-sized configs of `parity_tests`):

* float64: both frameworks compute the same operations in a different order
  (einsum paths, reductions), which costs a few ulps (1e-16 relative) per
  step. Over the 33 generated cases of the parity matrix (half of them with
  dropout on, every layer fed identical inputs, then the whole model), the
  worst differences were 3.0e-14 on outputs and 1.1e-13 on gradients, at most
  5.1e-4 of these bounds. 1e-10 still fails for any real bug: a swapped axis
  or sign changes values by 1e-2 and more.
* float32: each framework alone differs from its own float64 run by about
  1e-7 on logits (the float32 unit roundoff is 6e-8), and the two frameworks'
  errors add up. Gradients sum over positions and batch, so they carry more
  roundoff than outputs. Over the same 33 cases in float32 the worst output
  difference was 1.7e-5 (1.6e-6 of the largest logit) and the worst gradient
  difference 5.3e-5 absolute, 5.9e-5 relative. The largest share of a bound
  used was 0.24, so the float32 bounds sit about 4 times above the worst
  measurement.
* Training: AdamW divides by sqrt(v) + eps, which amplifies the roundoff in
  small gradient entries early on, so weights after a few steps agree less
  tightly than one gradient.

Hashing is compared apart from arithmetic: buckets are integers, and a
last-bit difference near a tie can move a vector to another bucket. Bucket
agreement is reported as a share and never hidden behind these tolerances.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Bounds for max|a - b| <= atol + rtol * max|b|."""

    atol: float
    rtol: float

    def allows(self, max_abs_error: float, reference_max: float) -> bool:
        return max_abs_error <= self.atol + self.rtol * reference_max


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float64", "output"): Tolerance(atol=1e-10, rtol=1e-10),
    ("float64", "gradient"): Tolerance(atol=1e-10, rtol=1e-10),
    ("float32", "output"): Tolerance(atol=2e-5, rtol=2e-5),
    ("float32", "gradient"): Tolerance(atol=5e-5, rtol=1e-4),
    ("float32", "training"): Tolerance(atol=1e-4, rtol=1e-4),
    ("float64", "training"): Tolerance(atol=1e-9, rtol=1e-9),
}


def tolerance(dtype: str, kind: str) -> Tolerance:
    """The tolerance for comparing `kind` ("output", "gradient", "training") in `dtype`."""
    try:
        return TOLERANCES[(dtype, kind)]
    except KeyError:
        known = sorted({d for d, _ in TOLERANCES})
        raise ValueError(f"no tolerance for dtype={dtype!r}, kind={kind!r}; dtypes with tolerances: {known}.") from None
