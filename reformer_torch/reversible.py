"""Reversible residual layers (RevNet, Gomez et al. 2017) with a backward that recomputes.

One layer maps two streams (x1, x2) to (y1, y2):

    y1 = x1 + Attention(x2)        x2 = y2 - FeedForward(y1)
    y2 = x2 + FeedForward(y1)      x1 = y1 - Attention(x2)

The right-hand column is the inverse, so a layer's inputs can be rebuilt from
its outputs. `ReversibleStack` keeps only the outputs of the last layer; its
backward walks the layers top-down, rebuilds each layer's inputs, recomputes
the two halves with autograd on, and takes their vector-Jacobian products.
Activation memory therefore does not grow with depth.

The recomputation must see exactly what the forward saw: the same buckets
(stored, never re-hashed from the rebuilt activations, whose last bits differ)
and the same dropout masks (each half draws from a source rebuilt from the
seed it used in the forward, leaving the global generator alone).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from reformer_spec.config import ReformerConfig
from reformer_torch.attention import make_attention
from reformer_torch.feed_forward import ChunkedFeedForward
from reformer_torch.randomness import DropoutSeed, DropoutSource


@dataclasses.dataclass(frozen=True)
class LayerRandomness:
    """The randomness one layer's forward used, kept so the backward can replay it."""

    rotations: Tensor | None  # (H, K, R, Z) for LSH layers, else None
    buckets: Tensor | None  # (B, H, R, L) given by the caller instead of hashing, else None
    attention_seed: DropoutSeed | None  # dropout in the attention half; None when dropout is off
    feed_forward_seed: DropoutSeed | None  # dropout in the feed-forward half


def _source(seed: DropoutSeed | None, device: torch.device) -> DropoutSource | None:
    return None if seed is None else seed.source(device)


class ReformerLayer(nn.Module):
    """One reversible layer: an attention half and a feed-forward half."""

    def __init__(self, config: ReformerConfig, layer_index: int) -> None:
        super().__init__()
        self.attention = make_attention(config.attention_layers[layer_index], config)
        self.feed_forward = ChunkedFeedForward(config)

    def attention_half(
        self, x2: Tensor, padding_mask: Tensor | None, randomness: LayerRandomness, buckets: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        source = _source(randomness.attention_seed, x2.device)
        return self.attention(x2, padding_mask, rotations=randomness.rotations, buckets=buckets, dropout_source=source)

    def feed_forward_half(self, y1: Tensor, randomness: LayerRandomness) -> Tensor:
        return self.feed_forward(y1, _source(randomness.feed_forward_seed, y1.device))

    def forward(
        self, x1: Tensor, x2: Tensor, padding_mask: Tensor | None, randomness: LayerRandomness
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        attended, buckets = self.attention_half(x2, padding_mask, randomness, randomness.buckets)
        y1 = x1 + attended
        y2 = x2 + self.feed_forward_half(y1, randomness)
        return y1, y2, buckets


class ReversibleStack(torch.autograd.Function):
    """Run the layers without storing activations; recompute them in backward.

    Every layer parameter is an explicit input, so `torch.autograd.grad` and
    `gradcheck` see its gradient like any other (it is not written to `.grad`
    behind autograd's back).
    """

    @staticmethod
    def forward(ctx, x1, x2, layers, padding_mask, randomness, buckets_out, *parameters):
        buckets_per_layer = []
        with torch.no_grad():
            for layer, layer_randomness in zip(layers, randomness):
                x1, x2, buckets = layer(x1, x2, padding_mask, layer_randomness)
                buckets_per_layer.append(buckets)
        buckets_out.extend(buckets_per_layer)
        ctx.layers = layers
        ctx.padding_mask = padding_mask
        ctx.randomness = randomness
        ctx.buckets = buckets_per_layer
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, grad_y1, grad_y2):
        y1, y2 = ctx.saved_tensors
        parameter_grads: dict[int, Tensor | None] = {}

        for layer, randomness, buckets in reversed(list(zip(ctx.layers, ctx.randomness, ctx.buckets))):
            # Feed-forward half: y2 = x2 + G(y1), so x2 = y2 - G(y1).
            ff_parameters = [p for p in layer.feed_forward.parameters() if p.requires_grad]
            with torch.enable_grad():
                y1_leaf = y1.detach().requires_grad_(True)
                g_out = layer.feed_forward_half(y1_leaf, randomness)
            grads = torch.autograd.grad(g_out, [y1_leaf, *ff_parameters], grad_y2, allow_unused=True)
            with torch.no_grad():
                x2 = y2 - g_out
                grad_y1 = grad_y1 + grads[0]
            parameter_grads.update(zip(map(id, ff_parameters), grads[1:]))
            del g_out

            # Attention half: y1 = x1 + F(x2), so x1 = y1 - F(x2).
            attention_parameters = [p for p in layer.attention.parameters() if p.requires_grad]
            with torch.enable_grad():
                x2_leaf = x2.detach().requires_grad_(True)
                f_out, _ = layer.attention_half(x2_leaf, ctx.padding_mask, randomness, buckets)
            grads = torch.autograd.grad(f_out, [x2_leaf, *attention_parameters], grad_y1, allow_unused=True)
            with torch.no_grad():
                x1 = y1 - f_out
                grad_y2 = grad_y2 + grads[0]
            parameter_grads.update(zip(map(id, attention_parameters), grads[1:]))
            del f_out

            y1, y2 = x1, x2  # grad_y1 is already the gradient of x1 (it passes through unchanged)

        all_parameters = [p for layer in ctx.layers for p in layer.parameters()]
        return (grad_y1, grad_y2, None, None, None, None, *(parameter_grads.get(id(p)) for p in all_parameters))


def run_layers(
    layers: nn.ModuleList,
    x: Tensor,
    padding_mask: Tensor | None,
    randomness: list[LayerRandomness],
    *,
    reversible: bool,
) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """Run the stack on two copies of x (B, L, D); returns (y1, y2, buckets per layer)."""
    if not reversible:
        x1, x2, buckets = x, x, []
        for layer, layer_randomness in zip(layers, randomness):
            x1, x2, layer_buckets = layer(x1, x2, padding_mask, layer_randomness)
            buckets.append(layer_buckets)
        return x1, x2, buckets

    buckets: list[Tensor | None] = []
    parameters = [p for layer in layers for p in layer.parameters()]
    y1, y2 = ReversibleStack.apply(x, x, layers, padding_mask, randomness, buckets, *parameters)
    return y1, y2, buckets
