"""Every interpolation method behind one interface.

A method receives a stack of 2D+t slice sequences ``(slices, frames, x, y)`` and the indices of
its known frames, and returns the full stack. :func:`interpolate` is the only entry point the
pipeline uses: it hides every unknown frame from the method, checks what comes back, and puts
the known frames back bit for bit.
"""

from tssc_py.methods.base import (
    Method,
    fill_chunk,
    get_method,
    interpolate,
    interpolate_file,
    method_names,
    register,
)
from tssc_py.methods.diffusion import Diffusion
from tssc_py.methods.registration import Demons, TransMorph, UVINet, VoxelMorph
from tssc_py.methods.simple import Linear, Nearest

__all__ = [
    "Demons",
    "Diffusion",
    "Linear",
    "Method",
    "Nearest",
    "TransMorph",
    "UVINet",
    "VoxelMorph",
    "fill_chunk",
    "get_method",
    "interpolate",
    "interpolate_file",
    "method_names",
    "register",
]
