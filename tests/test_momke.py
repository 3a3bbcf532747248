"""MoMKE-specific checks (the generic contract is in test_methods.py).

What the spec (docs/momke.md) fixes and a reimplementation could get wrong: the model's
size, routing distributions, masked attention that never yields NaN, padding and missing
features that never leak into real outputs, the per-modality restore after stage 1, the
per-condition stage-2 models of the fixed protocol, config validation and the packaged
paper configs. Everything is tiny except the parameter count, which only builds the model.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import imsa.methods.momke as momke_module
from imsa.batch import tensor_cache, video_index_matrix
from imsa.config import build_config, packaged_config
from imsa.errors import ConfigError
from imsa.experiments.runner import Experiment
from imsa.methods.momke import MaskedAttention, MoMKE, MoMKEConfig, MoMKENet, PerConditionMoMKE, TokenLayout, _BestPerModality, scatter
from imsa.methods.spec import DataSpec
from imsa.missing import fixed_conditions
from imsa.protocols import Protocol
from imsa.training import RunContext, TrainResult

MODALITIES = ("l", "a", "v")
CONDITIONS = [c.name for c in fixed_conditions(MODALITIES)]
TINY = dict(epochs=1, stage1_epochs=2, batch_size=8, dim=16, depth=1, heads=2, dropout=0.1, lr=1e-3)


def tiny_net(dataset, *, stage: int, depth: int = 2, seed: int = 0) -> MoMKENet:
    torch.manual_seed(seed)
    net = MoMKENet(DataSpec.of(dataset), dim=16, depth=depth, heads=2, dropout=0.5)
    net.stage = stage
    return net.eval()


def video_batch(subset, videos):
    """A video-level batch of the chosen videos (positions in ``subset.videos``), padded with -1."""
    return tensor_cache(subset.dataset).gather(video_index_matrix(subset, np.asarray(videos)))


def condition_present(batch, name: str) -> torch.Tensor:
    mask = next(c for c in fixed_conditions(batch.modalities) if c.name == name).mask(batch.modalities)
    return torch.from_numpy(np.broadcast_to(mask, batch.present.shape).copy())


def mixed_present(batch, seed: int = 0) -> torch.Tensor:
    """Per-utterance masks (random protocol style): every modality missing at some real
    utterances and present at others, and no utterance without any modality."""
    rng = np.random.default_rng(seed)
    real = batch.utterance_mask.numpy()
    patterns = np.stack([c.mask(batch.modalities) for c in fixed_conditions(batch.modalities)])
    present = patterns[rng.integers(len(patterns), size=real.shape)] & real[..., None]
    for k in range(len(batch.modalities)):
        assert present[real][:, k].any() and not present[real][:, k].all()
    return torch.from_numpy(present)


# -- size ----------------------------------------------------------------------------------------


def test_parameter_count_of_the_paper_model():
    # By hand from the spec, D = 256, depth 4, l/a/v = 1024/512/1024, C = 4 (Linear(i, o) = i*o + o):
    #   projections      1024*256+256 + 512*256+256 + 1024*256+256      =   656,128
    #   experts          3 experts x 4 blocks x (Linear(D, 3D) for q, k, v + 2 MLP Linear(D, D)),
    #                    = 5 x Linear(D, D) = 5 x (65,536 + 256) = 328,960; 3*4*328,960 = 3,947,520
    #   unimodal heads   3 x Linear(D, 4) = 3 x 1,028                       =     3,084
    #   routers          3 x (Linear(D, D) + Linear(D, 3)) = 3 x (65,792 + 771) = 199,689
    #   fusion           Linear(3D, 3D) = 768*768 + 768                     =   590,592
    #   head             Linear(3D, 4) = 768*4 + 4                          =     3,076
    #   total                                                                 5,400,089  ("about 5.4M")
    spec = DataSpec(
        modalities=MODALITIES,
        dims={"l": 1024, "a": 512, "v": 1024},
        sequence={m: False for m in MODALITIES},
        task="classification",
        output_dim=4,
    )
    model = MoMKE().build(spec)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    parts = {name: count(getattr(model, name)) for name in ("projections", "experts", "unimodal_heads", "routers", "fusion", "head")}
    assert parts == {
        "projections": 656_128,
        "experts": 3_947_520,
        "unimodal_heads": 3_084,
        "routers": 199_689,
        "fusion": 590_592,
        "head": 3_076,
    }
    assert count(model) == 5_400_089


# -- blocks --------------------------------------------------------------------------------------


def reference_attention(attention: MaskedAttention, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Loop-per-row, per-head masked attention on a padded grid, written straight from the spec."""
    b, s, d = x.shape
    h = attention.heads
    out = torch.zeros(b, s, d, dtype=torch.float64)
    q, k, v = (t.double() for t in attention.to_qkv(x).chunk(3, -1))
    q = q * (d // h) ** -0.5
    for row in range(b):
        keys = key_mask[row].nonzero().squeeze(-1)
        if len(keys) == 0:
            continue
        for head in range(h):
            part = slice(head * d // h, (head + 1) * d // h)
            weights = (q[row, :, part] @ k[row, keys, part].T).softmax(-1)
            out[row, :, part] = weights @ v[row, keys, part]
    return out.float()


def test_masked_attention_follows_the_spec_and_a_row_without_tokens_gives_zero():
    torch.manual_seed(0)
    attention = MaskedAttention(8, heads=2)
    x = (10 * torch.randn(3, 5, 8)).requires_grad_()
    key_mask = torch.ones(3, 5, dtype=torch.bool)
    key_mask[1] = False  # no token at all: a video whose modality is missing
    key_mask[2, 3:] = False  # padding

    def attend(mask):
        layout = TokenLayout(mask)
        return scatter(layout.unpad(attention(layout.pad(x[mask]), layout.attention_mask)), mask)

    out = attend(key_mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros(5, 8))
    expected = reference_attention(attention, x, key_mask) * key_mask.unsqueeze(-1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    # The other rows do not depend on row 1 being masked.
    unmasked = key_mask.clone()
    unmasked[1] = True
    again = attend(unmasked)
    torch.testing.assert_close(out[[0, 2]], again[[0, 2]], atol=1e-6, rtol=0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(attention.to_qkv.weight.grad).all()


def test_token_layout_packs_whole_rows_and_round_trips():
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True, False, True, True], [False, True, False, False]])
    layout = TokenLayout(mask)
    tokens = torch.arange(1.0, 7.0).unsqueeze(-1)  # row-major: row 0 -> 1, 2; row 2 -> 3, 4, 5; row 3 -> 6
    grid = layout.pad(tokens)
    # Bins as long as the longest row, filled first-fit by decreasing length; the empty row takes none.
    assert grid.shape == (2, 3, 1)
    assert grid.squeeze(-1).tolist() == [[3.0, 4.0, 5.0], [1.0, 2.0, 6.0]]
    assert torch.equal(layout.unpad(grid), tokens)
    same_row = layout.attention_mask.squeeze(1)
    assert same_row[1].tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    empty = TokenLayout(torch.zeros(2, 3, dtype=torch.bool))
    assert empty.pad(torch.zeros(0, 4)).shape == (0, 0, 4)


def test_router_weights_are_a_distribution_per_utterance(synthetic):
    subset = synthetic.split(0)["train"]
    batch = video_batch(subset, range(len(subset.videos)))
    batch = batch.with_present(mixed_present(batch))
    net = tiny_net(synthetic, stage=2)
    for training in (False, True):  # the router's dropout acts before the softmax
        net.train(training)
        weights = net.router_weights(batch)
        m, (b, s) = len(MODALITIES), batch.labels.shape
        assert weights.shape == (m, b, s, m)
        assert (weights >= 0).all()
        # one distribution per present utterance; nothing for missing or padded ones
        torch.testing.assert_close(weights.sum(-1), batch.present.permute(2, 0, 1).float())


# -- padding and missing modalities --------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2])
def test_padding_never_changes_real_outputs(synthetic, stage):
    subset = synthetic.split(0)["train"]
    lengths = [len(u) for u in subset.video_utterances]
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]
    net = tiny_net(synthetic, stage=stage)
    alone = video_batch(subset, [short])
    together = video_batch(subset, [short, long])
    masks = [None] if stage == 1 else [None, "l", "a,v", "mixed"]
    for mask in masks:
        a, t = alone, together
        if mask == "mixed":
            t = together.with_present(mixed_present(together, seed=1))
            a = alone.with_present(t.present[:1, : lengths[short]])
        elif mask is not None:
            a, t = alone.with_present(condition_present(alone, mask)), together.with_present(condition_present(together, mask))
        with torch.no_grad():
            first, second = net(a), net(t)
        n = lengths[short]
        torch.testing.assert_close(second.prediction[0, :n], first.prediction[0], atol=1e-5, rtol=0, msg=f"stage {stage}, mask {mask}")
        if stage == 2:
            torch.testing.assert_close(second.feature[0, :n], first.feature[0], atol=1e-5, rtol=0)


