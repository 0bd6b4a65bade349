"""The axis alphabet and the named constants shared by both frameworks.

Shape comments and einsum strings in `reformer_torch` and `reformer_jax` use
these letters, and only these:

    B  batch                          L  sequence length (after padding)
    D  model width (one residual stream)
    H  attention heads                K  head width (d_head)
    F  feed-forward width             V  vocabulary
    R  hash rounds (n_hashes)         Z  half the rotation width
    N  chunks along a sequence        C  chunk length
    W  attention window: (1 + chunks before + chunks after) * C
    S  sorted slots: R * L, the hash rounds laid end to end

Example: the hash projection is `einsum("BHLK,HKRZ->BHRLZ", vectors, rotations)`.
"""

# Logit given to a key that a query must not see (a future position, padding).
# float32 and float64 both represent it; after subtracting the row maximum its
# exp underflows to exactly 0, so a masked key gets probability 0.
MASK_VALUE = -1e9

# Logit given to a query's own position in shared-QK attention. With q = k a
# token would mostly attend to itself, so the Reformer paper forbids it unless
# nothing else is allowed. It is far below any real logit yet far above
# MASK_VALUE, so a causal first token, whose only allowed key is itself,
# still returns its own value.
SELF_MASK_VALUE = -1e5

# Added under the square root when shared-QK keys are normalised to unit
# length, so a zero vector (for example a padding row) gives a zero key, not NaN.
KEY_NORM_EPS = 1e-6

# Largest value the composite sort key may take. JAX without x64 sorts int32,
# so keys must stay below 2**31; the config rejects sizes that would overflow.
MAX_SORT_KEY = 2**31 - 1
