"""TETFN: the released network's size and structure (text enhanced transformers, which blocks have
positions, causal attention, max-pooled unimodal heads), missing modalities as zeros, ULGM's
training and the optimiser groups, on synthetic data (fidelity to MMSA's module and trainer:
docs/methods/tetfn.md)."""

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
from imsa.data.dataset import Dataset
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.spec import DataSpec
from imsa.methods.tetfn import TETFN, TETFNConfig, TETFNNet, TextEnhancedTransformer
from imsa.methods.unimodal_labels import UnimodalLabels, ulgm_loss
from imsa.nn.mult import TransformerEncoder
from imsa.testing import text_and_audio

TINY = {"audio_hidden": 4, "video_hidden": 5, "dim": 4, "heads": 2, "post_fusion_dim": 6, "post_text_dim": 4, "post_audio_dim": 3, "post_video_dim": 5}


def spec_of(dims, task="regression", output_dim=1):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task=task, output_dim=output_dim)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's TETFN at MOSI's widths (768-d BERT states, 5-d audio, 20-d video) and its MOSI config has 1,254,224
    # parameters besides BERT, as here (measured on the released module: docs/methods/tetfn.md).
    net = TETFNNet(spec_of({"l": 768, "a": 5, "v": 20}), TETFNConfig())
    assert count(net) == 1_254_224
    assert (count(net.audio_model), count(net.video_model), count(net.proj_l)) == (2_272, 25_216, 38_400)  # LSTM + conv, conv
    assert net.video_model.conv.kernel_size == (1,)  # the released video convolution takes the audio kernel
    plain, enhanced, memory = 61_400, 92_150, 242_800  # two layers of width 50; one + two; two of width 100
    blocks = {n: count(getattr(net, f"trans_{n}")) for n in ("l_with_a", "l_with_v", "a_with_l", "a_with_v", "v_with_l", "v_with_a")}
    assert blocks == {"l_with_a": plain, "l_with_v": plain, "a_with_l": plain, "a_with_v": enhanced, "v_with_l": plain, "v_with_a": enhanced}
    assert all(count(getattr(net, f"trans_{m}_mem")) == memory for m in "lav")
    assert isinstance(net.trans_a_with_v, TextEnhancedTransformer) and len(net.trans_a_with_v.lower_mha.layers) == 1
    assert net.post_fusion_layer_1.in_features == 6 * 50
    heads = {name: sum(count(getattr(net, f"post_{name}_layer_{k}")) for k in (1, 2, 3)) for name in ("fusion", "text", "audio", "video")}
    assert heads == {"fusion": 23_489, "text": 2_721, "audio": 2_721, "video": 1_105}


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, num_videos=10, aligned=True, seed=0)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    torch.manual_seed(0)
    return TETFNNet(spec_of(data.dims), TETFNConfig(**{**TINY, **config})).eval()


