"""P-RMF: the released network's size, the uncertainty weighting, the losses and recipe, missing
modalities and padding, on synthetic data (fidelity to the released module: docs/methods/prmf.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

import imsa
from imsa.batch import iterate_batches, tensor_cache
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.prmf import PRMF, PRMFConfig, gaussian_kl
from imsa.methods.spec import DataSpec
from imsa.testing import text_and_audio
from imsa.training import RunContext

TINY = PRMF.tiny_config


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # The released P-RMF at MOSI's widths (768-d BERT states, 5-d audio, 20-d video; tables of
    # 50, 375 and 500 steps) and configs/train_mosi.yaml, BERT excluded, has 7,828,097
    # parameters (its four injection layers are one module, counted once); imsa's network has
    # the same tensors (the fidelity check copies every one).
    spec = DataSpec(("l", "a", "v"), {"l": 768, "a": 5, "v": 20}, dict.fromkeys("lav", True), "regression", 1, steps={"l": 50, "a": 375, "v": 500})
    with torch.device("meta"):
        net = PRMF().build(spec)
        distinct = PRMF(share_fusion_layers=False).build(spec)
    assert count(net) == 7_828_097
    layer = 296_320  # an ALMT encoder layer at width 128, 8 heads of 64, feed-forward 128
    assert count(net.encoders["a"]) == 2 * layer + 128 * (375 + 8 + 8)  # positional table and prefix tokens
    assert count(net.vaes["l"]) == 5 * 128 * 129 + 2 * (2 * layer + 8 * 128)  # 5 Linear, two transformers over the 8 tokens
    assert count(net.reconstructors["v"]) == 2 * layer + 8 * 128
    assert count(net.injection) == 3 * (4 * 128 * 129 + 2 * 256) + 256 + 128 * 129
    assert count(distinct) - count(net) == 3 * count(net.injection)
    assert count(net.head) == 128 * 129 + 129


def sequences(**options):
    return load_dataset("synthetic", num_videos=10, min_utterances=3, max_utterances=6, sequence_length=6, seed=0, **options)


@pytest.fixture(scope="module")
def data():
    return sequences()


def batch_of(data, size=8):
    return next(iterate_batches(data.split(0)["train"], size))


def tiny(data, **config):
    torch.manual_seed(0)
    return PRMF(**{**TINY, **config}).build(DataSpec.of(data)).eval()


def test_a_missing_modality_enters_as_zeros_whatever_its_values(data):
    net, batch = tiny(data), batch_of(data)
    with torch.no_grad():
        complete = net(batch).prediction
        for k, m in enumerate(batch.modalities):
            present = torch.ones_like(batch.present)
            present[:, k] = False
            garbage = {**batch.inputs, m: 1e4 * torch.randn_like(batch.inputs[m]) + 1e3}
            missing = net(dataclasses.replace(batch, inputs=garbage).with_present(present)).prediction
            zeros = net(dataclasses.replace(batch, inputs={**batch.inputs, m: torch.zeros_like(batch.inputs[m])})).prediction
            torch.testing.assert_close(missing, zeros)
            assert not torch.allclose(missing, complete)


def test_padding_is_never_read_and_a_batch_of_one_works(data):
    net, batch = tiny(data), batch_of(data)
    assert not batch.padding["a"].all(), "the test needs padded steps"
    noisy = {m: torch.where(batch.padding[m][..., None], x, 100 * torch.randn_like(x)) for m, x in batch.inputs.items()}
    with torch.no_grad():
        before = net(batch).prediction
        torch.testing.assert_close(net(dataclasses.replace(batch, inputs=noisy)).prediction, before)
        alone = torch.cat([net(batch.select(torch.tensor([i]))).prediction for i in range(len(batch))])
        torch.testing.assert_close(alone, before, atol=1e-5, rtol=1e-5)
        released = tiny(data, padding_mask=False)  # as released: padded frames are attended
        assert not torch.allclose(released(dataclasses.replace(batch, inputs=noisy)).prediction, before)
    one = batch.select(torch.tensor([0]))
    trained = tiny(data).train()
    losses = trained.losses(one, one)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(torch.isfinite(p.grad).all() for p in trained.parameters() if p.grad is not None)


def test_the_proxy_is_the_uncertainty_weighted_mean(data):
    net, batch = tiny(data), batch_of(data)
    with torch.no_grad():
        out = net.run(batch)
        sigma = {m: torch.exp(0.5 * out["posteriors"][m][1]) for m in net.modalities}
        released = {m: torch.exp(1 / sigma[m]) / sum(torch.exp(1 / s) for s in sigma.values()) for m in net.modalities}
        for m in net.modalities:
            torch.testing.assert_close(out["weights"][m], released[m])
        torch.testing.assert_close(out["proxy"], sum(out["weights"][m] * out["posteriors"][m][0] for m in net.modalities))
        # the most certain modality takes (nearly) all the weight; finite where exp(1/sigma) overflows
        net.vaes["a"].to_log_var.weight.zero_()
        net.vaes["a"].to_log_var.bias.fill_(-10.0)  # sigma = exp(-5): exp(1/sigma) = exp(148) is inf in float32
        out = net.run(batch)
        assert torch.isfinite(out["prediction"]).all()
        torch.testing.assert_close(out["weights"]["a"], torch.ones_like(out["weights"]["a"]))
        torch.testing.assert_close(out["proxy"], out["posteriors"]["a"][0])


def test_the_loss_terms_and_their_weights(data, monkeypatch):
    net, batch = tiny(data), batch_of(data)
    noisy = dataclasses.replace(batch, inputs={**batch.inputs, "v": batch.inputs["v"] * (torch.rand(batch.inputs["v"].shape[:2]) > 0.5)[..., None]})
    noise = {m: torch.randn(8, TINY["tokens"], TINY["dim"]) for m in net.modalities}
    with torch.no_grad():
        losses = net.losses(noisy, batch, noise=noise)
        out, clean = net.run(noisy), net.modality_tokens(batch)
    post = out["posteriors"]
    normal = lambda m: Normal(post[m][0], torch.exp(0.5 * post[m][1]))  # noqa: E731
    vae = sum(
        F.mse_loss(net.vaes[m].decoder(post[m][0] + torch.exp(0.5 * post[m][1]) * noise[m]), clean[m])
        + kl_divergence(normal(m), Normal(torch.zeros_like(post[m][0]), 1.0)).mean()
        for m in "lav"
    )
    agreement = sum(kl_divergence(normal(p), normal(q)).mean() for p, q in (("v", "l"), ("a", "l"), ("a", "v")))  # the release's pairs
    torch.testing.assert_close(losses["variational"], (vae + agreement) / 3)
    rec = F.mse_loss(torch.cat([net.reconstructors[m](out["tokens"][m]) for m in "avl"], 1), torch.cat([clean[m] for m in "avl"], 1))
    torch.testing.assert_close(losses["reconstruction"], rec)
    torch.testing.assert_close(losses["task"], F.mse_loss(out["prediction"], batch.labels))
    p, q = (torch.randn(3, 5), torch.randn(3, 5)), (torch.randn(3, 5), torch.randn(3, 5))
    torch.testing.assert_close(gaussian_kl(*p, *q), kl_divergence(Normal(p[0], torch.exp(0.5 * p[1])), Normal(q[0], torch.exp(0.5 * q[1]))))
    # fit's loss: 0.1 reconstruction + 1 sentiment + 0.5 variational (configs/train_mosi.yaml)
    phases = []
    monkeypatch.setattr(PRMF, "train_phase", lambda self, model, train, valid, phase, **kw: phases.append(phase))
    split = data.split(0)
    method = create_method("prmf", **TINY, epochs=1).fit(split["train"], split["valid"])
    parts = {"reconstruction": torch.tensor(2.0), "task": torch.tensor(3.0), "variational": torch.tensor(5.0)}
    monkeypatch.setattr(type(net), "losses", lambda self, noisy, clean, noise=None: parts)
    assert torch.isclose(phases[0].loss(method.model_, batch, 0), torch.tensor(0.1 * 2 + 3 + 0.5 * 5))


def test_the_proxy_gradient_is_reversed_as_released(data):
    batch = batch_of(data)

    def mean_gradient(**config):
        net = tiny(data, **config)
        net.losses(batch, batch)["task"].backward()
        return net.vaes["v"].to_mean.weight.grad

    released = mean_gradient()
    assert released.abs().sum() > 0
    torch.testing.assert_close(mean_gradient(reverse_proxy_gradient=False), -released)


def test_the_recipe_trains_the_release_groups(monkeypatch, data):
    import imsa.methods.phase as phase

    seen = {}
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.update(kwargs, optimizer=optimizer)
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    split = data.split(0)
    torch.manual_seed(0)
    method = create_method("prmf", **TINY, epochs=1)
    method.fit(split["train"], split["valid"], seed=0)
    net, optimizer = method.model_, seen["optimizer"]
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert all(rates[id(p)] == 5e-6 for p in net.injection.parameters())
    assert all(rates[id(p)] == method.config.lr for p in [*net.encoders.parameters(), *net.vaes.parameters(), *net.head.parameters()])
    assert not any(id(p) in rates for p in net.reconstructors.parameters())  # not in the released optimiser
    torch.manual_seed(0)
    fresh = PRMF(**TINY).build(method.spec_)
    for name, p in net.reconstructors.named_parameters():
        torch.testing.assert_close(p, dict(fresh.reconstructors.named_parameters())[name])  # still at their initialisation
    assert seen["grad_clip"] == 1.0 and seen["patience"] is None
    defaults = PRMFConfig()
    assert (defaults.batch_size, defaults.epochs, defaults.lr, defaults.lr_schedule, defaults.train_noise) == (32, 100, 1e-4, "warmup_cosine:10", "lnln")
    with torch.no_grad():
        net.eval()
        batch = batch_of(data)
        torch.manual_seed(1)
        first = net(batch).prediction
        torch.manual_seed(2)
        assert torch.equal(first, net(batch).prediction)  # evaluation is deterministic: the means, no sampling, no dropout
    groups = create_method("prmf", **TINY, train_reconstructors=True).param_groups(net)
    assert {id(p) for p in net.reconstructors.parameters()} <= {id(p) for g in groups for p in g["params"]}


def test_two_modalities_and_bad_configs(data):
    two = text_and_audio(data)
    net = PRMF(**TINY).build(DataSpec.of(two)).eval()
    with torch.no_grad():
        assert net(tensor_cache(two).gather(np.arange(4))).prediction.shape == (4,)
    batch = next(iterate_batches(two.split(0)["train"], 4))
    assert torch.isfinite(net.losses(batch, batch)["variational"])
    with pytest.raises(ConfigError, match="prefix"):
        PRMFConfig(tokens=8, prefix=4)
    with pytest.raises(ConfigError, match="dropout"):
        PRMFConfig(head_dropout=1.0)


@pytest.mark.parametrize("protocol", ["mr", "noise"])
def test_two_epochs_under_the_protocol_write_a_model_that_predicts(tmp_path, protocol):
    data = {"sequence_length": 4, "num_videos": 8}
    overrides = {**TINY, "epochs": 2, "batch_size": 16, **{f"data.{k}": v for k, v in data.items()}}
    one_thread = RunContext(threads=1)  # the method's default is two
    summary = imsa.run("prmf", "synthetic", protocol=protocol, rate=0.3, folds=[0], out=tmp_path / "run", overrides=overrides, context=one_thread)
    assert any(key.startswith(protocol) for key in summary["test"])
    method = imsa.load_method(tmp_path / "run" / "models" / "seed1-fold0.json")
    batch = tensor_cache(imsa.load_dataset("synthetic", **data)).gather(np.arange(5))
    with torch.no_grad():
        prediction = method.model_.eval()(batch).prediction
    assert prediction.shape == (5,) and torch.isfinite(prediction).all()
