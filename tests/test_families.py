"""Dataset families and packaged configs: a corpus gets its paper settings whatever file it came from."""

import json
import pickle

import numpy as np
import pytest
import yaml

from imsa.cli import main
from imsa.config import build_config, packaged_config, packaged_names
from imsa.data.dataset import Dataset, Fold
from imsa.data.families import FAMILIES, detect_family
from imsa.data.registry import dataset_family, list_datasets, load_dataset
from imsa.errors import ConfigError
from imsa.experiments.runner import Experiment
from imsa.methods import list_methods, method_class


def packaged_files():
    return [(method, name) for method in list_methods() for name in packaged_names(method)]


def test_there_are_packaged_configs_to_check():
    assert ("momke", "mosei") in packaged_files() and ("cmad", "mosi-bclstm") in packaged_files()


@pytest.mark.parametrize("method, name", packaged_files())
def test_every_packaged_config_is_what_a_dataset_of_its_family_or_name_resolves_to(method, name):
    values = packaged_config(method, name=name).values
    build_config(method_class(method).Config, values)  # every key and value is valid
    if name in FAMILIES:
        # a file of that family loaded by path ...
        assert Experiment(method, dataset="some/file.pkl").packaged_config(family=name).name == f"{method}/{name}"
        # ... and every registered dataset of the family without a file of its own
        for entry in list_datasets():
            if entry.family == name and entry.name not in packaged_names(method):
                experiment = Experiment(method, dataset=entry.name)
                assert experiment.packaged_config().name == f"{method}/{name}"
                assert experiment.resolved_config() == build_config(method_class(method).Config, values)
    else:
        assert dataset_family(name) is not None, f"configs/{method}/{name}.yaml names neither a family nor a registered dataset"
        assert Experiment(method, dataset=name).packaged_config().name == f"{method}/{name}"


def test_registered_datasets_declare_known_families():
    for entry in list_datasets():
        assert entry.family in FAMILIES
    assert dataset_family("iemocap4-text") == "iemocap4" and dataset_family("mosi-bclstm") == "mosi"
    assert Experiment("momke", dataset="iemocap4-text").resolved_config().batch_size == 16  # the paper's IEMOCAP setting
    assert Experiment("momke", dataset="mosi-bclstm").resolved_config().epochs == 150  # stage 2 of the paper's 300


def test_explicit_packaged_config_wins_and_an_unknown_one_lists_the_valid_ones():
    assert Experiment("momke", dataset="synthetic", packaged="momke/mosei").resolved_config().epochs == 50
    assert Experiment("momke", dataset="synthetic", packaged="mosei").resolved_config().epochs == 50
    with pytest.raises(ConfigError, match=r"No packaged config 'momke/mosx'.*momke/iemocap4, momke/iemocap6, momke/mosei"):
        Experiment("momke", packaged="momke/mosx").resolved_config()
    none = Experiment("late_fusion", dataset="x.pkl").packaged_config(family="mosei")
    assert none.name is None and none.values == {}


# -- detection from content ---------------------------------------------------------------------


def make_dataset(videos: list[str], labels, *, per_video: int = 1, classes=None) -> Dataset:
    n = len(videos) * per_video
    video_ids = [v for v in videos for _ in range(per_video)]
    return Dataset(
        name="file",
        modalities=("l",),
        features={"l": np.zeros((n, 2), np.float32)},
        labels=np.asarray(labels)[:n],
        utterance_ids=[f"{v}_{k}" for v in videos for k in range(per_video)],
        video_ids=video_ids,
        folds=[Fold(tuple(videos[:-2]), (videos[-2],), (videos[-1],))],
        task="classification" if classes else "regression",
        class_names=classes,
    )


@pytest.mark.parametrize(
    "videos, labels, classes, family",
    [
        ([f"Ses0{s}F_impro0{d}" for s in range(1, 6) for d in range(1, 3)], np.arange(40) % 4, ("c0", "c1", "c2", "c3"), "iemocap4"),
        ([f"dialogue{d}" for d in range(10)], np.arange(40) % 6, ("happy", "sad", "neutral", "angry", "excited", "frustrated"), "iemocap6"),
        ([f"dialogue{d}" for d in range(10)], np.arange(40) % 4, ("a", "b", "c", "d"), ""),
        ([f"yt{v:04d}" for v in range(93)], np.linspace(-3, 3, 372), None, "mosi"),
        ([f"yt{v:04d}" for v in range(1200)], np.linspace(-3, 3, 4800), None, "mosei"),
        ([f"video_{v:04d}" for v in range(50)], np.linspace(-1, 1, 200), None, "sims"),
        ([f"yt{v:04d}" for v in range(300)], np.linspace(-3, 3, 1200), None, ""),  # neither MOSI's nor MOSEI's size
        ([f"yt{v:04d}" for v in range(50)], np.linspace(0, 10, 200), None, ""),  # not a sentiment scale
    ],
)
def test_family_is_detected_from_ids_sizes_and_labels(videos, labels, classes, family):
    detected, evidence = detect_family(make_dataset(videos, labels, per_video=4, classes=classes))
    assert detected == family
    assert evidence.startswith("detected" if family else "not detected")


