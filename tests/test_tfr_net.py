"""TFR-Net: the released network's size, the reconstruction loss over lost frames only, what
the prediction reads, the training masks under each protocol, the recipe, and short fits
that save and predict (fidelity to MMSA's module: docs/methods/tfr_net.md)."""

from __future__ import annotations

import dataclasses
from importlib import resources

import numpy as np
import pytest
import torch
import yaml

import imsa
from imsa.batch import tensor_cache
from imsa.config import build_config, packaged_config
from imsa.errors import ConfigError
from imsa.frames import FrameDrop, FramesInside
from imsa.methods import create_method
from imsa.methods.spec import DataSpec
from imsa.methods.tfr_net import TFRNet, TFRNetConfig, TFRNetNet, central_moment_discrepancy, reconstruction_loss, temporal_head_count
from imsa.missing import Complete
from imsa.protocols import Protocol

TINY = {"text_encoder": "", "dim": 4, "heads": 2, "layers": 1, "temporal_heads": 2, "fusion_text_hidden": 3, "fusion_audio_hidden": 4}
TINY.update(fusion_video_hidden=5, fusion_layers=1, cls_hidden=8)


def spec_of(dims, steps, task="regression", output_dim=1):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task=task, output_dim=output_dim, steps=steps)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's TFR_NET at MOSI's widths (768-d BERT states, 5-d audio, 20-d video; unaligned 50, 500, 375 steps) and its
    # MOSI config has 14,850,620 parameters besides BERT, as here (measured on the released module: docs/methods/tfr_net.md).
    net = TFRNetNet(spec_of({"l": 768, "a": 5, "v": 20}, {"l": 50, "a": 500, "v": 375}), TFRNetConfig(text_encoder=""))
    assert count(net) == 14_850_620
    parts = {name: count(module) for name, module in net.named_children()}
    assert parts == {
        "proj": 25_590,
        "crossmodal": 201_780,
        "memory": 100_890,
        "final": 14_190_425,
        "generator": 72_163,
        "fusion": 245_995,
        "classifier": 13_777,
    }
    assert [net.proj[m].kernel_size for m in "lav"] == [(1,), (5,), (3,)] and net.proj["a"].padding == (2,)
    assert [len(net.crossmodal["l_with_a"].layers), len(net.memory["l"].layers), len(net.final["a"].layers)] == [3, 3, 3]
    assert [net.final[m].dim for m in "lav"] == [50, 500, 375] and net.final["l"].heads == 25
    assert net.generator["l"].in_features == 90 and net.fusion["v"].gru.hidden_size == 48


def test_temporal_heads_divide_the_length():
    assert [temporal_head_count(t, 25) for t in (50, 500, 375, 39, 55, 4, 7)] == [25, 25, 25, 13, 11, 4, 7]
    with pytest.raises(ConfigError, match="must be odd"):
        TFRNetConfig(audio_kernel=4)


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, num_videos=10, seed=0)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    torch.manual_seed(0)
    return TFRNetNet(DataSpec.of(data), TFRNetConfig(**{**TINY, **config})).eval()


def test_the_reconstruction_loss_counts_the_lost_frames_only():
    torch.manual_seed(0)
    generated, target = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    lost = torch.rand(3, 5) < 0.4
    loss = reconstruction_loss(generated, target, lost, 5.0)
    m = lost.unsqueeze(-1).float()
    count = m.expand_as(generated).sum() + 1e-4
    expected = torch.nn.functional.smooth_l1_loss(generated * m, target * m, reduction="sum") / count
    expected = expected + 5.0 * central_moment_discrepancy(generated * m, target * m) / count
    torch.testing.assert_close(loss, expected)
    # whatever is generated or targeted at a kept frame does not count
    noise = 100 * torch.randn(3, 5, 4) * (~lost).unsqueeze(-1)
    torch.testing.assert_close(reconstruction_loss(generated + noise, target - noise, lost, 5.0), loss)
    # no lost frame: SmoothL1 0; the released CMD of two zero tensors is 3 * sqrt(1e-12), divided by 1e-4
    none = torch.zeros(3, 5, dtype=torch.bool)
    torch.testing.assert_close(reconstruction_loss(generated, target, none, 0.0), torch.tensor(0.0))
    torch.testing.assert_close(reconstruction_loss(generated, target, none, 1.0), torch.tensor(3e-6 / 1e-4))


