"""The Pythonic EmberFS client: os-like functions and file objects."""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat as stat_mod
import sys
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, Union

from . import _buffers, _runtime
from ._errors import EmberFSError, NativeError, call, raises_oserror, translate
from ._file import open_file, parse_mode
from .config import resolve

# What every path argument accepts.
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class StatResult:
    """What os.stat returns, for an EmberFS inode."""

    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9


def _stat_result(s) -> StatResult:
    return StatResult(s.Ino, s.Mode, s.Nlink, s.Uid, s.Gid, s.Size, s.AtimeNs, s.MtimeNs, s.CtimeNs)


@dataclass(frozen=True)
class DirEntry:
    """An entry from Client.scandir, like os.DirEntry.

    The entry's own stat (lstat) came with the directory listing, so
    is_dir/is_file/is_symlink/stat cost no RPC; only following a symbolic
    link (stat() or is_dir() of a link) asks meta about its target.
    """

    name: str
    path: str
    _client: "Client" = field(repr=False, compare=False)
    _lstat: StatResult | None = field(default=None, repr=False, compare=False)

    def inode(self) -> int:
        """The entry's inode number."""
        return self.stat(follow_symlinks=False).st_ino

    def stat(self, follow_symlinks: bool = True) -> StatResult:
        """The entry's stat; follows a final symbolic link unless told not to."""
        st = self._lstat
        if st is None or (follow_symlinks and stat_mod.S_ISLNK(st.st_mode)):
            return self._client.stat(self.path, follow_symlinks=follow_symlinks)
        return st

    def _mode_or_none(self, follow_symlinks: bool) -> int | None:
        try:
            return self.stat(follow_symlinks).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None  # a dangling link, or the entry went away

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        """Whether the entry is a directory (or a link to one)."""
        m = self._mode_or_none(follow_symlinks)
        return m is not None and stat_mod.S_ISDIR(m)

    def is_file(self, follow_symlinks: bool = True) -> bool:
        """Whether the entry is a regular file (or a link to one)."""
        m = self._mode_or_none(follow_symlinks)
        return m is not None and stat_mod.S_ISREG(m)

    def is_symlink(self) -> bool:
        """Whether the entry itself is a symbolic link."""
        m = self._mode_or_none(False)
        return m is not None and stat_mod.S_ISLNK(m)

    def __fspath__(self) -> str:
        return self.path


def _abs(path: PathLike) -> str:
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be str or os.PathLike, not {type(path).__name__}")
    if not path:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return posixpath.normpath(posixpath.join("/", path))


