"""MulT: the released backbone's parameter counts, position table, causal mask, padding,
sequence-only data and the aligned synthetic shapes (docs/imder.md 3.5-3.8, docs/dicmor.md 3.6)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from imsa.batch import iterate_batches
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError
from imsa.methods.registry import method_class
from imsa.methods.spec import DataSpec
from imsa.nn.mult import TransformerEncoder, sinusoidal_table

MulT = method_class("mult")


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "dims, layers, parts",
    [
        ({"l": 768, "a": 5, "v": 20}, 4, (76_128, 50_880, 200_064, 74_305, 1_055_905)),  # IMDer MOSI
        ({"l": 768, "a": 74, "v": 35}, 6, (84_192, 76_288, 300_032, 74_305, 1_516_321)),  # IMDer MOSEI
    ],
)
def test_parameter_counts_are_imders_backbone(dims, layers, parts):
    spec = DataSpec(modalities=("l", "a", "v"), dims=dims, sequence={m: True for m in dims}, task="regression", output_dim=1)
    net = MulT(depth=layers).build(spec)
    projections, crossmodal, memory, head, total = parts
    assert count(net.projections) == projections
    assert all(count(block) == crossmodal for block in net.mult.crossmodal.values()) and len(net.mult.crossmodal) == 6
    assert all(count(block) == memory for block in net.mult.memory.values())
    assert count(net.mult.proj1) + count(net.mult.proj2) + count(net.mult.out) == head
    assert count(net) == total


def test_two_modalities_use_one_crossmodal_block_per_target():
    dims = {"l": 12, "a": 6}
    net = MulT(dim=8, heads=2).build(DataSpec(modalities=("l", "a"), dims=dims, sequence={m: True for m in dims}, task="classification", output_dim=3))
    assert sorted(net.mult.crossmodal) == ["a_with_l", "l_with_a"] and net.mult.proj1.in_features == 2 * 8


def test_position_table_is_fairseqs():
    table = sinusoidal_table(5, 8)
    assert torch.equal(table[0], torch.zeros(8))
    rate = math.log(10000) / 3
    for position in (1, 4):
        angles = position * torch.exp(torch.arange(4.0) * -rate)
        torch.testing.assert_close(table[position], torch.cat([torch.sin(angles), torch.cos(angles)]))


def test_causal_mask_and_the_channel_0_padding_rule():
    torch.manual_seed(0)
    encoder = TransformerEncoder(8, 2, 2, causal=True).eval()
    x = torch.randn(1, 6, 8)
    later = x.clone()
    later[0, 4:] += 3.0 * torch.randn(2, 8)  # not a constant shift: LayerNorm would remove that
    with torch.no_grad():
        torch.testing.assert_close(encoder(later)[0, :4], encoder(x)[0, :4])  # step i never sees j > i
        assert not torch.allclose(encoder(later)[0, 4:], encoder(x)[0, 4:])
        zero_first = x.clone()
        zero_first[0, 2, 0] = 0.0  # channel 0 exactly 0: that step gets no position
        embedded = encoder.embed(zero_first)
        torch.testing.assert_close(embedded[0, 2], math.sqrt(8) * zero_first[0, 2])


def test_with_padding_mask_an_utterance_does_not_depend_on_its_batchs_padding(padded_sequences):
    dims = {"l": 6, "a": 3, "v": 4}
    spec = DataSpec(modalities=tuple(dims), dims=dims, sequence={m: True for m in dims}, task="regression", output_dim=1)
    torch.manual_seed(0)
    masked = MulT(dim=8, heads=2, depth=2, padding_mask=True).build(spec).eval()
    released = MulT(dim=8, heads=2, depth=2).build(spec).eval()
    alone = padded_sequences([5], width=5)
    pad = torch.nn.functional.pad
    padded = dataclasses.replace(
        alone, inputs={m: pad(x, (0, 0, 0, 4)) for m, x in alone.inputs.items()}, padding={m: pad(p, (0, 4)) for m, p in alone.padding.items()}
    )  # the same utterance, 4 padded steps more
    with torch.no_grad():
        torch.testing.assert_close(masked(padded).prediction, masked(alone).prediction, atol=1e-5, rtol=0)
        released.load_state_dict(masked.state_dict())
        assert not torch.allclose(released(padded).prediction, released(alone).prediction, atol=1e-5)  # as released: the padding counts


def test_mult_refuses_utterance_vectors_and_short_sequences(synthetic):
    split = synthetic.split(0)
    with pytest.raises(ConfigError, match=r"mult reads time sequences.*aligned_50\.pkl"):
        MulT(epochs=1).fit(split["train"], split["valid"])
    data = load_dataset("synthetic", num_videos=10, sequence_length=2)
    split = data.split(0)
    with pytest.raises(ConfigError, match="fewer than conv_kernel=3"):
        MulT(epochs=1).fit(split["train"], split["valid"])


def test_aligned_synthetic_sequences_have_mosis_and_moseis_shapes():
    for like, dims in (("mosi", (768, 5, 20)), ("mosei", (768, 74, 35))):
        data = load_dataset("synthetic", num_videos=6, like=like)
        assert tuple(data.features[m].shape[1:] for m in "lav") == tuple((50, d) for d in dims)
        assert np.array_equal(data.lengths["l"], data.lengths["a"]) and np.array_equal(data.lengths["a"], data.lengths["v"])
    unaligned = load_dataset("synthetic", num_videos=6, sequence_length=5)
    assert not np.array_equal(unaligned.lengths["l"], unaligned.lengths["a"])


def test_mult_learns_on_aligned_sequences():
    data = load_dataset("synthetic", num_videos=30, sequence_length=8, aligned=True, seed=1)
    split = data.split(0)
    method = MulT(dim=16, heads=4, depth=2, epochs=20, lr=3e-3).fit(split["train"], split["valid"], seed=0)
    test = split["test"]
    predictions = np.concatenate([method.predict(b).prediction.numpy() for b in iterate_batches(test, 64)])
    mae = float(np.mean(np.abs(predictions - test.labels)))
    baseline = float(np.mean(np.abs(test.labels - split["train"].labels.mean())))
    assert mae < 0.8 * baseline, (mae, baseline)


TINY_MULT = {**method_class("mult").tiny_config, "batch_size": 8}


def test_a_fine_tuned_text_encoder_reads_the_token_ids(tmp_path, tiny_bert, token_mmsa):
    """``text_encoder``: the text is the encoder's states of the file's ids (the encoder
    trains); a dropped word reaches it as the tokenizer's unknown token (1 here, not 100)."""
    from imsa.batch import tensor_cache
    from imsa.protocols import Protocol

    data = load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    before = {
        k: v.clone() for k, v in method_class("mult")(**TINY_MULT, text_encoder=str(tiny_bert)).build(DataSpec.of(data)).text_encoder.state_dict().items()
    }
    method = method_class("mult")(**TINY_MULT, text_encoder=str(tiny_bert), epochs=2, lr=1e-2).fit(split["train"], split["valid"], seed=0)
    net = method.model_.eval()
    assert net.projections.convs["l"].in_channels == 16  # the encoder's width, not the 6-d features
    assert any(not torch.equal(before[k], v) for k, v in net.text_encoder.state_dict().items())  # fine-tuned
    seen = []
    forward = net.text_encoder.forward
    net.text_encoder.forward = lambda ids, attention: seen.append(ids.clone()) or forward(ids, attention)
    rows = split["test"].indices
    half = Protocol("frames", rate=0.5).settings(split["test"])["frames=0.5"]
    batch = tensor_cache(data).gather(rows).with_frames({m: torch.from_numpy(half.frames[m][rows]) for m in data.modalities})
    with torch.no_grad():
        net(batch)
    raw, keep = torch.as_tensor(data.annotations["text_bert"][rows, 0]), torch.from_numpy(half.frames["l"][rows])
    assert (~keep & batch.padding["l"]).any() and torch.equal(seen[-1], torch.where(keep, raw, torch.ones_like(raw)))
    no_ids = load_dataset("synthetic", num_videos=6, sequence_length=6, aligned=True).split(0)
    with pytest.raises(ConfigError, match="text_bert"):
        method_class("mult")(**TINY_MULT, text_encoder=str(tiny_bert)).fit(no_ids["train"], no_ids["valid"])


@pytest.mark.parametrize("name", ["dicmor", "imder"])
def test_recovery_methods_encode_token_ids_and_freeze_the_encoder_for_recovery(tmp_path, tiny_bert, token_mmsa, name):
    """DiCMoR and IMDer with ``text_encoder``: the backbone reads the encoder's states of the ids
    (fine-tuned with it on complete data), and the recovery phase leaves the encoder as it was."""
    from imsa.protocols import Protocol

    data = load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    cls = method_class(name)
    method = cls(**{**cls.tiny_config, "batch_size": 8, "epochs": 2}, text_encoder=str(tiny_bert)).fit(
        split["train"], split["valid"], protocol=Protocol("random", rate=0.5), seed=0
    )
    net = method.model_
    models = list(net.models.values()) if hasattr(net, "models") else [net]
    assert all(m.backbone.text_encoder is not None and not any(p.requires_grad for p in m.backbone.text_encoder.parameters()) for m in models)
    predictions = next(iter(method.predict_settings(split["test"], Protocol("random", rate=0.5).settings(split["test"])).values()))
    assert np.isfinite(predictions).all()
    assert cls.reads_text_tokens(method.config)