def test_the_generation_loss_targets_the_complete_data_at_lost_frames(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    frames = {m: (torch.rand(p.shape, generator=generator) > 0.5) | ~p for m, p in batch.padding.items()}
    dropped = batch.with_frames(frames)
    with torch.no_grad():
        h = net.align(net.sequences(dropped))
        expected = sum(
            w * reconstruction_loss(net.reconstruct(m, h[m]), batch.inputs[m], batch.padding[m] & ~frames[m], net.sim_weight)
            for m, w in net.gen_weights.items()
        )
        out = net.losses(dropped, batch)
        torch.testing.assert_close(out["generation"], expected)
        torch.testing.assert_close(out["prediction"], net(dropped).prediction)
        # the complete data's values at kept frames are no target
        changed = dataclasses.replace(batch, inputs={m: x + 50 * frames[m].unsqueeze(-1) for m, x in batch.inputs.items()})
        torch.testing.assert_close(net.losses(dropped, changed)["generation"], out["generation"])
        # a modality missing from an utterance: all its real frames are lost
        absent = dropped.with_present(torch.tensor([[True, False, True]] * len(batch)))
        h = net.align(net.sequences(absent))
        audio = reconstruction_loss(net.reconstruct("a", h["a"]), batch.inputs["a"], batch.padding["a"], net.sim_weight)
        parts = {m: reconstruction_loss(net.reconstruct(m, h[m]), batch.inputs[m], batch.padding[m] & ~frames[m], net.sim_weight) for m in "lv"}
        expected = net.gen_weights["a"] * audio + sum(net.gen_weights[m] * parts[m] for m in "lv")
        torch.testing.assert_close(net.losses(absent, batch)["generation"], expected)


def test_the_prediction_reads_neither_other_utterances_nor_the_reconstruction(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        whole = net(batch).prediction
        torch.testing.assert_close(net(batch.select(torch.arange(3))).prediction, whole[:3])
        torch.testing.assert_close(net(batch.select(torch.arange(11, -1, -1))).prediction, whole.flip(0))
        for p in list(net.final.parameters()) + list(net.generator.parameters()):
            p.add_(1.0)
        torch.testing.assert_close(net(batch).prediction, whole)
        # the temporal transformers attend over the batch, causally, as released: the first utterance's
        # reconstruction does not see the later ones, the last one's sees them all
        h = net.align(net.sequences(batch))
        first = net.reconstruct("a", h["a"])
        torch.testing.assert_close(net.reconstruct("a", h["a"][:1]), first[:1])
        assert not torch.allclose(net.reconstruct("a", h["a"][-1:]), first[-1:])


def test_training_masks_follow_the_protocol():
    method = TFRNet(**TINY)
    fixed = method.training_sampler(Protocol())
    assert isinstance(fixed, FramesInside) and isinstance(fixed.modalities, Complete) and fixed.frames == FrameDrop(0.2)
    assert method.training_sampler(Protocol("frames", rate=0.5)) == FrameDrop(0.5)  # the protocol's rate, as released
    composed = method.training_sampler(Protocol("random", rate=0.3, frames=0.4))
    assert isinstance(composed, FramesInside) and composed.frames == FrameDrop(0.4)
    assert isinstance(TFRNet(**TINY, train_frames=0.0).training_sampler(Protocol()), Complete)


def test_the_recipe_is_released_adam_value_clipping_and_a_plateau(monkeypatch):
    import imsa.methods.phase as phase

    seen, losses = {}, []
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.update(kwargs, optimizer=optimizer)
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    data = imsa.load_dataset("synthetic", sequence_length=5, num_videos=12, seed=0)
    split = data.split(0)
    method = create_method("tfr_net", epochs=2, **TINY)
    original = TFRNetNet.losses

    def spy(self, batch, complete, *, generation=True):
        losses.append(generation)
        return original(self, batch, complete, generation=generation)

    monkeypatch.setattr(TFRNetNet, "losses", spy)
    method.fit(split["train"], split["valid"], seed=0)
    opt = seen["optimizer"]
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-3
    assert (seen["grad_clip"], seen["clip_mode"], seen["accumulate"], seen["plateau"], seen["patience"]) == (0.8, "value", 1, (0.1, 5), 6)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in method.model_.parameters()}
    batches = len(losses) // 2  # the first epoch trains on the task alone, the second adds the reconstruction
    assert losses[:batches] == [False] * batches and losses[batches:] == [True] * batches


def test_a_few_steps_lower_the_reconstruction_loss(sequences):
    data, batch = sequences
    net = tiny(data).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    dropped = batch.with_frames({m: (torch.rand(p.shape, generator=generator) > 0.5) | ~p for m, p in batch.padding.items()})
    values = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = net.losses(dropped, batch)["generation"]
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.8 * values[0], values


@pytest.mark.parametrize("protocol", [Protocol(), Protocol("frames", rate=0.3)], ids=["fixed", "frames"])
def test_a_two_epoch_fit_saves_and_predicts(protocol, tmp_path):
    data = imsa.load_dataset("synthetic", sequence_length=5, num_videos=12, seed=0)
    split = data.split(0)
    method = TFRNet(epochs=2, **TINY).fit(split["train"], split["valid"], protocol=protocol, seed=0)
    values = method.predict_dataset(split["test"]).values
    assert values.shape == (len(split["test"].indices),) and np.isfinite(values).all()
    scores = method.evaluate(split["test"], protocol.settings(split["test"]))
    assert all(np.isfinite(row["mae"]) for row in scores.values())
    method.save(tmp_path / "tfr_net")
    np.testing.assert_array_equal(imsa.load_method(tmp_path / "tfr_net").predict_dataset(split["test"]).values, values)


def test_two_modalities_and_refusals(sequences):
    data, _ = sequences
    two = dataclasses.replace(data, modalities=("l", "v"), features={m: data.features[m] for m in "lv"}, lengths={m: data.lengths[m] for m in "lv"})
    net = TFRNetNet(TFRNet(**TINY).data_spec(two), TFRNetConfig(**TINY))
    assert set(net.crossmodal) == {"l_with_v", "v_with_l"} and net.generator["v"].in_features == 8
    one = dataclasses.replace(data, modalities=("a",), features={"a": data.features["a"]}, lengths={"a": data.lengths["a"]})
    with pytest.raises(ConfigError, match="two or three"):
        TFRNet(**TINY).data_spec(one)


def test_a_fine_tuned_encoder_reads_the_tokens_and_has_the_released_groups(tmp_path, tiny_bert, token_mmsa):
    data = imsa.load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    method = TFRNet(**{**TINY, "text_encoder": str(tiny_bert)})
    net = method.build(method.data_spec(data)).eval()
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        states = net.text_model(batch.tokens, batch.padding["l"].long())
        torch.testing.assert_close(net.sequences(batch)["l"], states)
        absent = batch.with_present(torch.tensor([[False, True, True]] * 4))
        assert (net.sequences(absent)["l"] == 0).all()
        assert net.generator["l"].out_features == net.text_model.dim
    c, groups = method.config, method.param_groups(net)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(c.text_lr, c.text_weight_decay), (c.text_lr, 0.0), (c.lr, c.weight_decay)]
    names = {id(p): n for n, p in net.named_parameters()}
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in groups[1]["params"])
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(names)