class Client:
    """A connection to an EmberFS cluster. Paths are absolute within EmberFS.

    Every method raises the OSError subclass of the failure's errno
    (FileNotFoundError, PermissionError, ...) naming the path, with the
    EmberFS error code as ``exc.emberfs_code``.
    """

    def __init__(self, mgmtd: str | Sequence[str] | None = None, token: str | None = None, *,
                 config: "str | os.PathLike[str] | None" = None):
        """Connect to the cluster whose mgmtd is at mgmtd ("host:port[,host:port]").

        mgmtd and token default to EMBERFS_MGMTD/EMBERFS_TOKEN, then the
        client config file (see emberfs.config).
        """
        self._c = None
        mgmtd, token = resolve(mgmtd, token, config)
        try:
            self._c = call(_runtime.native().Connect, mgmtd, token)
        except NativeError as exc:
            raise translate(exc, mgmtd) from None
        self.mgmtd = mgmtd

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        """Release the connection; further calls fail."""
        c, self._c = getattr(self, "_c", None), None
        if c is not None:
            call(c.Close)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_user(self, uid: int, gid: int) -> None:
        """Act as uid/gid for permission checks (default: this process's)."""
        self._c.SetUser(uid, gid)

    # -- files -----------------------------------------------------------
    def open(self, path: PathLike, mode: str = "r", buffering: int = -1, encoding: str | None = None,
             errors: str | None = None, newline: str | None = None, perm: int = 0o644) -> io.IOBase:
        """Open a file, like the built-in open(); returns a file object
        (BufferedReader/Writer/Random, TextIOWrapper, or the raw file with
        buffering=0)."""
        p = _abs(path)
        flags, *_ = parse_mode(mode)
        try:
            native = call(self._c.Open, p, flags, perm)
        except NativeError as exc:
            raise translate(exc, p) from None
        return open_file(native, p, mode, buffering, encoding, errors, newline)

    def read_bytes(self, path: PathLike, size_hint: int | None = None) -> bytes:
        """The whole file at path, like pathlib's read_bytes, in one call
        into Go: one metadata round trip (no open session to start and end)
        and one storage read per chunk. size_hint (the length from a
        listing) sizes the buffer; a wrong or missing hint costs one more
        call. For many small files (datasets); a file removed while it is
        read raises FileNotFoundError or a stale-handle OSError, never
        returns zeros for its data."""
        p = _abs(path)
        n = max(size_hint or 0, 0)
        while True:
            buf = bytearray(n)
            try:
                with _buffers.address(buf, writable=True) as (addr, length):
                    size = call(self._c.ReadFileInto, p, addr, length, 0)
            except NativeError as exc:
                raise translate(exc, p) from None
            if size <= n:
                del buf[size:]
                return bytes(buf)
            n = size  # longer than the hint (or no hint): once more, sized

    # -- namespace -------------------------------------------------------
    @raises_oserror
    def _stat(self, path: str, follow: bool):
        return call(self._c.Stat, path) if follow else call(self._c.Lstat, path)

    def stat(self, path: PathLike, follow_symlinks: bool = True) -> StatResult:
        """Like os.stat: the inode at path (following symbolic links unless told not to)."""
        return _stat_result(self._stat(_abs(path), follow_symlinks))

    def lstat(self, path: PathLike) -> StatResult:
        """Like os.lstat: stat without following a final symbolic link."""
        return self.stat(path, follow_symlinks=False)

    def exists(self, path: PathLike) -> bool:
        """Whether path exists (a dangling symbolic link does not)."""
        try:
            self.stat(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def isdir(self, path: PathLike) -> bool:
        """Whether path is a directory (or a link to one)."""
        try:
            return stat_mod.S_ISDIR(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def isfile(self, path: PathLike) -> bool:
        """Whether path is a regular file (or a link to one)."""
        try:
            return stat_mod.S_ISREG(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def getsize(self, path: PathLike) -> int:
        """The length in bytes of the file at path."""
        return self.stat(path).st_size

    @raises_oserror
    def _listdir(self, path: str) -> list[str]:
        return list(call(self._c.ListDir, path))

    def listdir(self, path: PathLike = "/") -> list[str]:
        """Like os.listdir: the names in directory path, in name order."""
        return self._listdir(_abs(path))

    @raises_oserror
    def _read_dir_stat(self, path: str) -> list[tuple[str, StatResult | None]]:
        listing = call(self._c.ReadDirStat, path)
        n = listing.Len()
        if n == 0:
            return []
        names = listing.Names().split("/")  # '/' ends each name (no name holds one)
        if len(names) != n + 1:
            raise EmberFSError(f"directory listing of {path}: {len(names) - 1} names for {n} entries")
        del names[n]
        fields = _runtime.native().StatFields
        vals = array("q", bytes(8 * fields * n))
        with _buffers.address(vals, writable=True) as (addr, length):
            call(listing.CopyStats, addr, length)
        if sys.byteorder != "little":
            vals.byteswap()
        out = []
        for i, name in enumerate(names):
            v = vals[i * fields:(i + 1) * fields]
            out.append((name, StatResult(*v[:9]) if v[9] else None))
        return out

    def scandir(self, path: PathLike = "/") -> Iterator[DirEntry]:
        """Like os.scandir: the entries of directory path, in name order.

        The whole listing with every entry's stat is read up front, one meta
        RPC per page of 1024 entries, so the entries' is_dir/is_file/stat
        cost nothing more; errors (a missing directory) raise here, not at
        the first next().
        """
        p = _abs(path)
        return iter([DirEntry(name, posixpath.join(p, name), self, st) for name, st in self._read_dir_stat(p)])

    @raises_oserror
    def _mkdir(self, path: str, mode: int, parents: bool):
        call(self._c.Mkdir, path, mode, parents)

    def mkdir(self, path: PathLike, mode: int = 0o777) -> None:
        """Like os.mkdir: create one directory; its parent must exist."""
        self._mkdir(_abs(path), mode, False)

    def makedirs(self, path: PathLike, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Like os.makedirs: create a directory and its missing parents."""
        p = _abs(path)
        if not exist_ok and self.exists(p):
            raise FileExistsError(errno.EEXIST, "File exists", p)
        self._mkdir(p, mode, True)

    @raises_oserror
    def _unlink(self, path: str):
        call(self._c.Unlink, path)

    def remove(self, path: PathLike) -> None:
        """Like os.remove: remove a file or symbolic link."""
        self._unlink(_abs(path))

    unlink = remove

    @raises_oserror
    def _rmdir(self, path: str):
        call(self._c.Rmdir, path)

    def rmdir(self, path: PathLike) -> None:
        """Like os.rmdir: remove an empty directory."""
        self._rmdir(_abs(path))

    @raises_oserror
    def _rmtree(self, path: str):
        call(self._c.RemoveAll, path)

    def rmtree(self, path: PathLike) -> None:
        """Remove a directory tree in one call (like shutil.rmtree)."""
        p = _abs(path)
        if not self.isdir(p):
            if self.exists(p):
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", p)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", p)
        self._rmtree(p)

    @raises_oserror
    def _rename(self, src: str, dst: str):
        call(self._c.Rename, src, dst)

    def rename(self, src: PathLike, dst: PathLike) -> None:
        """Like os.rename: move src to dst atomically, replacing dst where POSIX allows."""
        self._rename(_abs(src), _abs(dst))

    replace = rename

    @raises_oserror
    def _symlink(self, target: str, path: str):
        call(self._c.Symlink, target, path)

    def symlink(self, target: str, path: PathLike) -> None:
        """Like os.symlink: create path as a symbolic link to target."""
        self._symlink(target, _abs(path))

    @raises_oserror
    def _readlink(self, path: str) -> str:
        return call(self._c.Readlink, path)

    def readlink(self, path: PathLike) -> str:
        """Like os.readlink: a symbolic link's target."""
        return self._readlink(_abs(path))

    @raises_oserror
    def _link(self, src: str, dst: str):
        call(self._c.Link, src, dst)

    def link(self, src: PathLike, dst: PathLike) -> None:
        """Like os.link: create dst as a hard link to src."""
        self._link(_abs(src), _abs(dst))

    @raises_oserror
    def _truncate(self, path: str, size: int):
        call(self._c.Truncate, path, size)

    def truncate(self, path: PathLike, size: int) -> None:
        """Like os.truncate: set the length of the file at path."""
        self._truncate(_abs(path), size)

    @raises_oserror
    def _chmod(self, path: str, mode: int):
        call(self._c.Chmod, path, mode)

    def chmod(self, path: PathLike, mode: int) -> None:
        """Like os.chmod: set the permission bits of path."""
        self._chmod(_abs(path), mode)

    def walk(self, top: PathLike = "/", topdown: bool = True,
             onerror: Callable[[OSError], None] | None = None,
             followlinks: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk: yields (dirpath, dirnames, filenames).

        One listing (with stats) per directory; no stat per entry except to
        follow symbolic links when followlinks is set.
        """
        top = _abs(top)
        try:
            entries = list(self.scandir(top))
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            return
        dirs, files = [], []
        for e in entries:
            (dirs if e.is_dir(follow_symlinks=followlinks) else files).append(e.name)
        if topdown:
            yield top, dirs, files
        for d in dirs:
            yield from self.walk(posixpath.join(top, d), topdown, onerror, followlinks)
        if not topdown:
            yield top, dirs, files
