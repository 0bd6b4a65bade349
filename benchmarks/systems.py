"""The systems under test: how each one is configured and what one step runs.

Every builder takes a `Shape` and a mode and returns a `Built`, whose `step`
runs one step and waits for the device. Mode "train" is the forward and
backward pass of the next-token loss, with no optimizer update. Mode "infer"
is one forward pass that scores all L tokens, with no gradients. Frameworks are imported inside the
builders, so a worker process loads only the one it measures.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Callable

# One row of the standard configuration: width 256, 4 heads of 64,
# feed-forward 1024, depth 6, chunks of 64, 2 hash rounds, batch 1.
STANDARD = dict(d_model=256, n_heads=4, d_head=64, d_ff=1024, depth=6, chunk_length=64, n_hashes=2, vocab_size=256, batch=1)

MODES = ("train", "infer")


@dataclasses.dataclass(frozen=True)
class Shape:
    """Model and input sizes of one measurement."""

    length: int  # tokens per sequence, a power of two
    depth: int = STANDARD["depth"]
    reversible: bool = True
    d_model: int = STANDARD["d_model"]
    n_heads: int = STANDARD["n_heads"]
    d_head: int = STANDARD["d_head"]
    d_ff: int = STANDARD["d_ff"]
    chunk_length: int = STANDARD["chunk_length"]
    n_hashes: int = STANDARD["n_hashes"]
    vocab_size: int = STANDARD["vocab_size"]
    batch: int = STANDARD["batch"]

    def __post_init__(self) -> None:
        if self.length < 2 * self.chunk_length or self.length & (self.length - 1):
            raise ValueError(
                f"length={self.length} is invalid: benchmark lengths must be powers of two of at least "
                f"2 * chunk_length = {2 * self.chunk_length}, so the axial table and the bucket count divide evenly."
            )

    @property
    def n_buckets(self) -> int | tuple[int, int]:
        """Buckets for this length: 2L / chunk_length (average bucket half a chunk).

        Above 128 buckets the count is split into two power-of-two factors, so
        hashing projects onto sqrt(n) columns per factor instead of n. Every
        system that takes a bucket count gets this one.
        """
        count = max(2, 2 * self.length // self.chunk_length)
        if count <= 128:
            return count
        power = count.bit_length() - 1
        return (2 ** (power // 2), 2 ** (power - power // 2))

    @property
    def axial_shape(self) -> tuple[int, int]:
        """Two axial axes whose product is the length (the Hugging Face training mode requires equality)."""
        power = self.length.bit_length() - 1
        return (2 ** (power // 2), 2 ** (power - power // 2))

    @property
    def axial_dims(self) -> tuple[int, int]:
        return (self.d_model // 2, self.d_model - self.d_model // 2)


@dataclasses.dataclass
class Built:
    """A model ready to measure."""

    step: Callable[[], None]  # runs one step and waits for the device
    n_parameters: int
    compile_seconds: float | None = None  # JAX: ahead-of-time compile time, apart from step time
    note: str = ""


# ---------------------------------------------------------------- our models


def reformer_config(shape: Shape):
    """Our `ReformerConfig` for `shape`: all-LSH layers with the Trax and Hugging Face chunk window."""
    from reformer_spec import ReformerConfig

    return ReformerConfig(
        vocab_size=shape.vocab_size,
        d_model=shape.d_model,
        n_heads=shape.n_heads,
        d_head=shape.d_head,
        d_ff=shape.d_ff,
        attention_layers=("lsh",) * shape.depth,
        causal=True,
        lsh_chunk_length=shape.chunk_length,
        lsh_chunks_before=1,
        n_buckets=shape.n_buckets,
        n_hashes=shape.n_hashes,
        lsh_same_bucket_only=False,  # the window the references use
        axial_shape=shape.axial_shape,
        axial_dims=shape.axial_dims,
        max_length=shape.length,
        layer_norm_eps=1e-6,
        reversible=shape.reversible,
    )


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def random_ids(shape: Shape):
    """Token ids (B, L) drawn with a fixed seed, on the torch device."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, shape.vocab_size, (shape.batch, shape.length), generator=generator).to(torch_device())


