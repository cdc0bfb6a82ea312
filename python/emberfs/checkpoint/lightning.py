"""A pytorch-lightning CheckpointIO that stores checkpoints on EmberFS.

    from emberfs.checkpoint.lightning import EmberFSCheckpointIO
    trainer = Trainer(plugins=[EmberFSCheckpointIO()], callbacks=[ModelCheckpoint(dirpath="/ckpt/run1")])

The path Lightning chooses (e.g. /ckpt/run1/epoch=0-step=100.ckpt) names an
EmberFS checkpoint directory written by emberfs.checkpoint.save: tensors go to
parallel shard files, the rest of Lightning's checkpoint dict (loop state,
callbacks, hyper-parameters) is pickled into the manifest, and the checkpoint
is published atomically. Saving to an existing path (last.ckpt) replaces it.
Lightning still creates the dirpath directory on the local file system (its
ModelCheckpoint does that itself); nothing is written there.
"""

from __future__ import annotations

from pytorch_lightning.plugins.io import CheckpointIO

from . import api


class EmberFSCheckpointIO(CheckpointIO):
    """save_checkpoint / load_checkpoint / remove_checkpoint on EmberFS."""

    def __init__(self, client=None, concurrency: int = api.DEFAULT_CONCURRENCY):
        self._client = client
        self.concurrency = concurrency

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(
                f"EmberFSCheckpointIO.save_checkpoint takes no storage_options, got {storage_options!r}"
            )
        api.save(checkpoint, str(path), client=self._client, concurrency=self.concurrency, overwrite=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        import torch

        sd = api.load(str(path), client=self._client, concurrency=self.concurrency,
                      weights_only=True if weights_only is None else weights_only)
        if map_location is None:
            return sd
        if not isinstance(map_location, (str, torch.device)):
            raise TypeError("EmberFSCheckpointIO supports map_location as a device or device string only")
        from lightning_fabric.utilities.apply_func import move_data_to_device

        return move_data_to_device(sd, torch.device(map_location))

    def remove_checkpoint(self, path) -> None:
        try:
            api.remove(str(path), client=self._client)
        except FileNotFoundError:
            pass  # like TorchCheckpointIO: removing a missing checkpoint is not an error


__all__ = ["EmberFSCheckpointIO"]
