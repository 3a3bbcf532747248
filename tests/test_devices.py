"""Devices and precision: every method trains and predicts where the run says, records it,
and refuses a device that is not there with one line. CUDA cases skip without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from imsa.devices import resolve_device
from imsa.errors import ConfigError
from imsa.methods import create_method, list_methods, method_class
from imsa.testing import check_method
from imsa.training import RunContext

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda:0", marks=pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine"))]
TINY = dict(epochs=2, batch_size=16)


def test_device_names_resolve_and_a_missing_gpu_is_one_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if CUDA else "cpu")
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    if not CUDA:
        with pytest.raises(ConfigError, match=r"--device cuda: .*use --device cpu") as info:
            resolve_device("cuda")
        assert "\n" not in str(info.value)
    else:
        with pytest.raises(ConfigError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ConfigError, match="precision"):
        RunContext(precision="fp64")


@pytest.mark.skipif(CUDA, reason="a GPU is present")
def test_imsa_run_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    from imsa.cli import main

    code = main(["run", "--device", "cuda", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "--device cuda" in err and "--device cpu" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list_methods())
def test_models_and_training_batches_are_on_the_device(name, device):
    check_method(method_class(name), ["device"], device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_conformance_suite_on_the_device(device):
    if device == "cpu":
        pytest.skip("the CPU suite runs in test_methods.py")
    for name in list_methods():
        check_method(method_class(name), device=device)


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU on this machine")
def test_a_model_trained_on_the_gpu_loads_and_predicts_on_the_cpu(synthetic, tmp_path):
    from imsa.experiments.models import load_method

    split = synthetic.split(0)
    method = create_method("late_fusion", **TINY).fit(split["train"], split["valid"], context=RunContext(device="cuda:0"))
    method.save(tmp_path / "model")
    on_cpu = load_method(tmp_path / "model", device="cpu")
    assert on_cpu.device == torch.device("cpu")
    settings = {"all": __import__("numpy").ones((len(synthetic), 3), bool)}
    torch.testing.assert_close(
        torch.from_numpy(on_cpu.predict_settings(split["test"], settings)["all"]),
        torch.from_numpy(method.predict_settings(split["test"], settings)["all"]),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_is_recorded(tmp_path, precision):
    from imsa.cli import main

    out = tmp_path / "run"
    assert main(["run", "--method", "late_fusion", "--device", "cpu", "--precision", precision, "--set", "epochs=3", "--out", str(out), "--quiet"]) == 0
    (path,) = (out / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["execution"]["precision"] == precision and record["execution"]["device"] == "cpu"
    assert record["execution"]["torch"] == torch.__version__ and "cuda" in record["execution"]
    losses = [logs["loss"] for logs in record["phases"][0]["history"]]
    assert all(loss == loss and abs(loss) < 1e6 for loss in losses)


def test_fp32_on_the_cpu_is_unchanged_by_the_device_setting(synthetic):
    split = synthetic.split(0)
    first = create_method("late_fusion", **TINY).fit(split["train"], split["valid"], seed=0, context=RunContext(device="cpu"))
    second = create_method("late_fusion", **TINY).fit(split["train"], split["valid"], seed=0, context=RunContext(device="cpu", deterministic=True))
    state = second.model_.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in first.model_.state_dict().items())
