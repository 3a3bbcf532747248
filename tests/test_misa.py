"""MISA: the released network's size and structure, its losses and its recipe, on synthetic data
(fidelity to MMSA's module: docs/methods/misa.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import imsa
from imsa.batch import tensor_cache
from imsa.data.dataset import Dataset
from imsa.errors import ConfigError
from imsa.methods import create_method, method_class
from imsa.methods.misa import BiLSTMEncoder, MISAConfig, MISANet, misa_losses
from imsa.methods.spec import DataSpec
from imsa.nn.layers import reverse_gradient
from imsa.nn.subspace_losses import central_moment_discrepancy, soft_orthogonality
from imsa.testing import text_and_audio


def network(dims=None, task="regression", output_dim=1, **config):
    dims = dims or {"l": 768, "a": 5, "v": 20}
    spec = DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task=task, output_dim=output_dim)
    return MISANet(spec, MISAConfig(**config))


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's MISA at MOSI's widths (768-d text, 5-d audio, 20-d video; hidden 128), BERT excluded, has 1,138,033
    # parameters; 3,072 of them are a text layer norm that is never called and 516 a shared/private discriminator
    # whose output no loss reads. imsa leaves those two out: 1,134,445, every one of which the released Adam trains.
    net = network()
    assert count(net) == 1_134_445
    assert count(net.encoders["a"]) == 1_180 and count(net.encoders["v"]) == 16_720  # two BiLSTMs as wide as the input, a layer norm
    assert count(net.fusion) == 593_024  # one Transformer layer: width 128, feed-forward 2048
    assert [net.project[m][0].in_features for m in net.order] == [768, 80, 20]  # text, 4 x video, 4 x audio
    assert net.order == ["l", "v", "a"] and not hasattr(net, "discriminator")
    assert count(network(similarity="adversarial")) == 1_134_445 + 128 * 128 + 128 + 128 * 3 + 3


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6, aligned=True)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    return network(data.dims, **{"hidden": 8, **config}).eval()


def test_the_lstm_encoding_is_both_lstms_final_states_in_both_directions_over_the_real_steps():
    torch.manual_seed(0)
    encoder = BiLSTMEncoder(3).eval()
    lengths = [5, 2, 4]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    x = torch.randn(3, 5, 3) * mask[..., None]
    with torch.no_grad():
        encoded = encoder(x, mask)
        for row, n in enumerate(lengths):  # each utterance alone, unpadded, through plain nn.LSTMs with the same weights
            out1, (h1, _) = encoder.rnn1.lstm(x[row : row + 1, :n])
            _, (h2, _) = encoder.rnn2.lstm(encoder.norm(out1))
            expected = torch.cat([h1[0], h2[0], h1[1], h2[1]], dim=1)[0]  # [h1 fwd, h2 fwd, h1 bwd, h2 bwd]
            torch.testing.assert_close(encoded[row], expected)
    assert encoded.shape == (3, 12)


def test_padding_is_never_read(sequences):
    data, batch = sequences
    lengths = torch.tensor([6, 3, 2, 5, 4, 6, 1, 2, 3, 4, 5, 6])  # shorten the utterances; the rest is padding
    padding = {m: torch.arange(6)[None] < lengths[:, None] for m in data.modalities}
    short = dataclasses.replace(batch, padding=padding, inputs={m: x * padding[m][..., None] for m, x in batch.inputs.items()})
    garbage = dataclasses.replace(short, inputs={m: torch.where(padding[m][..., None], x, torch.full_like(x, 100.0)) for m, x in short.inputs.items()})
    net = tiny(data)
    with torch.no_grad():
        clean, noisy = net(short), net(garbage)
    torch.testing.assert_close(clean.prediction, noisy.prediction)
    torch.testing.assert_close(clean.feature, noisy.feature)


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:6, k] = False  # missing for half the batch
        masked = batch.with_present(present)
        noise, zero = masked.inputs[missing].clone(), masked.inputs[missing].clone()
        noise[:6] = 1e3 * torch.randn(noise[:6].shape, generator=generator)
        zero[:6] = 0.0
        noisy, zeros = (dataclasses.replace(masked, inputs={**masked.inputs, missing: x}) for x in (noise, zero))
        with torch.no_grad():
            out, on_zeros, complete = net(noisy).prediction, net(zeros).prediction, net(batch).prediction
            if missing == "l":  # the text's utterance vector is zero
                assert not net.utterance(noisy, "l")[:6].any()
        torch.testing.assert_close(out, on_zeros)
        torch.testing.assert_close(out[6:], complete[6:])
        assert not torch.allclose(out[:6], complete[:6])


def test_the_difference_loss_is_the_squared_correlation_of_the_centred_unit_rows():
    torch.manual_seed(0)
    x, y = torch.randn(10, 4), torch.randn(10, 3)
    xc, yc = x - x.mean(0), y - y.mean(0)
    xn, yn = xc / (xc.norm(dim=1, keepdim=True) + 1e-6), yc / (yc.norm(dim=1, keepdim=True) + 1e-6)
    expected = sum(float((xn[:, i] @ yn[:, j]) ** 2) for i in range(4) for j in range(3)) / 12
    assert float(soft_orthogonality(x, y)) == pytest.approx(expected, rel=1e-5)
    assert float(soft_orthogonality(x, y)) == pytest.approx(float(soft_orthogonality(y, x)), rel=1e-6)  # symmetric
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])  # codes in units the other never uses
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 5.0]])
    assert float(soft_orthogonality(a, b)) == pytest.approx(0.0, abs=1e-12)  # centring leaves rounding residue on some processors
    one = torch.randn(1, 4, requires_grad=True)
    loss = soft_orthogonality(one, torch.randn(1, 4))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.isfinite(one.grad).all()  # a batch of one: nothing to correlate


def test_the_cmd_is_the_distance_of_the_mean_plus_those_of_the_central_moments():
    x = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # mean (0.5, 0.5); every centred value +-0.5
    y = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])  # same mean, no spread
    # |mean difference| = 0; the k-th central moments of x are (0.5^k, 0.5^k) for even k, 0 for odd k; y's all 0
    expected = sum(np.sqrt(2) * 0.5**k for k in (2, 4))
    assert float(central_moment_discrepancy(x, y, 5)) == pytest.approx(expected)
    assert float(central_moment_discrepancy(x, y, 2)) == pytest.approx(np.sqrt(2) * 0.25)
    assert float(central_moment_discrepancy(x, x + 1.0, 5)) == pytest.approx(np.sqrt(2))  # a shift moves the mean only
    one = torch.rand(1, 3, requires_grad=True)
    loss = central_moment_discrepancy(one, torch.rand(1, 3))
    loss.backward()
    assert torch.isfinite(one.grad).all()  # equal (zero) higher moments: gradient 0, not NaN


def test_the_training_loss_is_mse_plus_the_weighted_auxiliary_losses(sequences):
    data, batch = sequences
    method = create_method("misa", hidden=8, diff_weight=0.1, sim_weight=0.3, recon_weight=1.0)
    method.spec_ = DataSpec.of(data)
    net = method.build(method.spec_).eval()
    with torch.no_grad():
        out = net.run(batch)
        aux = misa_losses(out, net.order)
        expected = F.mse_loss(out["prediction"], batch.labels) + 0.1 * aux["difference"] + 0.3 * aux["cmd"] + 1.0 * aux["reconstruction"]
        torch.testing.assert_close(method.loss(net, batch), expected)
        # the six difference pairs, summed; three CMD pairs and three reconstructions, averaged
        p, s = out["private"], out["shared"]
        pairs = [("l", "l"), ("v", "v"), ("a", "a")]
        difference = sum(soft_orthogonality(p[m], s[n]) for m, n in pairs) + sum(
            soft_orthogonality(p[m], p[n]) for m, n in (("a", "l"), ("a", "v"), ("l", "v"))
        )
        torch.testing.assert_close(aux["difference"], difference)
        cmd = (central_moment_discrepancy(s["l"], s["v"]) + central_moment_discrepancy(s["l"], s["a"]) + central_moment_discrepancy(s["a"], s["v"])) / 3
        torch.testing.assert_close(aux["cmd"], cmd)
        recon = sum(F.mse_loss(net.recon[m](p[m] + s[m]), out["projected"][m]) for m in "lva") / 3
        torch.testing.assert_close(aux["reconstruction"], recon)
    assert set(aux) == {"difference", "cmd", "reconstruction"}


def test_the_adversarial_similarity_reverses_the_discriminators_gradient_into_the_shared_codes(sequences):
    data, batch = sequences
    net = tiny(data, similarity="adversarial", reverse_grad_weight=0.5)
    out = net.run(batch)
    shared = {m: s.detach().requires_grad_() for m, s in out["shared"].items()}
    reversed_logits = {m: net.discriminator(reverse_gradient(shared[m], 0.5)) for m in net.order}
    loss = misa_losses({**out, "shared": shared, "domain": reversed_logits}, net.order)["adversarial"]
    plain = {m: s.detach().requires_grad_() for m, s in out["shared"].items()}
    labels = torch.cat([torch.full((12,), k) for k in range(3)])  # text 0, video 1, audio 2, as released
    reference = F.cross_entropy(torch.cat([net.discriminator(plain[m]) for m in net.order]), labels)
    torch.testing.assert_close(loss, reference)
    loss.backward(), reference.backward()
    for m in net.order:
        torch.testing.assert_close(shared[m].grad, -0.5 * plain[m].grad)
    method = create_method("misa", hidden=8, similarity="adversarial", epochs=2)
    split = data.split(0)
    method.fit(split["train"], split["valid"], seed=0)  # trains (the released trainer crashes on this path)
    assert np.isfinite(method.phases_[0].history[-1]["loss"])


def test_two_modalities_and_bad_configs(sequences):
    net = network({"l": 10, "a": 4}, hidden=6)
    assert net.order == ["l", "a"] and net.head[0].in_features == 4 * 6 and net.head[3].in_features == 2 * 6
    data = text_and_audio(sequences[0])
    batch = tensor_cache(data).gather(np.arange(5))
    small = network(data.dims, hidden=8).eval()
    with torch.no_grad():
        out = small.run(batch)
        assert out["prediction"].shape == (5,) and out["feature"].shape == (5, 4 * 8)
        assert set(misa_losses(out, small.order)) == {"difference", "cmd", "reconstruction"}
    full = sequences[0]
    only_text = Dataset(
        name="text-only",
        modalities=("l",),
        features={"l": full.features["l"]},
        lengths={"l": full.lengths["l"]},
        labels=full.labels,
        utterance_ids=full.utterance_ids,
        video_ids=full.video_ids,
        folds=full.folds,
    )
    with pytest.raises(ConfigError, match="two or three of text, audio and video"):
        create_method("misa").data_spec(only_text)
    vectors = imsa.load_dataset("synthetic", num_videos=6)
    with pytest.raises(ConfigError, match="reads time sequences"):
        create_method("misa").data_spec(vectors)
    with pytest.raises(ConfigError, match="must be even"):
        MISAConfig(hidden=7)
    with pytest.raises(ConfigError, match="similarity"):
        MISAConfig(similarity="adversary")
    with pytest.raises(ConfigError, match="sp_weight"):
        create_method("misa", sp_weight=1.0)


def test_a_training_batch_of_one_utterance_has_finite_gradients(sequences):
    data, batch = sequences
    method = create_method("misa", hidden=8)
    method.spec_ = DataSpec.of(data)
    net = method.build(method.spec_).train()
    loss = method.loss(net, batch.select(torch.tensor([0])))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_the_recipe_is_adam_value_clipping_and_two_batches_a_step(monkeypatch, sequences):
    import imsa.methods.phase as phase

    seen = {}
    train = phase.run_training

    def recording(model, optimizer, **kwargs):
        seen.update(kwargs, optimizer=optimizer)
        return train(model, optimizer, **kwargs)

    monkeypatch.setattr(phase, "run_training", recording)
    split = sequences[0].split(0)
    method = create_method("misa", hidden=8, epochs=1).fit(split["train"], split["valid"], seed=0)
    assert type(seen["optimizer"]) is torch.optim.Adam and seen["optimizer"].defaults["lr"] == 1e-4
    assert seen["optimizer"].defaults["weight_decay"] == 0.0 and seen["patience"] == 8
    assert (seen["grad_clip"], seen["clip_mode"], seen["accumulate"]) == (0.8, "value", 2)
    trained = {id(p) for g in seen["optimizer"].param_groups for p in g["params"]}
    assert trained == {id(p) for p in method.model_.parameters()}  # every parameter, at one rate


def test_a_fine_tuned_text_encoder_reads_the_token_ids(tmp_path, tiny_bert, token_mmsa):
    data = imsa.load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    method = method_class("misa")(hidden=8, batch_size=8, epochs=2, lr=1e-2, text_encoder=str(tiny_bert))
    before = {k: v.clone() for k, v in method.build(DataSpec.of(data)).text_encoder.state_dict().items()}
    method.fit(split["train"], split["valid"], seed=0)
    net = method.model_.eval()
    assert net.project["l"][0].in_features == 16  # the encoder's width, not the 6-d features
    assert any(not torch.equal(before[k], v) for k, v in net.text_encoder.state_dict().items())  # fine-tuned
    batch = tensor_cache(data).gather(split["test"].indices[:6])
    with torch.no_grad():
        states, mask = net.text_encoder.token_states(batch)
        torch.testing.assert_close(net.utterance(batch, "l"), net.text_encoder.pool(states, mask))  # mean over [CLS] ... [SEP]
        present = batch.present.clone()
        present[:3, 0] = False
        assert not net.utterance(batch.with_present(present), "l")[:3].any()  # a missing text is a zero vector
