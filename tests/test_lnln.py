"""LNLN: the spec's parameter counts (docs/lnln.md 3.4, 9.1), initial state, gradient reversal
placement, padding and batch independence, completeness labels, training noise, schedule,
behaviour on synthetic sequences and the frames protocol end to end."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import stats

from imsa.batch import iterate_batches, tensor_cache
from imsa.cli import main
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError, DataError
from imsa.experiments.models import load_method
from imsa.frames import FrameDrop, FramesInside, droppable
from imsa.methods.lnln import LNLN, completeness_labels
from imsa.methods.phase import TrainingMasks
from imsa.methods.spec import DataSpec
from imsa.missing import Complete
from imsa.nn.almt import EncoderLayer, HyperModalityLayer, TokenTransformer
from imsa.protocols import Protocol
from imsa.training import lr_factor

TINY = LNLN.tiny_config


def spec(dims, steps, output_dim=1, task="regression"):
    return DataSpec(("l", "a", "v"), dict(zip("lav", dims)), {m: True for m in "lav"}, task, output_dim, steps=dict(zip("lav", steps)))


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "dims, steps, overrides, expected",
    [
        ((768, 5, 20), (50, 375, 500), {}, 6_483_012),  # MOSI
        ((768, 74, 35), (50, 500, 500), {"fusion_depth": 4}, 7_102_404),  # MOSEI
        ((768, 33, 709), (39, 400, 55), {"fusion_depth": 4, "beta": 0.6}, 7_112_260),  # CH-SIMS
    ],
)
def test_parameter_counts_match_the_spec(dims, steps, overrides, expected):
    assert parameters(LNLN(**overrides).build(spec(dims, steps))) == expected


def test_encoding_by_length_groups_and_the_prefix_only_last_layer_change_nothing():
    """The speed-ups (no work on padded steps past a group's longest; the last layer's
    queries only at the positions read) give the padded full computation's values and
    gradients."""
    torch.manual_seed(0)
    encoder = TokenTransformer(20, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=16, prefix=3)
    lengths = torch.tensor([1, 20, 7, 3, 12, 5, 20, 2, 9])
    mask = torch.arange(20)[None] < lengths[:, None]
    x = torch.randn(9, 20, 16, requires_grad=True)
    full = encoder(x, mask)[:, :3]
    (grad_full,) = torch.autograd.grad(full.square().sum(), x)
    grouped = encoder.summarise(x, mask, keep=3, rows_per_group=4)
    (grad_grouped,) = torch.autograd.grad(grouped.square().sum(), x)
    assert grouped.shape == (9, 3, 16)
    torch.testing.assert_close(grouped, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_grouped, grad_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder(x, mask, keep=3), full, atol=1e-5, rtol=1e-5)


def test_block_counts_and_the_general_forms():
    assert parameters(EncoderLayer(128, 8, 64, 128)) == 296_320
    assert parameters(HyperModalityLayer(128, 2, 8, 16)) == 99_456
    net = LNLN().build(spec((768, 5, 20), (50, 375, 500)))
    assert parameters(net.discriminator) == 8_386 and parameters(net.completeness_head) == 8_321
    d, h, e, f, e_h = 16, 2, 8, 16, 4  # the spec's forms on a tiny variant
    assert parameters(EncoderLayer(d, h, e, f)) == 4 * d * h * e + 2 * d * f + f + 10 * d
    assert parameters(HyperModalityLayer(d, 2, h, e_h)) == 6 * d * h * e_h + 9 * d
    tiny = LNLN(**{**TINY, "disc_hidden": 64}).build(spec((7, 3, 5), (6, 6, 6)))
    assert parameters(tiny.completeness_head) == d * d // 2 + d + 1 and parameters(tiny.discriminator) == 64 * d + 194


def test_initial_state():
    net = LNLN().build(spec((768, 5, 20), (50, 375, 500)))
    hyper = net.hyper[0].norm_hyper(net.hyper_tokens)
    assert torch.equal(hyper, torch.zeros_like(hyper))  # LN of a constant row: exactly 0
    assert not net.encoders["a"].prefix.any() and not net.fusion.token.any()
    assert (net.proxy_tokens == 1).all() and (net.hyper_tokens == 1).all()
    assert abs(net.encoders["v"].position.std().item() - 1) < 0.02


def sequences(**options):
    return load_dataset("synthetic", num_videos=20, min_utterances=3, max_utterances=6, sequence_length=6, seed=0, **options)


def batch_of(data, size=8):
    return next(iterate_batches(data.split(0)["train"], size))


def test_outputs_and_losses_have_the_specs_shapes():
    data = sequences()
    net = LNLN(**TINY).build(DataSpec.of(data))
    batch = batch_of(data)
    out = net.run(batch)
    assert out["prediction"].shape == (8,) and out["w"].shape == (8,) and ((out["w"] >= 0) & (out["w"] <= 1)).all()
    losses = net.losses(batch, batch, torch.ones(8))
    assert set(losses) == {"task", "completeness", "adversarial", "reconstruction"} and all(torch.isfinite(v) for v in losses.values())
    classes = LNLN(**TINY).build(DataSpec.of(sequences(num_classes=3)))
    assert classes.run(batch_of(sequences(num_classes=3)))["prediction"].shape == (8, 3)


def proxy_gradient(net, batch, which: str) -> torch.Tensor:
    net.zero_grad()
    net.losses(batch, batch, torch.ones(len(batch)))[which].backward()
    return torch.cat([p.grad.flatten() for p in net.proxy.parameters()])


def completeness_gradient(net, batch, which: str) -> torch.Tensor:
    net.zero_grad()
    net.losses(batch, batch, torch.ones(len(batch)))[which].backward()
    return torch.cat([p.grad.flatten() for p in net.completeness_head.parameters()])


def test_gradient_reversal_is_where_the_paper_puts_it_and_the_switch_restores_the_release():
    data = sequences()
    batch = batch_of(data)
    torch.manual_seed(0)
    paper = LNLN(**TINY).build(DataSpec.of(data))
    identity = copy.deepcopy(paper)
    identity.cfg = copy.copy(paper.cfg)
    object.__setattr__(identity.cfg, "grl_alpha", -1.0)  # the gradient times +1: no reversal anywhere (outside the config's domain)
    released = copy.deepcopy(paper)
    released.cfg = LNLN(**TINY, grl_on_main_path=True).config
    adversarial = proxy_gradient(identity, batch, "adversarial")
    assert adversarial.abs().sum() > 0
    torch.testing.assert_close(proxy_gradient(paper, batch, "adversarial"), -adversarial)
    torch.testing.assert_close(proxy_gradient(released, batch, "adversarial"), -adversarial)
    task = proxy_gradient(identity, batch, "task")
    torch.testing.assert_close(proxy_gradient(paper, batch, "task"), task)  # the sentiment loss is not reversed
    torch.testing.assert_close(proxy_gradient(released, batch, "task"), -task)  # as released: reversed
    for which in ("task", "adversarial"):
        torch.testing.assert_close(completeness_gradient(paper, batch, which), completeness_gradient(released, batch, which))


def test_padding_is_masked_and_predictions_do_not_depend_on_the_batch():
    data = sequences()
    method = LNLN(**TINY)
    net = method.build(DataSpec.of(data)).eval()
    batch = batch_of(data)
    assert not batch.padding["a"].all(), "the test needs padded steps"
    noisy = {m: torch.where(batch.padding[m][..., None], x, torch.randn_like(x) * 100) for m, x in batch.inputs.items()}
    with torch.no_grad():
        before = net(batch).prediction
        torch.testing.assert_close(net(dataclasses.replace(batch, inputs=noisy)).prediction, before)
        alone = torch.cat([net(batch.select(torch.tensor([i]))).prediction for i in range(len(batch))])
        torch.testing.assert_close(alone, before, atol=1e-5, rtol=1e-5)
        unmasked = LNLN(**TINY, padding_mask=False).build(DataSpec.of(data)).eval()
        unmasked.load_state_dict(net.state_dict())
        assert not torch.allclose(unmasked(dataclasses.replace(batch, inputs=noisy)).prediction, before)


def test_noisy_rows_equal_to_their_clean_rows_reuse_its_tokens():
    data = sequences()
    net = LNLN(**TINY).build(DataSpec.of(data))
    clean = batch_of(data)
    keep = torch.ones(clean.padding["a"].shape, dtype=torch.bool)
    keep[:3, 0] = False  # frames dropped in three rows' audio only
    noisy = clean.with_frames({"a": keep})
    clean_tokens = net.modality_tokens(clean)
    reused = net.modality_tokens(noisy, like=(clean, clean_tokens))
    for m, tokens in net.modality_tokens(noisy).items():
        torch.testing.assert_close(reused[m], tokens, atol=1e-6, rtol=1e-6)
    assert torch.equal(reused["l"], clean_tokens["l"]) and torch.equal(reused["a"][3:], clean_tokens["a"][3:])
    assert not torch.allclose(reused["a"][:3], clean_tokens["a"][:3])


def test_completeness_label_is_one_minus_the_realised_dropped_share():
    data = sequences()
    batch = batch_of(data)
    assert torch.equal(completeness_labels(batch, data, "l"), torch.ones(len(batch)))
    absent = batch.present.clone()
    absent[:3, 0] = False
    assert torch.equal(completeness_labels(batch.with_present(absent), data, "l")[:3], torch.zeros(3))
    keep = torch.rand(batch.padding["l"].shape, generator=torch.Generator().manual_seed(0)) > 0.5
    dropped = batch.with_frames({"l": keep})
    rows = batch.index.numpy()
    can = droppable(data.lengths["l"][rows], keep.shape[1])
    expected = 1 - (can & ~keep.numpy()).sum(1) / np.maximum(can.sum(1), 1)
    np.testing.assert_allclose(completeness_labels(dropped, data, "l").numpy(), expected, rtol=1e-6)


def test_training_noise_is_lnlns_distribution_redrawn_every_batch():
    data = load_dataset("synthetic", num_videos=60, sequence_length=200, aligned=True, seed=1)
    train = data.split(0)["train"]
    batch = tensor_cache(data).gather(train.indices)
    batch = batch.with_present(torch.ones_like(batch.present))
    masks = TrainingMasks(FramesInside(Complete(), FrameDrop("lnln")), data.modalities, seed=0, stream=7, dataset=data)
    first = masks.draw(batch, 0).batch.frame_present
    long_rows = data.lengths["a"][train.indices] >= 150
    kept = {m: ((first[m] & batch.padding[m]).float().sum(1) / batch.padding[m].float().sum(1)).numpy()[long_rows] for m in data.modalities}
    for m in data.modalities:
        clean = np.mean(kept[m] == 1.0)
        assert 0.35 < clean < 0.65, f"{m}: {clean:.2f} of the samples clean, expected about a half"
        rates = 1 - kept[m][kept[m] < 1.0]
        assert stats.kstest(rates, "uniform").pvalue > 1e-3  # the others: a uniform rate (up to the binomial spread)
    second = masks.draw(batch, 1).batch.frame_present
    assert not torch.equal(first["l"], second["l"])  # another epoch, other masks


def test_the_released_schedule():
    factor = lr_factor("warmup_cosine:20", 200)
    lrs = [1e-4 * factor(e - 1) for e in (1, 2, 21, 22, 100, 200)]
    np.testing.assert_allclose(lrs, [0, 5e-6, 1e-4, 1e-4, 6.04e-5, 3.05e-8], rtol=2e-3, atol=1e-12)
    with pytest.raises(ConfigError, match="warmup_cosine:W"):
        lr_factor("warmup_cosine:0", 10)


def test_refuses_data_without_a_proxy_to_build():
    data = sequences()
    split = data.split(0)
    from imsa.testing import text_and_audio

    two = text_and_audio(data).split(0)
    LNLN(**TINY, epochs=1).fit(two["train"], two["valid"])  # l plus one auxiliary works
    with pytest.raises(ConfigError, match="dominant"):
        LNLN(**TINY, dominant="x").fit(split["train"], split["valid"])


def test_completeness_tracks_the_surviving_language():
    """Spec 9.10 (a), small: after training with LNLN's noise, the mean ``w`` falls as the
    text frame rate rises, and follows the realised kept share; (b) the validation MAE rises
    with the rate; (c) with the text erased the predictions still vary. Positional tables
    start at std 0.02: the released N(0, 1) swamps unit-scale features (see lnln.py's
    docstring). (d), the ablation being worse at high rates, does not hold at this scale:
    benchmarks/lnln_behaviour.py measures it over 8 draws."""
    data = load_dataset("synthetic", num_videos=40, sequence_length=12, aligned=True, seed=2, weight_l=1.0, weight_a=0.3, weight_v=0.2)
    split = data.split(0)
    method = LNLN(**{**TINY, "dim": 32, "mlp_dim": 32}, epochs=30, lr=3e-3, batch_size=32, position_std=0.02).fit(split["train"], split["valid"], seed=0)
    net = method.model_.eval()
    means, ws, labels, maes = [], [], [], []
    for rate in (0.0, 0.3, 0.6, 0.9):
        setting = Protocol("frames", rate=rate).settings(split["valid"])[f"frames={rate:g}"]
        rows = split["valid"].indices
        batch = tensor_cache(data).gather(rows).with_frames({m: torch.from_numpy(setting.frames[m][rows]) for m in data.modalities})
        with torch.no_grad():
            out = net.run(batch)
        w = out["w"]
        maes.append(float(np.abs(out["prediction"].numpy() - data.labels[rows]).mean()))
        means.append(w.mean().item())
        ws.append(w.numpy())
        labels.append(completeness_labels(batch, data, "l").numpy())
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert np.corrcoef(np.concatenate(ws), np.concatenate(labels))[0, 1] > 0.7
    assert all(a < b for a, b in zip(maes, maes[1:])), maes
    # (c) with every word dropped the predictions still vary: the proxy carries the audio and video
    rows = split["valid"].indices
    batch = tensor_cache(data).gather(rows)
    erased = batch.with_frames({"l": torch.zeros_like(batch.padding["l"])})
    with torch.no_grad():
        spread = net(erased).prediction.std().item()
    assert spread > 0.1 * float(np.std(data.labels[rows])), spread


def test_runs_under_the_frames_protocol(tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "run",
            "--method",
            "lnln",
            "--dataset",
            "synthetic",
            "--set",
            "data.sequence_length=6",
            "--set",
            "data.aligned=true",
            "--set",
            "data.num_videos=20",
            "--protocol",
            "frames",
            "--rates",
            "0.0",
            "0.5",
            "--set",
            "epochs=2",
            "--set",
            "dim=16",
            "--set",
            "tokens=2",
            "--set",
            "heads=2",
            "--set",
            "dim_head=8",
            "--set",
            "mlp_dim=16",
            "--set",
            "depth=1",
            "--set",
            "hyper_depth=2",
            "--set",
            "fusion_depth=1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert "frames=0" in printed and "frames=0.5" in printed and "one model (the method's own frame noise)" in printed
    summary = json.loads((out / "summary.json").read_text())  # one experiment: LNLN's noise does not depend on the test rate
    assert summary["experiment"]["protocol"]["rates"] == [0.0, 0.5] and set(summary["test"]) == {"frames=0", "frames=0.5", "mean"}
    assert summary["experiment"]["dropped_text"] == "zeroed precomputed features"  # not [UNK] tokens: the run says which


# -- the paper's text input: a fine-tuned encoder on the file's token ids (spec 5a, b, d) -------------

TOKEN_RUN = {**TINY, "epochs": 1, "batch_size": 8}


def test_dropped_words_are_the_tokenizers_unknown_token_and_a_missing_text_is_empty(tmp_path, tiny_bert, token_mmsa):
    data = load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl")))
    split = data.split(0)
    method = LNLN(**TOKEN_RUN, text_encoder=str(tiny_bert)).fit(split["train"], split["valid"], seed=0)
    net = method.model_.eval()
    seen = []
    forward = net.text_encoder.forward
    net.text_encoder.forward = lambda ids, attention: seen.append((ids.clone(), attention.clone())) or forward(ids, attention)
    rows = split["test"].indices
    clean = tensor_cache(data).gather(rows)
    raw = torch.as_tensor(data.annotations["text_bert"][rows, 0])
    assert torch.equal(clean.tokens, raw)
    everything = Protocol("frames", rate=1.0).settings(split["test"])["frames=1"]
    dropped = clean.with_frames({m: torch.from_numpy(everything.frames[m][rows]) for m in data.modalities})
    text_absent = dropped.with_present(torch.tensor([[False, True, True]] + [[True, True, True]] * (len(rows) - 1)))
    with torch.no_grad():
        net(text_absent)
    ids, attention = seen[-1]
    lengths = data.lengths["l"][rows]
    for k in range(1, len(rows)):  # every word dropped: [CLS] [UNK] ... [UNK] [SEP], the mask unchanged
        length = lengths[k]
        assert ids[k, 0] == 2 and ids[k, length - 1] == 3 and (ids[k, 1 : length - 1] == 1).all(), ids[k]
        assert torch.equal(attention[k], clean.padding["l"][k])
    assert ids[0, :2].tolist() == [2, 3] and (ids[0, 2:] == 0).all() and attention[0].tolist() == [True, True] + [False] * (ids.shape[1] - 2)
    # a missing text's ids are never read: other ids there change nothing
    other = dataclasses.replace(text_absent, tokens=text_absent.tokens.clone())
    other.tokens[0] = clean.tokens[0]
    with torch.no_grad():
        assert torch.equal(net(text_absent).prediction, net(other).prediction)
    # a saved model reads the same tokens the same way
    again = load_method(method.save(tmp_path / "lnln"))
    with torch.no_grad():
        assert torch.equal(again.model_(dropped).prediction, net(dropped).prediction)


def test_token_input_refusals(tmp_path, tiny_bert, token_mmsa):
    synthetic = load_dataset("synthetic", num_videos=6, sequence_length=6, aligned=True)
    with pytest.raises(ConfigError, match="text_bert"):
        LNLN(**TOKEN_RUN, text_encoder=str(tiny_bert)).fit(synthetic.split(0)["train"], synthetic.split(0)["valid"])
    foreign = load_dataset(str(token_mmsa(tmp_path / "aligned_50.pkl", largest=30000)))
    with pytest.raises(DataError, match="outside the vocabulary"):
        LNLN(**TOKEN_RUN, text_encoder=str(tiny_bert)).fit(foreign.split(0)["train"], foreign.split(0)["valid"])


def test_a_frames_run_records_unknown_tokens(tmp_path, tiny_bert, token_mmsa, capsys):
    path = token_mmsa(tmp_path / "aligned_50.pkl")
    out = tmp_path / "run"
    main(
        [
            "run",
            "--method",
            "lnln",
            "--dataset",
            str(path),
            "--protocol",
            "frames",
            "--rates",
            "0.0",
            "0.5",
            "--set",
            f"text_encoder={tiny_bert}",
            *[f"--set={k}={v}" for k, v in TOKEN_RUN.items()],
            "--out",
            str(out),
            "--quiet",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"]["dropped_text"] == "[UNK] tokens" and set(summary["test"]) == {"frames=0", "frames=0.5", "mean"}
