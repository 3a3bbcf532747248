"""ALMT: the released network's size and initial state, missing modalities and padding, the
recipe, and runs end to end on synthetic sequences (fidelity to the authors' module:
docs/methods/almt.md)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import imsa
from imsa.batch import tensor_cache
from imsa.cli import main
from imsa.config import packaged_config
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.almt import ALMT
from imsa.methods.spec import DataSpec
from imsa.testing import text_and_audio
from imsa.training import lr_factor

TINY = ALMT.tiny_config


def spec(dims, steps):
    return DataSpec(("l", "a", "v"), dict(zip("lav", dims)), {m: True for m in "lav"}, "regression", 1, steps=dict(zip("lav", steps)))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "dims, steps, config, expected",
    [
        ((768, 5, 20), (50, 375, 500), "mosi", 2_603_649),
        ((768, 74, 35), (50, 500, 500), "mosei", 3_223_041),
        ((768, 33, 709), (39, 400, 55), "sims", 3_232_897),
    ],
)
def test_parameter_counts_are_the_released_modules_without_bert(dims, steps, config, expected):
    # The authors' module at each dataset's released settings, BERT (109,482,240 for bert-base) left out,
    # counted on the released code: the same numbers, parameter for parameter (docs/methods/almt.md).
    net = ALMT(**packaged_config("almt", name=config).values).build(spec(dims, steps))
    assert count(net) == expected


def test_the_mosi_network_block_by_block_and_its_initial_state():
    net = ALMT().build(spec((768, 5, 20), (50, 375, 500)))
    assert count(net.embed) == 769 * 128 + 6 * 128 + 21 * 128
    assert net.encoders["a"].position.shape == (1, 375 + 8, 128) and len(net.encoders["a"].layers) == 1
    assert len(net.language.layers) == 2 and len(net.hyper) == 3 and len(net.fusion.layers) == 2
    assert count(net.hyper) == 3 * 99_456 and count(net.head) == 129
    assert not net.encoders["l"].prefix.any() and not net.fusion.token.any() and (net.hyper_tokens == 1).all()
    assert abs(net.encoders["v"].position.std().item() - 1) < 0.02


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", num_videos=12, sequence_length=8, aligned=True, seed=0)
    return data, tensor_cache(data).gather(np.arange(10))


def tiny(data, **config):
    torch.manual_seed(0)
    return ALMT(**{**TINY, **config}).build(DataSpec.of(data)).eval()


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    for k, m in enumerate(data.modalities):
        present = batch.present.clone()
        present[:4, k] = False
        missing = batch.with_present(present)
        noise = {n: torch.where(present[:, k].reshape(-1, 1, 1), x, torch.randn_like(x) * 100) if n == m else x for n, x in missing.inputs.items()}
        zeros = {n: x * present[:, k].reshape(-1, 1, 1) if n == m else x for n, x in missing.inputs.items()}
        with torch.no_grad():
            out = net(dataclasses.replace(missing, inputs=noise)).prediction
            torch.testing.assert_close(out, net(dataclasses.replace(missing, inputs=zeros)).prediction)
            assert not torch.allclose(out[:4], net(batch).prediction[:4])  # the modality counts where present


def test_padding_is_never_read_and_a_prediction_does_not_depend_on_its_batch(sequences):
    data, batch = sequences
    net = tiny(data)
    assert not batch.padding["a"].all(), "the test needs padded steps"
    noisy = {m: torch.where(batch.padding[m][..., None], x, torch.randn_like(x) * 100) for m, x in batch.inputs.items()}
    with torch.no_grad():
        before = net(batch).prediction
        torch.testing.assert_close(net(dataclasses.replace(batch, inputs=noisy)).prediction, before)
        alone = torch.cat([net(batch.select(torch.tensor([i]))).prediction for i in range(len(batch))])
        torch.testing.assert_close(alone, before, atol=1e-5, rtol=1e-5)
        released = tiny(data, padding_mask=False)  # as released: padded steps are attended
        released.load_state_dict(net.state_dict())
        assert not torch.allclose(released(dataclasses.replace(batch, inputs=noisy)).prediction, before)
        full = batch.select(torch.nonzero(batch.padding["a"].all(1) & batch.padding["l"].all(1))[:, 0])
        assert len(full), "the test needs unpadded rows"
        torch.testing.assert_close(released(full).prediction, net(full).prediction, atol=1e-5, rtol=1e-5)  # no padding: the same model


def test_the_fused_feature_is_the_cross_transformers_token(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        tokens = net.modality_tokens(batch)
        states = net.language(tokens["l"], hidden=True)
        hyper = net.hyper_tokens.expand(len(batch), -1, -1)
        for layer, state in zip(net.hyper, states):
            hyper = layer(state, [tokens["a"], tokens["v"]], hyper)
        token = net.fusion(hyper, states[-1])[:, 0]
        out = net(batch)
    torch.testing.assert_close(out.feature, token)
    torch.testing.assert_close(out.prediction, net.head(token).squeeze(-1))


def test_the_recipe_is_the_releases(monkeypatch, sequences):
    import imsa.methods.phase as phase

    c = ALMT().config
    assert (c.lr, c.weight_decay, c.batch_size, c.epochs, c.patience, c.grad_clip, c.lr_schedule) == (1e-4, 1e-4, 64, 200, None, None, "warmup_cosine:20")
    assert [packaged_config("almt", name=n).values["fusion_depth"] for n in ("mosi", "mosei", "sims")] == [2, 4, 4]
    factor = lr_factor(c.lr_schedule, c.epochs)  # the released GradualWarmupScheduler + CosineAnnealingLR, epoch by epoch
    np.testing.assert_allclose([1e-4 * factor(e - 1) for e in (1, 2, 21, 22, 100, 200)], [0, 5e-6, 1e-4, 1e-4, 6.04e-5, 3.05e-8], rtol=2e-3, atol=1e-12)
    seen = {}
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.update(kwargs, optimizer=optimizer)
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    split = sequences[0].split(0)
    method = ALMT(**TINY, epochs=1).fit(split["train"], split["valid"], seed=0)
    assert type(seen["optimizer"]) is torch.optim.AdamW and seen["patience"] is None and seen["grad_clip"] is None
    trained = {id(p) for g in seen["optimizer"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in method.model_.parameters()}
    batch = tensor_cache(split["train"].dataset).gather(split["train"].indices[:6])
    torch.testing.assert_close(seen["loss"](batch, 0), torch.nn.functional.mse_loss(method.model_(batch).prediction, batch.labels))  # MSE alone


def test_a_training_batch_of_one_and_two_modalities(sequences):
    data, batch = sequences
    net = tiny(data).train()
    out = net(batch.select(torch.tensor([0])))
    torch.nn.functional.mse_loss(out.prediction, batch.labels[:1]).backward()
    assert out.prediction.shape == (1,) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    two = text_and_audio(data)
    small = tiny(two)
    assert len(small.hyper[0].to_k) == 1  # the language queries the audio alone
    with torch.no_grad():
        assert small(tensor_cache(two).gather(np.arange(5))).prediction.shape == (5,)
    only_audio = dataclasses.replace(two, modalities=("a",), features={"a": two.features["a"]}, lengths={"a": two.lengths["a"]})
    with pytest.raises(ConfigError, match="dominant"):
        create_method("almt").data_spec(only_audio)
    classes = imsa.load_dataset("synthetic", num_videos=6, sequence_length=4, aligned=True, num_classes=3)
    with torch.no_grad():
        assert tiny(classes)(tensor_cache(classes).gather(np.arange(4))).prediction.shape == (4, 3)


@pytest.mark.parametrize("protocol", ["fixed", "frames"])
def test_two_epochs_end_to_end_then_predict(tmp_path, protocol):
    out = tmp_path / "run"
    data = ["--dataset", "synthetic", "--set", "data.sequence_length=6", "--set", "data.aligned=true", "--set", "data.num_videos=16"]
    rates = ["--rates", "0.0", "0.5"] if protocol == "frames" else []
    settings = [f"--set={k}={v}" for k, v in {**TINY, "epochs": 2}.items()]
    assert main(["run", "--method", "almt", *data, "--protocol", protocol, *rates, *settings, "--out", str(out), "--quiet"]) == 0
    if protocol == "frames":  # no frame noise of its own: one model per rate, trained under that rate's masks
        assert sorted(p.name for p in out.iterdir()) == ["frames=0", "frames=0.5"]
        out = out / "frames=0.5"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"]["method"] == "almt" and summary["test"]
    assert (out / "models" / "seed1-fold0.safetensors").is_file()
    assert main(["predict", str(out), "--out", str(tmp_path / "predictions.csv")]) == 0
    assert (tmp_path / "predictions.csv").read_text().count("\n") > 1
