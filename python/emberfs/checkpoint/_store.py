"""Checkpoint storage: pending directory, shard files, manifest, publish.

Layout (shared with the Go package checkpoint/, see docs/checkpoint.md):

    <job>/<name>/                    a published checkpoint
        manifest.json                written last; its presence means complete
        rank-<r>-<i>.bin             shard files: blobs back to back
    <job>/.pending-<name>-<uuid>/    a save in progress (never read)
    <job>/latest                     name of the newest published checkpoint

A save writes its shards into the pending directory, writes manifest.json
there, and publishes with one rename of the directory. The rename fails if
<name> exists, so of two jobs saving to one path one wins and the other gets
FileExistsError; a save that dies leaves only a pending directory, which no
reader looks at and reclaim() removes.

Data moves between tensor memory and EmberFS with no copy: the native file
reads into / writes from the tensor's address, and CRC32C is computed in Go
over the same memory (gopy releases the GIL for both, so threads overlap).
"""

from __future__ import annotations

import errno
import json
import posixpath
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from .._errors import EmberFSError

MANIFEST = "manifest.json"
LATEST = "latest"
PENDING_PREFIX = ".pending-"
FORMAT = "emberfs-checkpoint"
VERSION = 1
# Large blobs move in pieces so one tensor's I/O spreads over threads.
PIECE = 32 << 20


class CheckpointError(EmberFSError):
    """A checkpoint is damaged, incomplete or does not match what was asked."""


class ChecksumError(CheckpointError):
    """A tensor's bytes do not match the CRC32C in the manifest."""


def crc32c(addr: int, n: int, crc: int = 0) -> int:
    from .._errors import NativeError, call, translate
    from .._native import pybind

    if not n:
        return crc
    try:
        return call(pybind.CRC32CUpdate, crc, addr, n)
    except NativeError as exc:
        raise translate(exc) from None


def split_path(path) -> tuple[str, str]:
    """('/job/dir', 'name') for a checkpoint path ('emberfs://' URLs too)."""
    from ..client import _abs

    p = _abs(strip_scheme(path))
    job, name = posixpath.split(p)
    if not name or name in (".", "..") or name.startswith(PENDING_PREFIX) or name == LATEST:
        raise ValueError(f"invalid checkpoint path {path!r}: the last component must be a plain name")
    return job, name


def strip_scheme(path) -> str:
    import os

    s = os.fspath(path)
    if isinstance(s, str) and s.startswith("emberfs://"):
        rest = s[len("emberfs://"):]
        # emberfs:///abs/path, or emberfs://<mgmtd>/abs/path (address ignored
        # here: the client passed in decides which cluster).
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return s


class Progress:
    """Bytes done of bytes total, updated from I/O threads."""

    def __init__(self, total: int, callback=None):
        self.total = total
        self.done = 0
        self._cb = callback
        self._mu = threading.Lock()

    def add(self, n: int):
        with self._mu:
            self.done += n
            done = self.done
        if self._cb is not None:
            self._cb(done, self.total)


def _write_shard(client, path: str, blobs, progress: Progress | None):
    """Write blobs back to back into a new file; fill in offset and crc32c."""
    with client.open(path, "xb", buffering=0) as f:
        off = 0
        for b in blobs:
            addr = b.tensor.data_ptr() if b.nbytes else 0
            crc = 0
            pos = 0
            while pos < b.nbytes:
                n = min(PIECE, b.nbytes - pos)
                f.pwrite_address(addr + pos, n, off + pos)
                crc = crc32c(addr + pos, n, crc)
                pos += n
                if progress:
                    progress.add(n)
            b.file = posixpath.basename(path)
            b.offset = off
            b.crc32c = crc
            off += b.nbytes
        f.fsync()


def balance(blobs, bins: int):
    """Split blobs into up to bins lists of about equal bytes (largest first)."""
    bins = max(1, min(bins, len(blobs)))
    buckets = [[] for _ in range(bins)]
    sizes = [0] * bins
    for b in sorted(blobs, key=lambda b: b.nbytes, reverse=True):
        i = sizes.index(min(sizes))
        buckets[i].append(b)
        sizes[i] += b.nbytes
    return [bk for bk in buckets if bk]


