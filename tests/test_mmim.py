"""MMIM: the released network's size and structure, the MI terms and their memory, the two passes
of an epoch and the optimisers, on synthetic data (fidelity to MMSA's module and trainer:
docs/methods/mmim.md)."""

from __future__ import annotations

import dataclasses
import math
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
from imsa.methods.mmim import MMIM, EntropyMemory, MMIMConfig, MMIMNet, MMIMTraining, gaussian_entropy
from imsa.methods.spec import DataSpec
from imsa.protocols import Protocol
from imsa.testing import text_and_audio

TINY = {"audio_hidden": 4, "video_hidden": 5, "audio_out": 4, "video_out": 8, "fusion_hidden": 6, "fusion_dropout": 0.0}


def spec_of(dims, task="regression", output_dim=1):
    return DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task=task, output_dim=output_dim)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's MMIM at MOSI's widths (768-d BERT text, 5-d audio, 20-d video) and its MOSI config has 281,673 parameters
    # besides BERT, as here (measured on the released module: docs/methods/mmim.md).
    net = MMIMNet(spec_of({"l": 768, "a": 5, "v": 20}), MMIMConfig())
    assert count(net) == 281_673
    parts = {name: count(module) for name, module in net.named_children()}
    assert parts == {
        "visual_enc": 5_392,
        "acoustic_enc": 3_472,
        "mi_tv": 25_220,
        "mi_ta": 25_220,
        "cpc_zt": 99_072,
        "cpc_zv": 2_064,
        "cpc_za": 2_064,
        "fusion_prj": 119_169,
    }
    assert count(MMIMNet(spec_of({"l": 768, "a": 5, "v": 20}), MMIMConfig(add_va=True))) == 282_829
    assert net.fusion_prj.linear_1.in_features == 768 + 16 + 16 and net.mi_tv.entropy_prj[0].out_features == 4
    names = [n for n, _ in net.named_parameters()]
    assert names[0] == "visual_enc.rnn.lstm.weight_ih_l0" and names[-1] == "fusion_prj.linear_3.bias"


def test_weight_matrices_are_xavier_normal_and_biases_pytorchs():
    torch.manual_seed(0)
    net = MMIMNet(spec_of({"l": 768, "a": 5, "v": 20}), MMIMConfig())
    weight = net.fusion_prj.linear_1.weight  # 128 x 800: xavier std 0.046, PyTorch's default uniform 0.020
    assert float(weight.detach().std()) == pytest.approx(math.sqrt(2 / (800 + 128)), rel=0.05)
    lstm = net.visual_enc.rnn.lstm.weight_ih_l0  # 64 x 20
    assert float(lstm.detach().std()) == pytest.approx(math.sqrt(2 / (64 + 20)), rel=0.15)
    bias = net.fusion_prj.linear_1.bias
    assert float(bias.detach().abs().max()) <= 1 / math.sqrt(800)  # PyTorch's default bias, untouched


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, num_videos=10, seed=0)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    torch.manual_seed(0)
    dims = data.dims if isinstance(data, Dataset) else data
    return MMIMNet(spec_of(dims), MMIMConfig(**{**TINY, **config})).eval()


