"""The Pythonic EmberFS client: os-like functions and file objects."""

from __future__ import annotations

import errno
import os
import posixpath
import stat as stat_mod
from dataclasses import dataclass

from ._errors import NativeError, call, raises_oserror, translate
from ._file import open_file, parse_mode
from ._native import pybind as _native


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
    """An entry from Client.scandir, like os.DirEntry."""

    name: str
    path: str
    _client: "Client"

    def stat(self, follow_symlinks: bool = True) -> StatResult:
        return self._client.stat(self.path, follow_symlinks=follow_symlinks)

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        try:
            return stat_mod.S_ISDIR(self.stat(follow_symlinks).st_mode)
        except FileNotFoundError:
            return False

    def is_file(self, follow_symlinks: bool = True) -> bool:
        try:
            return stat_mod.S_ISREG(self.stat(follow_symlinks).st_mode)
        except FileNotFoundError:
            return False

    def is_symlink(self) -> bool:
        return stat_mod.S_ISLNK(self.stat(follow_symlinks=False).st_mode)


def _abs(path) -> str:
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be str or os.PathLike, not {type(path).__name__}")
    if not path:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    return posixpath.normpath(posixpath.join("/", path))


class Client:
    """A connection to an EmberFS cluster. Paths are absolute within EmberFS."""

    def __init__(self, mgmtd: str, token: str):
        try:
            self._c = call(_native.Connect, mgmtd, token)
        except NativeError as exc:
            raise translate(exc) from None
        self.mgmtd = mgmtd

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        c, self._c = getattr(self, "_c", None), None
        if c is not None:
            call(c.Close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_user(self, uid: int, gid: int) -> None:
        """Act as uid/gid for permission checks (default: this process's)."""
        self._c.SetUser(uid, gid)

    # -- files -----------------------------------------------------------
    def open(self, path, mode: str = "r", buffering: int = -1, encoding=None, errors=None, newline=None, perm: int = 0o644):
        """Open a file, like the built-in open(); returns a file object."""
        p = _abs(path)
        flags, *_ = parse_mode(mode)
        try:
            native = call(self._c.Open, p, flags, perm)
        except NativeError as exc:
            raise translate(exc, p) from None
        return open_file(native, p, mode, buffering, encoding, errors, newline)

    # -- namespace -------------------------------------------------------
    @raises_oserror
    def _stat(self, path: str, follow: bool):
        return call(self._c.Stat, path) if follow else call(self._c.Lstat, path)

    def stat(self, path, follow_symlinks: bool = True) -> StatResult:
        return _stat_result(self._stat(_abs(path), follow_symlinks))

    def lstat(self, path) -> StatResult:
        return self.stat(path, follow_symlinks=False)

    def exists(self, path) -> bool:
        try:
            self.stat(path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False

    def isdir(self, path) -> bool:
        try:
            return stat_mod.S_ISDIR(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def isfile(self, path) -> bool:
        try:
            return stat_mod.S_ISREG(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def getsize(self, path) -> int:
        return self.stat(path).st_size

    @raises_oserror
    def _listdir(self, path: str):
        return list(call(self._c.ListDir, path))

    def listdir(self, path="/") -> list[str]:
        return self._listdir(_abs(path))

    def scandir(self, path="/"):
        p = _abs(path)
        for name in self._listdir(p):
            yield DirEntry(name, posixpath.join(p, name), self)

    @raises_oserror
    def _mkdir(self, path: str, mode: int, parents: bool):
        call(self._c.Mkdir, path, mode, parents)

    def mkdir(self, path, mode: int = 0o777) -> None:
        self._mkdir(_abs(path), mode, False)

    def makedirs(self, path, mode: int = 0o777, exist_ok: bool = False) -> None:
        p = _abs(path)
        if not exist_ok and self.exists(p):
            raise FileExistsError(errno.EEXIST, "File exists", p)
        self._mkdir(p, mode, True)

    @raises_oserror
    def _unlink(self, path: str):
        call(self._c.Unlink, path)

    def remove(self, path) -> None:
        self._unlink(_abs(path))

    unlink = remove

    @raises_oserror
    def _rmdir(self, path: str):
        call(self._c.Rmdir, path)

    def rmdir(self, path) -> None:
        self._rmdir(_abs(path))

    @raises_oserror
    def _rmtree(self, path: str):
        call(self._c.RemoveAll, path)

    def rmtree(self, path) -> None:
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

    def rename(self, src, dst) -> None:
        self._rename(_abs(src), _abs(dst))

    replace = rename

    @raises_oserror
    def _symlink(self, target: str, path: str):
        call(self._c.Symlink, target, path)

    def symlink(self, target: str, path) -> None:
        self._symlink(target, _abs(path))

    @raises_oserror
    def _readlink(self, path: str):
        return call(self._c.Readlink, path)

    def readlink(self, path) -> str:
        return self._readlink(_abs(path))

    @raises_oserror
    def _link(self, src: str, dst: str):
        call(self._c.Link, src, dst)

    def link(self, src, dst) -> None:
        self._link(_abs(src), _abs(dst))

    @raises_oserror
    def _truncate(self, path: str, size: int):
        call(self._c.Truncate, path, size)

    def truncate(self, path, size: int) -> None:
        self._truncate(_abs(path), size)

    @raises_oserror
    def _chmod(self, path: str, mode: int):
        call(self._c.Chmod, path, mode)

    def chmod(self, path, mode: int) -> None:
        self._chmod(_abs(path), mode)

    def walk(self, top="/", topdown: bool = True):
        """Like os.walk: yields (dirpath, dirnames, filenames)."""
        top = _abs(top)
        try:
            entries = list(self.scandir(top))
        except OSError:
            return
        dirs, files = [], []
        for e in entries:
            (dirs if e.is_dir(follow_symlinks=False) else files).append(e.name)
        if topdown:
            yield top, dirs, files
        for d in dirs:
            yield from self.walk(posixpath.join(top, d), topdown)
        if not topdown:
            yield top, dirs, files
