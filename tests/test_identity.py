"""One identity for every resumable artefact (imsa.identity): stable across releases for the
same settings, different for different settings, and clear about artefacts from the future."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from imsa.cli import main
from imsa.errors import ImsaError
from imsa.experiments.runner import experiment_fingerprint
from imsa.identity import ADDED_KEYS, META_KEY, SCHEMA, canonical, differences, fingerprint, stamp

FIXTURES = Path(__file__).parent / "fixtures" / "v0.4.0"
EXPERIMENT = {
    "method": "late_fusion",
    "dataset": "synthetic",
    "dataset_options": {},
    "protocol": {"kind": "fixed", "rate": 0.0, "mask_seed": 0},
    "config": {"epochs": 2, "lr": 0.001},
    "family": "synthetic",
}


@pytest.mark.parametrize("entry", sorted(ADDED_KEYS), ids=lambda e: ".".join(p for p in e if p))
def test_each_added_key_at_its_old_behaviour_keeps_the_identity_and_any_other_value_changes_it(entry):
    section, key = entry
    neutral, _ = ADDED_KEYS[entry]
    with_key = json.loads(json.dumps(EXPERIMENT))
    (with_key.setdefault(section, {}) if section else with_key)[key] = neutral
    assert fingerprint(with_key) == fingerprint(EXPERIMENT)
    assert not differences(EXPERIMENT, with_key)
    other = [0.5] if isinstance(neutral, list) else {"trials": 20} if isinstance(neutral, dict) else 0.3
    (with_key.setdefault(section, {}) if section else with_key)[key] = other
    assert fingerprint(with_key) != fingerprint(EXPERIMENT)
    assert differences(EXPERIMENT, with_key) == [f"{section + '.' if section else ''}{key} ('(absent)' before, {other!r} now)"]


def test_the_stamp_and_tuples_are_not_part_of_the_identity():
    stamped = {**EXPERIMENT, "config": {**EXPERIMENT["config"], "channels": (1, 2)}, META_KEY: stamp()}
    listed = {**EXPERIMENT, "config": {**EXPERIMENT["config"], "channels": [1, 2]}, META_KEY: {"imsa": "9.9", "schema": SCHEMA}}
    assert fingerprint(stamped) == fingerprint(listed) and META_KEY not in canonical(stamped)


def test_a_changed_setting_is_named_with_both_values():
    changed = {**EXPERIMENT, "config": {**EXPERIMENT["config"], "lr": 0.002}}
    assert differences(EXPERIMENT, changed) == ["config.lr (0.001 before, 0.002 now)"]


def test_the_run_files_of_0_4_0_carry_the_identity_this_release_computes():
    resolved = yaml.safe_load((FIXTURES / "run" / "config.yaml").read_text())
    record = json.loads((FIXTURES / "run" / "runs" / "seed1-fold0.json").read_text())
    assert record["experiment"] == experiment_fingerprint(resolved)


def test_artefacts_of_a_newer_schema_are_refused_naming_the_versions(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config[META_KEY] = {"imsa": "9.0.0", "schema": SCHEMA + 1}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["run", "--quiet", "--out", str(run), "--seeds", "1", "2", "--set", "epochs=2", "--set", "dim=8", "--set", "data.num_videos=12"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "written by imsa 9.0.0 (config schema 2)" in err and "Upgrade imsa" in err and err.count("\n") == 1
    document = run / "models" / "seed1-fold0.json"
    data = json.loads(document.read_text())
    data[META_KEY] = {"imsa": "9.0.0", "schema": SCHEMA + 1}
    document.write_text(json.dumps(data))
    from imsa.experiments.models import load_method

    with pytest.raises(ImsaError, match="config schema 2"):
        load_method(document)


def test_new_artefacts_record_the_release_and_schema_that_wrote_them(tmp_path):
    assert main(["run", "--quiet", "--out", str(tmp_path / "run"), "--set", "epochs=1"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())[META_KEY] == stamp()
    assert json.loads((tmp_path / "run" / "models" / "seed1-fold0.json").read_text())[META_KEY] == stamp()
    assert json.loads((tmp_path / "run" / "runs" / "seed1-fold0.json").read_text())["versions"]["schema"] == SCHEMA


@pytest.mark.parametrize(
    "method, old, new, value",
    [
        ("mult", "layers", "depth", 2),
        ("dicmor", "layers", "depth", 2),
        ("dicmor", "rec_weight", "recon_weight", 0.3),
        ("imder", "rec_weight", "recon_weight", 0.3),
        ("lnln", "mask_padding", "padding_mask", False),
    ],
)
def test_a_renamed_key_is_read_with_a_warning_and_keeps_the_identity(method, old, new, value, caplog, monkeypatch):
    import imsa.config
    from imsa.methods import method_class
    from imsa.methods.registry import create_method

    monkeypatch.setattr(imsa.config, "_WARNED", set())  # warned once per process: start afresh
    cls = method_class(method).Config
    with caplog.at_level("WARNING", logger="imsa"):
        config = create_method(method, **{old: value}).config
    assert getattr(config, new) == value
    assert any(f"{old!r}" in r.getMessage() and f"{new!r}" in r.getMessage() for r in caplog.records)
    written_before = {**EXPERIMENT, "method": method, "config": {old: value}}  # an artefact of imsa 0.4
    written_now = {**EXPERIMENT, "method": method, "config": {new: value}}
    assert fingerprint(written_before, cls) == fingerprint(written_now, cls)
    assert not differences(written_before, written_now, cls)
    assert differences(written_before, {**written_now, "config": {new: value * 2 if value else True}}, cls)


@pytest.mark.parametrize("method", ["dicmor", "imder"])
def test_backbone_keys_a_method_gained_keep_its_identity_at_their_old_behaviour(method):
    from imsa.methods import method_class

    cls = method_class(method).Config
    now = {**EXPERIMENT, "method": method, "config": {"dim": 32, "relu_dropout": 0.0, "res_dropout": 0.0, "causal": True}}
    before = {**EXPERIMENT, "method": method, "config": {"dim": 32}}
    assert fingerprint(now, cls) == fingerprint(before, cls)
    assert fingerprint({**now, "config": {**now["config"], "causal": False}}, cls) != fingerprint(before, cls)


def test_a_checkpoint_of_a_newer_schema_is_refused(tmp_path):
    import torch

    from imsa.checkpoints import resume_checkpoint, save_checkpoint
    from imsa.files import atomic_torch_save

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "train.pt"
    state = {"finished": False, "next_epoch": 1}
    save_checkpoint(path, model, optimizer, None, state, {"seed": 1})
    assert resume_checkpoint(path, model, optimizer, None, "train", {"seed": 1}) == state
    saved = torch.load(path, weights_only=True)
    atomic_torch_save({**saved, META_KEY: {"imsa": "9.0.0", "schema": SCHEMA + 1}}, path)
    with pytest.raises(ImsaError, match="config schema 2"):
        resume_checkpoint(path, model, optimizer, None, "train", {"seed": 1})


def test_shared_phases_of_0_4_0_keep_their_file_names():
    """A complete-data phase of 0.4.0 was kept under sha256(JSON of its key)[:24]; the same phase
    keys to the same name now, also for a method whose config keys were renamed or gained."""
    import hashlib

    from imsa.methods import method_class

    old_config = {"dim": 32, "layers": 4, "rec_weight": 0.1, "padding_mask": False}
    key = {"method": "dicmor", "seed": 1, "sampler": "Complete()", "settings": ["l,a,v"], "phase": "pretrain", "data": "abc", "epochs": 100, "lr": 1e-4}
    then = hashlib.sha256(json.dumps({**key, "config": old_config}, sort_keys=True, default=str).encode()).hexdigest()[:24]
    new_config = {"dim": 32, "depth": 4, "recon_weight": 0.1, "padding_mask": False, "relu_dropout": 0.0, "res_dropout": 0.0, "causal": True}
    assert fingerprint({**key, "config": new_config}, method_class("dicmor").Config)[:24] == then
