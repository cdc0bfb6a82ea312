"""EmberFS as an fsspec file system: ``emberfs://`` URLs.

    import fsspec
    with fsspec.open("emberfs:///data/x.csv", "w") as f:   # cluster from env/config
        f.write("a,b\\n1,2\\n")
    fs = fsspec.filesystem("emberfs", mgmtd="10.0.0.1:7100", token="...")

The package registers the class under the ``emberfs`` protocol through the
``fsspec.specs`` entry point, so anything built on fsspec (pandas, pyarrow,
Hugging Face datasets, torch.distributed.checkpoint's FsspecWriter) reads
and writes EmberFS paths.

A URL names an absolute EmberFS path: ``emberfs:///data/x`` and
``emberfs://data/x`` both mean ``/data/x``. The cluster comes from the
``mgmtd``/``token``/``config`` storage options, else ``EMBERFS_MGMTD`` /
``EMBERFS_TOKEN``, else the client config file (emberfs.config).

Writes create missing parent directories (object-store habits: a writer of
``emberfs:///out/part-0.parquet`` need not mkdir ``/out``); pass
``auto_mkdir=False`` to get FileNotFoundError instead. Inside
``fs.transaction`` a written file goes to a hidden temporary name in the
same directory and is renamed over its target at commit (atomic), or
removed at discard.

Instances are cheap and hold no connection: fsspec makes one per thread
and pickles them to worker processes; all instances of a process share one
Client per cluster, made on first use (emberfs._shared), so they also work
in DataLoader workers started with fork, as long as the parent itself did
not use EmberFS before forking (emberfs._runtime).
"""

from __future__ import annotations

import datetime
import errno
import io
import os
import posixpath
import stat as stat_mod
import uuid
from typing import Any

from fsspec.spec import AbstractFileSystem
from fsspec.utils import stringify_path

from . import _shared
from .client import Client, StatResult
from .config import resolve

_COPY_CHUNK = 16 << 20


def _type_of(mode: int) -> str:
    if stat_mod.S_ISDIR(mode):
        return "directory"
    if stat_mod.S_ISREG(mode):
        return "file"
    return "other"


