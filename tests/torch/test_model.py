"""The whole PyTorch model: reversible backward, chunking, masks, padding, bad input."""

import pytest
import torch

from reformer_spec import portable_rotations
from reformer_torch import ReformerLM
from reformer_torch.reversible import LayerRandomness, run_layers

from tests.torch.helpers import make_config


def gradients(model, *args, **kwargs):
    output = model(*args, **kwargs)
    output.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return output, grads


@pytest.mark.parametrize("dropout, dropout_seed", [(0.0, None), (0.2, None), (0.2, 11)])
def test_reversible_gradients_equal_plain_autograd(dropout, dropout_seed):
    """The recomputing backward gives autograd's gradients, dropout included (masks replayed).

    dropout_seed=None draws masks from torch generators, 11 from the portable streams.
    """
    config = make_config(
        attention_layers=("lsh", "local", "full", "lsh"), hidden_dropout=dropout, attention_dropout=dropout, ff_dropout=dropout
    )
    reversible = ReformerLM(config).double().train()
    plain = ReformerLM(config.replace(reversible=False)).double().train()
    plain.load_state_dict(reversible.state_dict())
    ids = torch.randint(0, 37, (2, 29))
    rotations = portable_rotations(config, 5)

    arguments = dict(labels=ids, rotations=rotations, dropout_seed=dropout_seed)
    out_rev, grads_rev = gradients(reversible, ids, generator=torch.Generator().manual_seed(9), **arguments)
    out_plain, grads_plain = gradients(plain, ids, generator=torch.Generator().manual_seed(9), **arguments)
    torch.testing.assert_close(out_rev.logits, out_plain.logits, rtol=0, atol=0)
    for name in grads_plain:
        torch.testing.assert_close(grads_rev[name], grads_plain[name], rtol=1e-9, atol=1e-11, msg=name)


def test_reversible_input_gradient_and_buckets_replayed():
    config = make_config(attention_layers=("lsh", "lsh", "local"))
    model = ReformerLM(config).double()
    x = torch.randn(2, 16, 30, dtype=torch.float64, requires_grad=True)
    randomness = [LayerRandomness(None if r is None else torch.as_tensor(r), None, None, None) for r in portable_rotations(config, 1)]
    y1, y2, buckets = run_layers(model.layers, x, None, randomness, reversible=True)
    (grad_rev,) = torch.autograd.grad((y1 * y2).sum(), x)
    p1, p2, plain_buckets = run_layers(model.layers, x, None, randomness, reversible=False)
    (grad_plain,) = torch.autograd.grad((p1 * p2).sum(), x)
    torch.testing.assert_close(grad_rev, grad_plain, rtol=1e-10, atol=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(buckets[:2], plain_buckets[:2]))
    assert buckets[2] is None


def saved_tensor_bytes(config) -> int:
    """Bytes autograd saves for the backward of one forward pass."""
    model = ReformerLM(config)
    ids = torch.randint(0, 37, (1, 64))
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids, rotations=portable_rotations(config, 0))
    return total


def test_reversible_stack_stores_no_per_layer_activations():
    """Autograd keeps only the last layer's outputs: saved tensors do not grow with depth."""
    two = saved_tensor_bytes(make_config(attention_layers=("lsh",) * 2, ff_chunk_size=8))
    eight = saved_tensor_bytes(make_config(attention_layers=("lsh",) * 8, ff_chunk_size=8))
    plain = saved_tensor_bytes(make_config(attention_layers=("lsh",) * 2, reversible=False))
    assert eight == two
    assert two < 0.5 * plain


