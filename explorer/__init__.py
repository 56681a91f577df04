"""MobileVD Explorer library: the compression path of Mobile Video Diffusion on diffusers (UI-free)."""

__version__ = "0.1.0"