def test_the_network_is_the_released_composition(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        seq = net.sequences(batch)
        l = net.proj_l(batch.inputs["l"].transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(seq["l"], l)
        states, _ = net.audio_model.rnn(batch.inputs["a"])  # every step, padding included, as released
        torch.testing.assert_close(seq["a"], net.audio_model.conv(states.transpose(1, 2)).transpose(1, 2))
        a, v = seq["a"], seq["v"]
        # audio takes the text directly and video through the text: upper(a, lower(v, l))
        enhanced = net.trans_a_with_v.upper_mha(a, net.trans_a_with_v.lower_mha(v, l))
        h_a = net.trans_a_mem(torch.cat([net.trans_a_with_l(a, l), enhanced], dim=-1))[:, -1]
        h_l = net.trans_l_mem(torch.cat([net.trans_l_with_a(l, a), net.trans_l_with_v(l, v)], dim=-1))[:, -1]
        h_v = net.trans_v_mem(torch.cat([net.trans_v_with_l(v, l), net.trans_v_with_a.upper_mha(v, net.trans_v_with_a.lower_mha(a, l))], dim=-1))[:, -1]
        run = net.run(batch)
        fused = torch.relu(net.post_fusion_layer_1(torch.cat([h_l, h_a, h_v], dim=-1)))
        torch.testing.assert_close(run["features"]["fusion"], fused)
        # the unimodal heads read each sequence max-pooled over time
        torch.testing.assert_close(run["features"]["l"], torch.relu(net.post_text_layer_1(l.amax(1))))
        torch.testing.assert_close(run["features"]["v"], torch.relu(net.post_video_layer_1(v.amax(1))))
        torch.testing.assert_close(net(batch).prediction, run["outputs"]["fusion"])
        assert set(run["outputs"]) == {"fusion", "l", "a", "v"} and run["outputs"]["a"].shape == (12,)
        # changing the text alone changes audio's text-enhanced stream
        other = net.trans_a_with_v(v, a, l.flip(0))
        assert not torch.allclose(other, enhanced)


def test_positions_only_in_the_text_enhanced_blocks_and_attention_is_causal():
    torch.manual_seed(0)
    x, source = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    plain = TransformerEncoder(4, 2, 2, positions=False).eval()
    with_positions = TransformerEncoder(4, 2, 2, positions=True).eval()
    torch.testing.assert_close(plain.embed(x), 2.0 * x)  # sqrt(dim) x, no table
    assert not torch.allclose(with_positions.embed(x), 2.0 * x)
    changed = source.clone()
    changed[:, 3:] = torch.randn(2, 2, 4)  # later source steps are hidden from earlier queries
    with torch.no_grad():
        before, after = plain(x, source), plain(x, changed)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:6, k] = False
        masked = batch.with_present(present)
        noise = masked.inputs[missing].clone()
        noise[:6] = 1e3 * torch.randn_like(noise[:6])  # values where the mask says missing
        noisy = dataclasses.replace(masked, inputs={**masked.inputs, missing: noise})
        with torch.no_grad():
            out, clean, complete = net(noisy).prediction, net(masked).prediction, net(batch).prediction
            seq = net.sequences(noisy)[missing]
            zeros = net.sequences(dataclasses.replace(batch, inputs={**batch.inputs, missing: torch.zeros_like(noise)}))[missing]
        torch.testing.assert_close(out, clean)
        torch.testing.assert_close(out[6:], complete[6:])
        assert not torch.allclose(out[:6], complete[:6])
        torch.testing.assert_close(seq[:6], zeros[:6])  # the sequence of zero inputs
        if missing == "l":
            assert (seq[:6] == 0).all()


def test_two_modalities_and_refusals(sequences):
    data = text_and_audio(sequences[0])
    net = tiny(data)
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        run = net.run(batch)
    assert set(run["outputs"]) == {"fusion", "l", "a"} and not hasattr(net, "video_model") and not hasattr(net, "trans_a_with_v")
    assert net.post_fusion_layer_1.in_features == 2 * TINY["dim"] and net.trans_l_mem.dim == TINY["dim"]
    full = sequences[0]
    audio_video = Dataset(
        name="audio-video",
        modalities=("a", "v"),
        features={m: full.features[m] for m in "av"},
        lengths={m: full.lengths[m] for m in "av"},
        labels=full.labels,
        utterance_ids=full.utterance_ids,
        video_ids=full.video_ids,
        folds=full.folds,
    )
    with pytest.raises(ConfigError, match="fuses the text with audio, video or both"):
        TETFN().data_spec(audio_video)
    with pytest.raises(ConfigError, match="fewer than video_kernel=7"):
        TETFN(video_kernel=7).data_spec(sequences[0])
    with pytest.raises(ConfigError, match="time sequences"):
        TETFN().data_spec(imsa.load_dataset("synthetic", num_videos=6))
    with pytest.raises(ConfigError, match="divisible"):
        TETFNConfig(dim=5, heads=2)


def test_the_loss_is_ulgms_on_max_pooled_features(sequences):
    data, batch = sequences
    net = tiny(data)  # eval mode: no dropout, so that two passes agree
    labels = batch.labels.float()
    widths = {"fusion": TINY["post_fusion_dim"], "l": TINY["post_text_dim"], "a": TINY["post_audio_dim"], "v": TINY["post_video_dim"]}
    store = UnimodalLabels(batch.index, labels, widths, size=int(batch.index.max()) + 1, bound=3.0, exclude_zero=True)
    loss = ulgm_loss(net, batch, 0, store)  # first epoch: every unimodal label is the fused one, so only |M - y| counts
    with torch.no_grad():
        run = net.run(batch)
        torch.testing.assert_close(loss, torch.mean(torch.abs(run["outputs"]["fusion"] - labels)))
        torch.testing.assert_close(store.features["a"][store.rows(batch.index)], run["features"]["a"])
    ulgm_loss(net, batch, 1, store)
    assert not torch.equal(store.labels["l"], labels) and torch.equal(store.labels["fusion"], labels)


def test_a_fit_generates_labels_and_uses_mmsas_groups():
    data = imsa.load_dataset("synthetic", num_videos=16, sequence_length=5, aligned=True, seed=0)
    split = data.split(0)
    method = create_method("tetfn", epochs=3, patience=None, accumulate=1, batch_size=16, **TINY).fit(split["train"], split["valid"], seed=0)
    store = method.ulgm_
    rows = store.rows(torch.as_tensor(split["train"].indices))
    torch.testing.assert_close(store.labels["fusion"][rows], torch.as_tensor(split["train"].labels, dtype=torch.float32))
    for m in ("l", "a", "v"):
        assert (store.labels[m] != store.labels["fusion"]).float().mean() > 0.9
        assert store.labels[m].abs().max() <= 3.0
    net, c = method.model_, method.config
    groups = method.param_groups(net)  # no text encoder: audio, video, the rest
    names = {id(p): n for n, p in net.named_parameters()}
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(c.audio_lr, c.audio_weight_decay), (c.video_lr, c.video_weight_decay), (c.lr, c.weight_decay)]
    assert {names[id(p)].split(".")[0] for p in groups[2]["params"]} >= {"proj_l", "trans_a_with_v", "trans_l_mem", "post_fusion_layer_1"}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(names)


