"""Self-MM: the released network's size and structure, ULGM's label generation, the loss and the
optimiser groups, on synthetic data (fidelity to MMSA's module and trainer: docs/methods/self_mm.md)."""

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
from imsa.methods.self_mm import SelfMM, SelfMMConfig, SelfMMNet, UnimodalLabels, self_mm_loss
from imsa.methods.spec import DataSpec
from imsa.testing import text_and_audio

TINY = {
    "audio_hidden": 4,
    "video_hidden": 5,
    "audio_out": 3,
    "video_out": 4,
    "post_fusion_dim": 6,
    "post_text_dim": 4,
    "post_audio_dim": 3,
    "post_video_dim": 5,
}


def spec_of(dims, task="regression", output_dim=1):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task=task, output_dim=output_dim)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's SELF_MM at MOSI's widths (768-d BERT text, 5-d audio, 20-d video) and its MOSI config has 159,332
    # parameters besides BERT, as here (measured on the released module: docs/methods/self_mm.md).
    net = SelfMMNet(spec_of({"l": 768, "a": 5, "v": 20}), SelfMMConfig())
    assert count(net) == 159_332
    assert (count(net.audio_model), count(net.video_model)) == (1_744, 7_968)  # LSTM + linear
    heads = {name: sum(count(getattr(net, f"post_{name}_layer_{k}")) for k in (1, 2, 3)) for name in ("fusion", "text", "audio", "video")}
    assert heads == {"fusion": 121_217, "text": 25_697, "audio": 561, "video": 2_145}
    assert net.post_fusion_layer_1.in_features == 768 + 16 + 32  # text_out is the text's width, not a setting
    names = [n for n, _ in net.named_parameters()]
    assert names[:2] == ["audio_model.rnn.lstm.weight_ih_l0", "audio_model.rnn.lstm.weight_hh_l0"] and "post_video_layer_3.bias" == names[-1]


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, num_videos=10, seed=0)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    torch.manual_seed(0)
    return SelfMMNet(spec_of(data.dims), SelfMMConfig(**{**TINY, **config})).eval()