def test_the_text_is_its_first_step_and_audio_and_video_an_lstms_final_states_over_the_real_steps():
    torch.manual_seed(0)
    net = MMIMNet(spec_of({"l": 6, "a": 3, "v": 4}), MMIMConfig(**TINY)).eval()
    lengths = torch.tensor([5, 2, 4])
    mask = torch.arange(5)[None] < lengths[:, None]
    x = torch.randn(3, 5, 3) * mask[..., None]
    with torch.no_grad():
        encoded = net.acoustic_enc(x, mask)
        for row, n in enumerate(lengths.tolist()):  # each utterance alone, unpadded: the released h_n[0], h_n[1]
            _, (h, _) = net.acoustic_enc.rnn.lstm(x[row : row + 1, :n])
            torch.testing.assert_close(encoded[row], net.acoustic_enc.linear_1(torch.cat([h[0], h[1]], dim=-1))[0])
        one = MMIMNet(spec_of({"l": 6, "a": 3, "v": 4}), MMIMConfig(**TINY, bidirectional=False)).acoustic_enc.eval()
        _, (h, _) = one.rnn.lstm(x[1:2, :2])
        torch.testing.assert_close(one(x, mask)[1], one.linear_1(h[0])[0])
        deep = MMIMNet(spec_of({"l": 6, "a": 3, "v": 4}), MMIMConfig(**TINY, lstm_layers=2)).acoustic_enc.eval()
        _, (h, _) = deep.rnn.lstm(x[0:1, :5])  # the top layer's final states (the release reads the first layer's)
        torch.testing.assert_close(deep(x, mask)[0], deep.linear_1(torch.cat([h[2], h[3]], dim=-1))[0])
        assert deep.dropout.p == 0.1 and net.acoustic_enc.dropout.p == 0.0  # dropout with more than one layer only
    batch = tensor_cache(imsa.load_dataset("synthetic", sequence_length=6, num_videos=6, seed=0)).gather(np.arange(4))
    dims = {m: batch.inputs[m].shape[-1] for m in batch.modalities}
    net = tiny(dims)
    with torch.no_grad():
        vectors = net.vectors(batch)
        torch.testing.assert_close(vectors["l"], batch.inputs["l"][:, 0])
        mean = tiny(dims, text_readout="mean").vectors(batch)["l"]
        torch.testing.assert_close(mean, (batch.inputs["l"] * batch.padding["l"][..., None]).sum(1) / batch.padding["l"].sum(1, keepdim=True))
        fused, prediction = net.fuse(vectors)
        f = net.fusion_prj
        torch.testing.assert_close(fused, torch.tanh(f.linear_2(torch.tanh(f.linear_1(torch.cat([vectors[m] for m in "lav"], dim=-1))))))
        torch.testing.assert_close(net(batch).prediction, f.linear_3(fused).squeeze(-1))
        torch.testing.assert_close(net(batch).feature, fused)


def test_padding_is_never_read(sequences):
    data, batch = sequences
    lengths = torch.tensor([6, 3, 2, 5, 4, 6, 1, 2, 3, 4, 5, 6])
    padding = {m: torch.arange(6)[None] < lengths[:, None] for m in data.modalities}
    short = dataclasses.replace(batch, padding=padding, inputs={m: x * padding[m][..., None] for m, x in batch.inputs.items()})
    garbage = dataclasses.replace(short, inputs={m: torch.where(padding[m][..., None], x, torch.full_like(x, 100.0)) for m, x in short.inputs.items()})
    net = tiny(data, text_readout="mean")
    with torch.no_grad():
        clean, noisy = net.vectors(short), net.vectors(garbage)
    for m in data.modalities:
        torch.testing.assert_close(clean[m], noisy[m])


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:6, k] = False
        masked = batch.with_present(present)
        noise = masked.inputs[missing].clone()
        noise[:6] = 1e3 * torch.randn(noise[:6].shape, generator=generator)
        noisy = dataclasses.replace(masked, inputs={**masked.inputs, missing: noise})
        with torch.no_grad():
            out, clean, complete = net(noisy).prediction, net(masked).prediction, net(batch).prediction
            vector = net.vectors(noisy)[missing]
        torch.testing.assert_close(out, clean)
        torch.testing.assert_close(out[6:], complete[6:])
        assert not torch.allclose(out[:6], complete[:6])
        if missing == "l":
            assert (vector[:6] == 0).all()
        else:
            encoder = net.acoustic_enc if missing == "a" else net.visual_enc
            torch.testing.assert_close(vector[:6], encoder(torch.zeros_like(batch.inputs[missing][:6]), batch.padding[missing][:6]))


# -- the MI terms ------------------------------------------------------------------------------------------