def test_stacked_evaluation_computes_each_row_once_with_unchanged_outputs(synthetic):
    subset = synthetic.split(0)["test"]
    batch = video_batch(subset, range(len(subset.videos)))
    net = tiny_net(synthetic, stage=2)
    stacked = batch.repeat(len(CONDITIONS)).with_present(torch.cat([condition_present(batch, c) for c in CONDITIONS]))
    videos, inverse = net._distinct_rows(stacked)
    # Each modality: one row per video, plus one empty row for every video where it is missing.
    assert [len(v) for v in videos] == [len(batch) + 1] * len(MODALITIES)
    with torch.no_grad():
        together = net(stacked)
        apart = [net(batch.with_present(condition_present(batch, c))) for c in CONDITIONS]
    torch.testing.assert_close(together.prediction, torch.cat([o.prediction for o in apart]), atol=1e-5, rtol=0)
    torch.testing.assert_close(together.feature, torch.cat([o.feature for o in apart]), atol=1e-5, rtol=0)
    # Training mode (dropout) computes every row: distinct rows are only shared without dropout.
    net.train()
    calls = []
    handle = net.experts["l"].register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    net(stacked)
    handle.remove()
    assert calls == [int(stacked.present.sum())]


def test_stacked_rows_with_other_inputs_are_not_shared(synthetic):
    # Under frame drops or noise the same video, with the same present utterances, has other
    # inputs in every setting of a stacked evaluation batch: each setting is its own.
    subset = synthetic.split(0)["test"]
    batch = video_batch(subset, range(len(subset.videos)))
    net = tiny_net(synthetic, stage=2)
    changed = dataclasses.replace(batch, inputs={**batch.inputs, "a": batch.inputs["a"] * 0.5})
    stacked = batch.repeat(2)
    stacked = dataclasses.replace(stacked, inputs={**stacked.inputs, "a": torch.cat([batch.inputs["a"], changed.inputs["a"]])})
    with torch.no_grad():
        together = net(stacked)
        apart = torch.cat([net(batch).prediction, net(changed).prediction])
    torch.testing.assert_close(together.prediction, apart, atol=1e-5, rtol=0)
    assert not torch.allclose(apart[: len(batch)], apart[len(batch) :])


