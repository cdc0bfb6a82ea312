"""File objects over EmberFS files.

RawFile is an io.RawIOBase whose readinto/write hand the caller's buffer
straight to Go (no intermediate copy). open_file wraps it the way the
built-in open() wraps a file descriptor: buffered binary for "rb"/"wb"/...,
TextIOWrapper for text modes, so any library taking a file object works.
"""

from __future__ import annotations

import io
import os

from . import _buffers
from ._errors import NativeError, call, translate

_FLAGS = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


def parse_mode(mode: str):
    """Return (os flags, readable, writable, appending, binary) for mode."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be str, not {type(mode).__name__}")
    chars = set(mode)
    if len(chars) != len(mode) or not chars <= set("rwaxbt+") or len(chars & set("rwax")) != 1:
        raise ValueError(f"invalid mode: {mode!r}")
    if "b" in chars and "t" in chars:
        raise ValueError(f"can't have text and binary mode at once: {mode!r}")
    base = (chars & set("rwax")).pop()
    flags = _FLAGS[base]
    readable = base == "r" or "+" in chars
    writable = base != "r" or "+" in chars
    if "+" in chars:
        flags = (flags & ~(os.O_WRONLY | os.O_RDONLY)) | os.O_RDWR
    return flags, readable, writable, base == "a", "b" in chars


class RawFile(io.RawIOBase):
    """An unbuffered EmberFS file; prefer the buffered objects open() returns."""

    def __init__(self, native, name: str, mode: str, readable: bool, writable: bool, append: bool):
        super().__init__()
        self._f = native
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._append = append
        self._pos = native.Size() if append else 0
        self._released = False

    # -- capabilities --------------------------------------------------
    def readable(self) -> bool:
        self._check_open()
        return self._readable

    def writable(self) -> bool:
        self._check_open()
        return self._writable

    def seekable(self) -> bool:
        self._check_open()
        return True

    def _check_open(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def _call(self, fn, *args):
        try:
            return call(fn, *args)
        except NativeError as exc:
            raise translate(exc, self.name) from None

    # -- data ----------------------------------------------------------
    def readinto(self, buffer) -> int:
        self._check_open()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        with _buffers.address(buffer, writable=True) as (addr, length):
            if length == 0:
                return 0
            n = self._call(self._f.ReadInto, addr, length, self._pos)
        self._pos += n
        return n

    def readall(self) -> bytes:
        self._check_open()
        size = max(self._f.Size() - self._pos, 0)
        buf = bytearray(size)
        got = self.readinto(buf) if size else 0
        del buf[got:]
        # The file may have grown since Size(); keep reading to EOF.
        while True:
            chunk = bytearray(1 << 20)
            n = self.readinto(chunk)
            if not n:
                return bytes(buf)
            buf += chunk[:n]

    def write(self, b) -> int:
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        if self._append:
            self._pos = self._f.Size()
        with _buffers.address(b, writable=False) as (addr, length):
            if length == 0:
                return 0
            n = self._call(self._f.WriteFrom, addr, length, self._pos)
        self._pos += n
        return n

    # -- positional I/O on raw memory ----------------------------------
    # For callers that own memory without a Python buffer object (tensor
    # storage): Go reads/writes the n bytes at addr directly. The caller must
    # keep that memory alive during the call. The file position is unchanged,
    # so several threads may read one file at different offsets at once.
    def pread_address(self, addr: int, n: int, offset: int) -> int:
        """Read up to n bytes at offset into the memory at addr; 0 at end of file."""
        self._check_open()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")
        return self._call(self._f.ReadInto, addr, n, offset) if n else 0

    def pwrite_address(self, addr: int, n: int, offset: int) -> int:
        """Write the n bytes at addr to offset; returns n."""
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        return self._call(self._f.WriteFrom, addr, n, offset) if n else 0

    # -- position and size ---------------------------------------------
    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._f.Size() + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise OSError(22, "Invalid argument: negative seek position", self.name)
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._check_open()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        if size is None:
            size = self._pos
        if size < 0:
            raise OSError(22, "Invalid argument: negative size", self.name)
        self._call(self._f.Truncate, size)
        return size

    def flush(self) -> None:
        # RawIOBase.close() flushes after our close() released the handle.
        if self.closed or self._released:
            return
        if self._writable:
            self._call(self._f.Flush)

    def fsync(self) -> None:
        """Make written data and the file length durable."""
        self._check_open()
        self._call(self._f.Sync)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("EmberFS files have no OS file descriptor")

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._call(self._f.Close)
        finally:
            self._released = True
            super().close()


def open_file(native, name: str, mode: str, buffering: int, encoding, errors, newline):
    """Wrap a native file the way the built-in open() wraps a descriptor."""
    _, readable, writable, append, binary = parse_mode(mode)
    if binary and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    raw = RawFile(native, name, mode, readable, writable, append)
    if buffering == 0:
        if not binary:
            raw.close()
            raise ValueError("can't have unbuffered text I/O")
        return raw
    size = buffering if buffering > 1 else 1 << 20
    if readable and writable:
        buffered = io.BufferedRandom(raw, size)
    elif writable:
        buffered = io.BufferedWriter(raw, size)
    else:
        buffered = io.BufferedReader(raw, size)
    if binary:
        return buffered
    text = io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)
    text.mode = mode
    return text