def test_packaged_configs_are_mmsas_and_name_their_source():
    folder = resources.files("imsa") / "configs" / "tetfn"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == ["mosei.yaml", "mosi.yaml", "sims.yaml"]
    for name in ("mosi", "mosei", "sims"):
        assert (folder / f"{name}.yaml").read_text().startswith("# Source: MMSA (thuiar/MMSA at a94e65d), src/MMSA/config/config_regression.json, tetfn")
    assert build_config(TETFNConfig, packaged_config("tetfn", name="mosi").values) == TETFNConfig()
    mosei = build_config(TETFNConfig, packaged_config("tetfn", name="mosei").values)
    assert (mosei.batch_size, mosei.video_lr, mosei.lr, mosei.embed_dropout, mosei.post_text_dim) == (32, 5e-3, 1e-4, 0.1, 64)
    sims = build_config(TETFNConfig, packaged_config("tetfn", name="sims").values)
    assert (sims.text_kernel, sims.audio_kernel, sims.video_kernel, sims.lr) == (3, 5, 5, 3e-3)
    space = yaml.safe_load((resources.files("imsa") / "configs" / "spaces" / "tetfn.yaml").read_text())
    assert set(space) <= {f.name for f in dataclasses.fields(TETFNConfig)} and space["batch_size"] == {"choices": [32, 64, 128]}


def test_a_fine_tuned_encoder_gives_the_text_sequence_and_its_own_optimiser_groups(tmp_path, tiny_bert, token_mmsa):
    data = imsa.load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    method = TETFN(text_encoder=str(tiny_bert), **TINY)
    net = method.build(method.data_spec(data)).eval()
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        states = net.text_model(batch.tokens, batch.padding["l"].long())  # every token's state, padding included
        torch.testing.assert_close(net.sequences(batch)["l"], net.proj_l(states.transpose(1, 2)).transpose(1, 2))
        absent = batch.with_present(torch.tensor([[False, True, True]] * 4))
        assert (net.sequences(absent)["l"] == 0).all()
    c, groups = method.config, method.param_groups(net)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (c.text_lr, c.text_weight_decay),
        (c.text_lr, 0.0),
        (c.audio_lr, c.audio_weight_decay),
        (c.video_lr, c.video_weight_decay),
        (c.lr, c.weight_decay),
    ]
