"""Stage 1: the video diffusion transformer that generates the intermediate frames.

Names shared with the command-line layer live here, so that importing them does not load torch.
"""

WEIGHTS = ("ema", "model")
"""Which stored weights inference uses: the EMA average (default) or the raw ones."""

SAMPLING_STEPS = 1
"""DDIM steps of the ``diffusion`` method by default, and of stage-1 validation: one step
gives the model's mean estimate (the best PSNR / SSIM)."""

SAMPLING_FLIPS = 8
"""Flipped copies averaged by the ``diffusion`` method by default, and by validation."""
