"""Stage-1 video diffusion transformer (pixel-space DiT over 2D+t slice sequences).

One file in the style of DiT's ``models.py``: patch embedding per frame, fixed sin-cos positions
in space and time, a learned known/unknown frame embedding, and blocks of temporal attention,
spatial attention and MLP, each modulated by the diffusion timestep via adaLN-Zero.

Notation in shape comments: B batch, T frames, H x W pixels, p patch size, h x w = H/p x W/p
patch grid, N = h*w tokens per frame, D hidden width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tssc_py.errors import TsscError, check_integer

# Fused attention kernels work in tiles of 64 to 128 positions, so the temporal attention (one
# position per frame, 12 by default) is mostly padding whichever kernel runs it. On an H100
# torch picks cuDNN there; the memory-efficient kernel was 1.5x faster at DiT_S's temporal shape.
# The matrix-product form was slower alone and in eager fills (compiled, with its softmax fused,
# 4 % faster, at 2.7x the rounding error). Longer sequences (the spatial attention) keep torch's
# choice, which was fastest (benchmarks/RESULTS.md, "Stage 1 attention kernels").
SHORT_ATTENTION = 64
SHORT_ATTENTION_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


DIT_LIMITS: dict[str, tuple[int, int]] = {
    "patch_size": (1, 64),
    "hidden": (4, 4096),
    "depth": (0, 64),
    "heads": (1, 64),
    "priors": (0, 4),
}
"""Smallest and largest of each :class:`DiTConfig` size. The maxima lie far above the DiT
family (patches of 2 to 8, width up to 1152, 28 blocks, 16 heads in DiT-XL): a typo or a
hand-edited checkpoint is refused before it sizes an allocation. Their product can still
exceed memory: loading and training estimate the parameters first."""
MAX_MLP_RATIO = 16.0
"""Largest MLP width as a multiple of ``hidden`` (4 in DiT)."""


@dataclass
class DiTConfig:
    """Architecture hyper-parameters of :class:`VideoDiT`.

    Attributes:
        patch_size: Side of the square patches each frame is cut into.
        hidden: Token width D.
        depth: Number of transformer blocks.
        heads: Attention heads (must divide ``hidden``).
        mlp_ratio: MLP hidden width as a multiple of ``hidden``.
        priors: Input channels next to the noisy frames: the interpolation priors computed
            from the known frames (the first is what the residual is taken over), 0 for none.
    """

    patch_size: int = 8
    hidden: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    priors: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in DIT_LIMITS.items():
            check_integer(f"DiT {name}", getattr(self, name), low, high)
        ratio = self.mlp_ratio
        number = isinstance(ratio, int | float) and not isinstance(ratio, bool)
        if not number or not 0 < ratio <= MAX_MLP_RATIO:
            raise TsscError(
                f"DiT mlp_ratio must be a number above 0 and at most {MAX_MLP_RATIO:g}, "
                f"got {self.mlp_ratio!r}"
            )
        if self.hidden % self.heads != 0:
            raise TsscError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        # The 2D sin-cos embedding splits D into 4 sin/cos quarters.
        if self.hidden % 4 != 0:
            raise TsscError(f"hidden ({self.hidden}) must be divisible by 4")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Raises:
            TsscError: If ``data`` holds keys that are not config fields.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TsscError(f"unknown DiT config keys: {', '.join(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Fixed sin-cos position embeddings
# ---------------------------------------------------------------------------------------------


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """1D sin-cos embedding of positions ``pos`` (M,) -> (M, dim), ``dim`` even."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = pos.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).float()  # (M, dim)


