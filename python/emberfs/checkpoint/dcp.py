"""PyTorch distributed checkpoint (DCP) on EmberFS.

    import torch.distributed.checkpoint as dcp
    from emberfs.checkpoint.dcp import EmberFSStorageWriter, EmberFSStorageReader
    dcp.save(state, storage_writer=EmberFSStorageWriter("emberfs:///jobs/run1/step-100"))
    dcp.load(state, storage_reader=EmberFSStorageReader("emberfs:///jobs/run1/step-100"))

Built the way s3torchconnector plugs S3 into DCP: the writer and reader are
DCP's FileSystemWriter / FileSystemReader with `fs` replaced by an EmberFS
FileSystemBase, so DCP's planning, file format (.distcp files and a pickled
.metadata) and resharding are unchanged. On top of that:

  * Atomic publish through the Go commit protocol (checkpoint/, the same as
    emberfs.checkpoint.save): the coordinator's prepare_global_plan begins a
    save (pending directory <job>/.pending-<name>-<id> with a lease it
    renews) and hands its path to every rank inside the plan; ranks write
    their .distcp files there; finish() (coordinator, after every rank
    succeeded) writes .metadata, then commits: a manifest.json listing the
    files (no tensor entries: DCP's .metadata locates the items), one
    rename to <name>, latest, keep_last. A rank that dies or fails leaves only the
    pending directory (emberfs.checkpoint.reclaim removes it). If <name>
    already exists the save fails with FileExistsError unless overwrite=True.
  * The job directory's `latest` pointer and keep_last retention, shared with
    emberfs.checkpoint (list_checkpoints/latest/remove see DCP checkpoints).
  * Parallel reads: the reader loads different files on thread_count threads.

Every process connects itself (emberfs.connect) before saving or loading;
the writer and reader use that default client unless given client=.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from torch.distributed.checkpoint.filesystem import (
    FileSystemBase,
    FileSystemReader,
    FileSystemWriter,
    _StoragePrefix,
)

from . import _store

_SCHEME = "emberfs://"
_STREAM_BUFFER = 8 << 20


class _DurableWriter(io.BufferedWriter):
    """A buffered writer that makes the file durable when closed. DCP fsyncs
    through fileno(), which EmberFS files lack, and closes streams itself."""

    def close(self):
        if not self.closed:
            try:
                self.flush()
                self.raw.fsync()
            finally:
                super().close()


class EmberFSFileSystem(FileSystemBase):
    """DCP's file-system interface over an EmberFS client."""

    def __init__(self, client=None):
        self._client = client

    @property
    def client(self):
        from .. import _client

        return _client(self._client)

    @contextmanager
    def create_stream(self, path, mode: str):
        p = str(path)
        if mode == "wb":
            with _DurableWriter(self.client.open(p, "wb", buffering=0), _STREAM_BUFFER) as f:
                yield f
        elif mode == "rb":
            with self.client.open(p, "rb", buffering=_STREAM_BUFFER) as f:
                yield f
        else:
            raise ValueError(f"create_stream supports modes 'rb' and 'wb', not {mode!r}")

    def concat_path(self, path, suffix: str) -> str:
        return posixpath.join(str(path), suffix)

    def init_path(self, path) -> str:
        from ..client import _abs

        return _abs(_store.strip_scheme(path))

    def rename(self, path, new_path) -> None:
        self.client.rename(str(path), str(new_path))

    def mkdir(self, path) -> None:
        self.client.makedirs(str(path), exist_ok=True)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return isinstance(checkpoint_id, str) and checkpoint_id.startswith(_SCHEME)

    def exists(self, path) -> bool:
        return self.client.exists(str(path))

    def rm_file(self, path) -> None:
        self.client.remove(str(path))

    def ls(self, path) -> list[str]:
        p = str(path)
        return [posixpath.join(p, n) for n in self.client.listdir(p)]


@dataclasses.dataclass
class _PendingPrefix(_StoragePrefix):
    """The coordinator's plan for a rank: file prefix and the pending dir."""

    pending: str = ""


