"""The attention steps of the Reformer as pure array functions.

`reformer_torch/lsh.py` has the same functions with the same names, arguments and
einsum strings; the axis letters are defined in `reformer_spec.axes`. Modules
in `attention.py` hold the weights and call these.

LSH attention, step by step, for one layer:

1. `hash_vectors`: project each head's shared query-key vector with random
   rotations and take argmax over [xR, -xR]; one bucket per hash round.
2. `sort_by_bucket`: order the R*L (round, position) slots by round, bucket,
   then position. The key is unique, so the order has no ties to break.
3. `gather_slots`, `split_chunks`, `look_adjacent`: gather vectors in sorted
   order, cut them into chunks and let each chunk also see its neighbours.
4. `attend`: masked softmax attention inside each window, returning the
   output and the log-sum-exp of the logits.
5. `undo_sort` and `combine_hash_rounds`: put slots back in position order and
   weight each round by its share of the total attention mass.

Unlike the PyTorch twin, `lsh_attention` gathers through `sort_slots` and
`unsort_slots`. Their transposes are gathers by the inverse permutation (as
in Trax), not JAX's default scatter-add into a zero buffer. The values are
the same. The reason is memory: XLA:CPU materialises those zero buffers at
program start, for every layer at once, so the reversible backward grew with
depth.

Integer outputs (buckets, sort permutations) use JAX's default integer type:
int32, or int64 when `jax_enable_x64` is on.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import linear_call

from reformer_spec.axes import KEY_NORM_EPS, MASK_VALUE, SELF_MASK_VALUE

Array = jax.Array


def hash_vectors(
    vectors: Array,
    rotations: Array,
    bucket_factors: Sequence[int],
    padding_mask: Array | None = None,
) -> Array:
    """Assign every (head, round, position) to a bucket.

    vectors: (B, H, L, K) shared query-key vectors; rotations: (H, K, R, Z) with
    Z = sum(bucket_factors) / 2; padding_mask: (B, L), True at real tokens.
    Returns integer buckets (B, H, R, L) in [0, prod(bucket_factors)]; the last
    value is the padding bucket, which only padding positions get, so padding
    sorts after every real token of its round whatever its content.
    """
    projected = jnp.einsum("BHLK,HKRZ->BHRLZ", vectors, rotations)  # (B, H, R, L, Z)

    # With factors [f1, f2, ...] each factor hashes its own slice of f_i / 2
    # columns; the first factor is the least significant digit of the bucket.
    buckets = jnp.zeros(projected.shape[:-1], dtype=int)
    multiplier, start = 1, 0
    for factor in bucket_factors:
        part = projected[..., start : start + factor // 2]  # (B, H, R, L, f/2)
        digit = jnp.argmax(jnp.concatenate([part, -part], axis=-1), axis=-1)  # (B, H, R, L)
        buckets = buckets + digit * multiplier
        multiplier *= factor
        start += factor // 2

    if padding_mask is not None:
        padding_bucket = multiplier  # = prod(bucket_factors)
        buckets = jnp.where(padding_mask[:, None, None, :], buckets, padding_bucket)
    return buckets


def sort_by_bucket(buckets: Array, n_buckets: int) -> tuple[Array, Array]:
    """Sort the R*L slots of each head by (round, bucket, position).

    buckets: (B, H, R, L) with values in [0, n_buckets] (n_buckets is the
    padding bucket). Returns `slots` (B, H, S), the flat slot index r*L + t at
    each sorted place, and `undo` (B, H, S), its inverse permutation.
    """
    batch, heads, n_rounds, length = buckets.shape
    rounds = jnp.arange(n_rounds)[None, None, :, None]  # (1, 1, R, 1)
    positions = jnp.arange(length)[None, None, None, :]  # (1, 1, 1, L)
    # A unique key per slot: the sort needs no stability and no tie-break, so
    # every backend and both frameworks produce the same permutation. The
    # config keeps the largest key below 2**31, so int32 (x64 off) suffices.
    keys = ((rounds * (n_buckets + 1) + buckets) * length + positions).reshape(batch, heads, -1)  # (B, H, S)
    slots = jnp.argsort(keys, axis=-1)  # (B, H, S)
    undo = jnp.argsort(slots, axis=-1)  # (B, H, S)
    return slots, undo


def gather_slots(x: Array, positions: Array) -> Array:
    """Gather x (B, H, L, ...) at `positions` (B, H, S) into (B, H, S, ...)."""
    # Whole rows per (batch, head). jnp.take_along_axis with the index broadcast
    # over the trailing axes would build an index array with one coordinate
    # per axis for every element, rank * K times the size of `positions` for
    # (B, H, L, K) vectors.
    return jax.vmap(jax.vmap(lambda rows, index: rows[index]))(x, positions)


def undo_sort(x: Array, undo: Array) -> Array:
    """Put sorted slots (B, H, S, ...) back in (round, position) order."""
    return gather_slots(x, undo)


def sort_slots(x: Array, slots: Array, undo: Array) -> Array:
    """Gather x (B, H, L, ...) into sorted order (B, H, S, ...); its transpose is a gather too.

    slots and undo (B, H, S) are the permutation and its inverse from `sort_by_bucket`.
    """
    length = x.shape[2]

    def gather(permutations: tuple[Array, Array], x: Array) -> Array:
        slots, _ = permutations
        return gather_slots(x, slots % length)

    def transpose(permutations: tuple[Array, Array], grad: Array) -> Array:
        # Token t sits in R slots, one per round: put the slots back in
        # (round, position) order and add up each token's R rounds.
        _, undo = permutations
        batch, heads = grad.shape[:2]
        per_round = undo_sort(grad, undo).reshape((batch, heads, -1, length) + grad.shape[3:])  # (B, H, R, L, ...)
        return jnp.sum(per_round, axis=2)

    return linear_call(gather, transpose, (slots, undo), x)


def unsort_slots(x: Array, slots: Array, undo: Array) -> Array:
    """`undo_sort` of x (B, H, S, ...), whose transpose gathers by `slots`, the inverse permutation."""

    def gather(permutations: tuple[Array, Array], x: Array) -> Array:
        return undo_sort(x, permutations[1])

    def transpose(permutations: tuple[Array, Array], grad: Array) -> Array:
        return gather_slots(grad, permutations[0])

    return linear_call(gather, transpose, (slots, undo), x)


def split_chunks(x: Array, chunk_length: int) -> Array:
    """Cut the sequence axis: (B, H, S, ...) -> (B, H, N, C, ...)."""
    batch, heads, length = x.shape[:3]
    return x.reshape((batch, heads, length // chunk_length, chunk_length) + x.shape[3:])


def look_adjacent(x: Array, chunks_before: int, chunks_after: int) -> Array:
    """Give each chunk its neighbours: (B, H, N, C, ...) -> (B, H, N, W, ...).

    The window of chunk i is chunks i-before, ..., i, ..., i+after laid end to
    end along the chunk-length axis. Indices wrap around modulo N, as in Trax:
    the first chunk's look-back is the last chunk (masked when causal).
    """
    if chunks_before == 0 and chunks_after == 0:
        return x
    # roll by +s puts chunk i-s at index i.
    shifts = range(chunks_before, -chunks_after - 1, -1)
    return jnp.concatenate([jnp.roll(x, shift=s, axis=2) for s in shifts], axis=3)


def normalize_keys(vectors: Array) -> Array:
    """Turn shared query-key vectors into keys of length close to 1.

    Dividing by the root mean square and then by sqrt(K) is dividing by the
    L2 norm; keys of equal length keep a query from preferring long keys,
    which matters because a query and its own key are the same vector.
    """
    mean_square = jnp.mean(vectors * vectors, axis=-1, keepdims=True)
    return vectors * jax.lax.rsqrt(mean_square + KEY_NORM_EPS) / math.sqrt(vectors.shape[-1])


@jax.custom_jvp
def softmax_with_log_normalizer(logits: Array) -> tuple[Array, Array]:
    """Softmax probabilities of logits (..., W) and their log-sum-exp (..., 1).

    Normalises by the sum, not by exp(-logsumexp): near SELF_MASK_VALUE a
    float32 ulp is about 0.008, so a rounded log-sum-exp would put errors of
    up to 1% into rows that see only copies of themselves.
    """
    # jax.nn.softmax divides by the sum, like torch.softmax on the PyTorch side.
    probabilities = jax.nn.softmax(logits, axis=-1)
    # The row maximum's probability is exp(0) / total, so log(total) is
    # -log(max p) and the log-sum-exp needs no second pass of exp.
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    log_normalizer = row_max - jnp.log(jnp.max(probabilities, axis=-1, keepdims=True))
    return probabilities, log_normalizer


@softmax_with_log_normalizer.defjvp
def _softmax_with_log_normalizer_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    # d lse = sum(p * d l) and d p = p * (d l - d lse). Written by hand because
    # autodiff through the two maxima above would split ties differently; JAX
    # transposes this linear rule for reverse mode.
    (logits,), (logits_tangent,) = primals, tangents
    probabilities, log_normalizer = softmax_with_log_normalizer(logits)
    log_normalizer_tangent = jnp.sum(probabilities * logits_tangent, axis=-1, keepdims=True)
    probabilities_tangent = probabilities * (logits_tangent - log_normalizer_tangent)
    return (probabilities, log_normalizer), (probabilities_tangent, log_normalizer_tangent)


def attend(
    queries: Array,
    keys: Array,
    values: Array,
    query_positions: Array,
    key_positions: Array,
    allowed: Array | None,
    *,
    causal: bool,
    mask_self: bool,
    dropout_mask: Array | None = None,
) -> tuple[Array, Array]:
    """Softmax attention of each chunk's queries over its window of keys.

    queries (B, H, N, C, K); keys and values (B, H, N, W, K); query_positions
    (.., N, C) and key_positions (.., N, W) are original token positions, which
    the causal and self masks compare; allowed, broadcastable to (B, H, N, C, W),
    is False where a key is hidden for another reason (padding, another bucket).
    dropout_mask (B, H, N, C, W) multiplies the probabilities (already scaled
    by 1 / keep rate). Returns the output (B, H, N, C, K) and the log-sum-exp
    of the masked logits (B, H, N, C), taken before dropout.
    """
    logits = jnp.einsum("BHNCK,BHNWK->BHNCW", queries, keys)
    q_pos = query_positions[..., :, None]  # (.., N, C, 1)
    k_pos = key_positions[..., None, :]  # (.., N, 1, W)

    if allowed is None:
        allowed = jnp.ones((), dtype=bool)
    if causal:
        allowed = allowed & (q_pos >= k_pos)
    logits = jnp.where(allowed, logits, MASK_VALUE)
    if mask_self:
        # The self mask comes last and overrides the others, so a query whose
        # only allowed key is itself (a causal first token) attends to itself.
        logits = jnp.where(q_pos == k_pos, SELF_MASK_VALUE, logits)

    probabilities, log_normalizer = softmax_with_log_normalizer(logits)  # (B, H, N, C, W), (B, H, N, C, 1)
    if dropout_mask is not None:
        probabilities = probabilities * dropout_mask
    output = jnp.einsum("BHNCW,BHNWK->BHNCK", probabilities, values)
    return output, log_normalizer.squeeze(-1)


def combine_hash_rounds(outputs: Array, log_normalizers: Array) -> Array:
    """Merge the rounds: outputs (B, H, R, L, K), log-sum-exps (B, H, R, L) -> (B, H, L, K).

    Round r gets weight exp(lse_r - logsumexp_r lse_r), its share of the total
    attention mass, which makes the result one softmax over the union of all
    rounds' windows (a key seen in two rounds counts twice, as in Trax).
    """
    weights = jax.nn.softmax(log_normalizers, axis=2)  # (B, H, R, L)
    return jnp.einsum("BHRL,BHRLK->BHLK", weights, outputs)


def same_bucket_window(
    buckets: Array, slots: Array, n_buckets: int, chunk_length: int, chunks_before: int, chunks_after: int
) -> Array:
    """Which window keys share the query's round and bucket and lie near it in sorted order.

    buckets (B, H, R, L); slots (B, H, S) from `sort_by_bucket`. Returns a
    mask (B, H, N, C, W): the key is in the query's (round, bucket) and at most
    chunk_length * chunks_before sorted places before it (chunks_after after).

    Why: in a chunk window that spans several buckets, where a chunk boundary
    falls depends on how many tokens hashed into lower buckets, later tokens
    included, so a later token could change which earlier keys a query sees.
    Between a query and a key of its own bucket lie only tokens of that bucket
    whose positions fall between theirs, so this window depends on nothing
    after the query: causal models stay strictly causal.
    """
    batch, heads, n_rounds, length = buckets.shape
    rounds = jnp.arange(n_rounds)[None, None, :, None]  # (1, 1, R, 1)
    round_buckets = (rounds * (n_buckets + 1) + buckets).reshape(batch, heads, -1)  # (B, H, S)
    sorted_buckets = gather_slots(round_buckets, slots)  # (B, H, S)
    places = jnp.broadcast_to(jnp.arange(slots.shape[-1]), slots.shape)  # (B, H, S)

    query_buckets = split_chunks(sorted_buckets, chunk_length)  # (B, H, N, C)
    key_buckets = look_adjacent(query_buckets, chunks_before, chunks_after)  # (B, H, N, W)
    query_places = split_chunks(places, chunk_length)[..., :, None]  # (B, H, N, C, 1)
    key_places = look_adjacent(split_chunks(places, chunk_length), chunks_before, chunks_after)[..., None, :]
    # Wrapped-around chunks carry places far from the query, so the distance test drops them.
    near = (key_places >= query_places - chunk_length * chunks_before) & (
        key_places <= query_places + chunk_length * chunks_after
    )
    return near & (query_buckets[..., :, None] == key_buckets[..., None, :])  # (B, H, N, C, W)


def lsh_attention(
    query_keys: Array,
    values: Array,
    buckets: Array,
    padding_mask: Array | None,
    *,
    n_buckets: int,
    chunk_length: int,
    chunks_before: int,
    chunks_after: int,
    causal: bool,
    same_bucket_only: bool,
    dropout_mask: Array | None = None,
) -> Array:
    """Shared-QK attention within sorted, chunked buckets.

    query_keys and values (B, H, L, K); buckets (B, H, R, L) from
    `hash_vectors`; padding_mask (B, L), True at real tokens. same_bucket_only
    restricts each query to `same_bucket_window`; otherwise it sees every key in
    its chunk window, as in Trax and Hugging Face. dropout_mask, if given, has
    shape (B, H, N, C, W) with N = R*L / C. Returns (B, H, L, K).
    """
    batch, heads, n_rounds, length = buckets.shape
    slots, undo = sort_by_bucket(buckets, n_buckets)  # (B, H, S)
    positions = slots % length  # (B, H, S): the token in each sorted slot

    sorted_query_keys = sort_slots(query_keys, slots, undo)  # (B, H, S, K)
    sorted_values = sort_slots(values, slots, undo)  # (B, H, S, K)
    sorted_keys = normalize_keys(sorted_query_keys)  # (B, H, S, K)

    queries = split_chunks(sorted_query_keys, chunk_length)  # (B, H, N, C, K)
    keys = look_adjacent(split_chunks(sorted_keys, chunk_length), chunks_before, chunks_after)  # (B, H, N, W, K)
    window_values = look_adjacent(split_chunks(sorted_values, chunk_length), chunks_before, chunks_after)
    query_positions = split_chunks(positions, chunk_length)  # (B, H, N, C)
    key_positions = look_adjacent(query_positions, chunks_before, chunks_after)  # (B, H, N, W)

    allowed = None
    if padding_mask is not None:
        valid = gather_slots(jnp.broadcast_to(padding_mask[:, None, :], (batch, heads, length)), positions)  # (B, H, S)
        key_valid = look_adjacent(split_chunks(valid, chunk_length), chunks_before, chunks_after)  # (B, H, N, W)
        allowed = key_valid[..., None, :]  # (B, H, N, 1, W)
    if same_bucket_only:
        same = same_bucket_window(buckets, slots, n_buckets, chunk_length, chunks_before, chunks_after)
        allowed = same if allowed is None else allowed & same  # (B, H, N, C, W)

    output, log_normalizer = attend(
        queries,
        keys,
        window_values,
        query_positions,
        key_positions,
        allowed,
        causal=causal,
        mask_self=True,
        dropout_mask=dropout_mask,
    )  # (B, H, N, C, K), (B, H, N, C)

    head_width = query_keys.shape[-1]
    output = unsort_slots(output.reshape(batch, heads, -1, head_width), slots, undo)  # (B, H, S, K)
    log_normalizer = unsort_slots(log_normalizer.reshape(batch, heads, -1), slots, undo)  # (B, H, S)
    if n_rounds == 1:
        return output  # (B, H, L, K); one round needs no weights
    output = output.reshape(batch, heads, n_rounds, length, head_width)  # (B, H, R, L, K)
    log_normalizer = log_normalizer.reshape(batch, heads, n_rounds, length)  # (B, H, R, L)
    return combine_hash_rounds(output, log_normalizer)


def local_attention(
    queries: Array,
    keys: Array,
    values: Array,
    padding_mask: Array | None,
    *,
    chunk_length: int,
    chunks_before: int,
    chunks_after: int,
    causal: bool,
    dropout_mask: Array | None = None,
) -> Array:
    """Attention within fixed chunks of positions, each also seeing its neighbours.

    queries, keys and values (B, H, L, K); padding_mask (B, L), True at real
    tokens. With chunk_length = L and no neighbours this is full attention.
    Keys are scaled by 1/sqrt(K) (queries are not). Returns (B, H, L, K).
    """
    batch, heads, length, head_width = queries.shape
    keys = keys / math.sqrt(head_width)
    positions = jnp.arange(length)[None, None, :]  # (1, 1, L)

    query_chunks = split_chunks(queries, chunk_length)  # (B, H, N, C, K)
    key_chunks = look_adjacent(split_chunks(keys, chunk_length), chunks_before, chunks_after)  # (B, H, N, W, K)
    value_chunks = look_adjacent(split_chunks(values, chunk_length), chunks_before, chunks_after)
    query_positions = split_chunks(positions, chunk_length)  # (1, 1, N, C)
    key_positions = look_adjacent(query_positions, chunks_before, chunks_after)  # (1, 1, N, W)

    allowed = None
    if padding_mask is not None:
        key_valid = look_adjacent(split_chunks(padding_mask[:, None, :], chunk_length), chunks_before, chunks_after)
        allowed = key_valid[..., None, :]  # (B, 1, N, 1, W)

    output, _ = attend(
        query_chunks,
        key_chunks,
        value_chunks,
        query_positions,
        key_positions,
        allowed,
        causal=causal,
        mask_self=False,
        dropout_mask=dropout_mask,
    )
    return output.reshape(batch, heads, length, head_width)