def sincos_2d(dim: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """2D sin-cos embedding of an ``h`` x ``w`` grid, row-major -> (h*w, dim)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    emb_y = sincos_1d(dim // 2, ys.reshape(-1))  # (h*w, dim/2)
    emb_x = sincos_1d(dim // 2, xs.reshape(-1))  # (h*w, dim/2)
    return torch.cat([emb_y, emb_x], dim=1)  # (h*w, dim)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of x (B', L, D) by ``shift``/``scale`` (B', D), broadcast over L."""
    # One fused pass over x (x * (1 + scale) + shift is three): the token tensors are large.
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class TimestepEmbedder(nn.Module):
    """Scalar diffusion timesteps -> vectors: sinusoidal frequencies followed by an MLP."""

    def __init__(self, hidden: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """Sinusoidal embedding of (possibly fractional) timesteps ``t`` (B,) -> (B, dim)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )  # (half,)
        args = t.float()[:, None] * freqs[None]  # (B, half)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed timesteps (B,) -> (B, hidden)."""
        return self.mlp(self.timestep_embedding(t, self.frequency_size))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, each (B', h, L, d/h), with the kernel chosen for L on CUDA.

    On the CPU torch's fused kernel is fastest at both of the model's shapes (RESULTS.md).
    """
    if q.is_cuda and q.shape[-2] <= SHORT_ATTENTION:
        with sdpa_kernel(SHORT_ATTENTION_BACKENDS):
            return nn.functional.scaled_dot_product_attention(q, k, v)
    return nn.functional.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of (B', L, D) via fused SDPA."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend across L: (B', L, D) -> (B', L, D)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)  # (B', L, 3, h, d/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B', h, L, d/h)
        out = attention(q, k, v)  # (B', h, L, d/h)
        out = out.transpose(1, 2).reshape(b, n, d)  # (B', L, D)
        return self.proj(out)


class Mlp(nn.Module):
    """Two-layer MLP with tanh-approximated GELU."""

    def __init__(self, hidden: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """Temporal attention, spatial attention, MLP; each sub-layer with adaLN-Zero."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_t = Attention(hidden, heads)
        self.norm_s = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_s = Attention(hidden, heads)
        self.norm_m = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        # shift/scale/gate for each of the three sub-layers.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Update tokens x (B, T, N, D) given the conditioning vector c (B, D)."""
        b, t, n, d = x.shape
        mods = self.adaLN_modulation(c).chunk(9, dim=1)  # 9 x (B, D)
        sh_t, sc_t, g_t, sh_s, sc_s, g_s, sh_m, sc_m, g_m = mods

        # Temporal: every spatial token attends across the T frames.
        xt = x.permute(0, 2, 1, 3).reshape(b * n, t, d)  # (B*N, T, D)

        def rep_n(v: torch.Tensor) -> torch.Tensor:
            return v.repeat_interleave(n, dim=0)  # (B, D) -> (B*N, D)

        h = self.attn_t(modulate(self.norm_t(xt), rep_n(sh_t), rep_n(sc_t)))  # (B*N, T, D)
        xt = torch.addcmul(xt, rep_n(g_t).unsqueeze(1), h)  # gated residual, one pass
        x = xt.reshape(b, n, t, d).permute(0, 2, 1, 3)  # (B, T, N, D)

        # Spatial: tokens within each frame attend to each other.
        xs = x.reshape(b * t, n, d)  # (B*T, N, D)

        def rep_t(v: torch.Tensor) -> torch.Tensor:
            return v.repeat_interleave(t, dim=0)  # (B, D) -> (B*T, D)

        h = self.attn_s(modulate(self.norm_s(xs), rep_t(sh_s), rep_t(sc_s)))  # (B*T, N, D)
        xs = torch.addcmul(xs, rep_t(g_s).unsqueeze(1), h)

        # MLP, per token.
        h = self.mlp(modulate(self.norm_m(xs), rep_t(sh_m), rep_t(sc_m)))  # (B*T, N, D)
        xs = torch.addcmul(xs, rep_t(g_m).unsqueeze(1), h)
        return xs.reshape(b, t, n, d)  # (B, T, N, D)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to p*p pixel values."""

    def __init__(self, hidden: int, patch_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_size * patch_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B', L, D) tokens and (B', D) conditioning -> (B', L, p*p)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (B', D)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def _linear(layer: nn.Module) -> nn.Linear:
    """``layer``, a linear one that an ``nn.Sequential`` index gives as a plain Module."""
    assert isinstance(layer, nn.Linear)
    return layer


def _zero(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class VideoDiT(nn.Module):
    """Pixel-space video DiT denoising a one-channel 2D+t sequence.

    Args:
        config: Architecture hyper-parameters.
    """

    def __init__(self, config: DiTConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DiTConfig()
        cfg = self.config
        p, d = cfg.patch_size, cfg.hidden
        self.patch_embed = nn.Conv2d(1 + cfg.priors, d, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(d)
        self.known_embed = nn.Embedding(2, d)  # index 0 unknown, 1 known
        self.blocks = nn.ModuleList(
            [DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)]
        )
        self.final_layer = FinalLayer(d, p)
        self._pos_cache: dict[tuple[int, int, int, str], torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT initialisation: Xavier linears, zeroed adaLN and output layers (identity blocks)."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        assert self.patch_embed.bias is not None  # built with one
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.known_embed.weight, std=0.02)
        nn.init.normal_(_linear(self.t_embedder.mlp[0]).weight, std=0.02)
        nn.init.normal_(_linear(self.t_embedder.mlp[2]).weight, std=0.02)
        for block in self.blocks:
            assert isinstance(block, DiTBlock)  # a ModuleList gives plain Modules
            _zero(_linear(block.adaLN_modulation[-1]))
        _zero(_linear(self.final_layer.adaLN_modulation[-1]))
        _zero(self.final_layer.linear)

    def pos_embed(self, t: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Fixed spatial + temporal sin-cos embedding, cached per (T, h, w, device) -> (T, N, D)."""
        key = (t, h, w, str(device))
        emb = self._pos_cache.get(key)
        if emb is None:
            d = self.config.hidden
            spatial = sincos_2d(d, h, w, device)  # (N, D)
            temporal = sincos_1d(d, torch.arange(t, device=device))  # (T, D)
            emb = temporal[:, None, :] + spatial[None, :, :]  # (T, N, D)
            self._pos_cache[key] = emb
        return emb

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        known: torch.Tensor,
        prior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the per-pixel target (epsilon, v or x0) for a noisy sequence.

        Args:
            x: (B, T, H, W) noisy frames (known frames may be clean), H and W divisible by p.
            t: (B,) diffusion timesteps, integer or float.
            known: (B, T) bool mask of the known (conditioning) frames.
            prior: (B, T, P, H, W) interpolation priors, ``P = config.priors``; None exactly
                when it is 0.

        Returns:
            (B, T, H, W) prediction, same dtype as the model output.

        Raises:
            TsscError: On a wrong rank, bad patch divisibility or mismatched t/known shapes.
        """
        if x.dim() != 4:
            raise TsscError(f"expected x of shape (B, T, H, W), got {tuple(x.shape)}")
        b, nt, hh, ww = x.shape
        p = self.config.patch_size
        if hh % p or ww % p:
            raise TsscError(f"frame size {hh}x{ww} is not divisible by the patch size {p}")
        if t.shape != (b,):
            raise TsscError(f"expected t of shape ({b},), got {tuple(t.shape)}")
        if known.shape != (b, nt):
            raise TsscError(f"expected known of shape ({b}, {nt}), got {tuple(known.shape)}")
        if (prior is not None) != bool(self.config.priors):
            need = f"needs {self.config.priors}" if self.config.priors else "takes no"
            raise TsscError(f"this model {need} interpolation prior(s)")
        if prior is not None and prior.shape != (b, nt, self.config.priors, hh, ww):
            raise TsscError(
                f"prior shape {tuple(prior.shape)} is not {(b, nt, self.config.priors, hh, ww)}"
            )
        gh, gw = hh // p, ww // p
        n = gh * gw

        frames = (
            x[:, :, None] if prior is None else torch.cat([x[:, :, None], prior], dim=2)
        )  # (B, T, 1 + P, H, W)
        tok = self.patch_embed(frames.reshape(b * nt, -1, hh, ww))  # (B*T, D, h, w)
        tok = tok.flatten(2).transpose(1, 2).reshape(b, nt, n, -1)  # (B, T, N, D)
        tok = tok + self.pos_embed(nt, gh, gw, x.device).to(tok.dtype)  # (B, T, N, D)
        tok = tok + self.known_embed(known.long())[:, :, None, :]  # (B, T, N, D)

        c = self.t_embedder(t)  # (B, D)
        for block in self.blocks:
            tok = block(tok, c)  # (B, T, N, D)

        c_bt = c.repeat_interleave(nt, dim=0)  # (B*T, D)
        # float32 with autocast off: an epsilon or v prediction is divided by the noise level
        # when turned back into an image, which multiplies bf16's rounding (about 12 times at
        # t = 999 for epsilon); this small layer costs little in float32.
        with torch.autocast(x.device.type, enabled=False):
            out = self.final_layer(
                tok.reshape(b * nt, n, -1).float(), c_bt.float()
            )  # (B*T, N, p*p)
        return self.unpatchify(out, b, nt, gh, gw)

    def unpatchify(self, out: torch.Tensor, b: int, t: int, gh: int, gw: int) -> torch.Tensor:
        """(B*T, h*w, p*p) patch values -> (B, T, h*p, w*p) frames."""
        p = self.config.patch_size
        out = out.reshape(b, t, gh, gw, p, p)  # (B, T, h, w, p, p)
        out = out.permute(0, 1, 2, 4, 3, 5)  # (B, T, h, p, w, p)
        return out.reshape(b, t, gh * p, gw * p)  # (B, T, H, W)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

PRESETS: dict[str, DiTConfig] = {
    # For tests and CPU demos.
    "DiT_tiny": DiTConfig(patch_size=4, hidden=64, depth=2, heads=2),
    # The default for GPU work at 256x256.
    "DiT_S": DiTConfig(patch_size=8, hidden=384, depth=12, heads=6),
    "DiT_B": DiTConfig(patch_size=8, hidden=768, depth=12, heads=12),
}
"""The size presets, by name (``--preset``)."""


def preset_config(name: str, **overrides: Any) -> DiTConfig:
    """A preset's config (a fresh copy) with optional overrides, without building the model.

    Raises:
        TsscError: For an unknown preset name or override.
    """
    if name not in PRESETS:
        raise TsscError(f"unknown DiT preset {name!r} (known: {', '.join(PRESETS)})")
    try:
        return DiTConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
    except TypeError as exc:
        raise TsscError(f"bad overrides for {name}: {exc}") from None


def build_model(preset: str, **overrides: Any) -> VideoDiT:
    """Build a preset, optionally overriding config fields (e.g. ``depth=4``).

    Raises:
        TsscError: For an unknown preset or unknown override keys.
    """
    return VideoDiT(preset_config(preset, **overrides))