def test_backward_leaves_global_rng_alone():
    config = make_config(hidden_dropout=0.1, attention_dropout=0.1)
    model = ReformerLM(config).train()
    ids = torch.randint(0, 37, (2, 16))
    output = model(ids, labels=ids, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    output.loss.backward()
    assert torch.equal(torch.get_rng_state(), state)


def test_backward_in_eval_mode_and_without_input_grad():
    config = make_config()
    model = ReformerLM(config).eval()
    ids = torch.randint(0, 37, (2, 16))
    output = model(ids, labels=ids)
    output.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

    x = torch.randn(2, 16, 30)  # requires_grad=False: only the parameters need gradients
    randomness = [
        LayerRandomness(None if r is None else torch.as_tensor(r, dtype=torch.float32), None, None, None)
        for r in portable_rotations(config, 0)
    ]
    y1, y2, _ = run_layers(model.layers, x, None, randomness, reversible=True)
    grads = torch.autograd.grad(y1.sum() + y2.sum(), list(model.layers.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)


def test_chunked_feed_forward_equals_unchunked():
    config = make_config(ff_chunk_size=0)
    whole = ReformerLM(config).double()
    chunked = ReformerLM(config.replace(ff_chunk_size=4)).double()
    chunked.load_state_dict(whole.state_dict())
    ids = torch.randint(0, 37, (2, 24))
    rotations = portable_rotations(config, 3)
    out_whole, grads_whole = gradients(whole, ids, labels=ids, rotations=rotations)
    out_chunked, grads_chunked = gradients(chunked, ids, labels=ids, rotations=rotations)
    torch.testing.assert_close(out_chunked.logits, out_whole.logits, rtol=1e-12, atol=1e-12)
    for name in grads_whole:
        torch.testing.assert_close(grads_chunked[name], grads_whole[name], rtol=1e-10, atol=1e-12, msg=name)


def largest_change_before(model, ids, rotations, positions):
    """Largest change of any logit before t when token t alone changes, over the given t."""
    before = model(ids, rotations=rotations).logits
    worst = 0.0
    for t in positions:
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % model.config.vocab_size
        after = model(changed, rotations=rotations).logits
        assert not torch.equal(after[:, t:], before[:, t:])
        worst = max(worst, float((after[:, :t] - before[:, :t]).abs().max().detach()) if t else 0.0)
    return worst


@pytest.mark.parametrize("layers", [("local", "local"), ("full", "local")])
def test_causality_bit_identical_without_lsh(layers):
    """Changing token t leaves every logit before t bit-identical."""
    config = make_config(attention_layers=layers)
    model = ReformerLM(config).double()
    ids = torch.randint(0, 37, (2, 32))
    assert largest_change_before(model, ids, None, range(32)) == 0.0


@pytest.mark.parametrize("layers", [("lsh", "lsh"), ("local", "lsh")])
def test_causality_through_lsh(layers):
    """Through LSH layers a later token changes earlier logits by float64 round-off at most.

    Earlier queries see exactly the same keys, but a later token's bucket can
    shift where they sit in the chunk window, which reorders the sums: the
    results agree to the last few bits, not bit for bit.
    """
    config = make_config(attention_layers=layers)
    model = ReformerLM(config).double()
    ids = torch.randint(0, 37, (2, 32))
    worst = largest_change_before(model, ids, portable_rotations(config, 11), range(32))
    print(f"largest change before t through LSH: {worst:.3g}")
    assert worst < 1e-12


def test_trax_chunk_window_leaks_future_tokens():
    """The Trax and Hugging Face window (any bucket in the chunk) is not causal; this is why it is not the default."""
    config = make_config(attention_layers=("lsh", "lsh"), lsh_same_bucket_only=False)
    model = ReformerLM(config).double()
    ids = torch.randint(0, 37, (2, 32))
    worst = largest_change_before(model, ids, portable_rotations(config, 11), range(32))
    print(f"largest change before t in the Trax window: {worst:.3g}")
    assert worst > 1e-6


@pytest.mark.parametrize("causal", [True, False])
def test_padding_invariance(causal):
    """What sits in padded positions never changes the outputs at real positions."""
    config = make_config(
        attention_layers=("lsh", "local", "full"), causal=causal,
        lsh_chunks_after=0 if causal else 1, local_chunks_after=0 if causal else 1,
    )
    model = ReformerLM(config).double()
    ids = torch.randint(0, 37, (2, 32))
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[0, 20:] = False
    mask[1, 27:] = False
    rotations = portable_rotations(config, 2)
    reference = model(ids, attention_mask=mask, rotations=rotations).logits
    for seed in range(3):
        noisy = ids.clone()
        noisy[~mask] = torch.randint(0, 37, (int((~mask).sum()),), generator=torch.Generator().manual_seed(seed))
        logits = model(noisy, attention_mask=mask, rotations=rotations).logits
        torch.testing.assert_close(logits[mask], reference[mask], rtol=0, atol=0)


def test_length_not_a_multiple_of_chunk_is_padded_and_trimmed():
    """29 tokens run as 32 with 3 masked tail positions; causal outputs equal those of an explicit pad."""
    config = make_config(attention_layers=("lsh", "local"))
    model = ReformerLM(config).double()
    ids = torch.randint(1, 37, (2, 29))
    rotations = portable_rotations(config, 4)
    logits = model(ids, rotations=rotations).logits
    assert logits.shape == (2, 29, 37)
    padded = torch.nn.functional.pad(ids, (0, 3), value=config.pad_token_id)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[:, 29:] = False
    explicit = model(padded, attention_mask=mask, rotations=rotations).logits
    torch.testing.assert_close(logits, explicit[:, :29], rtol=0, atol=0)


def test_tied_embeddings_use_token_matrix():
    config = make_config(tie_embeddings=True)
    model = ReformerLM(config)
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.kernel.weight" not in names
    assert names.count("embeddings.token.weight") == 1
    ids = torch.randint(0, 37, (1, 16))
    output = model(ids, labels=ids)
    output.loss.backward()
    assert model.embeddings.token.weight.grad is not None


def test_learned_positions_and_activations():
    for activation in ("relu", "gelu", "gelu_tanh"):
        config = make_config(positions="learned", activation=activation)
        model = ReformerLM(config)
        assert model(torch.randint(0, 37, (1, 8))).logits.shape == (1, 8, 37)


def test_native_rotations_follow_generator():
    config = make_config()
    model = ReformerLM(config)
    ids = torch.randint(0, 37, (1, 32))
    first = model(ids, generator=torch.Generator().manual_seed(1))
    again = model(ids, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.logits, again.logits)
    assert torch.equal(first.buckets[0], again.buckets[0])


def test_float32_and_float64_agree():
    config = make_config()
    model64 = ReformerLM(config).double()
    model32 = ReformerLM(config)
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    ids = torch.randint(0, 37, (2, 16))
    rotations = portable_rotations(config, 0)
    out64 = model64(ids, rotations=rotations)
    # Shared buckets: this compares arithmetic only (float32 may hash a near-tie differently).
    out32 = model32(ids, buckets=out64.buckets)
    assert out32.logits.dtype == torch.float32
    torch.testing.assert_close(out32.logits.double(), out64.logits, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "ids, error, words",
    [
        (torch.tensor([[1, 2, 37]]), ValueError, ["token id 37", "[0, 37)"]),
        (torch.tensor([[1, -1, 3]]), ValueError, ["token id -1"]),
        (torch.tensor([1, 2, 3]), ValueError, ["shape (3,)", "rank 2", "input_ids[None]"]),
        (torch.tensor([[1.0, 2.0]]), TypeError, ["torch.float32", ".long()"]),
        (torch.zeros(1, 65, dtype=torch.long), ValueError, ["length 65", "max_length=64"]),
    ],
)
def test_bad_input_ids(ids, error, words):
    model = ReformerLM(make_config())
    with pytest.raises(error) as raised:
        model(ids)
    for word in words:
        assert word in str(raised.value)


def test_bad_mask_and_rotations():
    config = make_config()
    model = ReformerLM(config)
    ids = torch.randint(0, 37, (2, 16))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 15\)"):
        model(ids, attention_mask=torch.ones(2, 15, dtype=torch.bool))
    with pytest.raises(TypeError, match="attention_mask has dtype torch.float32"):
        model(ids, attention_mask=torch.ones(2, 16))
    with pytest.raises(ValueError, match="rotations has 1 entries"):
        model(ids, rotations=[None])
    with pytest.raises(ValueError, match=r"rotations\[0\] has shape \(3, 10, 2, 3\)"):
        model(ids, rotations=[torch.zeros(3, 10, 2, 3), None])
