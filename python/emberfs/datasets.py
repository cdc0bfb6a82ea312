"""PyTorch datasets over EmberFS files, shaped like s3torchconnector's.

    from emberfs.datasets import EmberMapDataset, EmberIterableDataset
    ds = EmberMapDataset.from_prefix("emberfs:///data/train/", transform=decode)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=8)

As in s3torchconnector (S3MapDataset, S3IterableDataset), each item is
``transform(reader)`` where the reader (EmberReader) is a read-only binary
file object with ``.uri``, ``.path`` (also ``.key``) and ``.size``; the
default transform returns the reader itself. A prefix selects files like an
S3 prefix (emberfs._listing). The cluster comes from ``mgmtd``/``token``/
``config``, else EMBERFS_MGMTD/EMBERFS_TOKEN, else the config file.

Sharding: a map dataset is sharded by its sampler (DistributedSampler for
ranks; the DataLoader gives each worker its own indices). An iterable
dataset shards itself (``enable_sharding=True``, the default here; in
s3torchconnector it is opt-in): worker w of W on rank r of R yields files
``(r*W + w)::(R*W)`` of the listing, so every file is read once per epoch
across the job. The rank comes from torch.distributed when it is
initialised, else ``rank``/``world_size``.

fork and spawn: a Go runtime does not survive fork() (emberfs._runtime), so
datasets hold only plain data (paths, sizes, the cluster address) and each
process makes its own client on first use. Building a dataset, len() and
the map dataset's listing do not load the runtime in the calling process
(the listing runs in a helper process when the runtime is not yet loaded),
so DataLoader workers started by fork work. If the parent has used EmberFS
itself before forking, a forked worker raises ForkedRuntimeError naming the
fix (multiprocessing_context="spawn" or "forkserver").
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch.utils.data

from . import _listing, _shared
from .config import resolve


def identity(reader: "EmberReader") -> "EmberReader":
    """The default transform: the reader itself."""
    return reader


class EmberReader(io.BufferedIOBase):
    """A read-only file object for one EmberFS file, opened on first read.

    A file no larger than buffer_size (1 MiB) whose size is known (from the
    listing) is read whole on first use with one call into Go
    (Client.read_bytes: one metadata round trip, no open/close session),
    then served from memory; larger files are opened and read as a stream.
    """

    def __init__(self, mgmtd: str, token: str, path: str, size: int | None = None, buffer_size: int = 1 << 20):
        super().__init__()
        self._mgmtd, self._token = mgmtd, token
        self.path = path
        self._size = size
        self._buffer_size = buffer_size
        self._f: io.BufferedReader | io.BytesIO | None = None

    @property
    def key(self) -> str:
        """The file's path (s3torchconnector's name for it)."""
        return self.path

    @property
    def uri(self) -> str:
        """The file's emberfs:// URI."""
        return "emberfs://" + self.path

    @property
    def size(self) -> int:
        """The file's length in bytes (from the listing when it came from one)."""
        if self._size is None:
            self._size = _shared.client(self._mgmtd, self._token).getsize(self.path)
        return self._size

    def _small(self) -> bool:
        """Whether the file is read whole, in one call, on first use."""
        return self._size is not None and self._size <= self._buffer_size

    def _preload(self, data: bytes) -> "EmberReader":
        """Serve the file from data, already read by Client.read_bytes."""
        self._f = io.BytesIO(data)
        return self

    def _file(self) -> io.BufferedReader | io.BytesIO:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._f is None:
            client = _shared.client(self._mgmtd, self._token)
            if self._small():
                # Small-file datasets: open+read+close as one metadata
                # call instead of three (docs/python-ecosystem.md).
                self._f = io.BytesIO(client.read_bytes(self.path, self._size))
            else:
                self._f = client.open(self.path, "rb", buffering=self._buffer_size)
        return self._f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Read up to size bytes (all that is left with -1 or None)."""
        return self._file().read(size)

    def read1(self, size: int = -1) -> bytes:
        return self._file().read1(size)

    def readinto(self, b) -> int:
        return self._file().readinto(b)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file().seek(offset, whence)

    def tell(self) -> int:
        return 0 if self._f is None else self._f.tell()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        super().close()

    def __reduce__(self):
        # Crosses to another process unopened: the file handle belongs to
        # this process's client.
        return (EmberReader, (self._mgmtd, self._token, self.path, self._size, self._buffer_size))

    def __repr__(self) -> str:
        return f"EmberReader({self.uri!r})"


# Samples read ahead: the iterable dataset keeps this many small samples
# being read while the caller works on earlier ones, and the map dataset's
# __getitems__ reads a batch this many at a time. Each read is one meta round
# trip and one storage read, and the Go calls release the GIL, so threads
# overlap the round trips that one-at-a-time reading waits on in turn.
READ_AHEAD = 8

_pool_lock = threading.Lock()
_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None


def _read_pool() -> concurrent.futures.ThreadPoolExecutor:
    """This process's reader threads, made on first use (a forked child
    makes its own: threads do not survive fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
                max_workers=READ_AHEAD, thread_name_prefix="emberfs-read"))
        return _pool[1]


def _start_read(r: EmberReader) -> concurrent.futures.Future | None:
    """Start reading a small sample in the background (None: read on use)."""
    if not r._small():
        return None
    return _read_pool().submit(_shared.client(r._mgmtd, r._token).read_bytes, r.path, r._size)


def _finish(r: EmberReader, fut: concurrent.futures.Future | None) -> EmberReader:
    return r if fut is None else r._preload(fut.result())


