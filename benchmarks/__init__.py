"""Speed and memory benchmarks of the Reformer twins against their peers.

`python -m benchmarks.run` measures our PyTorch and JAX models, the Hugging
Face and Trax Reformers, the reformer-pytorch package and a full-attention
transformer, on one machine and in one run. Each measurement runs in a fresh
subprocess (`benchmarks.worker`). The run then writes a markdown table, JSON
and log-log plots (`benchmarks.report`).
"""
