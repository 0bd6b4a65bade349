"""One Trax measurement, run with the Python of Trax's own virtual environment.

`<trax venv>/bin/python -m benchmarks.trax_worker '<json request>'`, started
by `benchmarks.run` from the repository root. It takes the same request and
prints the same result line as `benchmarks.worker`, and imports only the
standard-library parts of this package, so the venv needs Trax and nothing
of ours.

Trax 1.4.1 `ReformerLM` with `LSHSelfAttention` in every layer, axial
positions and ReLU, in Trax's default dtype. The training step is
`jax.jit(jax.value_and_grad(loss))` over `model.pure_fn`: plain autodiff,
which keeps every layer's activations, because Trax's reversible memory
saving lives in its own trainer (`ReversibleSerialTrainer`), not in the layers.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from typing import Any

from benchmarks.measure import emit, peak_rss_bytes, time_steps
from benchmarks.systems import Built, Shape


def build_trax(shape: Shape, mode: str) -> Built:
    import jax
    import numpy as np
    import trax
    from trax import layers as tl

    attention = functools.partial(
        tl.LSHSelfAttention,
        chunk_len=shape.chunk_length,
        n_chunks_before=1,
        n_chunks_after=0,
        n_hashes=shape.n_hashes,
        n_buckets=list(shape.n_buckets) if isinstance(shape.n_buckets, tuple) else shape.n_buckets,
    )
    model = trax.models.ReformerLM(
        vocab_size=shape.vocab_size,
        d_model=shape.d_model,
        d_ff=shape.d_ff,
        d_attention_key=shape.d_head,
        d_attention_value=shape.d_head,
        n_layers=shape.depth,
        n_heads=shape.n_heads,
        dropout=0.0,
        max_len=shape.length,
        attention_type=attention,
        pos_type="axial",
        pos_axial_shape=shape.axial_shape,
        pos_d_axial_embs=shape.axial_dims,
        ff_activation=tl.Relu,
        mode="train" if mode == "train" else "eval",
    )
    ids = np.random.default_rng(0).integers(0, shape.vocab_size, (shape.batch, shape.length)).astype(np.int32)
    weights, state = model.init(trax.shapes.signature(ids), rng=jax.random.PRNGKey(0))

    def logits_of(weights, state, ids, rng):
        logits, _ = model.pure_fn(ids, weights, state, rng)  # (B, L, V); ShiftRight is inside the model
        return logits

    if mode == "train":

        def loss(weights, state, ids, rng):
            log_probabilities = jax.nn.log_softmax(logits_of(weights, state, ids, rng).astype(np.float32))
            return -jax.numpy.mean(jax.numpy.take_along_axis(log_probabilities, ids[..., None], axis=-1))

        function = jax.jit(jax.value_and_grad(loss))
    else:
        function = jax.jit(logits_of)

    rng = jax.random.PRNGKey(1)
    start = time.perf_counter()
    compiled = function.lower(weights, state, ids, rng).compile()
    compile_seconds = time.perf_counter() - start
    counter = iter(range(1 << 62))

    def step() -> None:
        jax.block_until_ready(compiled(weights, state, ids, jax.random.fold_in(rng, next(counter))))

    n_parameters = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(weights))
    note = "jit of jax.value_and_grad, plain autodiff" if mode == "train" else "jit"
    return Built(step, n_parameters, compile_seconds=compile_seconds, note=note)


def measure(request: dict[str, Any]) -> int:
    shape = Shape(**request["shape"])
    rss_before_model = peak_rss_bytes()
    start = time.perf_counter()
    try:
        built = build_trax(shape, request["mode"])
        build_seconds = time.perf_counter() - start
        timing = time_steps(built.step, request["min_seconds"], request["max_steps"], request["budget_seconds"] - build_seconds)
    except Exception as error:  # reported to the parent, which records why this size stopped
        text = str(error).lower()
        if not (isinstance(error, MemoryError) or "resource_exhausted" in text or "out of memory" in text):
            raise
        emit({"status": "out of memory", "reason": f"{type(error).__name__}: {str(error)[:300]}"})
        return 0
    emit(
        {
            "status": "ok",
            "tokens_per_second": shape.batch * shape.length / timing["step_seconds"],
            "peak_memory_bytes": peak_rss_bytes(),
            "memory_kind": "cpu peak rss",
            "rss_before_model_bytes": rss_before_model,
            "build_seconds": build_seconds,
            "compile_seconds": built.compile_seconds,
            "n_parameters": built.n_parameters,
            "note": built.note,
            **timing,
        }
    )
    return 0


def serve() -> int:
    """Import Trax once, then fork one fresh child process per request read from stdin.

    Importing Trax (and TensorFlow with it) takes about a minute of CPU, more
    than most measurements. A forked child starts with the imports done but
    has not run anything yet, so its peak RSS is the imports plus its own
    measurement. The protocol is one JSON object per line. A request carries
    `result_path`, and the server replies {"pid": child} when the child starts
    and {"exit": status} when it ends. The child writes its result line to
    `result_path` and its output to `result_path` + ".log".
    """
    import trax  # noqa: F401  the slow import, done once before any fork

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            with open(request["result_path"] + ".log", "w") as log:
                os.dup2(log.fileno(), 2)
                with open(request["result_path"], "w") as result_file:
                    os.dup2(result_file.fileno(), 1)
                    sys.stdout = os.fdopen(1, "w")
                    status = 1
                    try:
                        status = measure(request)
                    except BaseException:
                        traceback.print_exc()
                    finally:
                        sys.stdout.flush()
                        os._exit(status)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        return serve()
    import jax  # noqa: F401  imported before the baseline reading, as the other workers import their framework

    return measure(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
