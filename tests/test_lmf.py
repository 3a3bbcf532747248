"""LMF: the released network's size and structure, on synthetic data (fidelity to MMSA's module: docs/methods/lmf.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import imsa
from imsa.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods import create_method
from imsa.methods.lmf import LMFConfig, LMFNet
from imsa.methods.spec import DataSpec
from imsa.testing import text_and_audio


def network(dims=None, task="regression", output_dim=1, **config):
    dims = dims or {"l": 768, "a": 5, "v": 20}
    spec = DataSpec(modalities=tuple(dims), dims=dims, sequence={m: m == "l" for m in dims}, task=task, output_dim=output_dim)
    c = LMFConfig(**config)
    return LMFNet(spec, hidden=c.hidden, rank=c.rank, dropouts=c.dropouts)


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's LMF on MOSI (768-d text, 5-d audio, 20-d video; hidden 128/16/128, so text_out 64; rank 3) has
    # 505,071 parameters, as here; its trainer's Adam takes 505,067 of them, all but the fusion weights (3) and bias (1).
    net = network()
    assert sum(p.numel() for p in net.parameters()) == 505_071
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 505_067
    assert [tuple(f.shape) for f in net.factors()] == [(3, 17, 1), (3, 129, 1), (3, 65, 1)]
    assert list(net.state_dict())[:5] == ["audio_factor", "video_factor", "text_factor", "fusion_weights", "fusion_bias"]


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6)
    return data, tensor_cache(data).gather(np.arange(12))


def tiny(data, **config):
    return network(data.dims, **{"hidden": (8, 4, 5), "rank": 3, **config}).eval()


def test_the_low_rank_fusion_is_the_full_tensor_fusion_with_a_rank_r_weight(sequences):
    # sum_r w_r prod_m ([1, z_m] W_m[r]) + b  ==  <[1, z_a] x [1, z_v] x [1, z_l], sum_r w_r W_a[r] x W_v[r] x W_l[r]> + b
    data, batch = sequences
    for task, out in (("regression", 1), ("classification", 3)):
        net = tiny(data)
        if task == "classification":
            spec = DataSpec(modalities=data.modalities, dims=data.dims, sequence={m: True for m in data.modalities}, task=task, output_dim=out)
            net = LMFNet(spec, hidden=(8, 4, 5), rank=3, dropouts=(0.3, 0.3)).eval()
        with torch.no_grad():
            net.fusion_bias.normal_()  # not zero, so that the bias is seen added
            prediction = net(batch).prediction
            z = {m: torch.cat([torch.ones(12, 1), net.encode(batch, m)], dim=1) for m in ("a", "v", "l")}
            a, v, l = net.factors()
            weight = torch.einsum("r,rio,rjo,rko->ijko", net.fusion_weights[0], a, v, l)
            expected = torch.einsum("bi,bj,bk,ijko->bo", z["a"], z["v"], z["l"], weight) + net.fusion_bias
        assert [z[m].shape[1] for m in ("a", "v", "l")] == [4 + 1, 5 + 1, 8 // 2 + 1]  # the text encoding has half the LSTM's width
        torch.testing.assert_close(prediction, expected.squeeze(-1) if task == "regression" else expected)


def test_the_output_is_unbounded(sequences):
    data, batch = sequences
    net = tiny(data)
    with torch.no_grad():
        net.fusion_bias.fill_(10.0)
        assert net(batch).prediction.min() > 3  # no squashing into (-3, 3), unlike TFN


def test_padding_is_never_read(sequences):
    data, batch = sequences
    net = tiny(data)
    inputs = {}
    for m in data.modalities:
        x = batch.inputs[m].clone()
        assert (~batch.padding[m]).any()
        x[~batch.padding[m]] = 100.0  # garbage in the padding
        inputs[m] = x
    with torch.no_grad():
        clean, garbage = net(batch), net(dataclasses.replace(batch, inputs=inputs))
    torch.testing.assert_close(clean.prediction, garbage.prediction)
    torch.testing.assert_close(clean.feature, garbage.feature)


def test_a_missing_modality_enters_as_zeros_whatever_its_values(sequences):
    data, batch = sequences
    net = tiny(data)
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(data.modalities):
        present = torch.ones_like(batch.present)
        present[:6, k] = False  # missing for half the batch
        masked = batch.with_present(present)
        noise, zero = masked.inputs[missing].clone(), masked.inputs[missing].clone()
        noise[:6] = 1e3 * torch.randn(noise[:6].shape, generator=generator)  # values where the mask says missing
        zero[:6] = 0.0
        noisy, zeros = (dataclasses.replace(masked, inputs={**masked.inputs, missing: x}) for x in (noise, zero))
        with torch.no_grad():
            out, on_zeros, complete = net(noisy).prediction, net(zeros).prediction, net(batch).prediction
        torch.testing.assert_close(out, on_zeros)  # the noise never reaches the model where the mask says missing
        torch.testing.assert_close(out[6:], complete[6:])  # and the present rows read their own values
        assert not torch.allclose(out[:6], complete[:6])


def test_two_modalities_and_bad_configs(sequences):
    net = network({"l": 10, "a": 4}, hidden=(6, 3, 5), rank=2)
    assert [tuple(f.shape) for f in net.factors()] == [(2, 4, 1), (2, 4, 1)] and not hasattr(net, "video_factor")
    data = text_and_audio(sequences[0])
    batch = tensor_cache(data).gather(np.arange(4))
    with torch.no_grad():
        assert network(data.dims, hidden=(8, 4, 4), rank=2).eval()(batch).prediction.shape == (4,)
    with pytest.raises(ConfigError, match="three positive integers"):
        LMFConfig(hidden=(128, 16))
    with pytest.raises(ConfigError, match="at least 2"):
        LMFConfig(hidden=(1, 16, 128))
    with pytest.raises(ConfigError, match="text and post-fusion ones have no effect"):
        LMFConfig(dropouts=(0.3, 0.3, 0.3, 0.3))
    with pytest.raises(ConfigError, match="two probabilities"):
        LMFConfig(dropouts=(0.3, 1.5))


def test_a_training_batch_of_one_utterance(sequences):
    data, batch = sequences
    net = tiny(data).train()
    one = batch.select(torch.tensor([0]))
    assert net(one).prediction.shape == (1,)


def test_training_leaves_the_fusion_weights_and_bias_and_trains_the_factors_at_their_own_rate():
    data = imsa.load_dataset("synthetic", num_videos=20, min_utterances=3, max_utterances=6, seed=0)
    split = data.split(0)
    method = create_method("lmf", epochs=3, hidden=(8, 4, 4), rank=2, patience=None)
    torch.manual_seed(0)
    initial = method.build(method.data_spec(data))  # fit seeds torch with its seed before building
    method.fit(split["train"], split["valid"], seed=0)
    trained = method.model_
    assert torch.equal(trained.fusion_weights, initial.fusion_weights) and torch.equal(trained.fusion_bias, initial.fusion_bias)
    assert all(not torch.equal(a, b) for a, b in zip(trained.factors(), initial.factors()))
    groups = method.phase_options(trained)["param_groups"]
    assert groups[0]["lr"] == method.config.factor_lr and groups[0]["params"] == trained.factors()
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for name, p in trained.named_parameters() if name not in ("fusion_weights", "fusion_bias")}
