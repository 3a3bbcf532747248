"""HME: the released network's size, the cross-sample retrieval, its losses and recipe, on synthetic
data (fidelity to the released module: docs/methods/hme.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import imsa
from imsa.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.hme import HMEConfig, HMENet, hme_loss, neighbour_means
from imsa.methods.spec import DataSpec
from imsa.testing import text_and_audio

TINY = {"dim": 8, "heads": 2, "encoder_layers": 1, "latent_layers": 1, "num_latents": 2, "hyper_depth": 1, "fusion_layers": 1, "fusion_ff_dim": 16}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # The released HME at MOSI's widths (768-d BERT states, 5-d audio, 20-d video) and the README's MOSI
    # command (d_l 192, 16 heads, 4 encoder layers, 4 latent layers, hyper depth 3), BERT excluded, has
    # 44,090,573 parameters; imsa's network has the same tensors (the fidelity check copies every one).
    spec = DataSpec(modalities=("l", "a", "v"), dims={"l": 768, "a": 5, "v": 20}, sequence=dict.fromkeys("lav", True), task="regression", output_dim=1)
    with torch.device("meta"):  # the count without the 44M-value initialisation
        net = HMENet(spec, HMEConfig())
    assert count(net) == 44_090_573
    assert count(net.encoders["l"]) == 4 * 444_864 + 384  # MulT's layers: packed attention, 4d feed-forward, two norms
    assert count(net.latents["l"]) == count(net.sample_latent) == 4 * 1_185_408 + 5 * 192 + 384  # 5 latents, a final norm
    assert count(net.pairs) == 6 * count(net.hyper["l"]) and count(net.hyper["l"]) == 3 * 592_896 + 384
    assert count(net.fusion) == 2 * 937_664  # PyTorch's layer: 16 heads, feed-forward 2048
    assert count(net.bottleneck["l"]) == 369_985 and count(net.gates["l"]) == 74_306 and count(net.hyper_fusion) == 111_363
    assert [net.head[0].in_features, net.head[3].in_features] == [768, 384]


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, aligned=True, num_videos=12)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config) -> HMENet:
    torch.manual_seed(0)
    return HMENet(DataSpec.of(data), HMEConfig(**{**TINY, **config})).eval()


def test_retrieval_is_the_mean_of_the_other_similar_rows_else_the_batch_mean():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.05], [0.0, 1.0], [0.0, 0.0]])
    enhanced = neighbour_means(x, 0.95)
    torch.testing.assert_close(enhanced[0], (x[1] + x[2]) / 2)  # neighbours, not itself
    torch.testing.assert_close(enhanced[1], (x[0] + x[2]) / 2)
    nonzero_mean = x[:4].mean(dim=0)  # the release's fallback: rows whose values do not sum to 0, the row itself included
    torch.testing.assert_close(enhanced[3], nonzero_mean)  # no neighbour
    torch.testing.assert_close(enhanced[4], nonzero_mean)  # sums to 0: read as missing
    # with the batch's presence: a missing row gets the mean of the present rows, which retrieve among themselves
    present = torch.tensor([True, False, True, True, True])
    enhanced = neighbour_means(x, 0.95, present)
    torch.testing.assert_close(enhanced[0], x[2])
    torch.testing.assert_close(enhanced[1], x[[0, 2, 3, 4]].mean(dim=0))
    torch.testing.assert_close(enhanced[4], x[[0, 2, 3, 4]].mean(dim=0))
    torch.testing.assert_close(neighbour_means(x[:1], 0.6), x[:1])  # one row: its own fallback


def test_a_prediction_depends_on_its_batch_and_a_batch_of_one_works(sequences):
    data, batch = sequences
    net = tiny(data, similarity_threshold=-1.0)  # every other row is a neighbour
    with torch.no_grad():
        for module in net.modules():  # BERT's N(0, 0.02) makes the path from the retrieval to the output very faint
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(std=0.3)
        whole = net(batch)
        half = net(batch.select(torch.arange(6)))
        alone = net(batch.select(torch.tensor([0]))).prediction
        again = net(batch)
    assert (whole.feature[:6] - half.feature).abs().max() > 1e-2  # the other utterances of the batch enter through the retrieval
    assert alone.shape == (1,) and torch.isfinite(alone).all()
    assert torch.equal(whole.prediction, again.prediction)  # evaluation is deterministic: the bottleneck's mean, no noise


def test_the_bottleneck_samples_in_training_only(sequences):
    data, batch = sequences
    net = tiny(data).train()
    for module in net.modules():  # only the bottleneck's noise is left
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    net.fusion.layers[0].dropout.p = net.fusion.layers[0].dropout1.p = net.fusion.layers[0].dropout2.p = 0.0
    with torch.no_grad():
        first, second = net(batch).prediction, net(batch).prediction
        assert not torch.allclose(first, second)
        net.eval()
        torch.testing.assert_close(net(batch).prediction, net(batch).prediction)


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:6, k] = False
        masked = batch.with_present(present)
        noise, zero = masked.inputs[missing].clone(), masked.inputs[missing].clone()
        noise[:6] = 1e3 * torch.randn(noise[:6].shape, generator=generator)
        zero[:6] = 0.0
        noisy, zeros = (dataclasses.replace(masked, inputs={**masked.inputs, missing: x}) for x in (noise, zero))
        with torch.no_grad():
            out, on_zeros, complete = net(noisy), net(zeros).prediction, net(batch).prediction
        torch.testing.assert_close(out.prediction, on_zeros)
        assert not torch.allclose(out.prediction[:6], complete[:6])


def test_padding_is_never_read(sequences):
    data, batch = sequences
    lengths = torch.tensor([6, 3, 2, 5, 4, 6, 1, 2, 3, 4, 5, 6])
    padding = {m: torch.arange(6)[None] < lengths[:, None] for m in data.modalities}
    short = dataclasses.replace(batch, padding=padding, inputs={m: x * padding[m][..., None] for m, x in batch.inputs.items()})
    garbage = dataclasses.replace(short, inputs={m: torch.where(padding[m][..., None], x, torch.full_like(x, 100.0)) for m, x in short.inputs.items()})
    net = tiny(data)
    with torch.no_grad():
        clean, noisy = net(short), net(garbage)
        torch.testing.assert_close(clean.prediction, noisy.prediction)
        torch.testing.assert_close(clean.feature, noisy.feature)
        released = tiny(data, padding_mask=False)  # as released: the padded steps enter the encoders and the max
        assert not torch.allclose(released(short).prediction, released(garbage).prediction)


def test_the_training_loss_is_l1_plus_the_weighted_unimodal_and_kl_terms(sequences):
    data, batch = sequences
    net = tiny(data)
    config = HMEConfig(**TINY, unimodal_weight=0.8, kl_weight=0.01)
    with torch.no_grad():
        out = net.run(batch)
        unimodal = sum(F.l1_loss(out["unimodal"][m], batch.labels) for m in "lav") / 3
        kl = sum(out["kl"].values()) / 3
        expected = F.l1_loss(out["prediction"], batch.labels) + 0.8 * unimodal + 0.01 * kl
        torch.testing.assert_close(hme_loss(net, batch, "regression", config), expected)
        bottleneck = net.bottleneck["l"]
        statistics = bottleneck.encode(torch.randn(4, 8))
        mu, std = statistics[:, :8], F.softplus(statistics[:, 8:] - 5)
        assert float(bottleneck(torch.randn(4, 8))["kl"]) > 0
        torch.testing.assert_close(0.5 * torch.mean(mu**2 + std**2 - 2 * std.log() - 1), 0.5 * (mu**2 + std**2 - 2 * std.log() - 1).mean())
    assert set(out["unimodal"]) == set(out["kl"]) == {"l", "a", "v"}


def test_a_training_batch_of_one_has_finite_gradients(sequences):
    data, batch = sequences
    net = tiny(data).train()
    loss = hme_loss(net, batch.select(torch.tensor([0])), "regression", HMEConfig(**TINY))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_the_recipe_is_adamw_value_clipping_and_early_stopping(monkeypatch, sequences):
    import imsa.methods.phase as phase

    seen = {}
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.update(kwargs, optimizer=optimizer)
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    split = sequences[0].split(0)
    method = create_method("hme", **TINY, epochs=1).fit(split["train"], split["valid"], seed=0)
    optimizer = seen["optimizer"]
    assert type(optimizer) is torch.optim.AdamW and optimizer.defaults["lr"] == 2e-5
    assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, 1e-4]  # no decay on biases and norms
    assert (seen["grad_clip"], seen["clip_mode"], seen["patience"]) == (0.8, "value", 10)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in method.model_.parameters()}
    defaults = HMEConfig()
    assert (defaults.batch_size, defaults.eval_batch_size, defaults.epochs) == (256, 128, 100)


def test_two_modalities_and_bad_configs(sequences):
    data = text_and_audio(sequences[0])
    net = HMENet(DataSpec.of(data), HMEConfig(**TINY)).eval()
    assert set(net.pairs) == {"l2a", "a2l"} and set(net.hyper) == {"l", "a"} and net.head[0].in_features == 3 * 8
    with torch.no_grad():
        assert net(tensor_cache(data).gather(np.arange(4))).prediction.shape == (4,)
    with pytest.raises(ConfigError, match="divisible"):
        HMEConfig(dim=10, heads=4)
    with pytest.raises(ConfigError, match="cosine"):
        HMEConfig(similarity_threshold=1.5)
    with pytest.raises(ConfigError, match="uncertainty_lb"):
        HMEConfig(uncertainty_lb=2.0, uncertainty_ub=1.0)


@pytest.mark.parametrize("protocol", ["mr", "noise"])
def test_two_epochs_under_the_protocol_write_a_model_that_predicts(tmp_path, protocol):
    data = {"sequence_length": 6, "aligned": True, "num_videos": 12}
    overrides = {**TINY, "epochs": 2, "batch_size": 16, **{f"data.{k}": v for k, v in data.items()}}
    summary = imsa.run("hme", "synthetic", protocol=protocol, rate=0.3, folds=[0], out=tmp_path / "run", overrides=overrides)
    assert any(key.startswith(protocol) for key in summary["test"])
    method = imsa.load_method(tmp_path / "run" / "models" / "seed1-fold0.json")
    dataset = imsa.load_dataset("synthetic", **data)
    batch = tensor_cache(dataset).gather(np.arange(5))
    with torch.no_grad():
        prediction = method.model_.eval()(batch).prediction
    assert prediction.shape == (5,) and torch.isfinite(prediction).all()
