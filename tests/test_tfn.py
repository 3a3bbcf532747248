"""TFN: the released network's size and structure, on synthetic data (fidelity to MMSA's module: docs/methods/tfn.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import imsa
from imsa.batch import tensor_cache
from imsa.errors import ConfigError
from imsa.methods.spec import DataSpec
from imsa.methods.tfn import TFNConfig, TFNNet


def network(dims=None, **config):
    dims = dims or {"l": 768, "a": 5, "v": 20}
    spec = DataSpec(modalities=tuple(dims), dims=dims, sequence={m: m == "l" for m in dims}, task="regression", output_dim=1)
    c = TFNConfig(**config)
    return TFNNet(spec, hidden=c.hidden, text_out=c.text_out, post_fusion_dim=c.post_fusion_dim, dropouts=c.dropouts, output_range=c.output_range)


def test_parameter_count_of_the_released_mosi_setting():
    # MMSA's TFN on MOSI (768-d text, 5-d audio, 20-d video; hidden 128/32/128, text_out 32, post-fusion 64):
    # 9,497,045 parameters of which two are its frozen output range and shift, so 9,497,043 trained.
    assert sum(p.numel() for p in network().parameters()) == 9_497_043
    assert network().post_fusion_layer_1.in_features == 33 * 129 * 33


@pytest.fixture(scope="module")
def sequences():
    data = imsa.load_dataset("synthetic", sequence_length=6)
    return data, tensor_cache(data).gather(np.arange(12))


def test_the_fused_tensor_holds_every_unimodal_and_bimodal_term(sequences):
    data, batch = sequences
    net = network(data.dims, hidden=(8, 4, 5), text_out=3, post_fusion_dim=8).eval()
    with torch.no_grad():
        fused = net(batch).feature.reshape(12, 5, 6, 4)  # (1 + audio) x (1 + video) x (1 + text)
        audio, video, text = (net.encode(batch, m) for m in ("a", "v", "l"))
    assert torch.all(fused[:, 0, 0, 0] == 1)
    torch.testing.assert_close(fused[:, 1:, 0, 0], audio)
    torch.testing.assert_close(fused[:, 0, 1:, 0], video)
    torch.testing.assert_close(fused[:, 0, 0, 1:], text)
    torch.testing.assert_close(fused[:, 1:, 1:, 1:], torch.einsum("ba,bv,bt->bavt", audio, video, text))


def test_padding_is_never_read_and_the_output_stays_in_range(sequences):
    data, batch = sequences
    net = network(data.dims, hidden=(8, 4, 4), text_out=4, post_fusion_dim=8).eval()
    text = batch.inputs["l"].clone()
    text[~batch.padding["l"]] = 100.0  # garbage in the padding
    assert (~batch.padding["l"]).any()
    noisy = dataclasses.replace(batch, inputs={**batch.inputs, "l": text})
    with torch.no_grad():
        clean, garbage = net(batch).prediction, net(noisy).prediction
    torch.testing.assert_close(clean, garbage)
    assert clean.min() > -3 and clean.max() < 3


def test_two_modalities_and_bad_configs():
    assert network({"l": 10, "a": 4}, hidden=(6, 3, 5), text_out=2).post_fusion_layer_1.in_features == 4 * 3
    with pytest.raises(ConfigError, match="three positive integers"):
        TFNConfig(hidden=(128, 32))
    with pytest.raises(ConfigError, match="three probabilities"):
        TFNConfig(dropouts=(0.3, 0.3, 1.5))
    with pytest.raises(ConfigError, match="the text one, has no effect"):
        TFNConfig(dropouts=(0.3, 0.3, 0.3, 0.5))  # MMSA's four


def test_dropouts_act_where_the_released_ones_do():
    net = network({"l": 10, "a": 4, "v": 6}, hidden=(6, 3, 5), text_out=2, dropouts=(0.1, 0.2, 0.4))
    assert (net.audio_subnet.drop.p, net.video_subnet.drop.p, net.post_fusion_dropout.p) == (0.1, 0.2, 0.4)
    assert net.text_subnet.dropout.p == 0.0  # MMSA's TextSubNet: no dropout with one LSTM layer
    with pytest.raises(ConfigError, match="low < high"):
        TFNConfig(output_range=(3.0, -3.0))


def test_a_training_batch_of_one_utterance(sequences):
    data, batch = sequences
    net = network(data.dims, hidden=(8, 4, 4), text_out=4, post_fusion_dim=8).train()
    one = batch.select(torch.tensor([0]))
    assert net(one).prediction.shape == (1,)
