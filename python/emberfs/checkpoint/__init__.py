"""Parallel, atomically published checkpoints on EmberFS.

    import emberfs, emberfs.checkpoint as ckpt
    emberfs.connect(mgmtd, token)
    ckpt.save(model.state_dict(), "/jobs/run1/step-100", keep_last=3)
    fut = ckpt.async_save(state, "/jobs/run1/step-200")   # returns after a host snapshot
    state = ckpt.load(ckpt.latest("/jobs/run1"))
    ckpt.load("/jobs/run1/step-200", into=model.state_dict())   # in place

PyTorch DCP: emberfs.checkpoint.dcp (EmberFSStorageWriter/Reader).
Lightning: emberfs.checkpoint.lightning (EmberFSCheckpointIO).
See docs/checkpoint.md.
"""

from ._store import CheckpointError, ChecksumError
from .api import (
    CheckpointInfo,
    SaveFuture,
    async_save,
    inspect,
    latest,
    list_checkpoints,
    load,
    reclaim,
    remove,
    save,
)

__all__ = [
    "CheckpointError", "CheckpointInfo", "ChecksumError", "SaveFuture", "async_save", "inspect",
    "latest", "list_checkpoints", "load", "reclaim", "remove", "save",
]
