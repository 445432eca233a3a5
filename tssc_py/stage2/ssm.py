"""Selective state-space layer (Mamba) with two interchangeable scan backends.

The layer follows ``mamba_ssm.Mamba`` (Gu & Dao 2023) parameter for parameter (``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so a checkpoint trained
on a GPU with the fused kernels loads and runs on a CPU, and back. Only the selective scan
differs between backends:

* ``mamba_ssm``: the fused CUDA kernel ``selective_scan_fn``, wherever ``mamba_ssm`` imports
  and the tensors are on a GPU;
* ``torch``: a pure-PyTorch parallel scan (Hillis-Steele doubling: ``ceil(log2 L)`` steps of
  whole-sequence tensor operations, any length, no padding), everywhere else.

``selective_scan_reference`` is the plain sequential recurrence both are tested against.

Shapes follow ``mamba_ssm``: ``u``, ``delta``, ``z`` are ``(B, D, L)``; ``A`` is ``(D, N)``;
``B`` and ``C`` are ``(B, N, L)``; ``D`` is ``(D,)``. Recurrence per channel d and state n::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t          (then y_t * silu(z_t) when z is given)
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from tssc_py.errors import TsscError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "mamba_ssm")

ScanFn = Callable[..., torch.Tensor]


def _discretise(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step decay ``exp(delta A)`` and input ``delta B u``, each ``(B, D, L, N)``."""
    decay = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])
    drive = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)
    return decay, drive


def _finish(
    h: torch.Tensor,
    u: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
) -> torch.Tensor:
    y = torch.einsum("bdln,bnl->bdl", h, C)
    if D is not None:
        y = y + u * D[None, :, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def _prepare_delta(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool
) -> torch.Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None]
    return F.softplus(delta) if delta_softplus else delta


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The recurrence one step at a time (slow; the ground truth of the tests)."""
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay, drive = _discretise(u, delta, A, B)
    h = torch.zeros_like(drive[:, :, 0])
    states = []
    for t in range(u.shape[-1]):
        h = decay[:, :, t] * h + drive[:, :, t]
        states.append(h)
    return _finish(torch.stack(states, dim=2), u, C, D, z)


def _doubling(decay: torch.Tensor, drive: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Hillis-Steele doubling along dim 2, in place on copies (no autograd graph).

    After the step with offset ``d`` each position holds the composition of the last ``2d``
    steps (the next ``2d`` with ``reverse``), so ``ceil(log2 L)`` steps cover any length.
    """
    a, b = decay.clone(), drive.clone()
    length = a.shape[2]
    offset = 1
    while offset < length:
        # Compose each step with the one `offset` away: (a', b') = (a a_other, b + a b_other).
        # The right-hand sides are whole new tensors, so the overlapping in-place updates read
        # only values of the previous round.
        this, other = slice(offset, None), slice(None, -offset)
        if reverse:
            this, other = other, this
        b[:, :, this] += a[:, :, this] * b[:, :, other]
        a[:, :, this] *= a[:, :, other].clone()
        offset *= 2
    return b


class _LinearScan(torch.autograd.Function):
    """``h_t = decay_t * h_{t-1} + drive_t`` with a hand-written backward.

    Recording the doubling steps for autograd costs ``log2 L`` full copies of the sequence
    and a slow backward through every slice (a training step of the ``tiny`` preset on 4
    volumes of 64x64x16: 25 s and 6.8 GiB on 2 cores, against 3.5 s and 2.1 GiB; see
    benchmarks/RESULTS.md); the backward of a linear recurrence is the same recurrence run backwards
    (``g_t = grad_t + decay_{t+1} g_{t+1}``), so it is one more doubling scan.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, decay: torch.Tensor, drive: torch.Tensor
    ) -> torch.Tensor:
        h = _doubling(decay, drive)
        ctx.save_for_backward(decay, h)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Torch gives backward a ctx with saved_tensors; the FunctionCtx stub lacks it.
        decay, h = ctx.saved_tensors  # type: ignore[attr-defined]
        following = torch.zeros_like(decay)
        following[:, :, :-1] = decay[:, :, 1:]
        g = _doubling(following, grad, reverse=True)
        grad_decay = torch.zeros_like(decay)
        grad_decay[:, :, 1:] = g[:, :, 1:] * h[:, :, :-1]
        return grad_decay, g


def parallel_scan(decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """All states ``h_t = decay_t * h_{t-1} + drive_t`` (``h_{-1} = 0``) along dim 2.

    A log-depth doubling scan for any length (no padding), differentiable in both inputs.
    """
    return _LinearScan.apply(decay, drive)


def selective_scan_torch(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Pure-PyTorch selective scan with a log-depth parallel scan; same call as mamba_ssm's.

    Runs in float32 whatever the inputs (products of many decays lose too much in bf16).
    """
    u, delta, B, C = u.float(), delta.float(), B.float(), C.float()
    z = None if z is None else z.float()
    delta = _prepare_delta(delta, delta_bias, delta_softplus)
    decay, drive = _discretise(u, delta, A, B)
    return _finish(parallel_scan(decay, drive), u, C, D, z)


