"""Gradient checkpointing (remat): named policies, measured memory, policy choice, sqrt(n) scans.

One namespace over four modules, one job each:
  policies   named policies ("none", "dots", "names:a,b", "full", ...) and `checkpoint`
  memory     compiled memory of a gradient step and the residuals it saves (`memory_stats`)
  choice     the cheapest-to-recompute policy that fits a memory budget (`choose_policy`)
  scan       scans over layers, checkpointed per layer or in sqrt(n) segments (`sqrt_scan`)

    from parallel import remat
    block = remat.checkpoint(block, policy="dots")        # a function, a flax block's apply...
    def body(x, layer_params):                             # ...or the body of a scan over layers
        return block(layer_params, x), None
    stats = remat.memory_stats(loss_fn, params, batch)    # compiled bytes + saved residuals
    choice = remat.choose_policy(make_loss, params, batch, budget_bytes=2**30)
    y = remat.sqrt_scan(layer_fn, x, stacked_params)      # O(sqrt(depth)) activation memory
"""

from parallel.remat.choice import DEFAULT_CANDIDATES, PolicyChoice, choose_policy
from parallel.remat.memory import (
    MemoryStats,
    Residual,
    compiled_memory,
    memory_stats,
    saved_residuals,
)
from parallel.remat.policies import (
    DOTS,
    DOTS_NO_BATCH,
    FULL,
    HOST_MEMORY_KIND,
    NAMES,
    NONE,
    OFFLOAD,
    SIMPLE_POLICIES,
    VALID_POLICIES,
    PolicySpec,
    checkpoint,
    jax_policy,
    parse_policy,
    require_host_offload,
    tagged_names,
)
from parallel.remat.scan import default_segment_length, scan_layers, sqrt_scan

__all__ = [
    "DEFAULT_CANDIDATES",
    "DOTS",
    "DOTS_NO_BATCH",
    "FULL",
    "HOST_MEMORY_KIND",
    "NAMES",
    "NONE",
    "OFFLOAD",
    "SIMPLE_POLICIES",
    "VALID_POLICIES",
    "MemoryStats",
    "PolicyChoice",
    "PolicySpec",
    "Residual",
    "checkpoint",
    "choose_policy",
    "compiled_memory",
    "default_segment_length",
    "jax_policy",
    "memory_stats",
    "parse_policy",
    "require_host_offload",
    "saved_residuals",
    "scan_layers",
    "sqrt_scan",
    "tagged_names",
]