class EmberFSStorageWriter(FileSystemWriter):
    """DCP StorageWriter that publishes each checkpoint atomically on EmberFS."""

    def __init__(self, path, *, client=None, thread_count: int = 4, overwrite: bool = False,
                 keep_last: int | None = None, update_latest: bool = True, **kwargs):
        kwargs.setdefault("single_file_per_rank", True)
        super().__init__(path=str(path), sync_files=False, thread_count=thread_count, overwrite=overwrite, **kwargs)
        self.fs = EmberFSFileSystem(client)
        self.path = self.fs.init_path(path)
        self.keep_last = keep_last
        self.update_latest = update_latest
        self._pending = None
        self._save = None

    def set_up_storage_writer(self, is_coordinator: bool, *args, **kwargs) -> None:
        super().set_up_storage_writer(is_coordinator, *args, **kwargs)
        if not self.use_collectives:
            raise ValueError("EmberFSStorageWriter publishes through one coordinator; use_collectives=False is not supported")

    def prepare_local_plan(self, plan):
        # Unlike FileSystemWriter, never create the final directory: it
        # appears only by the publishing rename.
        if not self.overwrite and self.fs.exists(self.path):
            raise FileExistsError(errno.EEXIST, f"checkpoint already exists: {self.path}", self.path)
        return plan

    def prepare_global_plan(self, plans):
        # The Go commit protocol (checkpoint/): pending directory with a
        # lease this coordinator renews until finish() commits.
        job, name = _store.split_path(self.path)
        n = _store.native(self.fs.client)
        self._save = _store.call(n.CheckpointBegin, job, name, bool(self.overwrite), path=self.path)
        self._pending = self._save.Pending()
        return [dataclasses.replace(p, storage_data=_PendingPrefix(f"__{i}_", self._pending)) for i, p in enumerate(plans)]

    def write_data(self, plan, planner):
        final = self.path
        self.path = plan.storage_data.pending
        try:
            return super().write_data(plan, planner)
        finally:
            self.path = final

    def finish(self, metadata, results) -> None:
        final = self.path
        self.path = self._pending
        try:
            try:
                super().finish(metadata, results)  # .metadata into the pending dir
            finally:
                self.path = final
            files = {}
            for wr_list in results:
                for wr in wr_list:
                    rel = wr.storage_data.relative_path
                    files[rel] = max(files.get(rel, 0), wr.storage_data.offset + wr.storage_data.length)
            # A file-only manifest: DCP's .metadata says where every item
            # is; the manifest lists the files (Go fills in their sizes).
            manifest = json.dumps({"tensors": [], "metadata": {"dcp": {"files": files}}})
            _store.call(self._save.Commit, manifest, self.keep_last or 0, bool(self.overwrite),
                        bool(self.update_latest), path=final)
        except BaseException:
            try:
                _store.call(self._save.Abort)
            except (OSError, _store.EmberFSError):
                pass  # reclaim() removes what is left
            raise
        finally:
            self._save = None

    def reset(self, checkpoint_id=None) -> None:
        super().reset(checkpoint_id)
        self._pending = None
        self._save = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return EmberFSFileSystem.validate_checkpoint_id(checkpoint_id)


class EmberFSStorageReader(FileSystemReader):
    """DCP StorageReader for checkpoints on EmberFS; files load in parallel."""

    def __init__(self, path, *, client=None, thread_count: int = 4, **kwargs):
        super().__init__(path=str(path), **kwargs)
        self.fs = EmberFSFileSystem(client)
        self.path = self.fs.init_path(path)
        self.thread_count = thread_count

    def read_metadata(self, *args, **kwargs):
        try:
            return super().read_metadata(*args, **kwargs)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no published DCP checkpoint at {self.path}", self.path) from None

    def read_data(self, plan, planner):
        per_file: dict = {}
        for item in plan.items:
            per_file.setdefault(self.storage_data[item.storage_index].relative_path, []).append(item)
        if self.thread_count <= 1 or len(per_file) <= 1:
            return super().read_data(plan, planner)
        parts = [dataclasses.replace(plan, items=items) for items in per_file.values()]
        with ThreadPoolExecutor(min(self.thread_count, len(parts)), thread_name_prefix="emberfs-dcp-r") as ex:
            for fut in [ex.submit(FileSystemReader.read_data, self, p, planner) for p in parts]:
                fut.result().wait()
        from torch.futures import Future

        done: Future = Future()
        done.set_result(None)
        return done

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return EmberFSFileSystem.validate_checkpoint_id(checkpoint_id)


__all__ = ["EmberFSFileSystem", "EmberFSStorageReader", "EmberFSStorageWriter"]