def test_the_likelihood_lacks_the_log_variance_term_and_the_cpc_is_infonce_on_unit_vectors(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        vectors, rows = net.vectors(batch), net.present_rows(batch)
        lld, sides = net.pair_terms(vectors, rows)
        expected = 0.0
        for name, x, y in (("mi_tv", "l", "v"), ("mi_ta", "l", "a")):
            module = getattr(net, name)
            mu, logvar = module.mlp_mu(vectors[x]), module.mlp_logvar(vectors[x])
            expected += float((-((mu - vectors[y]) ** 2) / (2 * logvar.exp())).sum(-1).mean())  # no -logvar/2
        assert float(lld) == pytest.approx(expected, rel=1e-5) and sides == {}
        fused, _ = net.fuse(vectors)
        nce = 0.0
        for name, m in (("cpc_zt", "l"), ("cpc_zv", "v"), ("cpc_za", "a")):
            p = getattr(net, name).net(fused)
            p, x = p / p.norm(dim=1, keepdim=True), vectors[m] / vectors[m].norm(dim=1, keepdim=True)
            scores = x @ p.T  # utterance i against every utterance's prediction
            nce += float(-(scores.diag() - torch.logsumexp(scores, dim=1)).mean())
        assert float(net.contrastive(vectors, fused, rows)) == pytest.approx(nce, rel=1e-5)


def test_the_entropy_is_a_quarter_of_the_log_determinants_of_the_two_sides_covariances():
    generator = torch.Generator().manual_seed(0)
    positive, negative = torch.rand(9, 3, generator=generator), torch.rand(7, 3, generator=generator)
    expected = 0.25 * sum(np.linalg.slogdet(np.cov(side.double().numpy().T, bias=True))[1] for side in (positive, negative))
    assert float(gaussian_entropy(positive, negative)) == pytest.approx(expected, rel=1e-4)
    assert gaussian_entropy(positive, negative[:3]) is None  # 3 vectors in 3 dimensions: singular, left out
    assert gaussian_entropy(positive[:4], negative[:4]) is not None


def test_the_memory_fills_then_replaces_the_oldest_slot_and_splits_sides_by_the_label_sign(sequences):
    data, batch = sequences
    net = tiny(data)
    labels = torch.tensor([1.0, -1.0, 0.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 3.0, -3.0, 0.0])
    with torch.no_grad():
        vectors, rows = net.vectors(batch), net.present_rows(batch)
        _, sides = net.pair_terms(vectors, rows, labels)
    assert set(sides) == {("l", "v"), ("l", "a")}
    projected = net.mi_tv.entropy_prj(vectors["v"]).detach()
    torch.testing.assert_close(sides[("l", "v")][0], projected[labels > 0])  # the zero labels in neither side
    torch.testing.assert_close(sides[("l", "v")][1], projected[labels < 0])
    memory = EntropyMemory(2)
    first, second, third = ({pair: (p + k, n + k) for pair, (p, n) in sides.items()} for k in range(3))
    memory.store(first, 0)
    assert not memory.full
    memory.store(second, 1)
    assert memory.full
    memory.store(third, 2)  # slot 2 mod 2 = 0: the first batch's
    assert torch.equal(memory.slots[0][("l", "v")][0], third[("l", "v")][0]) and torch.equal(memory.slots[1][("l", "v")][0], second[("l", "v")][0])
    h = memory.entropy(sides)
    expected = sum(gaussian_entropy(torch.cat([third[p][0], second[p][0], sides[p][0]]), torch.cat([third[p][1], second[p][1], sides[p][1]])) for p in sides)
    torch.testing.assert_close(h, expected)


def test_the_main_loss_and_when_the_entropy_enters_it(sequences):
    data, batch = sequences
    net = tiny(data)
    method = MMIM(**TINY)
    method.spec_ = spec_of(data.dims)
    training = MMIMTraining(method, net, None, None, 0, torch.device("cpu"))
    training.epoch = 0  # the likelihood pass is not under test here
    c = method.config
    batch = dataclasses.replace(batch, labels=torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5, 3.0, -3.0, 0.2, -0.2]))
    entropies = []
    for step in range(4):
        with torch.no_grad():
            vectors, rows = net.vectors(batch), net.present_rows(batch)
            lld, sides = net.pair_terms(vectors, rows, batch.labels)
            fused, prediction = net.fuse(vectors)
            base = (prediction - batch.labels).abs().mean() + c.alpha * net.contrastive(vectors, fused, rows) - c.beta * lld
            entropy = training.memory.entropy(sides) if training.memory.full else None
            loss = training.loss(net, batch, 0)
        entropies.append(entropy)
        if step <= c.mem_size:  # batches 0 and 1 of an epoch: no entropy term (batch 1's is computed and dropped, as released)
            torch.testing.assert_close(loss, base)
        else:
            torch.testing.assert_close(loss, base - c.beta * entropy)
    assert entropies[0] is None and entropies[1] is not None
    training.likelihood_pass = lambda epoch: None
    training.start(1)  # a new epoch empties the memory
    assert training.memory.slots == [] and training.step == 0


