"""The Reformer language model in PyTorch."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reformer_spec import validation
from reformer_spec.config import AttentionKind, ReformerConfig
from reformer_spec.hashing import rotation_shape
from reformer_torch.embeddings import Embeddings
from reformer_spec import dropout as portable
from reformer_torch.randomness import DropoutSeed, dropout, draw_seed
from reformer_torch.reversible import LayerRandomness, ReformerLayer, run_layers

IGNORE_INDEX = -100  # label value left out of the loss, as in torch's cross_entropy and Hugging Face


@dataclasses.dataclass
class ReformerOutput:
    """Model outputs.

    logits (B, L, V): position t scores the token at t + 1.
    loss: mean next-token cross-entropy in nats, when labels were given.
    buckets: per layer, (B, H, R, L_padded) int64 buckets for LSH layers, None for others.
    """

    logits: Tensor
    loss: Tensor | None = None
    buckets: list[Tensor | None] = dataclasses.field(default_factory=list)


class ReformerLM(nn.Module):
    """Embeddings, a stack of reversible layers, and a head over both streams."""

    def __init__(self, config: ReformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList([ReformerLayer(config, i) for i in range(config.n_layers)])
        self.final_norm = nn.LayerNorm(2 * config.d_model, eps=config.layer_norm_eps)
        self.lm_head = LMHead(config, self.embeddings.token)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the canonical parameter table specifies.

        Kernels, embeddings and position tables are N(0, initializer_std), norm scales 1, biases 0.
        """
        std = self.config.initializer_std
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.normal_(0.0, std)
                elif isinstance(module, nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
            for name, parameter in self.embeddings.named_parameters(recurse=False):
                parameter.normal_(0.0, std)  # axial_N or position_table
            for module in self.modules():
                if isinstance(module, nn.Linear) and module.bias is not None:
                    module.bias.zero_()
            self.lm_head.bias.zero_()

    # ----------------------------------------------------------------- inputs

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        if not isinstance(input_ids, Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}.")
        is_integer = not (input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool)
        validation.check_input_ids(tuple(input_ids.shape), str(input_ids.dtype), is_integer, self.config)
        validation.check_token_range(int(input_ids.min()), int(input_ids.max()), self.config)
        if attention_mask is not None:
            ok = attention_mask.dtype == torch.bool or not attention_mask.dtype.is_floating_point
            validation.check_attention_mask(tuple(attention_mask.shape), tuple(input_ids.shape), str(attention_mask.dtype), ok)

    def draw_rotations(self, generator: torch.Generator | None = None) -> list[Tensor | None]:
        """Draw fresh rotations for every LSH layer from `generator` (the native path)."""
        device = self.lm_head.bias.device
        dtype = self.lm_head.bias.dtype
        source = generator.device if generator is not None else device
        shape = rotation_shape(self.config)
        return [
            torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)
            if kind is AttentionKind.LSH
            else None
            for kind in self.config.attention_layers
        ]

    def _prepare_rotations(self, rotations: Sequence | None, generator: torch.Generator | None) -> list[Tensor | None]:
        if rotations is None:
            return self.draw_rotations(generator)
        expected = [rotation_shape(self.config) if kind is AttentionKind.LSH else None for kind in self.config.attention_layers]
        validation.check_rotations(rotations, expected)
        device, dtype = self.lm_head.bias.device, self.lm_head.bias.dtype
        prepared: list[Tensor | None] = []
        for rotation, shape in zip(rotations, expected):
            if rotation is None or shape is None:
                prepared.append(None)
                continue
            if not isinstance(rotation, Tensor):
                rotation = torch.as_tensor(np.asarray(rotation))
            prepared.append(rotation.to(device, dtype))
        return prepared

    def _prepare_buckets(self, buckets: Sequence | None, batch_and_length: tuple[int, int]) -> list[Tensor | None]:
        config = self.config
        if buckets is None:
            return [None] * config.n_layers
        batch, length = batch_and_length
        shape = (batch, config.n_heads, config.n_hashes, length)
        expected = [shape if kind is AttentionKind.LSH else None for kind in config.attention_layers]
        validation.check_buckets(buckets, expected)
        device = self.lm_head.bias.device
        return [None if b is None or s is None else torch.as_tensor(b).to(device, torch.int64) for b, s in zip(buckets, expected)]

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        rotations: Sequence | None = None,
        buckets: Sequence | None = None,
        generator: torch.Generator | None = None,
        dropout_seed: int | None = None,
    ) -> ReformerOutput:
        """Score the next token at every position.

        input_ids (B, L) ints in [0, vocab_size). attention_mask (B, L): 1 at
        real tokens, 0 at padding, which no other position may attend to.
        labels (B, L): usually input_ids; position t's logits are scored against
        labels[t + 1], and IGNORE_INDEX entries are left out. rotations: one
        (H, K, R, Z) tensor or array per layer (None at non-LSH layers), for
        example `reformer_spec.hashing.portable_rotations`; drawn from
        `generator` when not given. buckets: one (B, H, R, L_padded) int tensor
        per layer (None at non-LSH layers), used instead of hashing, for example
        the `buckets` of an earlier output. Shared buckets separate arithmetic
        from hashing when two models are compared. Dropout seeds (in training) come
        from `generator` too, or from the default generator when it is None.
        """
        self._check_inputs(input_ids, attention_mask)
        config = self.config
        batch, length = input_ids.shape
        device = self.lm_head.bias.device

        # Pad to whole chunks; padded positions are masked as keys and trimmed from the outputs.
        padded_length = config.padded_length(length)
        padding_mask = None if attention_mask is None else attention_mask.to(device=device, dtype=torch.bool)
        if padded_length != length:
            extra = padded_length - length
            input_ids = F.pad(input_ids, (0, extra), value=config.pad_token_id)
            if padding_mask is None:
                padding_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
            padding_mask = F.pad(padding_mask, (0, extra), value=False)
        input_ids = input_ids.to(device)

        dropout_on = self.training and (config.hidden_dropout > 0 or config.attention_dropout > 0 or config.ff_dropout > 0)

        if dropout_seed is not None:
            dropout_seed = portable.check_seed(dropout_seed)

        def seed_for(stream: int) -> DropoutSeed | None:
            if not dropout_on:
                return None
            if dropout_seed is not None:
                return DropoutSeed(dropout_seed, stream)
            return DropoutSeed(draw_seed(generator, device))

        layer_rotations = self._prepare_rotations(rotations, generator)
        layer_buckets = self._prepare_buckets(buckets, (batch, padded_length))
        randomness = [
            LayerRandomness(r, b, seed_for(portable.attention_stream(i)), seed_for(portable.feed_forward_stream(i)))
            for i, (r, b) in enumerate(zip(layer_rotations, layer_buckets))
        ]
        embed_seed, head_seed = seed_for(portable.EMBEDDING_STREAM), seed_for(portable.head_stream(config.n_layers))

        hidden = self.embeddings(input_ids, None if embed_seed is None else embed_seed.source(device))  # (B, L, D)
        y1, y2, buckets = run_layers(self.layers, hidden, padding_mask, randomness, reversible=config.reversible)
        normed = self.final_norm(torch.cat([y1, y2], dim=-1))  # (B, L, 2D)
        normed = dropout(normed, config.hidden_dropout, None if head_seed is None else head_seed.source(device))
        logits = self.lm_head(normed)[:, :length]  # (B, L, V)

        loss = None
        if labels is not None:
            loss = next_token_loss(logits, labels.to(device))
        return ReformerOutput(logits=logits, loss=loss, buckets=buckets)


class LMHead(nn.Module):
    """Projection of the concatenated streams (B, L, 2D) to vocabulary logits (B, L, V).

    With tied embeddings the kernel is the token embedding E (V, D) applied to
    both halves: logits = h[:, :, :D] E^T + h[:, :, D:] E^T + bias.
    """

    def __init__(self, config: ReformerConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        if config.tie_embeddings:
            self.token_embedding = [token_embedding]  # a list, so the tied weight is not registered twice
        else:
            self.kernel = nn.Linear(2 * config.d_model, config.vocab_size, bias=False)

    def forward(self, normed: Tensor) -> Tensor:
        if self.config.tie_embeddings:
            embedding = self.token_embedding[0].weight  # (V, D)
            first, second = normed.chunk(2, dim=-1)  # (B, L, D) each
            return (first + second) @ embedding.T + self.bias
        return self.kernel(normed) + self.bias


def next_token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits[:, t] against labels[:, t + 1], skipping IGNORE_INDEX."""
    vocab = logits.shape[-1]
    scores = logits[:, :-1].reshape(-1, vocab)
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # a log-softmax over the vocabulary loses too much in 16 bits
    return F.cross_entropy(scores, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
