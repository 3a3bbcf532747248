"""Adding a method is one file: a method defined in a module outside imsa, named in
``$IMSA_PLUGINS``, runs through ``imsa run``, a grid, ``imsa tune`` and ``imsa predict`` with
nothing else edited."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("optuna")

TOY_METHOD = textwrap.dedent(
    '''
    """A throw-away method: the mean of per-modality linear maps of the present modalities."""

    from dataclasses import dataclass
    from typing import ClassVar

    import torch
    from torch import nn

    from imsa.config import COUNT
    from imsa.methods import register_method
    from imsa.methods.common import SinglePhaseMethod, pooled
    from imsa.methods.spec import Output, TrainConfig
    from imsa.nn.layers import masked_mean


    class ToyNet(nn.Module):
        def __init__(self, spec, width):
            super().__init__()
            self.modalities, self.task = spec.modalities, spec.task
            self.maps = nn.ModuleDict({m: nn.Linear(spec.dims[m], width) for m in spec.modalities})
            self.head = nn.Linear(width, spec.output_dim)

        def forward(self, batch):
            encoded = torch.stack([self.maps[m](pooled(batch, m)) for m in self.modalities], dim=-2)
            fused = masked_mean(encoded, batch.present, dim=-2)
            prediction = self.head(fused)
            return Output(prediction.squeeze(-1) if self.task == "regression" else prediction, fused)


    @dataclass(frozen=True)
    class ToyConfig(TrainConfig):
        width: int = 8
        train_missing: str = "dropout:0.3"

        DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "width": COUNT}


    @register_method
    class Toy(SinglePhaseMethod):
        """Toy: a throw-away method from a plugin module."""

        name = "toy"
        Config = ToyConfig
        search_space = {"lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "width": {"choices": [4, 8]}}

        def build(self, spec):
            return ToyNet(spec, self.config.width)
    '''
)


def test_a_method_from_one_plugin_file_runs_through_run_grid_tune_and_predict(tmp_path):
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    env = {**os.environ, "IMSA_PLUGINS": "toy_method", "PYTHONPATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def imsa(*args):
        result = subprocess.run([sys.executable, "-m", "imsa.cli", *args], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    assert "toy: Toy: a throw-away method from a plugin module." in imsa("methods")
    small = ["--set", "epochs=2", "--set", "data.num_videos=12"]
    assert "toy on synthetic" in imsa("run", "--method", "toy", "--out", "run", "--quiet", *small)
    imsa(
        "grid",
        "run",
        "--methods",
        "toy",
        "late_fusion",
        "--datasets",
        "synthetic",
        "--protocols",
        "fixed",
        "random:0.3",
        "--seeds",
        "1",
        "--out",
        "store",
        "--quiet",
        *small,
    )
    assert (tmp_path / "store" / "synthetic" / "toy" / "rate=0.3" / "runs" / "seed1-fold0.json").is_file()
    assert "2 trials" in imsa("tune", "--method", "toy", "--dataset", "synthetic", "--trials", "2", "--out", "study", "--quiet", *small)
    assert "predictions from 1 model(s)" in imsa("predict", "run", "--out", "preds.csv")
