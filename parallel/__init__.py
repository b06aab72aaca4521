"""parallel: meshes, remat, data / tensor / pipeline parallelism. Imports nothing of ours."""

from parallel import mesh

__all__ = ["mesh"]
