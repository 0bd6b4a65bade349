"""Run the PyTorch and the JAX model on the same weights and inputs, and compare them.

Arithmetic and hashing are compared apart:

* Arithmetic: JAX is fed PyTorch's buckets, so both attend over exactly the
  same keys. Each layer is fed identical inputs (PyTorch's activations), so a
  difference is pinned to the layer that makes it; then the whole model's
  logits, loss and every parameter's gradient are compared.
* Hashing: each framework hashes its own activations with the same
  rotations, and the share of (head, round, position) buckets that agree is
  reported. A last-bit difference near a tie can move a vector to another
  bucket, so this share may fall below 1 without any bug; it is never folded
  into the arithmetic tolerances.

Matmul precision is pinned to full float32 on both sides during the checks
(JAX's default on GPUs and TPUs is lower).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Mapping

import numpy as np

from reformer_spec import dropout as portable
from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_spec.hashing import portable_rotations
from reformer_spec.tolerances import Tolerance, tolerance
from weights_convert.compare import Difference, compare_arrays, compare_trees, worst
from weights_convert.convert import canonical_to_flax_params, cast_canonical, flax_params_to_canonical
from weights_convert.mapping import weight_rules


@dataclasses.dataclass
class ParityRow:
    """One line of the parity table."""

    name: str
    output: Difference
    gradient: Difference | None
    bucket_agreement: float | None  # share of buckets equal when each side hashes its own activations
    passed: bool


@dataclasses.dataclass
class ParityReport:
    dtype: str
    rows: list[ParityRow]
    output_tolerance: Tolerance
    gradient_tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    @property
    def worst_output(self) -> Difference:
        return worst([row.output for row in self.rows], self.output_tolerance)

    @property
    def worst_gradient(self) -> Difference:
        return worst([row.gradient for row in self.rows if row.gradient is not None], self.gradient_tolerance)

    @property
    def tolerance_share(self) -> float:
        """The largest share of its tolerance that any output or gradient uses; above 1 fails."""
        shares = [self.worst_output.share_of(self.output_tolerance)]
        if any(row.gradient is not None for row in self.rows):
            shares.append(self.worst_gradient.share_of(self.gradient_tolerance))
        return max(shares)

    def to_markdown(self) -> str:
        lines = [
            f"Parity of PyTorch and JAX in {self.dtype}: output tolerance atol {self.output_tolerance.atol:g}, "
            f"rtol {self.output_tolerance.rtol:g}; gradient tolerance atol {self.gradient_tolerance.atol:g}, "
            f"rtol {self.gradient_tolerance.rtol:g}.",
            "",
            "| check | output max abs | output rel | gradient max abs | gradient rel | bucket agreement | result |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in self.rows:
            gradient = ("—", "—") if row.gradient is None else (f"{row.gradient.max_abs:.2e}", f"{row.gradient.max_rel:.2e}")
            buckets = "—" if row.bucket_agreement is None else f"{100 * row.bucket_agreement:.2f}%"
            lines.append(
                f"| {row.name} | {row.output.max_abs:.2e} | {row.output.max_rel:.2e} | {gradient[0]} | {gradient[1]} "
                f"| {buckets} | {'pass' if row.passed else 'FAIL'} |"
            )
        lines += ["", f"Largest share of a tolerance used: {self.tolerance_share:.3g}."]
        return "\n".join(lines)


@contextlib.contextmanager
def full_precision(dtype: str) -> Iterator[None]:
    """Full float32 matmuls in both frameworks, and JAX x64 when comparing float64."""
    import jax
    import torch

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with jax.default_matmul_precision("highest"), jax.enable_x64(dtype == "float64"):
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _torch_grads_to_canonical(config: ReformerConfig, model) -> dict[str, np.ndarray]:
    from weights_convert.arrays import torch_to_numpy

    import torch

    # A parameter autograd never reached has no .grad; its gradient is zero.
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad for name, p in model.named_parameters()}
    return {rule.spec.name: rule.torch_to_canonical(torch_to_numpy(grads[rule.torch_name])) for rule in weight_rules(config)}


def _row(name: str, outputs: tuple, gradients: tuple | None, agreement: float | None, out_tol: Tolerance, grad_tol: Tolerance) -> ParityRow:
    output = worst(compare_trees(*outputs), out_tol)
    gradient = worst(compare_trees(*gradients), grad_tol) if gradients is not None else None
    passed = output.within(out_tol) and (gradient is None or gradient.within(grad_tol))
    return ParityRow(name, output, gradient, agreement, passed)


def compare_frameworks(
    config: ReformerConfig,
    canonical: Mapping[str, np.ndarray],
    input_ids: np.ndarray,
    seed: int = 0,
    attention_mask: np.ndarray | None = None,
    dtype: str = "float64",
    dropout_seed: int | None = None,
) -> ParityReport:
    """Compare both models on `canonical` weights cast to `dtype`, per layer and end to end.

    With `dropout_seed`, both models run in training mode with the config's
    dropout rates, drawing the portable masks of `reformer_spec.dropout` from
    that seed, so both drop the same units.
    """
    with full_precision(dtype):
        return _compare(config, canonical, np.asarray(input_ids), seed, attention_mask, dtype, dropout_seed)


def _compare(config, canonical, input_ids, seed, attention_mask, dtype, dropout_seed) -> ParityReport:
    import jax
    import jax.numpy as jnp
    import torch

    from reformer_jax import ReformerLM as FlaxReformerLM
    from reformer_jax.randomness import PortableKey
    from reformer_jax.reversible import LayerRandomness as FlaxRandomness
    from reformer_jax.reversible import ReformerLayer as FlaxLayer
    from reformer_torch import ReformerLM as TorchReformerLM
    from reformer_torch.randomness import DropoutSeed
    from reformer_torch.reversible import LayerRandomness as TorchRandomness

    def torch_seed(stream: int) -> DropoutSeed | None:
        return None if dropout_seed is None else DropoutSeed(dropout_seed, stream)

    def flax_key(stream: int) -> PortableKey | None:
        return None if dropout_seed is None else PortableKey.create(dropout_seed, stream)

    out_tol, grad_tol = tolerance(dtype, "output"), tolerance(dtype, "gradient")
    np_dtype = np.float64 if dtype == "float64" else np.float32
    torch_dtype = torch.float64 if dtype == "float64" else torch.float32
    weights = cast_canonical(canonical, np_dtype)
    rotations = portable_rotations(config, seed)

    torch_model = TorchReformerLM(config).to(torch_dtype)
    from weights_convert.convert import load_into_torch

    load_into_torch(torch_model, weights)
    torch_model.eval()
    flax_model = FlaxReformerLM(config)
    params = canonical_to_flax_params(config, weights)

    ids = torch.as_tensor(input_ids, dtype=torch.long)
    mask = None if attention_mask is None else torch.as_tensor(attention_mask, dtype=torch.bool)
    rows: list[ParityRow] = []

    # ---- embeddings, on the padded ids the layers see
    length = config.padded_length(ids.shape[1])
    padded_ids = torch.nn.functional.pad(ids, (0, length - ids.shape[1]), value=config.pad_token_id)
    padding_mask = None
    if mask is not None or length != ids.shape[1]:
        base = mask if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        padding_mask = torch.nn.functional.pad(base, (0, length - ids.shape[1]), value=False)
    embed_seed, embed_key = torch_seed(portable.EMBEDDING_STREAM), flax_key(portable.EMBEDDING_STREAM)
    torch_embedded = torch_model.embeddings(padded_ids, None if embed_seed is None else embed_seed.source(ids.device))
    flax_embedded = flax_model.apply(
        {"params": params}, jnp.asarray(padded_ids.numpy()), method=lambda m, x: m.embeddings(x, embed_key)
    )
    rows.append(_row("embeddings", (torch_embedded, flax_embedded), None, None, out_tol, grad_tol))

    # ---- each layer fed PyTorch's activations
    x1 = x2 = torch_embedded.detach()
    jax_mask = None if padding_mask is None else jnp.asarray(padding_mask.numpy())
    generator = np.random.default_rng(seed)
    for index, kind in enumerate(config.attention_layers):
        layer = torch_model.layers[index]
        rotation = None if rotations[index] is None else torch.as_tensor(rotations[index], dtype=torch_dtype)
        t1 = x1.clone().requires_grad_(True)
        t2 = x2.clone().requires_grad_(True)
        attention_stream, feed_forward_stream = portable.attention_stream(index), portable.feed_forward_stream(index)
        torch_randomness = TorchRandomness(rotation, None, torch_seed(attention_stream), torch_seed(feed_forward_stream))
        y1, y2, torch_buckets = layer(t1, t2, padding_mask, torch_randomness)
        cotangents = [generator.standard_normal(tuple(y1.shape)).astype(np_dtype) for _ in range(2)]
        torch.autograd.backward([y1, y2], [torch.as_tensor(c) for c in cotangents])
        torch_grads = {
            "x1": t1.grad,
            "x2": t2.grad,
            **{name: p.grad for name, p in layer.named_parameters()},
        }
        layer.zero_grad()

        flax_layer = FlaxLayer(config, index)
        layer_params = params[f"layers_{index}"]
        jax_rotation = None if rotation is None else jnp.asarray(rotations[index], dtype=np_dtype)
        shared = None if torch_buckets is None else jnp.asarray(torch_buckets.numpy())

        def apply_layer(p, a, b, buckets=shared):
            randomness = FlaxRandomness(jax_rotation, buckets, flax_key(attention_stream), flax_key(feed_forward_stream))
            return flax_layer.apply({"params": p}, a, b, jax_mask, randomness)

        def layer_vjp(p, a, b, c1, c2):
            (out1, out2), pullback = jax.vjp(lambda p, a, b: apply_layer(p, a, b)[:2], p, a, b)
            return out1, out2, pullback((c1, c2))

        f1, f2, (param_grads, g1, g2) = layer_vjp(
            layer_params, jnp.asarray(x1.numpy()), jnp.asarray(x2.numpy()), jnp.asarray(cotangents[0]), jnp.asarray(cotangents[1])
        )

        agreement = None
        if kind is AttentionKind.LSH:
            _, _, own_buckets = apply_layer(layer_params, jnp.asarray(x1.numpy()), jnp.asarray(x2.numpy()), None)
            agreement = float(np.mean(np.asarray(own_buckets) == torch_buckets.numpy()))

        flax_grads = {"x1": g1, "x2": g2, **layer_params_to_torch_names(config, index, param_grads)}
        torch_grads = {name: torch_grads[name] for name in flax_grads}
        rows.append(
            _row(f"layer {index} ({kind.value})", ((y1, y2), (f1, f2)), (torch_grads, flax_grads), agreement, out_tol, grad_tol)
        )
        x1, x2 = y1.detach(), y2.detach()

    # ---- the whole model: logits, loss and every gradient, buckets shared
    torch_model.zero_grad()
    torch_model.train(dropout_seed is not None)
    torch_out = torch_model(ids, attention_mask=mask, labels=ids, rotations=rotations, dropout_seed=dropout_seed)
    torch_out.loss.backward()
    torch_param_grads = _torch_grads_to_canonical(config, torch_model)
    shared_buckets = [None if b is None else jnp.asarray(b.numpy()) for b in torch_out.buckets]
    jax_ids = jnp.asarray(input_ids)
    jax_attention = None if attention_mask is None else jnp.asarray(attention_mask)
    dropout_arguments = {"deterministic": dropout_seed is None, "dropout_seed": dropout_seed}

    def loss_and_logits(p, ids, attention):
        out = flax_model.apply(
            {"params": p}, ids, attention, ids, rotations=rotations, buckets=shared_buckets, **dropout_arguments
        )
        return out.loss, out.logits

    # Eager, not jit: each new config would compile the whole model again, while
    # eager dispatch reuses compiled operations across calls of the same shapes.
    gradient_fn = jax.value_and_grad(loss_and_logits, has_aux=True)
    (flax_loss, flax_logits), flax_param_grads = gradient_fn(params, jax_ids, jax_attention)
    rows.append(_row("logits", (torch_out.logits, flax_logits), None, None, out_tol, grad_tol))
    rows.append(
        _row(
            "loss and parameter gradients",
            (torch_out.loss, flax_loss),
            (torch_param_grads, flax_params_to_canonical(config, flax_param_grads)),
            None,
            out_tol,
            grad_tol,
        )
    )

    # ---- hashing end to end: each framework hashes its own activations
    flax_out = flax_model.apply({"params": params}, jax_ids, jax_attention, rotations=rotations, **dropout_arguments)
    agreements = [
        float(np.mean(np.asarray(f) == t.numpy())) for f, t in zip(flax_out.buckets, torch_out.buckets) if t is not None
    ]
    if agreements:
        independent = compare_arrays("logits", torch_out.logits, flax_out.logits)
        rows.append(
            ParityRow(
                "logits, each side hashing", independent, None, float(np.mean(agreements)),
                passed=min(agreements) < 1.0 or independent.within(out_tol),
            )
        )
    return ParityReport(dtype, rows, out_tol, grad_tol)


def layer_params_to_torch_names(config: ReformerConfig, index: int, layer_grads: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax gradients of layer `index` as {PyTorch name inside the layer: array in PyTorch layout}."""
    from weights_convert.convert import _flatten

    prefix = f"layers.{index}."
    flat = {"/".join(path): value for path, value in _flatten(layer_grads).items()}
    out = {}
    for rule in weight_rules(config):
        if not rule.spec.name.startswith(prefix):
            continue
        key = "/".join(rule.flax_path[1:])
        out[rule.torch_name[len(prefix):]] = rule.canonical_to_torch(np.asarray(flat[key]))
    return out
