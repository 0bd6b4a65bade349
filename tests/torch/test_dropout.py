"""Portable dropout in the PyTorch model: draw numbering and input checks."""

import pytest
import torch

from reformer_spec import dropout as portable
from reformer_spec import portable_rotations
from reformer_torch import ReformerLM
from reformer_torch.randomness import PortableStream, dropout, dropout_mask

from tests.torch.helpers import make_config


def test_zero_rate_draw_keeps_later_numbers():
    """A skipped draw (rate 0) still takes its number, so the next mask is draw 1, as in JAX's split keys."""
    x = torch.ones(4, 6, dtype=torch.float64)
    stream = PortableStream(seed=3, stream=2)
    assert dropout_mask(tuple(x.shape), 0.0, stream, x) is None
    dropped = dropout(x, 0.5, stream)
    expected = torch.as_tensor(portable.keep_mask((4, 6), 0.5, seed=3, stream=2, draw=1), dtype=torch.float64) * 2
    torch.testing.assert_close(dropped, expected, rtol=0, atol=0)
    assert stream.draws == 2


def test_eval_mode_ignores_dropout_seed():
    config = make_config(hidden_dropout=0.3, attention_dropout=0.3)
    model = ReformerLM(config).eval()
    ids = torch.randint(0, 37, (1, 16))
    rotations = portable_rotations(config, 0)
    torch.testing.assert_close(model(ids, rotations=rotations, dropout_seed=1).logits, model(ids, rotations=rotations).logits)


@pytest.mark.parametrize("seed", [-1, 2**32, 0.5])
def test_invalid_dropout_seed_is_rejected(seed):
    config = make_config(hidden_dropout=0.1)
    model = ReformerLM(config).train()
    with pytest.raises(ValueError, match="dropout_seed"):
        model(torch.randint(0, 37, (1, 16)), rotations=portable_rotations(config, 0), dropout_seed=seed)
