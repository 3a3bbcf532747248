"""IMDer: parameter counts, SDE constants, the sampler's steps, the score-matching scale,
U-Net shapes, reproducible and batch-independent sampling, freezing and gradient routing
(docs/imder.md section 9)."""

from __future__ import annotations

import pytest
import torch

from imsa.batch import Batch
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError
from imsa.methods.registry import method_class
from imsa.methods.spec import DataSpec
from imsa.nn.diffusion import VESDE, ScoreUNet, euler_maruyama, sampler_noise_shape, score_matching_loss
from imsa.protocols import Protocol

IMDer = method_class("imder")
TINY = dict(
    dim=8,
    heads=2,
    depth=1,
    conv_kernel=3,
    sampling_steps=3,
    unet_channels=(8, 8, 8, 8),
    unet_embed_dim=8,
    unet_layers=1,
    unet_groups=(2, 2),
    rec_blocks=1,
    rec_reduction=4,
)


def spec(dims):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task="regression", output_dim=1)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("dims, layers, total", [({"l": 768, "a": 5, "v": 20}, 4, 13_001_425), ({"l": 768, "a": 74, "v": 35}, 6, 13_461_841)])
def test_parameter_counts_are_the_released_models(dims, layers, total):
    net = IMDer(depth=layers).build(spec(dims))
    assert count(net) == total
    assert count(net.scores["a"]) == 3_457_536 and net.scores["a"].time[0].W.numel() == 128  # fixed Fourier weights: a buffer
    assert count(net.refiners["l"]) == 522_224 and count(net.conditions) == 3 * 2_080


def test_sde_constants_and_the_samplers_steps():
    sde = VESDE(25.0)
    torch.testing.assert_close(sde.std(torch.tensor([1.0, 1e-3])), torch.tensor([9.8452, 0.031674]), atol=1e-4, rtol=0)
    calls = []

    def score(x, t, c):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    noise = torch.randn(2, sampler_noise_shape(100), 4, 8)
    out = euler_maruyama(score, torch.zeros(2, 4, 8), sde, noise)
    assert len(calls) == 100 and calls[0] == 1.0 and abs(calls[-1] - 1e-3) < 1e-7
    assert abs((calls[0] - calls[1]) - 0.010091) < 1e-6
    # zero score: the last mean is the start plus every step's noise but the last
    dt = torch.tensor(0.999 / 99)
    times = torch.linspace(1.0, 1e-3, 100)
    expected = noise[:, 0] * sde.std(torch.ones(2))[:, None, None] + sum(torch.sqrt(dt) * sde.g(times[k]) * noise[:, 2 + 2 * k] for k in range(99))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_score_matching_loss_is_channels_times_steps_for_a_zero_network():
    torch.manual_seed(0)
    values = score_matching_loss(lambda x, t, c: torch.zeros_like(x), torch.randn(4000, 4, 12), torch.randn(4000, 4, 12), VESDE())
    assert abs(values.mean().item() - 48) < 1.0


def test_unet_levels_and_output_shape():
    net = ScoreUNet(32, VESDE())
    x = torch.randn(2, 32, 48)
    shapes = []
    for norm in net.norm:
        norm.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape[1:])))
    out = net(x, torch.rand(2) + 0.01, torch.randn(2, 32, 48))
    assert shapes == [(32, 48), (64, 24), (128, 12), (256, 6)] and out.shape == x.shape


def batch_of(n=4, width=6, dims=None, seed=0):
    dims = dims or {"l": 6, "a": 3, "v": 4}
    generator = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, width, d, generator=generator) for m, d in dims.items()}
    full = torch.ones(n, width, dtype=torch.bool)
    return Batch(
        inputs=inputs,
        padding={m: full for m in dims},
        present=torch.ones(n, len(dims), dtype=torch.bool),
        labels=torch.zeros(n),
        index=torch.arange(10, 10 + n),
        modalities=tuple(dims),
    )


def test_sampling_is_reproducible_batch_independent_and_seeded_per_utterance():
    dims = {"l": 6, "a": 3, "v": 4}
    torch.manual_seed(0)
    net = IMDer(**TINY).build(spec(dims)).eval()
    batch = batch_of()
    present = torch.tensor([[True, False, False], [False, True, True], [True, True, True], [True, False, True]])
    masked = batch.with_present(present)
    with torch.no_grad():
        first, again = net(masked).prediction, net(masked).prediction
        alone = net(masked.select(torch.tensor([1]))).prediction
        net.sample_seed = 1
        other = net(masked).prediction
    assert torch.equal(first, again)
    torch.testing.assert_close(alone, first[1:2], atol=1e-5, rtol=0)
    changed = ~torch.isclose(other, first)
    assert changed.tolist() == [True, True, False, True]  # only rows with a missing modality depend on the sample seed


