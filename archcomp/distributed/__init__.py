"""Training a compiled model on torch.distributed: FSDP2 sharding by the spec's repeated
blocks, sharded checkpoints, artifacts gathered and loaded without one rank holding the model.

- :func:`shard`: ``fully_shard`` on each repeated block and the root; a model built on
  ``meta`` is materialised on each rank's device with the weights of an unsharded build.
- :func:`save_sharded` / :func:`load_sharded`: ``torch.distributed.checkpoint`` folders.
- :func:`gather_artifact` / :func:`load_artifact_sharded`: ordinary archcomp artifacts
  (safetensors, spec embedded), streamed one tensor at a time.

See docs/scaling.md.
"""

from archcomp.backends.torch.checkpointing import fsdp_units
from archcomp.distributed.checkpoint import (
    gather_artifact,
    load_artifact_sharded,
    load_sharded,
    save_sharded,
)
from archcomp.distributed.fsdp import materialize, shard

__all__ = [
    "fsdp_units",
    "gather_artifact",
    "load_artifact_sharded",
    "load_sharded",
    "materialize",
    "save_sharded",
    "shard",
]
