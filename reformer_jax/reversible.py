"""Reversible residual layers (RevNet, Gomez et al. 2017) with a backward that recomputes.

One layer maps two streams (x1, x2) to (y1, y2):

    y1 = x1 + Attention(x2)        x2 = y2 - FeedForward(y1)
    y2 = x2 + FeedForward(y1)      x1 = y1 - Attention(x2)

The right-hand column is the inverse, so a layer's inputs can be rebuilt from
its outputs. `reversible_stack` keeps only the outputs of the last layer and
each LSH layer's integer buckets. Its backward walks the layers top-down,
rebuilds each layer's inputs, recomputes the two halves under `jax.vjp`, and
pulls the output cotangents back through them. Activation memory therefore
does not grow with depth.

The recomputation must see exactly what the forward saw: the same buckets
(stored, never re-hashed from the rebuilt activations, whose last bits differ)
and the same dropout masks (each half gets the same dropout key again).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from reformer_spec.config import ReformerConfig
from reformer_jax.attention import make_attention
from reformer_jax.feed_forward import ChunkedFeedForward
from reformer_jax.randomness import DropoutKey

Array = jax.Array
Params = dict[str, Any]


@flax.struct.dataclass
class LayerRandomness:
    """The randomness one layer's forward used, kept so the backward can replay it."""

    rotations: Array | None  # (H, K, R, Z) for LSH layers, else None
    buckets: Array | None  # (B, H, R, L) given by the caller instead of hashing, else None
    attention_key: DropoutKey | None  # seeds dropout in the attention half; None when dropout is off
    feed_forward_key: DropoutKey | None  # seeds dropout in the feed-forward half


class ReformerLayer(nn.Module):
    """One reversible layer: an attention half and a feed-forward half."""

    config: ReformerConfig
    layer_index: int

    def setup(self) -> None:
        self.attention = make_attention(self.config.attention_layers[self.layer_index], self.config)
        self.feed_forward = ChunkedFeedForward(self.config)

    def attention_half(
        self, x2: Array, padding_mask: Array | None, randomness: LayerRandomness, buckets: Array | None
    ) -> tuple[Array, Array | None]:
        return self.attention(
            x2, padding_mask, rotations=randomness.rotations, buckets=buckets, dropout_key=randomness.attention_key
        )

    def feed_forward_half(self, y1: Array, randomness: LayerRandomness) -> Array:
        return self.feed_forward(y1, randomness.feed_forward_key)

    def __call__(
        self, x1: Array, x2: Array, padding_mask: Array | None, randomness: LayerRandomness
    ) -> tuple[Array, Array, Array | None]:
        attended, buckets = self.attention_half(x2, padding_mask, randomness, randomness.buckets)
        y1 = x1 + attended
        y2 = x2 + self.feed_forward_half(y1, randomness)
        return y1, y2, buckets


def _layer(config: ReformerConfig, layer_index: int) -> ReformerLayer:
    # parent=None keeps the layer unbound even when built inside a module's
    # method; it is then a pure function of the params handed to `apply`.
    return ReformerLayer(config, layer_index, parent=None)


def _stack_forward(
    config: ReformerConfig,
    params: list[Params],
    x1: Array,
    x2: Array,
    padding_mask: Array | None,
    randomness: list[LayerRandomness],
) -> tuple[tuple[Array, Array, list[Array | None]], tuple]:
    buckets_per_layer = []
    for index, (layer_params, layer_randomness) in enumerate(zip(params, randomness)):
        x1, x2, buckets = _layer(config, index).apply({"params": layer_params}, x1, x2, padding_mask, layer_randomness)
        buckets_per_layer.append(buckets)
    # Only the last layer's outputs and the integer buckets are kept for the backward.
    residuals = (params, x1, x2, padding_mask, randomness, buckets_per_layer)
    return (x1, x2, buckets_per_layer), residuals


def _after(anchors: Any, tree: Any) -> Any:
    """Return `tree` unchanged, as values that XLA must compute after every array in `anchors`.

    `jax.lax.optimization_barrier` states this intent, but XLA:CPU (jax 0.10.2)
    removes barriers before it schedules, so the dependency is made real: a
    select on whether the first element of some anchor is NaN, which XLA
    cannot fold. None is NaN unless the gradients already are.
    """
    firsts = jnp.stack([leaf.reshape(-1)[0] for leaf in jax.tree.leaves(anchors)])
    is_nan = jnp.any(firsts != firsts)

    def tie(leaf: Array) -> Array:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = jax.random.key_data(leaf)
            return jax.random.wrap_key_data(jnp.where(is_nan, jnp.zeros_like(data), data), impl=jax.random.key_impl(leaf))
        return jnp.where(is_nan, jnp.zeros_like(leaf), leaf)

    return jax.tree.map(tie, tree)


