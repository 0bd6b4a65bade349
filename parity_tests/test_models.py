"""Whole-model parity over a generated configuration matrix and random small configs."""

import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weights_convert.parity import compare_frameworks

from parity_tests.helpers import make_config, random_canonical

# Each axis of the matrix, with its values; cases are drawn from their product.
AXES = {
    "layers": [("lsh", "local"), ("lsh",), ("local", "full", "lsh")],
    "causal": [True, False],
    "n_hashes": [1, 2, 4],
    "n_buckets": [4, (2, 4)],
    "length": [32, 29],
    "ff_chunk_size": [0, 8],
    "tie_embeddings": [False, True],
    "positions": ["axial", "learned"],
    "padding": [False, True],
    "same_bucket_only": [True, False],
    "dropout": [False, True],  # True: every dropout rate on, both sides drawing the same portable masks
}


DROPOUT_RATES = dict(hidden_dropout=0.2, attention_dropout=0.3, ff_dropout=0.1)


def build_case(values: dict):
    causal = values["causal"]
    config = make_config(
        attention_layers=values["layers"],
        causal=causal,
        lsh_chunks_after=0 if causal else 1,
        local_chunks_after=0 if causal else 1,
        n_hashes=values["n_hashes"],
        n_buckets=values["n_buckets"],
        ff_chunk_size=values["ff_chunk_size"],
        tie_embeddings=values["tie_embeddings"],
        positions=values["positions"],
        lsh_same_bucket_only=values["same_bucket_only"],
        **(DROPOUT_RATES if values["dropout"] else {}),
    )
    mask = None
    if values["padding"]:
        mask = np.ones((2, values["length"]), bool)
        mask[1, values["length"] - 5 :] = False
    return config, mask


def covering_cases() -> list[dict]:
    """The fewest cases that use every value of every axis: case i takes value (i + axis number) mod len(values)."""
    width = max(len(values) for values in AXES.values())
    return [
        {axis: values[(i + offset) % len(values)] for offset, (axis, values) in enumerate(AXES.items())}
        for i in range(width)
    ]


def random_cases(count: int, seed: int) -> list[dict]:
    """`count` cases drawn from the product of every axis."""
    product = [dict(zip(AXES, combination)) for combination in itertools.product(*AXES.values())]
    return random.Random(seed).sample(product, count)


def case_id(values: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in values.items()).replace(" ", "")


# CI runs the first covering case; the slow marker runs every covering case and 30 random ones.
FAST = covering_cases()
FULL = covering_cases() + random_cases(30, seed=1)


def run_case(values: dict, dtype: str):
    config, mask = build_case(values)
    canonical = random_canonical(config, seed=5)
    ids = np.random.default_rng(6).integers(0, config.vocab_size, size=(2, values["length"]))
    dropout_seed = 11 if values["dropout"] else None
    report = compare_frameworks(config, canonical, ids, seed=3, attention_mask=mask, dtype=dtype, dropout_seed=dropout_seed)
    print(report.to_markdown())
    print(f"worst output {report.worst_output}; worst gradient {report.worst_gradient}")
    assert report.passed, report.to_markdown()
    return report


@pytest.mark.parametrize("values", FAST[:1], ids=case_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matrix_fast(values, dtype):
    run_case(values, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("values", FULL, ids=case_id)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matrix_full(values, dtype):
    run_case(values, dtype)


def test_fast_selection_covers_every_axis_value():
    for axis, values in AXES.items():
        for value in values:
            assert any(case[axis] == value for case in FAST), (axis, value)


@st.composite
def small_configs(draw):
    heads = draw(st.sampled_from([1, 3]))
    head_width = draw(st.sampled_from([5, 7]))
    chunk = draw(st.sampled_from([4, 8]))
    causal = draw(st.booleans())
    layers = tuple(draw(st.lists(st.sampled_from(["lsh", "local", "full"]), min_size=1, max_size=3)))
    config = make_config(
        d_model=heads * head_width, n_heads=heads, d_head=head_width, d_ff=draw(st.sampled_from([9, 13])),
        vocab_size=draw(st.sampled_from([11, 29])), attention_layers=layers, causal=causal,
        lsh_chunk_length=chunk, local_chunk_length=chunk, lsh_chunks_after=0 if causal else 1,
        local_chunks_after=0 if causal else 1, n_hashes=draw(st.integers(1, 3)),
        n_buckets=draw(st.sampled_from([2, 4, 6, (2, 2)])), positions="learned", max_length=32,
        activation=draw(st.sampled_from(["relu", "gelu", "gelu_tanh"])),
        lsh_same_bucket_only=draw(st.booleans()),
    )
    length = draw(st.integers(1, 32))
    return config, length


def check_random_config(config_and_length, seed):
    config, length = config_and_length
    canonical = random_canonical(config, seed=seed)
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(2, length))
    report = compare_frameworks(config, canonical, ids, seed=seed, dtype="float64")
    assert report.passed, report.to_markdown()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_configs(), st.integers(0, 2**16))
def test_random_small_configs(config_and_length, seed):
    check_random_config(config_and_length, seed)