@pytest.fixture(scope="module")
def shared_model(synthetic):
    """One stage-2 model for every condition (per_condition=False), fixed protocol."""
    split = synthetic.split(0)
    recorder = PhaseRecorder()
    method = MoMKE(TINY, per_condition=False).fit(split["train"], split["valid"], seed=0, context=RunContext([recorder]))
    return method, recorder


def test_features_missing_at_some_utterances_change_nothing(synthetic, shared_model):
    method, _ = shared_model
    test = synthetic.split(0)["test"]
    batch = video_batch(test, range(len(test.videos)))
    masked = batch.with_present(mixed_present(batch, seed=2))
    before = method.predict(masked)
    generator = torch.Generator().manual_seed(0)
    for k, m in enumerate(MODALITIES):
        missing = ~masked.present[..., k]
        x = masked.inputs[m]
        noise = 1e4 * torch.randn(x.shape, generator=generator) + 1e3
        changed = torch.where(missing.unsqueeze(-1), noise, x)
        after = method.predict(dataclasses.replace(masked, inputs={**masked.inputs, m: changed}))
        assert torch.equal(before.prediction, after.prediction), f"prediction reads missing {m!r}"
        assert torch.equal(before.feature, after.feature), f"feature reads missing {m!r}"
    # ... while the features of present utterances do matter (the check above can fail).
    present = masked.present[..., 0]
    changed = torch.where(present.unsqueeze(-1), masked.inputs["l"] + 1.0, masked.inputs["l"])
    after = method.predict(dataclasses.replace(masked, inputs={**masked.inputs, "l": changed}))
    assert not torch.allclose(before.prediction, after.prediction)


# -- stage-1 restore -----------------------------------------------------------------------------


def parts_of(net: MoMKENet, modality: str) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, part in net.modality_parameters(modality).items() for key, value in part.state_dict().items()}