def torch_step(model, mode: str, forward: Callable[[], Any], loss: Callable[[Any], Any]) -> Callable[[], None]:
    """Build one training step (zero grads, forward, backward) or one no-grad forward pass."""
    import torch

    if mode == "train":
        model.train()

        def step() -> None:
            model.zero_grad(set_to_none=True)
            loss(forward()).backward()
            synchronize()

    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                forward()
            synchronize()

    return step


def next_token_cross_entropy(logits, ids):
    """Mean cross-entropy of logits[:, t] against ids[:, t + 1], for models that return only logits."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def count_torch(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_ours_torch(shape: Shape, mode: str) -> Built:
    import torch

    from reformer_torch.model import ReformerLM

    torch.manual_seed(0)
    model = ReformerLM(reformer_config(shape)).to(torch_device())
    ids = random_ids(shape)
    generator = torch.Generator().manual_seed(1)  # fresh rotations every step, as in training
    labels = ids if mode == "train" else None
    step = torch_step(model, mode, lambda: model(ids, labels=labels, generator=generator), lambda out: out.loss)
    return Built(step, count_torch(model))


def build_ours_jax(shape: Shape, mode: str) -> Built:
    import time

    import jax
    import numpy as np

    from reformer_jax.model import ReformerLM

    model = ReformerLM(reformer_config(shape))
    ids = jax.numpy.asarray(np.random.default_rng(0).integers(0, shape.vocab_size, (shape.batch, shape.length)), dtype=jax.numpy.int32)
    # jit drops the unused forward pass of init, so this only draws the weights.
    # The ids go in as an argument: the model checks the range of concrete ids, which jit cannot do.
    params = jax.jit(lambda key, ids: model.init({"params": key, "hash": key}, ids))(jax.random.key(0), ids[:, : 2 * shape.chunk_length])

    if mode == "train":

        def loss(params, ids, key):
            return model.apply(params, ids, labels=ids, rngs={"hash": key}).loss

        function = jax.jit(jax.value_and_grad(loss))
    else:
        function = jax.jit(lambda params, ids, key: model.apply(params, ids, rngs={"hash": key}).logits)

    hash_key = jax.random.key(1)
    start = time.perf_counter()
    compiled = function.lower(params, ids, hash_key).compile()
    compile_seconds = time.perf_counter() - start
    counter = iter(range(1 << 62))

    def step() -> None:
        # A fresh hash key every step, as in training; folding it in costs microseconds.
        jax.block_until_ready(compiled(params, ids, jax.random.fold_in(hash_key, next(counter))))

    n_parameters = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))
    return Built(step, n_parameters, compile_seconds=compile_seconds, note="jit of jax.value_and_grad" if mode == "train" else "jit")


# ------------------------------------------------------------------- peers


def huggingface_config(shape: Shape):
    """Build a `transformers.ReformerConfig` equal to ours: all-LSH, causal, ReLU, no dropout, eps 1e-6."""
    from transformers import ReformerConfig as HFReformerConfig

    buckets = shape.n_buckets
    return HFReformerConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.d_model,
        num_attention_heads=shape.n_heads,
        attention_head_size=shape.d_head,
        feed_forward_size=shape.d_ff,
        hidden_act="relu",
        attn_layers=["lsh"] * shape.depth,
        is_decoder=True,
        lsh_attn_chunk_length=shape.chunk_length,
        lsh_num_chunks_before=1,
        lsh_num_chunks_after=0,
        num_buckets=list(buckets) if isinstance(buckets, tuple) else buckets,
        num_hashes=shape.n_hashes,
        axial_pos_embds=True,
        axial_pos_shape=list(shape.axial_shape),
        axial_pos_embds_dim=list(shape.axial_dims),
        max_position_embeddings=shape.length,
        hidden_dropout_prob=0.0,
        lsh_attention_probs_dropout_prob=0.0,
        local_attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6,
        chunk_size_lm_head=0,
        chunk_size_feed_forward=0,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=None,
    )


def huggingface_model(shape: Shape):
    """Build the Hugging Face model with our weights, through `weights_convert.huggingface` when it works.

    Returns (model, note). Without a working converter the model gets the
    same architecture with its own random weights, and the note records that.
    """
    import torch
    from transformers import ReformerModelWithLMHead

    try:
        from weights_convert.huggingface import save_huggingface
    except ImportError as error:
        reason = f"weights_convert.huggingface unavailable ({error})"
    else:
        from reformer_torch.model import ReformerLM
        from weights_convert import torch_state_to_canonical

        torch.manual_seed(0)
        config = reformer_config(shape)
        canonical = torch_state_to_canonical(config, ReformerLM(config).state_dict())
        try:
            with tempfile.TemporaryDirectory() as folder:
                save_huggingface(config, canonical, folder)
                model = ReformerModelWithLMHead.from_pretrained(folder)
            return model, "our weights, converted by weights_convert.huggingface"
        except Exception as error:  # any converter failure falls back to random weights, recorded in the note
            reason = f"save_huggingface failed: {type(error).__name__}: {error}"
    torch.manual_seed(0)
    return ReformerModelWithLMHead(huggingface_config(shape)), f"random weights, equivalent config ({reason})"


def build_huggingface(shape: Shape, mode: str) -> Built:
    model, note = huggingface_model(shape)
    model = model.to(torch_device())
    ids = random_ids(shape)
    if mode == "train":
        forward = lambda: model(input_ids=ids, labels=ids)  # noqa: E731
    else:
        forward = lambda: model(input_ids=ids)  # noqa: E731
    return Built(torch_step(model, mode, forward, lambda out: out.loss), count_torch(model), note=note)


def build_reformer_pytorch(shape: Shape, mode: str) -> Built:
    """lucidrains' reformer-pytorch in its closest configuration.

    Its chunk is its bucket size and it always uses L / bucket_size buckets,
    so only the chunk length, not the bucket count, matches the others.
    """
    import torch
    from reformer_pytorch import ReformerLM

    torch.manual_seed(0)
    model = ReformerLM(
        num_tokens=shape.vocab_size,
        dim=shape.d_model,
        depth=shape.depth,
        max_seq_len=shape.length,
        heads=shape.n_heads,
        dim_head=shape.d_head,
        bucket_size=shape.chunk_length,
        n_hashes=shape.n_hashes,
        ff_chunks=1,
        causal=True,
        ff_mult=shape.d_ff // shape.d_model,
        ff_activation=torch.nn.ReLU,
        axial_position_emb=True,
        axial_position_shape=shape.axial_shape,
        reverse_thres=0 if shape.reversible else shape.length + 1,
    ).to(torch_device())
    ids = random_ids(shape)
    step = torch_step(model, mode, lambda: model(ids), lambda logits: next_token_cross_entropy(logits, ids))
    return Built(step, count_torch(model), note=f"{shape.length // shape.chunk_length} buckets of about {shape.chunk_length}")


def build_full_attention(shape: Shape, mode: str) -> Built:
    import torch

    from benchmarks.baseline import FullAttentionLM

    torch.manual_seed(0)
    model = FullAttentionLM(shape.vocab_size, shape.length, shape.d_model, shape.n_heads, shape.d_head, shape.d_ff, shape.depth)
    model = model.to(torch_device())
    ids = random_ids(shape)
    step = torch_step(model, mode, lambda: model(ids), lambda logits: next_token_cross_entropy(logits, ids))
    return Built(step, count_torch(model), note="scaled_dot_product_attention, not reversible")


@dataclasses.dataclass(frozen=True)
class System:
    name: str  # key in results and on the command line
    label: str  # name in tables and plots
    build: Callable[[Shape, str], Built] | None  # None: runs outside this interpreter (Trax)
    reversible: bool = True


SYSTEMS = {
    system.name: system
    for system in (
        System("ours-torch", "ours, PyTorch (reversible)", build_ours_torch),
        System("ours-torch-plain", "ours, PyTorch (not reversible)", build_ours_torch, reversible=False),
        System("ours-jax", "ours, JAX (reversible)", build_ours_jax),
        System("huggingface", "Hugging Face ReformerModelWithLMHead", build_huggingface),
        System("trax", "Trax 1.4.1 ReformerLM", None),
        System("reformer-pytorch", "reformer-pytorch (lucidrains)", build_reformer_pytorch),
        System("full-attention", "full attention (SDPA)", build_full_attention, reversible=False),
    )
}

TRAX_PYTHON = os.environ.get("REFORMER_BENCH_TRAX_PYTHON", "/work/trax-venv/bin/python")


def quadratic(system: str) -> bool:
    """Return whether the system's step time grows with the square of the length."""
    return system == "full-attention"
