"""The frames protocol: the keyed draw's reference values, nesting, independence from order and
padding, realised fractions, protected ends, training distributions, evaluation, refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from imsa.batch import UNKNOWN_TOKEN, iterate_batches
from imsa.cli import main
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError, DataError
from imsa.experiments.grid import grid_from_dict
from imsa.frames import PROTECTED_ENDS, FrameDrop, droppable, keyed_uniforms
from imsa.methods.registry import method_class
from imsa.missing import make_sampler
from imsa.protocols import Protocol


def sequences(**options):
    return load_dataset("synthetic", num_videos=30, sequence_length=12, aligned=True, seed=0, **options)


def test_keyed_draw_gives_the_specs_reference_values():
    u = keyed_uniforms(0, "a", "03bSnISJMiM$_$1", 8)
    np.testing.assert_allclose(u, [0.410225, 0.579885, 0.983229, 0.388278, 0.420063, 0.165863, 0.933469, 0.971017], atol=1e-6)
    assert (u >= 0.5).astype(int).tolist() == [0, 1, 1, 0, 0, 0, 1, 1]
    text = keyed_uniforms(0, "l", "03bSnISJMiM$_$1", 8) >= 0.5
    keep = text | ~droppable(np.array([8]), 8, np.array([True]))[0]  # [CLS] and [SEP] protected
    assert keep.astype(int).tolist() == [1, 1, 1, 1, 0, 0, 1, 1]


def test_evaluation_masks_nest_across_rates_and_do_not_depend_on_order_or_width():
    data = sequences()
    test = data.split(0)["test"]
    masks = {r: Protocol("frames", rate=r).settings(test)[f"frames={r:g}"] for r in (0.0, 0.3, 0.6)}
    for m in data.modalities:
        assert masks[0.0].frames[m].all()
        assert (masks[0.6].frames[m] <= masks[0.3].frames[m]).all()  # dropped at 0.3 means dropped at 0.6
    rows = test.indices
    assert not np.array_equal(masks[0.3].frames["l"][rows], masks[0.3].frames["a"][rows])  # independent streams
    # the same utterance in another dataset (other order, wider padding) gets the same mask
    order = np.random.default_rng(0).permutation(len(data))
    wider = {m: np.concatenate([data.features[m][order], np.zeros((len(data), 5, data.dims[m]), np.float32)], axis=1) for m in data.modalities}
    from imsa.data.dataset import Dataset

    shuffled = Dataset(
        name="shuffled",
        modalities=data.modalities,
        features=wider,
        lengths={m: data.lengths[m][order] for m in data.modalities},
        labels=data.labels[order],
        utterance_ids=[data.utterance_ids[i] for i in order],
        video_ids=[data.video_ids[i] for i in order],
        folds=data.folds,
    )
    other = Protocol("frames", rate=0.3).settings(shuffled.split(0)["test"])["frames=0.3"]
    position = {uid: i for i, uid in enumerate(shuffled.utterance_ids)}
    for i in rows:
        j = position[data.utterance_ids[i]]
        for m in data.modalities:
            assert np.array_equal(other.frames[m][j, :12], masks[0.3].frames[m][i]) and other.frames[m][j, 12:].all()


def test_realised_fraction_is_the_rate_and_padding_is_never_dropped():
    data = load_dataset("synthetic", num_videos=120, sequence_length=20, aligned=True, seed=3)
    test = data.split(0)["test"]
    setting = Protocol("frames", rate=0.4).settings(test)["frames=0.4"]
    n = sum(int(droppable(data.lengths[m][test.indices], 20).sum()) for m in data.modalities)
    assert abs(setting.dropped_fraction(data, test.indices) - 0.4) < 3 * np.sqrt(0.24 / n)
    for m in data.modalities:
        padded = ~droppable(data.lengths[m], 20)
        assert setting.frames[m][padded].all()


def test_protected_ends_are_never_dropped():
    data = sequences()
    data.annotations[PROTECTED_ENDS] = [("l",)] * len(data)
    test = data.split(0)["test"]
    setting = Protocol("frames", rate=1.0).settings(test)["frames=1"]
    rows = test.indices
    lengths = data.lengths["l"][rows]
    keep = setting.frames["l"][rows]
    assert keep[np.arange(len(rows)), 0].all() and keep[np.arange(len(rows)), lengths - 1].all()
    assert not setting.frames["a"][rows][droppable(data.lengths["a"][rows], 12)].any()  # audio: all real steps dropped at 1.0


def test_evaluation_zeroes_dropped_steps_and_keeps_present():
    data = sequences()
    split = data.split(0)
    method = method_class("late_fusion")(epochs=2).fit(split["train"], split["valid"])
    setting = Protocol("frames", rate=1.0).settings(split["test"])["frames=1"]
    with_all_dropped = method.predict_settings(split["test"], {"frames=1": setting})["frames=1"]
    zeros = {m: torch.zeros_like(torch.from_numpy(data.features[m])) for m in data.modalities}
    batch = next(iterate_batches(split["test"], len(split["test"])))
    blank = batch.with_frames({m: torch.zeros_like(p) for m, p in batch.padding.items()})
    assert all(torch.equal(blank.inputs[m], zeros[m][batch.index]) for m in data.modalities) and blank.present.all()
    np.testing.assert_allclose(with_all_dropped, method.predict(blank).prediction.numpy(), rtol=1e-5, atol=1e-6)


def test_token_ids_travel_with_the_batch_and_become_unknown_where_dropped_or_missing():
    import dataclasses

    data = sequences()
    steps = data.features["l"].shape[1]
    ids = np.random.default_rng(0).integers(5, 50, size=(len(data.labels), steps))
    data = dataclasses.replace(data, annotations={**data.annotations, "text_bert": np.stack([ids, np.ones_like(ids), np.zeros_like(ids)], axis=1)})
    split = data.split(0)
    batch = next(iterate_batches(split["test"], 4))
    assert torch.equal(batch.tokens, torch.as_tensor(ids[batch.index]))
    keep = torch.rand(batch.padding["l"].shape, generator=torch.Generator().manual_seed(0)) < 0.5
    dropped = batch.with_frames({"l": keep})
    assert torch.equal(dropped.tokens, torch.where(keep, batch.tokens, torch.full_like(batch.tokens, UNKNOWN_TOKEN)))
    no_text = dropped.with_present(torch.tensor([[False, True, True]] * len(batch)))
    assert (no_text.tokens == UNKNOWN_TOKEN).all() and torch.equal(no_text.select(torch.tensor([1])).tokens, no_text.tokens[1:2])
    videos = next(iterate_batches(split["test"], 2, level="video"))
    assert ((videos.tokens == UNKNOWN_TOKEN).all(-1) == ~videos.utterance_mask).all()  # padded utterances have none
    with pytest.raises(DataError, match="text_bert"):
        dataclasses.replace(data, annotations={"text_bert": ids})


def test_training_distributions():
    rng = np.random.default_rng(0)
    can = {"l": np.ones((20_000, 10), bool)}
    same = FrameDrop(0.3).sample_frames(can, rng)["l"]
    assert abs(1 - same.mean() - 0.3) < 0.01
    lnln = make_sampler("frames:lnln").sample_frames({"l": np.ones((5_000, 400), bool)}, rng)["l"]  # long rows: a small rate drops something
    rates = 1 - lnln.mean(1)
    assert abs((rates == 0).mean() - 0.5) < 0.02 and abs(rates[rates > 0].mean() - 0.5) < 0.03
    uniform = make_sampler("frames:uniform").sample_frames(can, rng)["l"]
    assert abs((1 - uniform.mean(1)).mean() - 0.5) < 0.02
    assert Protocol("frames", rate=0.2).training_sampler(make_sampler("uniform")) == FrameDrop(0.2)  # frames:same
    assert Protocol("frames", rate=0.2).training_sampler(make_sampler("frames:lnln")) == FrameDrop("lnln")
    # batches are redrawn each epoch and keep padding
    data = sequences()
    train = data.split(0)["train"]
    first = [b.frame_present["a"] for b in iterate_batches(train, 64, shuffle=True, rng=np.random.default_rng([0, 0]), present=FrameDrop(0.5))]
    again = [b.frame_present["a"] for b in iterate_batches(train, 64, shuffle=True, rng=np.random.default_rng([0, 1]), present=FrameDrop(0.5))]
    assert not torch.equal(first[0], again[0])
    batch = next(iterate_batches(train, 64, shuffle=True, rng=np.random.default_rng([0, 0]), present=FrameDrop(0.5)))
    assert batch.frame_present["a"][~batch.padding["a"]].all() and batch.present.all()
    assert torch.equal(batch.inputs["a"] != 0, (batch.inputs["a"] != 0) & batch.frame_present["a"].unsqueeze(-1))


def test_refusals():
    vectors = load_dataset("synthetic", num_videos=10)
    with pytest.raises(ConfigError, match="modalities 'l', 'a', 'v' hold one vector per utterance"):
        Protocol("frames", rate=0.3).settings(vectors.split(0)["test"])
    data = sequences()
    split = data.split(0)
    for name in ("gcnet", "mmin", "dicmor", "imder"):
        with pytest.raises(ConfigError, match=f"{name} does not run under the frames protocol"):
            method_class(name)(epochs=1, **({"pretrain_epochs": 1} if name != "gcnet" else {})).fit(
                split["train"], split["valid"], protocol=Protocol("frames", rate=0.3)
            )
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        Protocol("frames", rate=1.5)


def test_grids_and_the_run_command_take_frame_rates(tmp_path, capsys):
    grid = grid_from_dict({"methods": ["late_fusion"], "datasets": ["synthetic"], "protocols": ["frames"], "seeds": [1]})
    assert [p.name for p in grid.protocols] == [f"frames={0.1 * k:.1f}".replace("=0.0", "=0") for k in range(10)]
    assert grid.to_dict()["protocols"] == [{"frames": [round(0.1 * k, 1) for k in range(10)]}]
    assert (
        main(
            [
                "run",
                "--method",
                "late_fusion",
                "--dataset",
                "synthetic",
                "--protocol",
                "frames",
                "--rates",
                "0",
                "0.5",
                "--set",
                "epochs=2",
                "--set",
                "data.sequence_length=6",
                "--set",
                "data.num_videos=20",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "protocol frames at 0, 0.5" in printed and "frames=0.5" in printed
    assert (tmp_path / "frames=0" / "summary.json").is_file() and (tmp_path / "frames=0.5" / "summary.json").is_file()
    import json

    record = json.loads((tmp_path / "frames=0.5" / "runs" / "seed1-fold0.json").read_text())
    assert set(record["frames_dropped"]) == {"valid", "test"} and abs(record["frames_dropped"]["test"]["frames=0.5"] - 0.5) < 0.1  # the realised share
    assert json.loads((tmp_path / "frames=0" / "runs" / "seed1-fold0.json").read_text())["frames_dropped"]["test"]["frames=0"] == 0.0


def test_fixed_and_random_compose_with_frame_drops():
    data = sequences()
    test = data.split(0)["test"]
    keyed = Protocol("frames", rate=0.3).settings(test)["frames=0.3"].frames
    fixed = Protocol("fixed", frames=0.3)
    assert fixed.name == "fixed,frames=0.3" and fixed.drops_frames
    settings = fixed.settings(test)
    assert list(settings) == list(Protocol().settings(test))
    for name, setting in settings.items():
        assert np.array_equal(setting.present, Protocol().settings(test)[name])  # the condition, with frames dropped inside
        assert all(np.array_equal(setting.frames[m], keyed[m]) for m in data.modalities)  # the frames protocol's keyed draws
    random = Protocol("random", rate=0.3, frames=0.2)
    assert random.name == "rate=0.3,frames=0.2"
    (composed,) = random.settings(test).values()
    assert np.array_equal(composed.present, Protocol("random", rate=0.3).settings(test)["rate=0.3"])
    assert np.array_equal(composed.frames["a"], Protocol("frames", rate=0.2).settings(test)["frames=0.2"].frames["a"])
    # training: the protocol's whole-modality masks first, frames:same inside
    from imsa.frames import FramesInside
    from imsa.missing import RandomRate

    assert fixed.training_sampler(make_sampler("uniform")) == FramesInside(make_sampler("uniform"), FrameDrop(0.3))
    assert random.training_sampler(make_sampler("uniform")) == FramesInside(RandomRate(0.3), FrameDrop(0.2))
    # stored identities of plain protocols do not change; compositions record their rate
    assert Protocol("random", rate=0.3).to_dict() == {"kind": "random", "rate": 0.3, "mask_seed": 0}
    assert Protocol(**random.to_dict()) == random
    with pytest.raises(ConfigError, match="not the frames protocol"):
        Protocol("frames", rate=0.3, frames=0.2)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        Protocol("fixed", frames=1.5)
    with pytest.raises(ConfigError, match="one vector per utterance"):
        fixed.settings(load_dataset("synthetic", num_videos=10).split(0)["test"])
    split = data.split(0)
    with pytest.raises(ConfigError, match="gcnet does not run with frame-level missing"):
        method_class("gcnet")(epochs=1).fit(split["train"], split["valid"], protocol=fixed)


def test_compositions_in_runs_grids_and_reports(tmp_path, capsys):
    from imsa.experiments.grid import run_grid
    from imsa.experiments.report import write_report

    assert (
        main(
            [
                "run",
                "--method",
                "late_fusion",
                "--dataset",
                "synthetic",
                "--protocol",
                "random",
                "--rate",
                "0.3",
                "--frames",
                "0.2",
                "--set",
                "epochs=2",
                "--set",
                "data.sequence_length=6",
                "--set",
                "data.num_videos=20",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "protocol rate=0.3,frames=0.2" in capsys.readouterr().out
    entries = ["fixed", {"fixed": None, "frames": [0.3]}, {"random": [0.3], "frames": 0.2}]
    grid = grid_from_dict(
        {
            "methods": ["late_fusion"],
            "datasets": ["synthetic"],
            "protocols": entries,
            "seeds": [1],
            "config": {"epochs": 2},
            "dataset_options": {"synthetic": {"sequence_length": 6, "num_videos": 20}},
        }
    )
    assert [p.name for p in grid.protocols] == ["fixed", "fixed,frames=0.3", "rate=0.3,frames=0.2"]
    assert grid_from_dict(grid.to_dict()).protocols == grid.protocols
    run_grid(grid, tmp_path / "store")
    md = write_report(tmp_path / "store")["markdown"].read_text()
    assert "| late_fusion |" in md and "| late_fusion (frames=0.3) |" in md and "| late_fusion (frames=0.2) |" in md
    for bad, match in (
        ({"frames": [0.3], "frames2": 1}, "composes with fixed or random"),
        ({"fixed": [0.3], "frames": 0.3}, "fixed takes no rates"),
        ({"random": [0.3], "frames": 1.5}, r"in \[0, 1\]"),
    ):
        with pytest.raises(ConfigError, match=match):
            grid_from_dict({"methods": ["late_fusion"], "datasets": ["synthetic"], "protocols": [bad], "seeds": [1]})


def test_one_model_serves_every_rate_when_training_brings_its_own_frame_noise(tmp_path):
    from imsa.experiments.grid import run_grid
    from imsa.experiments.report import write_report
    from imsa.methods.base import Method

    shared = Protocol("frames", rates=(0.0, 0.5))
    assert shared.name == "frames=0,0.5" and Protocol(**shared.to_dict()) == shared
    data = sequences()
    test = data.split(0)["test"]
    settings = shared.settings(test)
    assert list(settings) == ["frames=0", "frames=0.5"]
    assert np.array_equal(settings["frames=0.5"].frames["a"], Protocol("frames", rate=0.5).settings(test)["frames=0.5"].frames["a"])
    assert shared.training_sampler(make_sampler("frames:lnln")) == FrameDrop("lnln")
    with pytest.raises(ConfigError, match="frame noise of its own"):
        shared.training_sampler(make_sampler("uniform"))  # frames:same has no single rate here
    late = method_class("late_fusion")
    assert not late.own_frame_noise(late.Config()) and late.own_frame_noise(late.Config(train_missing="frames:uniform"))
    assert issubclass(late, Method) and method_class("lnln").own_frame_noise(method_class("lnln").Config())
    grid = grid_from_dict(
        {
            "methods": ["late_fusion", "lnln"],
            "datasets": ["synthetic"],
            "protocols": [{"frames": [0.0, 0.5]}],
            "seeds": [1],
            "config": {"epochs": 2},
            "overrides": {
                "lnln": {
                    "dim": 16,
                    "tokens": 2,
                    "heads": 2,
                    "dim_head": 8,
                    "mlp_dim": 16,
                    "depth": 1,
                    "hyper_depth": 2,
                    "fusion_depth": 1,
                    "lr_schedule": "constant",
                }
            },
            "dataset_options": {"synthetic": {"sequence_length": 6, "aligned": True, "num_videos": 20}},
        }
    )
    assert [name for name, _ in grid.experiments()] == ["synthetic/late_fusion/frames=0", "synthetic/late_fusion/frames=0.5", "synthetic/lnln/frames=0,0.5"]
    run_grid(grid, tmp_path / "store")
    md = write_report(tmp_path / "store")["markdown"].read_text()
    assert "| method | 0.0 | 0.5 | avg (2 rates) |" in md
    for method in ("late_fusion", "lnln"):  # one row each, a value under every rate and their average
        row = next(line for line in md.splitlines() if line.startswith(f"| {method} |"))
        assert len([c for c in row.split("|")[2:-1] if re.search(r"\d\.\d{3}", c)]) == 3, row
    with pytest.raises(ConfigError, match="one model cannot serve"):
        from imsa.experiments.runner import Experiment, run_experiment

        run_experiment(Experiment("late_fusion", "synthetic", protocol=shared, config={"epochs": 1}), tmp_path / "refused", dataset=data)