class EmberFileSystem(AbstractFileSystem):
    """fsspec file system over an EmberFS cluster (protocol ``emberfs``)."""

    protocol = ("emberfs",)
    root_marker = "/"
    sep = "/"

    def __init__(self, mgmtd: str | list[str] | None = None, token: str | None = None,
                 config: str | None = None, auto_mkdir: bool = True, client: Client | None = None,
                 **kwargs: Any):
        """mgmtd/token/config: the cluster (see emberfs.config for defaults).
        client: use this Client instead (not picklable to other processes).
        auto_mkdir: create missing parent directories when writing a file."""
        super().__init__(**kwargs)
        self._given_client = client
        if client is None:
            # Resolved now, in plain strings, so the instance pickles; the
            # connection is made on first use in whatever process that is.
            self.mgmtd, self._token = resolve(mgmtd, token, config)
        else:
            self.mgmtd, self._token = client.mgmtd, None
        self.auto_mkdir = auto_mkdir

    @property
    def client(self) -> Client:
        """The Client this instance uses (this process's shared one)."""
        if self._given_client is not None:
            return self._given_client
        return _shared.client(self.mgmtd, self._token)

    # -- paths -------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if path.startswith("emberfs://"):
            path = path[len("emberfs://"):]
        elif path.startswith("emberfs:"):
            path = path[len("emberfs:"):]
        p = posixpath.normpath("/" + path)
        # normpath keeps a leading "//" (POSIX allows it a meaning); not here.
        return "/" + p.lstrip("/")

    def unstrip_protocol(self, name: str) -> str:
        """The emberfs:// URL of an EmberFS path."""
        return "emberfs://" + self._strip_protocol(name)

    # -- metadata ----------------------------------------------------------
    def _info_of(self, path: str, st: StatResult, islink: bool = False) -> dict[str, Any]:
        return {
            "name": path, "size": st.st_size, "type": _type_of(st.st_mode), "mode": st.st_mode,
            "ino": st.st_ino, "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid,
            "created": st.st_ctime, "mtime": st.st_mtime, "islink": islink,
        }

    def _info_following(self, path: str, lst: StatResult | None) -> dict[str, Any]:
        """info of path given its lstat (None: not known), following a link
        like LocalFileSystem does; a dangling link is "other"."""
        if lst is None:
            lst = self.client.lstat(path)
        if not stat_mod.S_ISLNK(lst.st_mode):
            return self._info_of(path, lst)
        try:
            out = self._info_of(path, self.client.stat(path), islink=True)
        except (FileNotFoundError, NotADirectoryError):
            out = self._info_of(path, lst, islink=True)
        out["destination"] = self.client.readlink(path)
        return out

    def info(self, path, **kwargs) -> dict[str, Any]:
        """Details of path: name, size, type ("file", "directory", "other"),
        mode, ino, nlink, uid, gid, created, mtime, islink."""
        return self._info_following(self._strip_protocol(path), None)

    def ls(self, path, detail: bool = True, **kwargs) -> list:
        """Entries of directory path (or [path] itself for a file), with
        their info dicts when detail: one listing RPC per 1024 entries, no
        stat per entry."""
        p = self._strip_protocol(path)
        try:
            entries = list(self.client.scandir(p))
        except NotADirectoryError:
            return [self.info(p)] if detail else [p]
        if not detail:
            return [e.path for e in entries]
        return [self._info_following(e.path, e._lstat) for e in entries]

    def created(self, path) -> datetime.datetime:
        """Inode change time (EmberFS keeps no birth time)."""
        return datetime.datetime.fromtimestamp(self.info(path)["created"], tz=datetime.timezone.utc)

    def modified(self, path) -> datetime.datetime:
        """Last modification time."""
        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], tz=datetime.timezone.utc)

    # -- directories -------------------------------------------------------
    def mkdir(self, path, create_parents: bool = True, **kwargs) -> None:
        """Create directory path; FileExistsError if something is there."""
        p = self._strip_protocol(path)
        if self.client.exists(p):
            raise FileExistsError(errno.EEXIST, "File exists", p)
        if create_parents:
            self.client.makedirs(p, exist_ok=True)
        else:
            self.client.mkdir(p)

    def makedirs(self, path, exist_ok: bool = False) -> None:
        """Create directory path and its parents."""
        self.client.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def rmdir(self, path) -> None:
        """Remove an empty directory."""
        self.client.rmdir(self._strip_protocol(path))

    # -- removal -----------------------------------------------------------
    def _rm(self, path) -> None:
        p = self._strip_protocol(path)
        if self.client.isdir(p) and not stat_mod.S_ISLNK(self.client.lstat(p).st_mode):
            self.client.rmdir(p)
        else:
            self.client.remove(p)

    def rm_file(self, path) -> None:
        """Remove a file (or symbolic link)."""
        self.client.remove(self._strip_protocol(path))

    def rm(self, path, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Remove files, and with recursive whole trees (one RPC per tree)."""
        if maxdepth is not None:
            return super().rm(path, recursive=recursive, maxdepth=maxdepth)
        paths = self.expand_path(path, recursive=False)
        removed: list[str] = []
        for p in sorted(paths):
            if any(p == r or p.startswith(r.rstrip("/") + "/") for r in removed):
                continue  # inside a tree already removed
            lst = self.client.lstat(p)
            if stat_mod.S_ISDIR(lst.st_mode):
                if not recursive:
                    raise IsADirectoryError(errno.EISDIR, "Is a directory (pass recursive=True)", p)
                self.client.rmtree(p)
            else:
                self.client.remove(p)
            removed.append(p)

    # -- data --------------------------------------------------------------
    def _ensure_parent(self, path: str) -> None:
        if self.auto_mkdir:
            self.client.makedirs(posixpath.dirname(path), exist_ok=True)

    def _open(self, path, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs):
        """A binary file object (fsspec wraps text modes itself)."""
        p = self._strip_protocol(path)
        if "b" not in mode:
            mode += "b"
        buffering = block_size if block_size and block_size > 0 else -1
        writing = any(c in mode for c in "wax+")
        if writing and not autocommit:
            if "r" in mode or "a" in mode or "+" in mode:
                raise ValueError(f"emberfs: mode {mode!r} cannot be deferred to a transaction (only w and x)")
            return _DeferredFile(self, p, mode, buffering)
        try:
            return self.client.open(p, mode, buffering=buffering)
        except FileNotFoundError:
            if not (writing and self.auto_mkdir) or self.client.exists(posixpath.dirname(p)):
                raise
        self._ensure_parent(p)
        return self.client.open(p, mode, buffering=buffering)

    def cat_file(self, path, start: int | None = None, end: int | None = None, **kwargs) -> bytes:
        """The bytes of path from start to end (negative: from the end)."""
        p = self._strip_protocol(path)
        with self.client.open(p, "rb", buffering=0) as f:
            if start is None and end is None:
                return f.readall()
            size = None
            if (start is not None and start < 0) or (end is not None and end < 0):
                size = f.seek(0, io.SEEK_END)
            start = 0 if start is None else (max(size + start, 0) if start < 0 else start)
            if end is None:
                f.seek(start)
                return f.readall()
            end = max(size + end, 0) if end < 0 else end
            if end <= start:
                return b""
            buf = bytearray(end - start)
            f.seek(start)
            got = 0
            while got < len(buf):  # short reads only at end of file
                n = f.readinto(memoryview(buf)[got:])
                if not n:
                    break
                got += n
            del buf[got:]
            return bytes(buf)

    def cp_file(self, path1, path2, **kwargs) -> None:
        """Copy one file (or make a directory, for a directory), through this client."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        st = self.client.stat(src)
        if stat_mod.S_ISDIR(st.st_mode):
            self.client.makedirs(dst, exist_ok=True)
            return
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "Not a regular file", src)
        with self.client.open(src, "rb", buffering=0) as fin, self._open(dst, "wb", block_size=0) as fout:
            buf = bytearray(min(_COPY_CHUNK, max(st.st_size, 1)))
            view = memoryview(buf)
            while True:
                n = fin.readinto(buf)
                if not n:
                    break
                fout.write(view[:n])

    def mv(self, path1, path2, recursive: bool = True, maxdepth: int | None = None, **kwargs) -> None:
        """Move: one atomic rename for a single source, like shutil.move
        (into path2 when it is a directory); copy and remove otherwise."""
        if not (isinstance(path1, str) and isinstance(path2, str)) or maxdepth is not None \
                or any(c in path1 for c in "*?["):
            return super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if src == dst:
            return
        if self.client.isdir(dst):
            dst = posixpath.join(dst, posixpath.basename(src))
        self._ensure_parent(dst)
        self.client.rename(src, dst)

    def touch(self, path, truncate: bool = True, **kwargs) -> None:
        """Create an empty file, or empty an existing one when truncate.
        With truncate=False an existing file is left as it is (times too:
        the binding does not set times)."""
        p = self._strip_protocol(path)
        if not truncate and self.client.exists(p):
            return
        with self._open(p, "wb"):
            pass

    def chmod(self, path, mode: int) -> None:
        """Set the permission bits of path."""
        self.client.chmod(self._strip_protocol(path), mode)


class _DeferredFile(io.BufferedWriter):
    """A file written inside fs.transaction: the data goes to a hidden
    temporary name beside the target; commit() renames it over the target
    (atomic: readers see the old file or the whole new one), discard()
    removes it."""

    def __init__(self, fs: EmberFileSystem, path: str, mode: str, buffering: int):
        self.fs = fs
        self.path = path
        self.exclusive = "x" in mode
        d, name = posixpath.split(path)
        self.temp = posixpath.join(d, f".{name}.emberfs-tx-{uuid.uuid4().hex[:12]}")
        raw = fs._open(self.temp, "xb", block_size=0)
        super().__init__(raw, buffering if buffering > 1 else 1 << 20)

    def commit(self) -> None:
        """Publish the written data under the target name."""
        if not self.closed:
            self.close()
        if self.exclusive and self.fs.client.exists(self.path):
            self.discard()
            raise FileExistsError(errno.EEXIST, "File exists", self.path)
        self.fs.client.rename(self.temp, self.path)

    def discard(self) -> None:
        """Drop the written data; the target is untouched."""
        if not self.closed:
            self.close()
        try:
            self.fs.client.remove(self.temp)
        except FileNotFoundError:
            pass