class PendingSave:
    """One save in progress: a pending directory next to the final name."""

    def __init__(self, client, path, replace: bool = False):
        self.client = client
        self.job, self.name = split_path(path)
        self.path = posixpath.join(self.job, self.name)
        if not replace and client.exists(self.path):
            raise FileExistsError(errno.EEXIST, f"checkpoint already exists: {self.path}", self.path)
        client.makedirs(self.job, exist_ok=True)
        self.pending = posixpath.join(self.job, f"{PENDING_PREFIX}{self.name}-{uuid.uuid4().hex}")
        client.mkdir(self.pending)
        self.closed = False

    @classmethod
    def attach(cls, client, path, pending: str) -> "PendingSave":
        """A PendingSave for a pending directory another rank created."""
        self = cls.__new__(cls)
        self.client = client
        self.job, self.name = split_path(path)
        self.path = posixpath.join(self.job, self.name)
        self.pending = pending
        self.closed = False
        return self

    def write_shards(self, rank: int, blobs, concurrency: int, progress: Progress | None = None):
        """Write blobs into concurrency shard files in parallel."""
        groups = balance(blobs, concurrency)
        if not groups:
            return
        paths = [posixpath.join(self.pending, f"rank-{rank}-{i}.bin") for i in range(len(groups))]
        if len(groups) == 1:
            _write_shard(self.client, paths[0], groups[0], progress)
            return
        with ThreadPoolExecutor(len(groups), thread_name_prefix="emberfs-ckpt-w") as ex:
            futs = [ex.submit(_write_shard, self.client, p, g, progress) for p, g in zip(paths, groups)]
            for fu in futs:
                fu.result()

    def commit(self, manifest: dict, replace: bool = False):
        """Write manifest.json last, then publish with one rename.

        replace=True first moves an existing checkpoint at the path aside
        (one rename) and removes it after the publish, so readers see the
        old or the new checkpoint, or briefly none, never a mix."""
        data = json.dumps(manifest, separators=(",", ":")).encode()
        with self.client.open(posixpath.join(self.pending, MANIFEST), "xb", buffering=0) as f:
            f.write(data)
            f.fsync()
        old = None
        if replace and self.client.exists(self.path):
            old = posixpath.join(self.job, f"{PENDING_PREFIX}{self.name}-replaced-{uuid.uuid4().hex}")
            try:
                self.client.rename(self.path, old)
            except FileNotFoundError:
                old = None  # removed meanwhile
        try:
            self.client.rename(self.pending, self.path)
            if old is not None:
                self.client.rmtree(old)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise FileExistsError(errno.EEXIST, f"checkpoint already exists (another save published it first): {self.path}", self.path) from None
            raise
        self.closed = True

    def abort(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.client.rmtree(self.pending)
        except OSError:
            pass  # reclaim() removes what is left


def new_manifest(name: str, blobs, leaves, metadata: dict, files: dict | None = None) -> dict:
    # "files" (name -> size) is what the Go reader checks every range against.
    if files is None:
        files = {}
        for b in blobs:
            files[b.file] = max(files.get(b.file, 0), b.offset + b.nbytes)
    return {
        "files": {f: {"size": n} for f, n in files.items()},
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "created_unix_ns": time.time_ns(),
        "tensors": [
            {"name": b.name, "file": b.file, "offset": b.offset, "length": b.nbytes,
             "dtype": b.dtype, "shape": b.shape, "crc32c": b.crc32c}
            for b in blobs
        ],
        "metadata": metadata,
    }


def read_manifest(client, path) -> dict:
    job, name = split_path(path)
    p = posixpath.join(job, name)
    mp = posixpath.join(p, MANIFEST)
    try:
        with client.open(mp, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if client.isdir(p):
            raise CheckpointError(f"{p} is not a published checkpoint: it has no {MANIFEST}") from None
        raise FileNotFoundError(errno.ENOENT, f"no checkpoint at {p}", p) from None
    try:
        m = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{mp}: manifest is not valid JSON: {exc}") from None
    if m.get("format") != FORMAT or not isinstance(m.get("tensors"), list):
        raise CheckpointError(f"{mp}: not an EmberFS checkpoint manifest")
    if m.get("version", 0) > VERSION:
        raise CheckpointError(f"{mp}: manifest version {m.get('version')} is newer than this library reads ({VERSION})")
    return m


class Reader:
    """Reads blobs of one published checkpoint into caller memory, in parallel."""

    def __init__(self, client, path, manifest: dict | None = None):
        self.client = client
        job, name = split_path(path)
        self.path = posixpath.join(job, name)
        self.manifest = manifest or read_manifest(client, path)
        self.entries = {e["name"]: e for e in self.manifest["tensors"]}
        self._files = {}
        self._mu = threading.Lock()

    def _file(self, name: str, tensor: str):
        with self._mu:
            f = self._files.get(name)
            if f is None:
                p = posixpath.join(self.path, name)
                try:
                    f = self.client.open(p, "rb", buffering=0)
                except FileNotFoundError:
                    raise CheckpointError(f"shard file {p} of tensor {tensor!r} is missing") from None
                self._files[name] = f
            return f

    def close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()

    def read(self, targets, concurrency: int, verify: bool = True, progress: Progress | None = None):
        """targets: [(entry, tensor)], tensor contiguous CPU with entry's size."""
        pieces = []
        for e, t in targets:
            n = e["length"]
            addr = t.data_ptr() if n else 0
            for pos in range(0, n, PIECE):
                pieces.append((e, addr + pos, min(PIECE, n - pos), pos))

        def read_piece(p):
            e, addr, n, pos = p
            f = self._file(e["file"], e["name"])
            done = 0
            while done < n:
                got = f.pread_address(addr + done, n - done, e["offset"] + pos + done)
                if got == 0:
                    raise CheckpointError(
                        f"tensor {e['name']!r}: shard file {posixpath.join(self.path, e['file'])} ends before "
                        f"byte {e['offset'] + pos + done} (truncated)"
                    )
                done += got
            if progress:
                progress.add(n)

        def check(et):
            e, t = et
            got = crc32c(t.data_ptr(), e["length"]) if e["length"] else 0
            if got != e["crc32c"]:
                raise ChecksumError(
                    f"tensor {e['name']!r}: checksum mismatch in {posixpath.join(self.path, e['file'])} "
                    f"at offset {e['offset']} (CRC32C {got:#010x}, manifest says {e['crc32c']:#010x})"
                )

        workers = max(1, min(concurrency, len(pieces)))
        with ThreadPoolExecutor(workers, thread_name_prefix="emberfs-ckpt-r") as ex:
            for _ in ex.map(read_piece, pieces):
                pass
            if verify:
                for _ in ex.map(check, targets):
                    pass

