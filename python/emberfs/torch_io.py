"""torch.save / torch.load on EmberFS files.

Both stream: torch writes its zip records through a buffered EmberFS writer
as it serializes, and reads each tensor's bytes through readinto straight
into the tensor's storage, so a checkpoint is never held whole in memory
twice.
"""

from __future__ import annotations

_WRITE_BUFFER = 8 << 20


def save(obj, path, client) -> None:
    """torch.save(obj) to path on EmberFS; the file appears complete or not at all.

    The data goes to a temporary name next to path and is renamed into place
    after it is flushed, so readers never see a half-written checkpoint.
    """
    import torch

    tmp = f"{path}.tmp-{id(obj):x}"
    try:
        with client.open(tmp, "wb", buffering=_WRITE_BUFFER) as f:
            torch.save(obj, f)
            f.flush()
            f.raw.fsync()
        client.rename(tmp, path)
    except BaseException:
        try:
            client.remove(tmp)
        except OSError:
            pass
        raise


def load(path, client, map_location=None, weights_only: bool = True, **kwargs):
    """torch.load from path on EmberFS."""
    import torch

    with client.open(path, "rb", buffering=_WRITE_BUFFER) as f:
        return torch.load(f, map_location=map_location, weights_only=weights_only, **kwargs)
