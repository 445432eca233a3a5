"""tssc: temporal super-resolution and spatial consistency enhancement for 4D MRI."""

__version__ = "0.1.0"
