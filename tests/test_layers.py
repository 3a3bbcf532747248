"""imsa.nn.layers.Dropout: the cheap CPU mask must behave as torch's inverted dropout."""

import pytest
import torch

from imsa.nn.layers import Dropout


@pytest.mark.parametrize("p, bits", [(0.5, 1), (0.25, 2), (0.125, 4), (0.1, 16), (0.3, 16), (0.75, 2)])
def test_dropout_drops_at_rate_p_and_keeps_the_mean(p, bits):
    torch.manual_seed(0)
    dropout = Dropout(p).train()
    assert dropout.bits == bits
    x = torch.ones(400, 1001)  # an odd size: the last draw is only partly used
    y = dropout(x)
    kept = y != 0
    n = x.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02
    # Neighbouring elements come from neighbouring bits of one draw: they must be independent.
    flat = kept.flatten().float()
    correlation = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]
    assert abs(correlation.item()) < 0.01


def test_dropout_is_seeded_fresh_per_call_identity_in_eval_and_differentiable():
    dropout = Dropout(0.5).train()
    x = torch.randn(3, 50, requires_grad=True)
    torch.manual_seed(1)
    first = dropout(x)
    second = dropout(x)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(first, second)
    first.sum().backward()
    assert torch.equal(x.grad, (first != 0).float() * 2.0)
    assert dropout.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert "scales" not in dropout.state_dict()  # a constant table, not model state
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_standardize_leaves_features_that_are_constant_up_to_rounding_alone():
    from imsa.nn.layers import Standardize

    generator = torch.Generator().manual_seed(0)
    real = 3.0 + 2.0 * torch.randn(200, 1, generator=generator)
    rounding = 5e-6 * torch.randn(200, 1, generator=generator)  # e.g. the time mean of a per-utterance z-scored sequence
    norm = Standardize(2).fit(torch.cat([real, rounding], dim=1))
    out = norm(torch.cat([real, rounding], dim=1))
    assert abs(out[:, 0].std().item() - 1) < 1e-2 and abs(out[:, 0].mean().item()) < 1e-5
    assert norm.std[1] == 1.0  # not divided by the rounding noise: a later change of 0.1 stays 0.1, not 2e4
    assert torch.allclose(norm(torch.tensor([[3.0, 0.1]]))[0, 1], torch.tensor(0.1), atol=1e-4)
