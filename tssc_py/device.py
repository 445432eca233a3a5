"""Where the networks run: device choice and mixed precision, shared by both stages."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from tssc_py.errors import TsscError
from tssc_py.stage1 import DEVICES


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise TsscError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TsscError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); a no-op on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
