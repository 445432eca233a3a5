"""Registration-based baselines of the paper's Table 1: VoxelMorph, TransMorph and UVI-Net.

Each is trained unsupervised on the known frames of a cohort (``tssc-train-baseline``) and used
as an interpolation method of the same name. Names shared with the command-line layer live
here, so that importing them does not load torch or MONAI.
"""

MODELS = ("voxelmorph", "transmorph", "uvinet")
"""The learned baselines; each is also the ``kind`` of its checkpoints and a ``--method``."""
