"""Training parity: AdamW in PyTorch and optax.adamw in JAX, from the same weights and batches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import weights_convert as wc
from reformer_jax import ReformerLM as FlaxReformerLM
from reformer_spec import portable_rotations
from reformer_spec.tolerances import tolerance
from reformer_torch import ReformerLM as TorchReformerLM
from weights_convert.compare import compare_trees, worst

from parity_tests.helpers import make_config, random_canonical

STEPS = 5
LEARNING_RATE, BETAS, EPS, WEIGHT_DECAY = 3e-3, (0.9, 0.98), 1e-8, 0.01


@pytest.mark.parametrize("dtype", ["float64", pytest.param("float32", marks=pytest.mark.slow)])
def test_adamw_steps_agree(dtype):
    """Five AdamW steps give the same losses and weights, within the spec's training tolerance."""
    config = make_config(attention_layers=("lsh", "local"))
    np_dtype = np.float64 if dtype == "float64" else np.float32
    canonical = random_canonical(config, seed=1, dtype=np_dtype)
    rotations = portable_rotations(config, 0)
    batches = np.random.default_rng(2).integers(0, config.vocab_size, size=(STEPS, 2, 24))

    torch_model = TorchReformerLM(config).to(torch.float64 if dtype == "float64" else torch.float32)
    wc.load_into_torch(torch_model, canonical)
    optimizer = torch.optim.AdamW(torch_model.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)

    with jax.enable_x64(dtype == "float64"):
        flax_model = FlaxReformerLM(config)
        params = wc.canonical_to_flax_params(config, canonical)
        transform = optax.adamw(LEARNING_RATE, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WEIGHT_DECAY)
        state = transform.init(params)

        @jax.jit
        def step(params, state, ids, buckets):
            def loss_fn(p):
                return flax_model.apply({"params": p}, ids, labels=ids, rotations=rotations, buckets=buckets).loss

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = transform.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        losses = []
        for batch in batches:
            ids = torch.as_tensor(batch)
            optimizer.zero_grad()
            out = torch_model(ids, labels=ids, rotations=rotations)
            out.loss.backward()
            optimizer.step()
            # JAX attends with PyTorch's buckets: this test is about arithmetic, not hashing.
            shared = [None if b is None else jnp.asarray(b.numpy()) for b in out.buckets]
            params, state, jax_loss = step(params, state, jnp.asarray(batch), shared)
            losses.append((out.loss.item(), float(jax_loss)))

        torch_weights = wc.torch_state_to_canonical(config, torch_model.state_dict())
        jax_weights = wc.flax_params_to_canonical(config, params)

    bound = tolerance(dtype, "training")
    loss_error = max(abs(a - b) for a, b in losses)
    weights = worst(compare_trees(torch_weights, jax_weights), bound)
    print(f"{dtype}: losses {losses}")
    print(f"{dtype}: largest loss difference {loss_error:.3g}; weights after {STEPS} steps: {weights}")
    assert losses[-1][0] < losses[0][0], "training did not lower the loss"
    assert bound.allows(loss_error, max(abs(a) for a, _ in losses))
    assert weights.within(bound), str(weights)
