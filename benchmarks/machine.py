"""A description of the machine and software a run measured on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

LIBRARIES = ("torch", "jax", "jaxlib", "flax", "transformers", "reformer-pytorch", "numpy", "safetensors")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def library_versions(trax_python: str | None) -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["trax"] = trax_version(trax_python) if trax_python else "not installed"
    return versions


def trax_version(python: str) -> str:
    """Trax's and its JAX's versions, read from its own interpreter's package metadata."""
    if not os.path.exists(python):
        return "not installed"
    code = "import importlib.metadata as m; print(m.version('trax'), m.version('jax'))"
    try:
        output = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    except (subprocess.SubprocessError, OSError):
        return "not installed"
    return f"{output[0]} (with jax {output[1]})" if len(output) == 2 else "not installed"


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe(trax_python: str | None) -> dict[str, Any]:
    """CPU model, core count, memory, GPU, OS, Python and library versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": total_memory_bytes(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(trax_python),
    }


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]