def test_the_text_is_its_first_step_and_audio_and_video_an_lstms_last_real_state(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        representation = net.representations(batch)
        torch.testing.assert_close(representation["l"], batch.inputs["l"][:, 0])
        lengths = batch.padding["a"].sum(1)
        for k in range(4):  # the audio LSTM over each utterance's real steps alone
            states, _ = net.audio_model.rnn.lstm(batch.inputs["a"][k : k + 1, : lengths[k]])
            torch.testing.assert_close(representation["a"][k], net.audio_model.linear_1(states[0, -1]))
        mean = tiny(data, text_readout="mean").representations(batch)["l"]
        torch.testing.assert_close(mean, (batch.inputs["l"] * batch.padding["l"][..., None]).sum(1) / batch.padding["l"].sum(1, keepdim=True))
        run = net.run(batch)
        fused = torch.cat([representation[m] for m in ("l", "a", "v")], dim=-1)
        torch.testing.assert_close(run["features"]["fusion"], torch.relu(net.post_fusion_layer_1(fused)))
        torch.testing.assert_close(net(batch).prediction, run["outputs"]["fusion"])  # the prediction is M
        assert set(run["outputs"]) == {"fusion", "l", "a", "v"} and run["outputs"]["a"].shape == (12,)


def test_padding_is_never_read(sequences):
    data, batch = sequences
    net = tiny(data)
    inputs = {}
    for m in data.modalities:
        x = batch.inputs[m].clone()
        assert (~batch.padding[m]).any()
        x[~batch.padding[m]] = 100.0
        inputs[m] = x
    with torch.no_grad():
        clean, garbage = net.run(batch), net.run(dataclasses.replace(batch, inputs=inputs))
    for part in ("outputs", "features"):
        for key in clean[part]:
            torch.testing.assert_close(clean[part][key], garbage[part][key])


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
            representation = net.representations(noisy)[missing]
        torch.testing.assert_close(out, clean)
        torch.testing.assert_close(out[6:], complete[6:])
        assert not torch.allclose(out[:6], complete[:6])
        if missing == "l":
            assert (representation[:6] == 0).all()  # a zero text representation
        else:  # zero frames over the real length: the LSTM's state on zeros, the same for equal lengths
            zeros = getattr(net, {"a": "audio_model", "v": "video_model"}[missing])(torch.zeros_like(batch.inputs[missing][:6]), batch.padding[missing][:6])
            torch.testing.assert_close(representation[:6], zeros)


def test_two_modalities_and_refusals(sequences):
    data = text_and_audio(sequences[0])
    net = tiny(data)
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        run = net.run(batch)
    assert set(run["outputs"]) == {"fusion", "l", "a"} and not hasattr(net, "video_model") and not hasattr(net, "post_video_layer_1")
    assert net.post_fusion_layer_1.in_features == data.dims["l"] + 3
    text = Dataset(
        name="text-only",
        modalities=("l",),
        features={"l": data.features["l"]},
        lengths={"l": data.lengths["l"]},
        labels=data.labels,
        utterance_ids=data.utterance_ids,
        video_ids=data.video_ids,
        folds=data.folds,
    )
    with pytest.raises(ConfigError, match="two or three of text, audio and video"):
        SelfMM().data_spec(text)
    vectors = imsa.load_dataset("synthetic", num_videos=6)
    with pytest.raises(ConfigError, match="time sequences"):
        SelfMM().data_spec(vectors)
    with pytest.raises(ConfigError, match="text_readout"):
        SelfMMConfig(text_readout="last")
    with pytest.raises(ConfigError, match="accumulate"):
        SelfMMConfig(accumulate=0)


# -- ULGM ------------------------------------------------------------------------------------------


def store_of(labels, widths, index=None, size=None, **options):
    labels = torch.tensor(labels)
    index = torch.arange(len(labels)) if index is None else torch.tensor(index)
    return UnimodalLabels(index, labels, widths, size=size or len(labels), **{"bound": 3.0, "exclude_zero": True, **options})


def released_label(f, s, fused, centres, epoch, old, bound=3.0):
    """ULGM's label for one utterance, written out from the paper's and MMSA's formulas."""
    d_fp, d_fn = np.linalg.norm(f - centres["fusion"][0]), np.linalg.norm(f - centres["fusion"][1])
    d_sp, d_sn = np.linalg.norm(s - centres["s"][0]), np.linalg.norm(s - centres["s"][1])
    delta_f, delta_s = (d_fn - d_fp) / (d_fp + 1e-8), (d_sn - d_sp) / (d_sp + 1e-8)
    new = np.clip(0.5 * (delta_s / (delta_f + 1e-8)) * fused + 0.5 * (fused + delta_s - delta_f), -bound, bound)
    n = epoch + 1
    return (n - 1) / (n + 1) * old + 2 / (n + 1) * new


def test_labels_follow_the_released_formula_from_the_second_epoch_on_and_are_keyed_by_utterance():
    labels = [2.0, -1.0, 1.5, -2.0, 0.0]
    index = [10, 3, 7, 0, 5]  # dataset indices: the store rows follow them, not the batch positions
    store = store_of(labels, {"fusion": 2, "a": 2}, index=index, size=12)
    generator = torch.Generator().manual_seed(0)
    first = {t: torch.rand(5, 2, generator=generator) for t in ("fusion", "a")}
    present = {"a": torch.ones(5, dtype=torch.bool)}
    store.update(store.rows(torch.tensor(index)), first, present, epoch=0)
    assert torch.equal(store.labels["a"], torch.tensor(labels))  # no label moves in the first epoch
    for task in ("fusion", "a"):  # centres: mean feature of the positive (> 0) and negative utterances; the 0 in neither
        torch.testing.assert_close(store.centres[task]["pos"], first[task][[0, 2]].mean(0))
        torch.testing.assert_close(store.centres[task]["neg"], first[task][[1, 3]].mean(0))
    centres = {"fusion": [c.numpy() for c in store.centres["fusion"].values()], "s": [c.numpy() for c in store.centres["a"].values()]}
    batch = torch.tensor([7, 10])  # rows 2 and 0, in another order than the store's
    second = {t: torch.rand(2, 2, generator=generator) for t in ("fusion", "a")}
    store.update(store.rows(batch), second, {"a": torch.ones(2, dtype=torch.bool)}, epoch=1)
    for k, row in enumerate((2, 0)):
        expected = released_label(second["fusion"][k].numpy(), second["a"][k].numpy(), labels[row], centres, 1, labels[row])
        assert store.labels["a"][row].item() == pytest.approx(expected, rel=1e-5)
    assert store.labels["a"][[1, 3, 4]].tolist() == [-1.0, -2.0, 0.0]  # the other utterances keep theirs
    assert torch.equal(store.labels["fusion"], torch.tensor(labels))  # the fused label never changes
    torch.testing.assert_close(store.features["a"][[2, 0]], second["a"])  # the batch's features replace theirs
    with pytest.raises(ConfigError, match="training utterances only"):
        store.rows(torch.tensor([1]))


def test_generated_labels_are_clipped_and_exclude_zero_decides_where_zero_labels_go():
    store = store_of([1.0, -1.0, 0.0], {"fusion": 1, "a": 1}, bound=0.5)
    rows = torch.arange(3)
    store.update(rows, {"fusion": torch.tensor([[1.0], [0.0], [5.0]]), "a": torch.tensor([[1.0], [0.0], [5.0]])}, {"a": torch.ones(3, dtype=torch.bool)}, 0)
    assert store.centres["a"]["pos"].item() == 1.0  # the zero-labelled utterance (feature 5) in neither class
    for epoch in range(1, 40):  # momentum towards a clipped label: the stored one ends within the bound
        store.update(
            rows, {"fusion": torch.tensor([[1.0], [0.0], [5.0]]), "a": torch.tensor([[0.0], [1.0], [5.0]])}, {"a": torch.ones(3, dtype=torch.bool)}, epoch
        )
    assert store.labels["a"].abs().max() <= 0.5 + 1e-6
    including = store_of([1.0, -1.0, 0.0], {"fusion": 1, "a": 1}, exclude_zero=False)
    including.update(rows, {"fusion": torch.tensor([[1.0], [0.0], [5.0]]), "a": torch.tensor([[1.0], [0.0], [5.0]])}, {"a": torch.ones(3, dtype=torch.bool)}, 0)
    assert including.centres["a"]["pos"].item() == 3.0  # label 0 counts as positive


def test_a_centre_of_an_empty_class_keeps_its_value():
    store = store_of([1.0, 2.0], {"fusion": 1, "a": 1})  # no negative label: the released mean of nothing is NaN
    store.update(torch.arange(2), {"fusion": torch.tensor([[1.0], [3.0]]), "a": torch.tensor([[1.0], [3.0]])}, {"a": torch.ones(2, dtype=torch.bool)}, 0)
    assert store.centres["a"]["neg"].item() == 0.0 and store.centres["a"]["pos"].item() == 2.0
    store.update(torch.arange(2), {"fusion": torch.tensor([[1.0], [3.0]]), "a": torch.tensor([[1.0], [3.0]])}, {"a": torch.ones(2, dtype=torch.bool)}, 1)
    assert torch.isfinite(store.labels["a"]).all()


def test_the_loss_weights_unimodal_heads_by_the_label_gap_and_skips_masked_modalities(sequences):
    data, batch = sequences
    net = tiny(data)  # eval mode: dropout off, so that the loss can be recomputed
    widths = {"fusion": 6, "l": 4, "a": 3, "v": 5}
    store = store_of(batch.labels.tolist(), widths, index=batch.index.tolist(), size=len(data))

    def gradients(masked, epoch):
        """The summed absolute gradient of each unimodal head."""
        net.zero_grad()
        self_mm_loss(net, masked, epoch, store).backward()
        return [sum(getattr(net, f"post_{name}_layer_{k}").weight.grad.abs().sum().item() for k in (1, 2, 3)) for name in ("text", "audio", "video")]

    assert not any(gradients(batch, 0))  # every unimodal label equals the fused one: tanh(0) = 0, no unimodal loss
    gradients(batch, 1)  # epoch 1: the labels move
    moved = store.labels["a"].clone()
    assert (moved != batch.labels).all() and torch.equal(store.labels["fusion"], batch.labels)
    assert all(gradients(batch, 2))
    # audio removed by a training mask for half the batch: no loss there, no update, the stored feature kept
    present = batch.present.clone()
    present[:6, 1] = False
    masked = batch.with_present(present)
    labels = store.labels["a"].clone()
    store.update = lambda rows, feats, keep, epoch: None  # look at the loss alone first
    out = net.run(masked)
    weight = torch.tanh((labels - store.labels["fusion"]).abs())
    expected = torch.mean(weight * present[:, 1] * (out["outputs"]["a"] - labels).abs())
    terms = {}
    for m in ("l", "a", "v"):
        keep = masked.present[:, masked.modalities.index(m)].float()
        terms[m] = torch.mean(torch.tanh((store.labels[m] - store.labels["fusion"]).abs()) * keep * (out["outputs"][m] - store.labels[m]).abs())
    total = torch.mean((out["outputs"]["fusion"] - store.labels["fusion"]).abs()) + sum(terms.values())
    torch.testing.assert_close(terms["a"], expected)
    torch.testing.assert_close(self_mm_loss(net, masked, 3, store), total)
    del store.update
    store.features["a"].fill_(-1.0)  # a sentinel: which stored features the update replaces
    with torch.no_grad():
        self_mm_loss(net, masked, 3, store)
    assert torch.equal(store.labels["a"][:6], labels[:6]) and not torch.equal(store.labels["a"][6:], labels[6:])
    assert (store.features["a"][:6] == -1).all()
    torch.testing.assert_close(store.features["a"][6:], out["features"]["a"][6:].detach())


def test_the_store_round_trips_through_its_state_dict():
    store = store_of([1.0, -1.0], {"fusion": 2, "a": 2})
    store.update(torch.arange(2), {"fusion": torch.ones(2, 2), "a": torch.eye(2)}, {"a": torch.ones(2, dtype=torch.bool)}, 1)
    other = store_of([0.0, 0.0], {"fusion": 2, "a": 2})
    other.load_state_dict(store.state_dict())
    for part in ("labels", "features"):
        assert all(torch.equal(getattr(store, part)[t], getattr(other, part)[t]) for t in ("fusion", "a"))
    assert all(torch.equal(store.centres[t][s], other.centres[t][s]) for t in ("fusion", "a") for s in ("pos", "neg"))


# -- the recipe ------------------------------------------------------------------------------------


def test_a_fit_generates_labels_for_the_training_utterances():
    data = imsa.load_dataset("synthetic", num_videos=16, sequence_length=5, aligned=True, seed=0)
    split = data.split(0)
    method = create_method("self_mm", epochs=3, patience=None, accumulate=1, **TINY).fit(split["train"], split["valid"], seed=0)
    store = method.ulgm_
    rows = store.rows(torch.as_tensor(split["train"].indices))
    assert torch.equal(rows.sort().values, torch.arange(len(split["train"])))
    torch.testing.assert_close(store.labels["fusion"][rows], torch.as_tensor(split["train"].labels, dtype=torch.float32))
    for m in ("l", "a", "v"):
        assert (store.labels[m] != store.labels["fusion"]).float().mean() > 0.9
        assert store.labels[m].abs().max() <= 3.0


def test_classification_trains_the_fused_output_alone():
    data = imsa.load_dataset("synthetic", num_videos=12, sequence_length=5, num_classes=3, seed=0)
    split = data.split(0)
    torch.manual_seed(0)
    method = create_method("self_mm", epochs=2, patience=None, accumulate=1, **TINY)
    initial = method.build(method.data_spec(data)).state_dict()
    method.fit(split["train"], split["valid"], seed=0)
    trained = method.model_.state_dict()
    assert method.ulgm_ is None
    assert all(torch.equal(trained[k], v) for k, v in initial.items() if k.startswith(("post_text", "post_audio", "post_video")))
    assert not torch.equal(trained["post_fusion_layer_3.weight"], initial["post_fusion_layer_3.weight"])
    assert method.model_(tensor_cache(data).gather(np.arange(4))).prediction.shape == (4, 3)


def test_the_optimiser_groups_are_mmsas_and_a_token_fit_reads_the_cls_state(tmp_path, tiny_bert, token_mmsa):
    data = imsa.load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    method = SelfMM(epochs=1, batch_size=8, accumulate=2, text_encoder=str(tiny_bert), **TINY).fit(split["train"], split["valid"], seed=0)
    net, c = method.model_, method.config
    groups = method.param_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [
        (c.text_lr, c.text_weight_decay),
        (c.text_lr, 0.0),
        (c.audio_lr, c.audio_weight_decay),
        (c.video_lr, c.video_weight_decay),
        (c.lr, c.weight_decay),
    ]
    assert all(not n.endswith("bias") and "LayerNorm" not in n for n in map(names.get, map(id, groups[0]["params"])))
    assert all(n.endswith("bias") or "LayerNorm" in n for n in map(names.get, map(id, groups[1]["params"])))
    assert all(names[id(p)].startswith("audio_model.") for p in groups[2]["params"])
    assert all(names[id(p)].startswith("post_") for p in groups[4]["params"])
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(names)
    batch = tensor_cache(data).gather(split["test"].indices[:4])
    net.eval()
    with torch.no_grad():
        states = net.text_model(batch.tokens, batch.padding["l"].long())
        torch.testing.assert_close(net.representations(batch)["l"], states[:, 0])
        absent = batch.with_present(torch.tensor([[False, True, True]] * 4))
        assert (net.representations(absent)["l"] == 0).all()


def test_packaged_configs_are_mmsas_and_name_their_source():
    folder = resources.files("imsa") / "configs" / "self_mm"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == ["mosei.yaml", "mosi.yaml", "sims.yaml"]
    for name in ("mosi", "mosei", "sims"):
        assert (folder / f"{name}.yaml").read_text().startswith("# Source: MMSA (thuiar/MMSA at a94e65d), src/MMSA/config/config_regression.json, self_mm")
    assert build_config(SelfMMConfig, packaged_config("self_mm", name="mosi").values) == SelfMMConfig()
    mosei = build_config(SelfMMConfig, packaged_config("self_mm", name="mosei").values)
    assert (mosei.batch_size, mosei.video_lr, mosei.weight_decay, mosei.post_fusion_dropout, mosei.post_text_dropout) == (32, 1e-4, 1e-2, 0.1, 0.0)
    sims = build_config(SelfMMConfig, packaged_config("self_mm", name="sims").values)
    assert (sims.label_bound, sims.video_hidden, sims.post_text_dim, sims.audio_weight_decay) == (1.0, 64, 64, 1e-2)
    space = yaml.safe_load((resources.files("imsa") / "configs" / "spaces" / "self_mm.yaml").read_text())
    assert set(space) <= {f.name for f in dataclasses.fields(SelfMMConfig)} and space["batch_size"] == {"choices": [16, 32]}


def test_the_label_store_is_checkpointed_with_the_phase(tmp_path, monkeypatch):
    import imsa.methods.self_mm as module
    from imsa.training import RunContext

    data = imsa.load_dataset("synthetic", num_videos=10, sequence_length=4, aligned=True, seed=0)
    split = data.split(0)
    context = RunContext(workdir=tmp_path, checkpoint_interval=0)
    first = create_method("self_mm", epochs=3, patience=None, accumulate=1, **TINY).fit(split["train"], split["valid"], seed=0, context=context)
    monkeypatch.setattr(module, "self_mm_loss", lambda *args: pytest.fail("the finished phase was trained again"))
    restored = create_method("self_mm", epochs=3, patience=None, accumulate=1, **TINY).fit(split["train"], split["valid"], seed=0, context=context)
    for task in ("fusion", "l", "a", "v"):  # the finished phase is restored, its store with it
        assert torch.equal(first.ulgm_.labels[task], restored.ulgm_.labels[task])
        assert not torch.equal(first.ulgm_.labels[task], torch.zeros_like(first.ulgm_.labels[task]))
    assert not torch.equal(first.ulgm_.labels["a"], first.ulgm_.labels["fusion"])