def test_packaged_configs_are_mmsas_and_name_their_source():
    folder = resources.files("imsa") / "configs" / "tfr_net"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == ["mosei.yaml", "mosi.yaml", "sims.yaml"]
    for name in ("mosi", "mosei", "sims"):
        assert (folder / f"{name}.yaml").read_text().startswith("# Source: MMSA (thuiar/MMSA), src/MMSA/config/config_regression.json, tfr_net")
    assert build_config(TFRNetConfig, packaged_config("tfr_net", name="mosi").values) == TFRNetConfig()
    mosei = build_config(TFRNetConfig, packaged_config("tfr_net", name="mosei").values)
    assert (mosei.lr, mosei.text_lr, mosei.gen_weight_text, mosei.gen_weight_audio, mosei.gen_weight_video) == (2e-3, 1e-5, 5e-6, 2e-6, 2e-5)
    sims = build_config(TFRNetConfig, packaged_config("tfr_net", name="sims").values)
    assert (sims.layers, sims.batch_size, sims.plateau_patience, sims.cls_dropout, sims.gen_weight_video) == (2, 16, 10, 0.1, 1e-4)
    space = yaml.safe_load((resources.files("imsa") / "configs" / "spaces" / "tfr_net.yaml").read_text())
    assert set(space) <= {f.name for f in dataclasses.fields(TFRNetConfig)} and space["batch_size"] == {"choices": [24, 32, 48]}
    assert all(d % TFRNetConfig().heads == 0 for d in space["dim"]["choices"])