def test_phase_1_keeps_the_projections_and_rate_0_skips_it():
    data = load_dataset("synthetic", num_videos=16, sequence_length=6, aligned=True, seed=0)
    split = data.split(0)
    options = dict(TINY, pretrain_epochs=2, epochs=2)
    method = IMDer(**options).fit(split["train"], split["valid"], seed=0)
    skipped = IMDer(**options).fit(split["train"], split["valid"], seed=0, protocol=Protocol("random", rate=0.0))
    assert len(skipped.phases_) == 1 and len(method.phases_) == 2
    for k, v in skipped.model_.backbone.projections.state_dict().items():
        assert torch.equal(method.model_.backbone.projections.state_dict()[k], v)
    frozen = IMDer(**options, freeze_backbone=True).fit(split["train"], split["valid"], seed=0)
    for k, v in skipped.model_.backbone.state_dict().items():
        assert torch.equal(frozen.model_.backbone.state_dict()[k], v)
    assert not torch.equal(method.model_.backbone.mult.out.weight, skipped.model_.backbone.mult.out.weight)


def test_imder_refuses_unaligned_sequences():
    data = load_dataset("synthetic", num_videos=10, sequence_length=6)
    split = data.split(0)
    with pytest.raises(ConfigError, match="same steps"):
        IMDer(**TINY).fit(split["train"], split["valid"])


def test_the_sampler_draws_the_data_distribution_given_its_exact_score():
    """Gaussian data N(2, 0.5^2): the perturbed score is -(x - 2) / (0.25 + std(t)^2); with it,
    100 Euler-Maruyama steps from std(1) = 9.85 land on the data's mean and variance."""
    from imsa.nn.diffusion import VESDE, euler_maruyama, sampler_noise_shape

    sde = VESDE(25.0)
    noise = torch.randn(500, sampler_noise_shape(100), 4, 8, generator=torch.Generator().manual_seed(0))
    out = euler_maruyama(lambda x, t, c: -(x - 2.0) / (0.25 + sde.std(t)[:, None, None] ** 2), torch.zeros(500, 4, 8), sde, noise, steps=100)
    assert abs(out.mean().item() - 2.0) < 0.03 and abs(out.var().item() - 0.25) < 0.03


def alone(batch, i, length):
    """Utterance ``i`` of ``batch`` as a batch of its own, cut to its own length."""
    return Batch(
        inputs={m: v[i : i + 1, :length] for m, v in batch.inputs.items()},
        padding={m: v[i : i + 1, :length] for m, v in batch.padding.items()},
        present=batch.present[i : i + 1],
        labels=batch.labels[i : i + 1],
        index=batch.index[i : i + 1],
        modalities=batch.modalities,
    )


def test_with_padding_mask_an_utterance_does_not_depend_on_its_batchs_padding(padded_sequences):
    dims = {"l": 6, "a": 3, "v": 4}
    lengths = [11, 7, 4]
    batch = padded_sequences(lengths, dims)
    present = torch.tensor([[True, False, False], [False, True, True], [False, True, False]])
    for padding_mask in (True, False):
        torch.manual_seed(0)
        net = IMDer(**TINY, padding_mask=padding_mask).build(spec(dims)).eval()
        with torch.no_grad():
            masked = batch.with_present(present)
            together = net(masked).prediction
            one_by_one = torch.cat([net(alone(masked, i, n)).prediction for i, n in enumerate(lengths)])
        if padding_mask:
            torch.testing.assert_close(one_by_one, together, atol=1e-5, rtol=1e-5)
        else:  # as released, the short utterances read their batch's padding
            assert torch.isclose(one_by_one[0], together[0], atol=1e-5) and not torch.isclose(one_by_one[1:], together[1:], atol=1e-4).any()


def test_masked_blocks_score_real_steps_as_the_unpadded_sequence():
    from imsa.nn.rcan import Refiner

    torch.manual_seed(0)
    real = torch.arange(24)[None] < torch.tensor([24, 9])[:, None]
    x = torch.randn(2, 8, 24) * real[:, None]
    condition = torch.randn(2, 8, 24)  # noise at padded steps too: it must not leak in
    refiner = Refiner(8, blocks=2, reduction=4)
    torch.testing.assert_close(refiner(x, real)[1:, :, :9], refiner(x[1:, :, :9]), atol=1e-5, rtol=1e-5)
    unet = ScoreUNet(8, VESDE(), (8, 8, 8, 8), 8, 2, 1, (2, 2))
    t = torch.tensor([0.3, 0.3])
    out = unet(x, t, condition, real)
    pad = torch.nn.functional.pad
    alone = unet(pad(x[1:, :, :9], (0, 7)), t[1:], pad(condition[1:, :, :9], (0, 7)), real[1:, :16])  # its own length, rounded up to 8
    torch.testing.assert_close(out[1:, :, :16], alone, atol=1e-5, rtol=1e-5)
    assert out[1:, :, 9:].abs().max() == 0
    # the loss of a zero network: channels times real steps per sample
    values = score_matching_loss(
        lambda x, t, c, mask: torch.zeros_like(x),
        torch.randn(4000, 4, 16),
        torch.randn(4000, 4, 16),
        VESDE(),
        mask=(torch.arange(16)[None] < 5).expand(4000, 16),
    )
    assert abs(values.mean().item() - 20) < 0.5


def test_a_model_trained_with_padding_mask_predicts_the_same_in_any_batch(check_batch_independence):
    check_batch_independence(IMDer(**TINY, pretrain_epochs=1, epochs=1, padding_mask=True))