def _stack_backward(config: ReformerConfig, residuals: tuple, output_grads: tuple) -> tuple:
    params, y1, y2, padding_mask, randomness, buckets_per_layer = residuals
    grad_y1, grad_y2, _ = output_grads  # the buckets are integers and carry no gradient
    parameter_grads: list[Params | None] = [None] * len(params)

    for index in reversed(range(len(params))):
        layer = _layer(config, index)
        # Everything this layer recomputes must wait until the layer above is
        # finished, its parameter gradients included. Otherwise XLA computes
        # it early (merging it with the forward's identical work) or finishes
        # the layer above late, and keeps the activations of several layers
        # alive: memory would grow with depth again.
        y1, y2, layer_params, layer_randomness, stored_buckets, mask = _after(
            (grad_y1, grad_y2, parameter_grads[index + 1 :]),
            (y1, y2, params[index], randomness[index], buckets_per_layer[index], padding_mask),
        )

        # Feed-forward half: y2 = x2 + G(y1), so x2 = y2 - G(y1).
        def feed_forward_half(ff_params: Params, y1: Array) -> Array:
            variables = {"params": {**layer_params, "feed_forward": ff_params}}
            return layer.apply(variables, y1, layer_randomness, method=ReformerLayer.feed_forward_half)

        g_out, feed_forward_vjp = jax.vjp(feed_forward_half, layer_params["feed_forward"], y1)
        ff_grads, y1_grad = feed_forward_vjp(grad_y2)
        x2 = y2 - g_out
        grad_y1 = grad_y1 + y1_grad

        # Attention half: y1 = x1 + F(x2), so x1 = y1 - F(x2). The stored
        # buckets are replayed, so the recomputation attends exactly as the forward did.
        def attention_half(attention_params: Params, x2: Array) -> Array:
            variables = {"params": {**layer_params, "attention": attention_params}}
            output, _ = layer.apply(
                variables,
                x2,
                mask,
                layer_randomness,
                stored_buckets,
                method=ReformerLayer.attention_half,
            )
            return output

        f_out, attention_vjp = jax.vjp(attention_half, layer_params["attention"], x2)
        attention_grads, x2_grad = attention_vjp(grad_y1)
        x1 = y1 - f_out
        grad_y2 = grad_y2 + x2_grad

        parameter_grads[index] = {"attention": attention_grads, "feed_forward": ff_grads}
        y1, y2 = x1, x2  # grad_y1 is already the gradient of x1 (it passes through unchanged)

    # The padding mask, rotations and dropout keys are not differentiated: None means a zero cotangent.
    return parameter_grads, grad_y1, grad_y2, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def reversible_stack(
    config: ReformerConfig,
    params: list[Params],
    x1: Array,
    x2: Array,
    padding_mask: Array | None,
    randomness: list[LayerRandomness],
) -> tuple[Array, Array, list[Array | None]]:
    """Run every layer on (x1, x2), each (B, L, D), and return (y1, y2, buckets per layer).

    `params[i]` is layer i's parameter tree ({"attention": ..., "feed_forward": ...}).
    `_stack_backward` computes the gradient; no activation of an intermediate
    layer is kept for it.
    """
    outputs, _ = _stack_forward(config, params, x1, x2, padding_mask, randomness)
    return outputs


reversible_stack.defvjp(_stack_forward, _stack_backward)


def run_layers(
    layers: Sequence[ReformerLayer],
    x: Array,
    padding_mask: Array | None,
    randomness: list[LayerRandomness],
    *,
    reversible: bool,
) -> tuple[Array, Array, list[Array | None]]:
    """Run the stack on two copies of x (B, L, D); returns (y1, y2, buckets per layer).

    `layers` are the model's bound layers. With `reversible=False`, and always
    during `init` (which must create the parameters by calling the layers), JAX
    differentiates through the layers as usual.
    """
    if not reversible or layers[0].is_initializing():
        x1, x2, buckets = x, x, []
        for layer, layer_randomness in zip(layers, randomness):
            x1, x2, layer_buckets = layer(x1, x2, padding_mask, layer_randomness)
            buckets.append(layer_buckets)
        return x1, x2, buckets

    config = layers[0].config
    params = [flax.core.unfreeze(layer.variables["params"]) for layer in layers]
    return reversible_stack(config, params, x, x, padding_mask, randomness)