# -- end to end: files a user brings ---------------------------------------------------------------


def mmsa_mosei_pickle(path, videos: int = 1000):
    """An MMSA pickle with CMU-MOSEI's shape: over a thousand videos, sentiment in [-3, 3]."""
    rng = np.random.default_rng(1)
    bounds = {"train": (0, int(videos * 0.7)), "valid": (int(videos * 0.7), int(videos * 0.8)), "test": (int(videos * 0.8), videos)}
    content = {}
    for split, (lo, hi) in bounds.items():
        n = hi - lo
        content[split] = {
            "id": [f"vid{v:05d}$_$1" for v in range(lo, hi)],
            "text": rng.standard_normal((n, 2, 4)).astype(np.float32),
            "audio": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "vision": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    path.write_bytes(pickle.dumps(content, protocol=4))
    return path


SHORT = ["--set", "epochs=2", "--set", "stage1_epochs=1", "--set", "dim=8", "--set", "depth=1", "--quiet"]


def test_momke_on_a_gcnet_iemocap4_folder_gets_the_papers_iemocap4_settings(tmp_path, gcnet_iemocap, capsys):
    folder = gcnet_iemocap
    assert load_dataset(str(folder)).family == "iemocap4"
    out = tmp_path / "run"
    assert main(["run", "--method", "momke", "--dataset", str(folder), "--folds", "0", "--out", str(out), *SHORT]) == 0
    printed = capsys.readouterr().out
    assert "config: packaged momke/iemocap4.yaml (dataset family: iemocap4)" in printed
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["packaged_config"] == "momke/iemocap4" and config["family"] == "iemocap4"
    assert config["config"]["batch_size"] == 16  # IEMOCAP's 16 dialogues per batch, not MOSI's 32


def test_momke_on_a_mosei_pickle_gets_the_papers_mosei_settings(tmp_path, capsys):
    path = mmsa_mosei_pickle(tmp_path / "aligned_50.pkl")
    assert load_dataset(str(path)).family == "mosei"
    out = tmp_path / "run"
    assert main(["run", "--method", "momke", "--dataset", str(path), "--out", str(out), "--set", "per_condition=false", *SHORT]) == 0
    assert "config: packaged momke/mosei.yaml (dataset family: mosei)" in capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["packaged_config"] == "momke/mosei"
    assert Experiment("momke", dataset=str(path)).resolved_config("mosei").stage1_epochs == 50  # MOSEI's 50 + 50, not MOSI's 150 + 150


def test_a_file_of_no_known_family_says_so_in_one_line(tmp_path, capsys):
    path = mmsa_mosei_pickle(tmp_path / "aligned_50.pkl", videos=300)
    out = tmp_path / "run"
    assert main(["run", "--method", "momke", "--dataset", str(path), "--out", str(out), "--set", "per_condition=false", *SHORT]) == 0
    captured = capsys.readouterr()
    assert "config: momke defaults, no packaged config (dataset family: unknown)" in captured.out
    assert json.loads((out / "summary.json").read_text())["experiment"]["packaged_config"] is None
    # the family can be declared where detection cannot tell
    out2 = tmp_path / "declared"
    assert (
        main(["run", "--method", "momke", "--dataset", str(path), "--out", str(out2), "--set", "data.family=mosei", "--set", "per_condition=false", *SHORT])
        == 0
    )
    assert yaml.safe_load((out2 / "config.yaml").read_text())["packaged_config"] == "momke/mosei"


def test_config_option_names_a_packaged_file(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--method", "momke", "--config", "momke/mosei", "--set", "data.num_videos=12", "--out", str(out), *SHORT]
    assert main(args) == 0
    assert "config: packaged momke/mosei.yaml" in capsys.readouterr().out
    assert main(["run", "--method", "momke", "--config", "momke/mosx", "--out", str(tmp_path / "bad")]) == 2
    assert "Packaged configs of momke: momke/iemocap4" in capsys.readouterr().err
