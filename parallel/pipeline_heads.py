"""Loss heads that partition inside a pipeline stage: cross-entropy without a gather.

`optax.softmax_cross_entropy_with_integer_labels` picks the label's logit with
`jnp.take_along_axis`, a gather with batching dimensions (`operand_batching_dims`). Inside the
1F1B scan the loss head runs under `jax.shard_map` that is manual over the `stage` axis only; when
the logits there are sharded over both an automatic batch axis (`data`) and the vocabulary
(`model`), XLA's SPMD partitioner (jaxlib 0.10.2) aborts the process while partitioning that
gather and its transpose (a scatter-add), in its sub-group resharding step:

    spmd_partitioner_util.cc:497 Check failed: partition_group_list.num_replica_groups() *
        partition_group_list.num_devices_per_group() == device_groups.num_devices_per_group()

(`TF_CPP_VMODULE=spmd_partitioner=2` shows the last op partitioned: the batched gather, being
resharded from replicated to a 2-way tiling of its batch dimension.) GPipe is not affected: its
loss runs outside the shard_map. The cross-entropy here picks the label's logit with a compare
and a sum over the vocabulary instead, Megatron's vocab-parallel form: elementwise work plus one
all-reduce over the vocabulary shards, which partitions anywhere. Its value and gradients equal
optax's up to float rounding.

    from parallel.pipeline_heads import softmax_cross_entropy_with_integer_labels
    def lm_head_loss(head, outputs_BLD, labels_BL):
        logits_BLV = outputs_BLD @ head
        return softmax_cross_entropy_with_integer_labels(logits_BLV, labels_BL).mean()
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["softmax_cross_entropy_with_integer_labels"]


def softmax_cross_entropy_with_integer_labels(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy `logsumexp(logits) - logits[label]`, without a gather.

    Args:
      logits: [..., V] unnormalized log-probabilities (may be sharded over V).
      labels: [...] integer class indices in [0, V).

    Returns:
      [...] the cross-entropy of each example (take `.mean()` for a batch loss).

    Example:
      loss = softmax_cross_entropy_with_integer_labels(logits_BLV, labels_BL).mean()
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels shape {labels.shape} must equal logits shape {logits.shape} without its "
            "last (class) axis"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    classes = jnp.arange(logits.shape[-1], dtype=labels.dtype)
    label_logits = jnp.sum(jnp.where(classes == labels[..., None], logits, 0.0), axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - label_logits