class _Base:
    def __init__(self, mgmtd: str, token: str, transform: Callable[[EmberReader], Any],
                 uri: str | None, items: Sequence[tuple[str, int | None]] | None):
        if not callable(transform):
            raise TypeError(f"transform must be callable, not {type(transform).__name__}")
        self._mgmtd, self._token = mgmtd, token
        self._transform = transform
        self._uri = uri
        self._items = list(items) if items is not None else None

    @staticmethod
    def _paths(uris: Iterable[str]) -> list[tuple[str, None]]:
        out = []
        for u in uris:
            p, slash = _listing.strip_uri(u)
            if slash:
                raise ValueError(f"{u!r} names a directory; from_objects takes files (use from_prefix)")
            out.append((p, None))
        return out

    def _reader(self, item: tuple[str, int | None]) -> EmberReader:
        return EmberReader(self._mgmtd, self._token, item[0], item[1])

    @property
    def uri(self) -> str | None:
        """The prefix the dataset was made from (None for from_objects)."""
        return self._uri


class EmberMapDataset(_Base, torch.utils.data.Dataset):
    """A map-style dataset: item i is transform(reader of the i-th file)."""

    @classmethod
    def from_prefix(cls, uri: str, *, transform: Callable[[EmberReader], Any] = identity,
                    mgmtd: str | None = None, token: str | None = None,
                    config: str | None = None) -> "EmberMapDataset":
        """The files under prefix uri, in path order (listed on first use)."""
        _listing.strip_uri(uri)  # reject a non-emberfs URI now, not in a worker
        m, t = resolve(mgmtd, token, config)
        return cls(m, t, transform, uri, None)

    @classmethod
    def from_objects(cls, uris: Iterable[str], *, transform: Callable[[EmberReader], Any] = identity,
                     mgmtd: str | None = None, token: str | None = None,
                     config: str | None = None) -> "EmberMapDataset":
        """The given files, in the given order."""
        m, t = resolve(mgmtd, token, config)
        return cls(m, t, transform, None, cls._paths(uris))

    def _list(self) -> list[tuple[str, int | None]]:
        if self._items is None:
            self._items = _listing.list_prefix_forksafe(self._mgmtd, self._token, self._uri)
        return self._items

    def __len__(self) -> int:
        return len(self._list())

    def __getitem__(self, i: int) -> Any:
        return self._transform(self._reader(self._list()[i]))

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The items of a batch (DataLoader with a batch size calls this):
        their small files are read READ_AHEAD at a time."""
        items = self._list()
        readers = [self._reader(items[i]) for i in indices]
        futs = [_start_read(r) for r in readers]
        return [self._transform(_finish(r, f)) for r, f in zip(readers, futs)]


class EmberIterableDataset(_Base, torch.utils.data.IterableDataset):
    """An iterable dataset: transform(reader) of each file of this
    process's shard, in path order."""

    def __init__(self, mgmtd: str, token: str, transform: Callable[[EmberReader], Any], uri: str | None,
                 items: Sequence[tuple[str, int | None]] | None, enable_sharding: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__(mgmtd, token, transform, uri, items)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not (world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.enable_sharding = enable_sharding
        self._rank, self._world = rank, world_size

    @classmethod
    def from_prefix(cls, uri: str, *, transform: Callable[[EmberReader], Any] = identity,
                    enable_sharding: bool = True, rank: int | None = None, world_size: int | None = None,
                    mgmtd: str | None = None, token: str | None = None,
                    config: str | None = None) -> "EmberIterableDataset":
        """The files under prefix uri; each iterating process lists it itself."""
        _listing.strip_uri(uri)
        m, t = resolve(mgmtd, token, config)
        return cls(m, t, transform, uri, None, enable_sharding, rank, world_size)

    @classmethod
    def from_objects(cls, uris: Iterable[str], *, transform: Callable[[EmberReader], Any] = identity,
                     enable_sharding: bool = True, rank: int | None = None, world_size: int | None = None,
                     mgmtd: str | None = None, token: str | None = None,
                     config: str | None = None) -> "EmberIterableDataset":
        """The given files, in the given order."""
        m, t = resolve(mgmtd, token, config)
        return cls(m, t, transform, None, cls._paths(uris), enable_sharding, rank, world_size)

    def shard(self) -> tuple[int, int]:
        """(index, count) of this process's shard: rank*workers + worker id,
        ranks*workers."""
        if not self.enable_sharding:
            return 0, 1
        rank, world = self._rank, self._world
        if rank is None:
            rank, world = 0, 1
            dist = torch.distributed
            if dist.is_available() and dist.is_initialized():
                rank, world = dist.get_rank(), dist.get_world_size()
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * nworkers + wid, world * nworkers

    def __iter__(self) -> Iterator[Any]:
        items = self._items
        if items is None:
            # Listed here, in the iterating process (a worker has its own
            # runtime), never cached on the parent's copy.
            items = _listing.list_prefix(self._mgmtd, self._token, self._uri)
        k, n = self.shard()
        # In order, with up to READ_AHEAD small samples being read ahead.
        ahead: collections.deque = collections.deque()
        todo = iter(items[k::n])
        try:
            for item in todo:
                r = self._reader(item)
                ahead.append((r, _start_read(r)))
                if len(ahead) < READ_AHEAD:
                    continue
                r, fut = ahead.popleft()
                yield self._transform(_finish(r, fut))
            while ahead:
                r, fut = ahead.popleft()
                yield self._transform(_finish(r, fut))
        finally:
            for _, fut in ahead:  # abandoned early: reads not yet begun are dropped
                if fut is not None:
                    fut.cancel()
