"""Where the networks run: device choice and mixed precision, shared by every model.

Torch is imported where it is used, so that the command-line layer names :data:`DEVICES`
without loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from tssc_py import memory
from tssc_py.errors import TsscError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEVICES = ("auto", "cpu", "cuda")
"""Where a model runs: ``auto`` picks CUDA when available."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device not in DEVICES:
        raise TsscError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TsscError("--device cuda was asked for, but no CUDA device is available")
    return torch.device(device)


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed); a no-op on the CPU."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def check_network_fits(build: Callable[[], nn.Module], copies: int, why: str, what: str) -> None:
    """Refuse a network whose float32 weights, ``copies`` times over, cannot fit in this
    machine's memory. ``build`` runs on the meta device: nothing is allocated.

    Args:
        build: Makes the network.
        copies: Copies of the weights the caller holds at once.
        why: What they are, for the message (e.g. "built, then loaded").
        what: The network, starting a sentence.

    Raises:
        TsscError: Naming ``what``, its parameters and the estimate.
    """
    import torch

    with torch.device("meta"):
        net = build()
    count = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    memory.check_fits(
        copies * (4 * count + buffers),
        f"{what} ({count / 1e6:,.1f} M parameters, {copies} copies of their float32 weights: "
        f"{why})",
    )