def test_a_training_mask_keeps_removed_modalities_out_of_the_mi_terms_and_the_memory(sequences):
    data, batch = sequences
    net = tiny(data)
    present = batch.present.clone()
    present[:5, 2] = False  # video removed from five utterances
    masked = batch.with_present(present)
    labels = torch.linspace(-3, 3, 12)
    with torch.no_grad():
        vectors, rows = net.vectors(masked), net.present_rows(masked)
        lld, sides = net.pair_terms(vectors, rows, labels)
        keep = torch.arange(12) >= 5
        tv = net.mi_tv.log_likelihood(vectors["l"][keep], vectors["v"][keep]).mean()
        ta = net.mi_ta.log_likelihood(vectors["l"], vectors["a"]).mean()
        torch.testing.assert_close(lld, tv + ta)
        projected = net.mi_tv.entropy_prj(vectors["v"])
        torch.testing.assert_close(sides[("l", "v")][0], projected[keep & (labels > 0)])
        torch.testing.assert_close(sides[("l", "v")][1], projected[keep & (labels < 0)])
        assert len(sides[("l", "a")][1]) == int((labels < 0).sum())  # audio everywhere: every negative utterance
        fused, _ = net.fuse(vectors)
        nce = net.cpc_zt(vectors["l"], fused) + net.cpc_zv(vectors["v"][keep], fused[keep]) + net.cpc_za(vectors["a"], fused)
        torch.testing.assert_close(net.contrastive(vectors, fused, rows), nce)


def test_a_zero_modality_vector_is_left_out_of_the_contrastive_term(sequences):
    # a frame-level mask that drops the precomputed text's first step leaves a zero text vector, which the released
    # normalisation turns into NaN
    data, batch = sequences
    net = tiny(data)
    dropped = batch.with_frames({"l": torch.arange(batch.padding["l"].shape[1])[None, :].expand(12, -1).ne(0) | (torch.arange(12) >= 4)[:, None]})
    with torch.no_grad():
        vectors, rows = net.vectors(dropped), net.present_rows(dropped)
        assert torch.equal(vectors["l"][:4], torch.zeros_like(vectors["l"][:4])) and bool(vectors["l"][4:].abs().amax(1).gt(0).all())
        fused, _ = net.fuse(vectors)
        keep = torch.arange(12) >= 4
        nce = net.cpc_zt(vectors["l"][keep], fused[keep]) + net.cpc_zv(vectors["v"], fused) + net.cpc_za(vectors["a"], fused)
        total = net.contrastive(vectors, fused, rows)
    assert torch.isfinite(total)
    torch.testing.assert_close(total, nce)


# -- the recipe ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    data = imsa.load_dataset("synthetic", num_videos=12, sequence_length=5, aligned=True, seed=0)
    return data.split(0)


def fit(split, seed=0, **config):
    torch.manual_seed(0)
    method = create_method("mmim", **{"epochs": 2, "patience": None, "batch_size": 16, **TINY, **config})
    initial = {k: v.clone() for k, v in method.build(method.data_spec(split["train"].dataset)).state_dict().items()}
    method.fit(split["train"], split["valid"], seed=seed)
    return method, initial


def test_the_likelihood_pass_moves_the_mmilb_modules_and_the_main_pass_the_rest(small, monkeypatch):
    import imsa.methods.mmim as module

    passes = []
    original = module.MMIMTraining.likelihood_pass

    def recorded(self, epoch):
        before = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        original(self, epoch)
        after = dict(self.model.named_parameters())
        passes.append({n for n in before if not torch.equal(before[n], after[n])})

    monkeypatch.setattr(module.MMIMTraining, "likelihood_pass", recorded)
    method, initial = fit(small)
    assert len(passes) == 2  # one per epoch
    mmilb = {n for n in initial if n.startswith(("mi_tv.", "mi_ta.")) and "entropy_prj" not in n}
    assert passes[0] == mmilb  # the MMILB MLPs alone; entropy_prj has no gradient in this pass
    trained = method.model_.state_dict()
    assert all(torch.equal(trained[n], initial[n]) for n in initial if "entropy_prj" in n)  # never trained, as released
    assert all(not torch.equal(trained[n], initial[n]) for n in initial if n.startswith(("fusion_prj.", "cpc_z", "acoustic_enc.linear")))
    assert len(method.likelihood_history_) == 2