def fill(net: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


@pytest.mark.parametrize(
    "maximize, scores, best",
    [
        # v ties at epoch 1: a tie is no improvement, epoch 0 stays.
        (True, [{"l": 0.1, "a": 0.9, "v": 0.5}, {"l": 0.8, "a": 0.2, "v": 0.5}, {"l": 0.3, "a": 0.95, "v": 0.4}], {"l": 1, "a": 2, "v": 0}),
        (False, [{"l": 3.0, "a": 1.0, "v": 2.0}, {"l": 2.0, "a": 1.5, "v": 2.5}, {"l": 2.5, "a": 1.2, "v": 0.5}], {"l": 1, "a": 0, "v": 2}),
    ],
)
def test_restore_puts_back_each_modalitys_best_epoch(synthetic, maximize, scores, best):
    net = tiny_net(synthetic, stage=1, depth=1)
    tracker = _BestPerModality(net, maximize=maximize)
    for epoch, epoch_scores in enumerate(scores):
        fill(net, 10.0 + epoch)  # the weights "trained" in this epoch
        tracker.update(epoch, epoch_scores)
    assert {k: v[1] for k, v in tracker.best.items()} == best
    assert {k: v[0] for k, v in tracker.best.items()} == {k: scores[e][k] for k, e in best.items()}
    fill(net, 99.0)  # training went on after the best epochs
    # A resumed run restores from the checkpointed tracker state just as well.
    resumed = _BestPerModality(net, maximize=maximize)
    resumed.load_state_dict(copy.deepcopy(tracker.state_dict()))
    for restorer in (tracker, resumed):
        fill(net, 99.0)
        restorer.restore()
        for k, epoch in best.items():
            for name, value in parts_of(net, k).items():
                assert torch.all(value == 10.0 + epoch), (k, name)
        for name in ("routers", "fusion", "head"):  # not stage-1 parts: untouched
            assert all(torch.all(p == 99.0) for p in getattr(net, name).parameters()), name


class PhaseRecorder:
    def __init__(self):
        self.started: list[str] = []
        self.ended: dict[str, TrainResult] = {}

    def on_phase_start(self, phase, epochs, start_epoch):
        self.started.append(phase)

    def on_phase_end(self, phase, result):
        self.ended[phase] = result


@pytest.fixture(scope="module")
def per_condition_fit(synthetic):
    """A per-condition fit (fixed protocol) with scripted stage-1 validation scores.

    Per-modality validation MAE is scripted so that l, a and v are best at epochs 0, 1
    and 2 while their mean is flat (the whole-model selection keeps epoch 0): only a
    working per-modality restore gives a and v their epoch-1 and epoch-2 weights.
    """
    split = synthetic.split(0)
    script = iter([1.0, 5.0, 5.0, 5.0, 1.0, 5.0, 5.0, 5.0, 1.0])  # epochs 0..2, modalities l, a, v
    trackers, entries, weights_at = [], {}, {}

    class Tracker(_BestPerModality):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trackers.append(self)

        def update(self, epoch, scores):
            weights_at[epoch] = copy.deepcopy(self.model.state_dict())
            super().update(epoch, scores)

    method = MoMKE({**TINY, "epochs": 2, "stage1_epochs": 3, "per_condition": True})
    train_phase = method.train_phase

    def recording_train_phase(model, train, valid, phase, **kwargs):
        entries[phase.name] = copy.deepcopy(model.state_dict())
        return train_phase(model, train, valid, phase, **kwargs)

    method.train_phase = recording_train_phase
    recorder = PhaseRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(momke_module, "_BestPerModality", Tracker)
        patch.setattr(momke_module, "compute_metrics", lambda task, prediction, labels: {"mae": next(script)})
        method.fit(split["train"], split["valid"], seed=0, context=RunContext([recorder]))
    return method, recorder, trackers, entries, weights_at


def test_fit_restores_each_expert_from_its_best_stage1_epoch(per_condition_fit):
    method, recorder, trackers, entries, weights_at = per_condition_fit
    stage1 = method.phases_[0]
    assert isinstance(stage1, TrainResult) and stage1.phase == "stage1"
    assert stage1.epochs_run == 3 and len(stage1.history) == 3
    assert stage1.best_epoch == 0 and stage1.best_score == pytest.approx(11 / 3)
    (tracker,) = trackers
    assert {k: epoch for k, (_, epoch) in tracker.best.items()} == {"l": 0, "a": 1, "v": 2}
    assert set(tracker.snapshots) == set(MODALITIES)
    # Training moved the weights between epochs, so the check below can tell epochs apart.
    assert not torch.equal(weights_at[0]["experts.a.blocks.0.attention.to_qkv.weight"], weights_at[1]["experts.a.blocks.0.attention.to_qkv.weight"])
    stage2 = [name for name in entries if name.startswith("stage2")]
    assert len(stage2) == 7
    for name in stage2:
        start = entries[name]
        assert start.keys() == weights_at[0].keys()
        for key, value in start.items():
            owner = key.split(".")
            epoch = tracker.best[owner[1]][1] if owner[0] in ("projections", "experts", "unimodal_heads") else 0
            assert torch.equal(value, weights_at[epoch][key]), (name, key, epoch)


class StageRecorder:
    """Wraps the training loop of imsa.methods.phase: each phase's model and optimiser at entry and at exit."""

    def __init__(self, train):
        self.train, self.entry, self.exit, self.optimizer_entry, self.optimizer_exit = train, {}, {}, {}, {}

    def __call__(self, model, optimizer, *, phase, **kwargs):
        self.entry[phase], self.optimizer_entry[phase] = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
        result = self.train(model, optimizer, phase=phase, **kwargs)
        self.exit[phase], self.optimizer_exit[phase] = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
        return result


@pytest.mark.parametrize("released", [True, False])
def test_released_switches_continue_stage1s_last_weights_and_optimiser(synthetic, released):
    """standardize=false, restore=last, stage2_optimizer=shared: the released code's dynamics."""
    import imsa.methods.phase as base

    split = synthetic.split(0)
    switches = dict(standardize=False, restore="last", stage2_optimizer="shared") if released else {}
    recorder, weights_at = StageRecorder(base.run_training), []
    script = iter([1.0] * 3 + [5.0] * 6)  # stage-1 validation MAE of l, a, v: every modality best at epoch 0 of 3

    class Weights:
        def on_epoch_end(self, phase, epoch, logs):
            if phase == "stage1":
                weights_at.append(copy.deepcopy(method.model_.state_dict()))

    method = MoMKE({**TINY, "stage1_epochs": 3, "per_condition": True, **switches})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "run_training", recorder)
        patch.setattr(momke_module, "compute_metrics", lambda task, prediction, labels: {"mae": next(script)})
        method.fit(split["train"], split["valid"], seed=0, context=RunContext([Weights()]))
    assert method.phases_[0].optimizer_state is None  # handed on, not kept in the fitted method
    norms = [value for key, value in recorder.exit["stage1"].items() if key.startswith("norms.")]
    assert all(torch.equal(v, torch.zeros_like(v)) or torch.equal(v, torch.ones_like(v)) for v in norms) == released
    start_epoch = weights_at[-1] if released else weights_at[0]
    assert not torch.equal(weights_at[0]["experts.a.blocks.0.attention.to_qkv.weight"], weights_at[-1]["experts.a.blocks.0.attention.to_qkv.weight"])
    stage1_optimizer = recorder.optimizer_exit["stage1"]["state"]
    stage2 = [name for name in recorder.entry if name.startswith("stage2")]
    assert len(stage2) == 7
    for name in stage2:
        start, optimizer = recorder.entry[name], recorder.optimizer_entry[name]["state"]
        if released:  # every stage-2 model starts at the last stage-1 epoch, with stage 1's Adam moments and step count
            assert optimizer.keys() == stage1_optimizer.keys() and optimizer, name
            for index, values in stage1_optimizer.items():
                assert all(torch.equal(optimizer[index][k], v) for k, v in values.items()), (name, index)
        else:
            assert not optimizer, name  # a fresh optimiser
        assert all(torch.equal(start[key], value) for key, value in start_epoch.items()), name


