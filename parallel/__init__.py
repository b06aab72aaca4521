"""parallel: meshes, remat, data / tensor / pipeline parallelism. Imports nothing of ours.

    from parallel import mesh, remat, data_parallel, tensor_parallel, pipeline, distributed
"""

from parallel import (
    async_sgd,
    communication,
    compile_cache,
    data_parallel,
    distributed,
    large_batch,
    mesh,
    pipeline,
    pipeline_schedule,
    remat,
    tensor_parallel,
)

__all__ = [
    "async_sgd",
    "communication",
    "compile_cache",
    "data_parallel",
    "distributed",
    "large_batch",
    "mesh",
    "pipeline",
    "pipeline_schedule",
    "remat",
    "tensor_parallel",
]
