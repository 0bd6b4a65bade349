"""One measurement in a fresh process: `python -m benchmarks.worker '<json request>'`.

The parent (`benchmarks.run`) starts one worker per measurement, so the peak
memory a worker reports is its own: `ru_maxrss` on CPU,
`torch.cuda.max_memory_allocated` or JAX's `peak_bytes_in_use` on a GPU.
The request is a JSON object with `kind` "step" (system, mode, shape fields,
timing limits) or "conversion" (model sizes). The worker prints one line,
`RESULT_MARKER` followed by a JSON object, and exits 0, also when the model
ran out of memory (then `status` is "out of memory").
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

from benchmarks.measure import emit, peak_rss_bytes, time_steps
from benchmarks.systems import SYSTEMS, Shape


def device_peak_bytes(system: str) -> tuple[int, str]:
    """Peak memory of this process and what was measured: device memory on a GPU, else peak RSS."""
    if system == "ours-jax":
        import jax

        device = jax.local_devices()[0]
        if device.platform == "gpu":
            return int(device.memory_stats()["peak_bytes_in_use"]), "gpu peak_bytes_in_use"
    elif "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated()), "cuda max_memory_allocated"
    return peak_rss_bytes(), "cpu peak rss"


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "resource_exhausted" in text or "failed to allocate" in text


# Modules each system imports; loaded before the baseline memory reading, so it covers the libraries.
FRAMEWORKS = {"ours-jax": ("jax", "flax.linen"), "huggingface": ("torch", "transformers"), "reformer-pytorch": ("torch", "reformer_pytorch")}


def measure_step(request: dict[str, Any]) -> dict[str, Any]:
    system = SYSTEMS[request["system"]]
    shape = Shape(**request["shape"])
    for module in FRAMEWORKS.get(system.name, ("torch",)):
        importlib.import_module(module)
    rss_before_model = peak_rss_bytes()
    start = time.perf_counter()
    built = system.build(shape, request["mode"])
    build_seconds = time.perf_counter() - start
    timing = time_steps(built.step, request["min_seconds"], request["max_steps"], request["budget_seconds"] - build_seconds)
    peak, memory_kind = device_peak_bytes(request["system"])
    tokens = shape.batch * shape.length
    return {
        "status": "ok",
        "tokens_per_second": tokens / timing["step_seconds"],
        "peak_memory_bytes": peak,
        "memory_kind": memory_kind,
        "rss_before_model_bytes": rss_before_model,
        "build_seconds": build_seconds,
        "compile_seconds": built.compile_seconds,
        "n_parameters": built.n_parameters,
        "note": built.note,
        **timing,
    }


def conversion_config(request: dict[str, Any]):
    from reformer_spec import ReformerConfig

    d_model, length = request["d_model"], request["max_length"]
    power = length.bit_length() - 1
    return ReformerConfig(
        vocab_size=request["vocab_size"],
        d_model=d_model,
        n_heads=d_model // 64,
        d_head=64,
        d_ff=4 * d_model,
        attention_layers=("lsh", "local") * (request["depth"] // 2),
        axial_shape=(2 ** (power // 2), 2 ** (power - power // 2)),
        axial_dims=(d_model // 2, d_model - d_model // 2),
        max_length=length,
    )


def measure_conversion(request: dict[str, Any]) -> dict[str, Any]:
    """Time torch state_dict -> canonical -> Flax params -> canonical -> safetensors, and check the round trip."""
    import os
    import tempfile

    import numpy as np
    import torch

    from reformer_torch.model import ReformerLM
    from weights_convert import canonical_to_flax_params, flax_params_to_canonical, save_checkpoint, torch_state_to_canonical

    config = conversion_config(request)
    torch.manual_seed(0)
    model = ReformerLM(config)
    n_parameters = sum(p.numel() for p in model.parameters())
    rss_with_model = peak_rss_bytes()

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    canonical = torch_state_to_canonical(config, model.state_dict())
    seconds["torch_to_canonical"] = time.perf_counter() - start

    start = time.perf_counter()
    params = canonical_to_flax_params(config, canonical)
    seconds["canonical_to_flax"] = time.perf_counter() - start

    start = time.perf_counter()
    round_trip = flax_params_to_canonical(config, params)
    seconds["flax_to_canonical"] = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.safetensors")
        start = time.perf_counter()
        save_checkpoint(path, config, round_trip)
        seconds["canonical_to_safetensors"] = time.perf_counter() - start
        file_bytes = os.path.getsize(path)

    exact = all(np.array_equal(canonical[name], round_trip[name]) for name in canonical)
    return {
        "status": "ok",
        "n_parameters": n_parameters,
        "seconds": seconds,
        "total_seconds": sum(seconds.values()),
        "peak_memory_bytes": peak_rss_bytes(),
        "memory_kind": "cpu peak rss",
        "rss_with_model_bytes": rss_with_model,
        "file_bytes": file_bytes,
        "round_trip_exact": exact,
        "config": config.to_dict(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m benchmarks.worker '<json request>'\n")
        return 2
    request = json.loads(argv[0])
    try:
        result = measure_conversion(request) if request["kind"] == "conversion" else measure_step(request)
    except Exception as error:  # reported to the parent, which records why this size stopped
        if not is_out_of_memory(error):
            raise
        result = {"status": "out of memory", "reason": f"{type(error).__name__}: {str(error)[:300]}"}
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
