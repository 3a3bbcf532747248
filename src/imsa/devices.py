"""Where a run computes: the device, the numeric precision, and strict determinism.

These are execution settings, not hyper-parameters: they travel in
:class:`imsa.training.RunContext` and are recorded in each run's JSON.
"""

from __future__ import annotations

import os
import platform
from contextlib import nullcontext

import torch

from .errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when PyTorch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises
    ------
    ConfigError
        One line naming the fix, for CUDA where PyTorch sees no GPU, a GPU index that
        does not exist, or an unknown device.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"Unknown device {spec!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"Device {spec!r} is not supported; use auto, cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "PyTorch sees no GPU (driver, or CUDA_VISIBLE_DEVICES)"
        raise ConfigError(f"--device {text}: {why} (torch {torch.__version__}); use --device cpu, or auto to take a GPU only where there is one.")
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {text}: there are {torch.cuda.device_count()} GPU(s), numbered from 0.")
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and usable on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32.")
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs its gradients scaled (they underflow otherwise); bf16 and fp32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def make_deterministic() -> None:
    """PyTorch's deterministic algorithms, strictly (an op without one is an error), with the
    cuBLAS workspace they need on CUDA.

    Without it, CPU runs still repeat bit for bit with the same seed and threads (the CPU
    kernels imsa uses are deterministic); CUDA runs may differ in the last bits.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True  # seed_everything turns it off for speed


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    """What a run records about where it computed."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": str(device), "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda}