# -- per-condition stage 2 -----------------------------------------------------------------------


def test_fixed_protocol_trains_one_stage2_model_per_condition(per_condition_fit):
    method, recorder, *_ = per_condition_fit
    expected = ["stage1"] + [f"stage2[{name}]" for name in CONDITIONS]
    assert [p.phase for p in method.phases_] == expected
    assert recorder.started == expected  # stage 1 trained once, not once per condition
    assert all(p.epochs_run == 2 for p in method.phases_[1:])
    assert isinstance(method.model_, PerConditionMoMKE) and method.conditions_ == CONDITIONS
    models = method.model_.models
    assert len(models) == 7
    assert len({id(m) for m in models.values()}) == 7


def test_predict_routes_each_video_to_its_conditions_model(synthetic, per_condition_fit):
    method, *_ = per_condition_fit
    test = synthetic.split(0)["test"]
    batch = video_batch(test, range(len(test.videos)))
    models = method.model_.models
    for name in CONDITIONS:
        masked = batch.with_present(condition_present(batch, name))
        with torch.no_grad():
            direct = models[name](masked).prediction
        assert torch.equal(method.predict(masked).prediction, direct), name
    # Videos of different conditions in one batch: each goes to its own model.
    names = ["l", "a,v", "l,a,v", "v"][: len(batch)]
    present = torch.cat([condition_present(batch, n)[i : i + 1] for i, n in enumerate(names)]) & batch.utterance_mask.unsqueeze(-1)
    mixed = method.predict(batch, present).prediction
    for i, name in enumerate(names):
        with torch.no_grad():
            direct = models[name](batch.with_present(condition_present(batch, name))).prediction
        torch.testing.assert_close(mixed[i], direct[i], atol=1e-5, rtol=0, msg=name)
    # Mixed conditions inside one video cannot be routed.
    with pytest.raises(ConfigError, match="per_condition"):
        method.predict(batch, mixed_present(batch))


