"""Stage 1: the video diffusion transformer that fills in missing frames."""