def test_the_optimisers_groups_rates_and_the_plateau(small, monkeypatch):
    import imsa.methods.phase as phase_module

    seen = {}
    run = phase_module.run_training

    def spying(model, optimizer, **kwargs):
        seen["groups"] = [(g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
        seen["ids"] = {id(p) for g in optimizer.param_groups for p in g["params"]}
        seen["plateau"], seen["grad_clip"], seen["extra"] = kwargs["plateau"], kwargs["grad_clip"], kwargs["extra_state"]
        return run(model, optimizer, **kwargs)

    monkeypatch.setattr(phase_module, "run_training", spying)
    method, _ = fit(small, lr=2e-3, weight_decay=1e-2, mmilb_lr=3e-3, mmilb_weight_decay=1e-3, plateau_patience=5)
    net = method.model_
    mmilb = {id(p) for p in net.mmilb_parameters()}
    assert seen["groups"] == [(2e-3, 1e-2, len(list(net.parameters())) - len(mmilb))]  # no text encoder: one group
    assert not seen["ids"] & mmilb
    assert seen["plateau"] == (0.5, 5) and seen["grad_clip"] == 1.0
    mmilb_optimizer = seen["extra"].optimizer
    assert [(g["lr"], g["weight_decay"]) for g in mmilb_optimizer.param_groups] == [(3e-3, 1e-3)]
    assert {id(p) for g in mmilb_optimizer.param_groups for p in g["params"]} == mmilb
    steps = math.ceil(len(small["train"]) / 16)
    stepped = [s["step"] for s in mmilb_optimizer.state.values()]
    assert max(stepped) == 2 * steps  # every batch of both epochs' likelihood passes


@pytest.mark.parametrize(
    "protocol",
    [Protocol("frames", rate=0.6), Protocol("random", rate=0.5), Protocol("mr", rate=0.5), Protocol("noise", rate=0.5, noise="erase")],
    ids=lambda p: p.kind,
)
def test_every_protocol_trains_to_finite_weights_and_scores(small, protocol):
    torch.manual_seed(0)
    method = create_method("mmim", **{"epochs": 2, "patience": None, "batch_size": 16, **TINY})
    method.fit(small["train"], small["valid"], protocol=protocol, seed=0)
    assert all(torch.isfinite(p).all() for p in method.model_.parameters())
    scores = method.evaluate(small["test"], protocol.settings(small["test"]))
    assert scores and all(math.isfinite(metrics["mae"]) for metrics in scores.values())


def test_mmilb_fraction_and_contrast(small):
    steps = math.ceil(len(small["train"]) / 16)
    method, _ = fit(small, epochs=1, mmilb_fraction=0.5)
    optimizer_steps = max(int(s["step"]) for s in method.training_.optimizer.state.values())
    assert optimizer_steps == math.ceil(steps * 0.5)  # batches i with i / n < 0.5
    off, initial = fit(small, epochs=1, contrast=False)
    trained = off.model_.state_dict()
    assert off.likelihood_history_ == []
    assert all(torch.equal(trained[n], initial[n]) for n in initial if n.startswith("mi_"))  # no likelihood pass


def test_two_modalities_and_refusals(sequences):
    data = text_and_audio(sequences[0])
    net = tiny(data.dims)
    assert net.pairs == (("l", "a"),) and not hasattr(net, "mi_tv") and not hasattr(net, "visual_enc") and not hasattr(net, "cpc_zv")
    assert net.fusion_prj.linear_1.in_features == data.dims["l"] + 4
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        assert net(batch).prediction.shape == (4,)
    audio_video = Dataset(
        name="no-text",
        modalities=("a", "v"),
        features={m: sequences[0].features[m] for m in ("a", "v")},
        lengths={m: sequences[0].lengths[m] for m in ("a", "v")},
        labels=sequences[0].labels,
        utterance_ids=sequences[0].utterance_ids,
        video_ids=sequences[0].video_ids,
        folds=sequences[0].folds,
    )
    with pytest.raises(ConfigError, match="add_va=true"):
        MMIM().data_spec(audio_video)
    assert MMIM(add_va=True).data_spec(audio_video).modalities == ("a", "v")
    assert tiny(audio_video.dims, add_va=True).pairs == (("v", "a"),)
    with pytest.raises(ConfigError, match="time sequences"):
        MMIM().data_spec(imsa.load_dataset("synthetic", num_videos=6))
    with pytest.raises(ConfigError, match="audio_out"):
        MMIMConfig(audio_out=3)
    with pytest.raises(ConfigError, match="mmilb_fraction"):
        MMIMConfig(mmilb_fraction=0.0)
    with pytest.raises(ConfigError, match="mmilb_activation"):
        MMIMConfig(mmilb_activation="Swish")


def test_classification_trains_without_the_entropy():
    data = imsa.load_dataset("synthetic", num_videos=12, sequence_length=5, num_classes=3, seed=0)
    split = data.split(0)
    method, initial = fit(split)
    assert method.training_.memory.slots == []  # no memory: no entropy term
    assert method.model_(tensor_cache(data).gather(np.arange(4))).prediction.shape == (4, 3)
    trained = method.model_.state_dict()
    assert not torch.equal(trained["mi_tv.mlp_mu.0.weight"], initial["mi_tv.mlp_mu.0.weight"])  # the likelihood pass ran


def test_a_token_fit_fine_tunes_the_text_encoder_in_the_main_optimiser(tmp_path, tiny_bert, token_mmsa, monkeypatch):
    import imsa.methods.phase as phase_module

    data = imsa.load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    seen = {}
    run = phase_module.run_training

    def spying(model, optimizer, **kwargs):
        seen["groups"] = [(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups]
        return run(model, optimizer, **kwargs)

    monkeypatch.setattr(phase_module, "run_training", spying)
    method = MMIM(epochs=1, batch_size=8, text_encoder=str(tiny_bert), **TINY).fit(split["train"], split["valid"], seed=0)
    net, c = method.model_, method.config
    assert [(lr, wd) for lr, wd, _ in seen["groups"]] == [(c.text_lr, c.text_weight_decay), (c.lr, c.weight_decay)]
    assert seen["groups"][0][2] == {id(p) for p in net.text_model.parameters()}
    assert net.mi_tv.mlp_mu[0].in_features == 16  # the encoder's width
    batch = tensor_cache(data).gather(split["test"].indices[:4])
    net.eval()
    with torch.no_grad():
        states = net.text_model(batch.tokens, batch.padding["l"].long())
        torch.testing.assert_close(net.vectors(batch)["l"], states[:, 0])
        absent = batch.with_present(torch.tensor([[False, True, True]] * 4))
        assert (net.vectors(absent)["l"] == 0).all()


def test_packaged_configs_are_mmsas_and_name_their_source():
    folder = resources.files("imsa") / "configs" / "mmim"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == ["mosei.yaml", "mosi.yaml", "sims.yaml"]
    for name in ("mosi", "mosei", "sims"):
        assert (folder / f"{name}.yaml").read_text().startswith("# Source: MMSA (thuiar/MMSA at a94e65d), src/MMSA/config/config_regression.json, mmim")
    assert build_config(MMIMConfig, packaged_config("mmim", name="mosi").values) == MMIMConfig()
    assert build_config(MMIMConfig, packaged_config("mmim", name="sims").values) == MMIMConfig()
    assert build_config(MMIMConfig, packaged_config("mmim", name="mosei").values) == MMIMConfig(mmilb_fraction=0.5)
    space = yaml.safe_load((resources.files("imsa") / "configs" / "spaces" / "mmim.yaml").read_text())
    assert set(space) <= {f.name for f in dataclasses.fields(MMIMConfig)} and len(space) == 20
    assert space["alpha"] == {"choices": [0.0, 0.1, 0.2, 0.3, 0.4]} and space["fusion_hidden"] == {"choices": [64, 128, 256, 512]}


def test_the_mmilb_optimiser_is_checkpointed_with_the_phase(tmp_path, small, monkeypatch):
    import imsa.methods.mmim as module
    from imsa.training import RunContext

    context = RunContext(workdir=tmp_path, checkpoint_interval=0)
    first = create_method("mmim", epochs=2, patience=None, batch_size=16, **TINY).fit(small["train"], small["valid"], seed=0, context=context)
    monkeypatch.setattr(module.MMIMTraining, "likelihood_pass", lambda *args: pytest.fail("the finished phase was trained again"))
    restored = create_method("mmim", epochs=2, patience=None, batch_size=16, **TINY).fit(small["train"], small["valid"], seed=0, context=context)
    assert restored.likelihood_history_ == first.likelihood_history_ and len(first.likelihood_history_) == 2
    a, b = first.training_.optimizer.state_dict(), restored.training_.optimizer.state_dict()
    assert all(torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"]) for k in a["state"])
