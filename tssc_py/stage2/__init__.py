"""Stage 2: residual tri-directional Mamba refinement of the re-stacked volumes."""

# Here, not in refine.py, so that the report and the Nextflow tests name them without
# importing torch.
REFINED = "tssc"
"""Method name of stage 2 applied to the ``diffusion`` method's output (the full TSSC-Net)."""
REFINES = "diffusion"
"""The method whose output stage 2 refines."""
