"""Stage 2: residual tri-directional Mamba refinement of the re-stacked volumes."""