def test_one_stage2_model_without_per_condition_or_with_random_masks(synthetic, shared_model):
    method, recorder = shared_model
    assert [p.phase for p in method.phases_] == ["stage1", "stage2"] == recorder.started
    assert isinstance(method.model_, MoMKENet) and method.conditions_ is None
    split = synthetic.split(0)
    recorder = PhaseRecorder()
    random = MoMKE(TINY, per_condition=True).fit(split["train"], split["valid"], protocol=Protocol("random", rate=0.5), seed=0, context=RunContext([recorder]))
    assert [p.phase for p in random.phases_] == ["stage1", "stage2"] == recorder.started
    assert isinstance(random.model_, MoMKENet)


# -- configs -------------------------------------------------------------------------------------


def test_invalid_configs_are_config_errors():
    with pytest.raises(ConfigError, match="stage1_epochs"):
        MoMKEConfig(stage1_epochs=0)
    with pytest.raises(ConfigError, match="regression_loss"):
        MoMKEConfig(regression_loss="huber")
    with pytest.raises(ConfigError, match="restore"):
        MoMKEConfig(restore="first")
    with pytest.raises(ConfigError, match="stage2_optimizer"):
        MoMKEConfig(stage2_optimizer="sgd")
    with pytest.raises(ConfigError, match="attention_dropout"):
        MoMKEConfig(attention_dropout=1.5)


def test_attention_dropout_acts_in_training_only():
    torch.manual_seed(0)
    attention = MaskedAttention(16, heads=2, dropout=0.5)
    grid, mask = torch.randn(2, 5, 16), torch.ones(2, 1, 5, 5, dtype=torch.bool)
    attention.eval()
    reference = attention(grid, mask)
    assert torch.equal(attention(grid, mask), reference)
    attention.train()
    assert not torch.allclose(attention(grid, mask), reference)
    attention.dropout = 0.0
    torch.testing.assert_close(attention(grid, mask), reference)


PAPER = {  # the table in docs/momke.md: batch (videos/dialogues), total epochs, stage-1 epochs
    "iemocap4": (16, 200, 100),
    "iemocap6": (16, 200, 100),
    "mosi": (32, 300, 150),
    "mosei": (32, 100, 50),
}


@pytest.mark.parametrize("name", [*PAPER, "synthetic"])
def test_packaged_configs_build_valid_configs(name):
    raw = packaged_config("momke", name=name).values
    assert raw, f"configs/momke/{name}.yaml is missing or empty"
    assert set(raw) <= {f.name for f in dataclasses.fields(MoMKEConfig)}
    config = build_config(MoMKEConfig, raw)
    if name in PAPER:
        assert (config.batch_size, config.stage1_epochs + config.epochs, config.stage1_epochs) == PAPER[name]  # epochs: stage 2
        assert (config.dim, config.depth, config.heads, config.dropout) == (256, 4, 2, 0.5)
        assert (config.lr, config.weight_decay) == (1e-4, 1e-5)
    else:
        assert config.epochs <= 50 and config.dim <= 64
    # a dataset of that family resolves to it (tests/test_families.py checks every packaged file)
    assert Experiment("momke", dataset="file.pkl").resolved_config(family=name) == config


def test_packaged_configs_name_their_source():
    from importlib import resources

    folder = resources.files("imsa") / "configs" / "momke"
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))
    assert files == sorted(f"{n}.yaml" for n in [*PAPER, "synthetic"])
    for name in files:
        assert (folder / name).read_text().startswith("# Source: the paper table in the MoMKE spec"), name
