"""EmberFS for Python: files, torch.save/torch.load and a local cluster helper.

    import emberfs
    fs = emberfs.connect("127.0.0.1:9000", token="...")
    with fs.open("/data/x.bin", "wb") as f:
        f.write(b"hello")
    emberfs.save(model.state_dict(), "/ckpt/step100.pt")
    state = emberfs.load("/ckpt/step100.pt", map_location="cpu")
    kv = emberfs.KVCache(fs, "llama-8b")      # inference KV blocks, see emberfs.kvcache

    fsspec.open("emberfs:///data/x.bin")      # fsspec, see emberfs.filesystem
    emberfs.datasets.EmberMapDataset.from_prefix("emberfs:///data/train/")

Importing emberfs does not start its Go runtime; the first call that needs
it does (see emberfs._runtime for why that matters to fork()).
"""

from __future__ import annotations

from typing import Sequence

from ._errors import EmberFSError
from ._runtime import ForkedRuntimeError
from .client import Client, DirEntry, StatResult
from .cluster import LocalCluster
from .config import ConfigError
from .kvcache import KVCache

__all__ = ["Client", "ConfigError", "DirEntry", "EmberFSError", "ForkedRuntimeError", "KVCache", "LocalCluster",
           "StatResult", "connect", "load", "save", "__version__"]

_default: Client | None = None


def connect(address: str | Sequence[str] | None = None, token: str | None = None, *, config: str | None = None) -> Client:
    """Connect to the cluster whose mgmtd is at address ("host:port[,host:port]").

    address and token default to EMBERFS_MGMTD/EMBERFS_TOKEN, then the
    client config file (emberfs.config). The first client connected becomes
    the default for save() and load().
    """
    global _default
    c = Client(address, token, config=config)
    if _default is None:
        _default = c
    return c


def _client(client: Client | None) -> Client:
    if client is not None:
        return client
    if _default is None:
        raise EmberFSError("not connected: call emberfs.connect() first or pass client=")
    return _default


def save(obj, path, client: Client | None = None) -> None:
    """torch.save obj to path on EmberFS, atomically (see torch_io.save)."""
    from . import torch_io

    torch_io.save(obj, path, _client(client))


def load(path, map_location=None, weights_only: bool = True, client: Client | None = None, **kwargs):
    """torch.load from path on EmberFS."""
    from . import torch_io

    return torch_io.load(path, _client(client), map_location=map_location, weights_only=weights_only, **kwargs)


def _version() -> str:
    from . import _runtime

    return _runtime.native().Version()


def __getattr__(name):
    if name == "__version__":
        return _version()
    if name in ("datasets", "filesystem"):
        # Imported on first use: datasets needs torch, filesystem fsspec.
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)
