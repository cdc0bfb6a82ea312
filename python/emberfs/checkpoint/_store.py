"""The bridge to the Go checkpoint package (checkpoint/, through pybind).

Layout, manifest, commit protocol, latest, retention, reclaim and the
parallel verified reads and writes all live in Go (docs/checkpoint.md); this
module turns Python values into the packed int64 tables the Go functions
take (tensor addresses and lengths: bytes move Go-side straight from and
into tensor memory with the GIL released) and Go errors into Python ones.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from array import array

from .._errors import EmberFSError, NativeError, translate
from .._errors import call as _call

LATEST = "latest"
PENDING_PREFIX = ".pending-"


class CheckpointError(EmberFSError):
    """A checkpoint is damaged, incomplete or does not match what was asked."""


class ChecksumError(CheckpointError):
    """A tensor's bytes do not match the CRC32C in the manifest."""


def native(client):
    """The pybind client under an emberfs.Client."""
    return client._c


# EmberFS error codes (internal/errcode), reported as data by pybind's Err.
CODE_INVALID_ARGUMENT = 2
CODE_NOT_FOUND = 3
CODE_ALREADY_EXISTS = 4
CODE_CHECKSUM_MISMATCH = 11
CODE_OUT_OF_RANGE = 24


def translate_error(exc: BaseException, path: str | None = None, reading: bool = False) -> BaseException:
    """The Python exception for a failed Go checkpoint call, by error code.

    reading: the call reads data of an opened checkpoint, so a missing or
    short data file is a damaged checkpoint (CheckpointError), not a path
    that does not exist."""
    if not isinstance(exc, NativeError):
        return translate(exc, path)
    if exc.code == CODE_CHECKSUM_MISMATCH:
        return ChecksumError(exc.message)
    if exc.code == CODE_ALREADY_EXISTS:
        err = FileExistsError(errno.EEXIST, exc.message, path)
        err.emberfs_code = exc.code
        return err
    if reading and exc.code in (CODE_NOT_FOUND, CODE_OUT_OF_RANGE):
        return CheckpointError(exc.message)
    if not reading and exc.code == CODE_INVALID_ARGUMENT and path is not None:
        # Open/Inspect/Remove of a directory that has no manifest.
        return CheckpointError(exc.message)
    return translate(exc, path)


def call(fn, *args, path: str | None = None, reading: bool = False):
    try:
        return _call(fn, *args)
    except (NativeError, RuntimeError) as exc:
        raise translate_error(exc, path, reading) from None


def split_path(path) -> tuple[str, str]:
    """('/job/dir', 'name') for a checkpoint path ('emberfs://' URLs too)."""
    from ..client import _abs

    p = _abs(strip_scheme(path))
    job, name = posixpath.split(p)
    if not name or name in (".", "..") or name.startswith(".") or name == LATEST:
        raise ValueError(f"invalid checkpoint path {path!r}: the last component must be a plain name")
    return job, name


def job_dir(path) -> str:
    from ..client import _abs

    return _abs(strip_scheme(path))


def strip_scheme(path) -> str:
    s = os.fspath(path)
    if isinstance(s, str) and s.startswith("emberfs://"):
        rest = s[len("emberfs://"):]
        # emberfs:///abs/path, or emberfs://<mgmtd>/abs/path (address ignored
        # here: the client passed in decides which cluster).
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return s


class Progress:
    """Bytes done of bytes total; callback(done, total) on every change."""

    def __init__(self, total: int, callback=None):
        self.total = total
        self.done = 0
        self._cb = callback
        self._mu = threading.Lock()

    def set(self, done: int):
        with self._mu:
            if done <= self.done:
                return
            self.done = done
        if self._cb is not None:
            self._cb(done, self.total)


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


def table(values) -> array:
    """A packed int64 table (its address goes to Go)."""
    return array("q", values)


def addr(a: array) -> int:
    return a.buffer_info()[0] if len(a) else 0


def tensor_addr(t, nbytes: int) -> int:
    return t.data_ptr() if nbytes else 0