@cache
def _mamba_ssm_import() -> tuple[ScanFn | None, str]:
    """The fused scan, or None and why it does not import ("" when it is not installed)."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None, ""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # e.g. built for another torch, no CUDA runtime, transformers 5
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return selective_scan_fn, ""


def _mamba_ssm_scan() -> ScanFn | None:
    return _mamba_ssm_import()[0]


def mamba_ssm_available() -> bool:
    """Whether the fused ``mamba_ssm`` kernels import on this machine."""
    return _mamba_ssm_scan() is not None


@cache
def _warn_broken(reason: str) -> None:
    log.warning(
        "mamba_ssm is installed but does not import (%s): stage 2 runs the slower pure-PyTorch "
        "scan on the GPU",
        reason,
    )


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will run for ``backend`` on ``device``.

    Raises:
        TsscError: For an unknown name, or ``mamba_ssm`` where it cannot run.
    """
    if backend not in BACKENDS:
        raise TsscError(f"unknown state-space backend {backend!r}; use one of {BACKENDS}")
    fused = mamba_ssm_available() and device.type == "cuda"
    reason = _mamba_ssm_import()[1]
    if backend == "mamba_ssm" and not fused:
        why = "needs a CUDA device"
        if not mamba_ssm_available():
            why = f"does not import here ({reason})" if reason else "is not installed"
        raise TsscError(f"the mamba_ssm backend was asked for, but mamba_ssm {why}")
    if backend == "auto" and device.type == "cuda" and reason:
        _warn_broken(reason)
    if backend == "auto":
        return "mamba_ssm" if fused else "torch"
    return backend


def scan_function(backend: str) -> ScanFn:
    """The selective-scan function of a resolved backend (``torch`` or ``mamba_ssm``)."""
    if backend == "mamba_ssm":
        fn = _mamba_ssm_scan()
        if fn is None:
            raise TsscError("mamba_ssm does not import here")
        return fn
    return selective_scan_torch


class Mamba(nn.Module):
    """One Mamba layer over ``(B, L, d_model)`` sequences, with mamba_ssm's parameters.

    Args:
        d_model: Token width.
        d_state: State size N per channel.
        d_conv: Depthwise causal convolution width.
        expand: Inner width as a multiple of ``d_model``.
        backend: ``auto``, ``torch`` or ``mamba_ssm`` (resolved on each call's device).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise TsscError(f"unknown state-space backend {backend!r}; use one of {BACKENDS}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # mamba_ssm's initialisation: S4D-real A, D = 1, dt spread log-uniformly in
        # [1e-3, 1e-1] through the bias of dt_proj (inverse softplus).
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        ).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        length = x.shape[1]
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2*D, L)
        u, z = xz.chunk(2, dim=1)  # each (B, D, L)
        u = F.silu(self.conv1d(u)[..., :length])  # causal: drop the right padding
        x_dbl = self.x_proj(u.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2)  # (B, D, L), bias added in scan
        backend = resolve_backend(self.backend, x.device)
        scan = scan_function(backend)
        y = scan(
            u.contiguous(),
            delta.contiguous(),
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z=z.contiguous(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )  # (B, D, L)
        return self.out_proj(y.transpose(1, 2))
