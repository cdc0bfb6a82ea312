"""Turn failures of the Go extension into Python exceptions.

Every extension function that can fail takes an ``Err`` as its last
argument and fills it: ``Errno`` (the POSIX errno, EIO when the failure has
none), ``Code`` (the EmberFS error code) and ``Message``. ``call`` passes a
per-thread ``Err`` and raises ``NativeError`` carrying those as data; callers
turn it into the OSError subclass Python itself would raise for the errno
(FileNotFoundError for ENOENT, PermissionError for EACCES/EPERM, ...) with
``translate``, naming the paths involved. No message text is parsed.
"""

from __future__ import annotations

import atexit
import functools
import os
import threading


class EmberFSError(Exception):
    """An EmberFS failure that is not a file-system errno."""


class NativeError(Exception):
    """A failure reported by the extension, errno and code as data."""

    def __init__(self, errno: int, code: int, message: str):
        super().__init__(message)
        self.errno = errno
        self.code = code
        self.message = message


_local = threading.local()
# The main thread's Err must go before the extension module is torn down at
# exit (its finalizer calls into the module).
atexit.register(lambda: _local.__dict__.pop("err", None))


def _err():
    # One Err per thread: calls release the GIL, so threads must not share.
    e = getattr(_local, "err", None)
    if e is None:
        e = _local.err = _runtime.native().Err()
    return e


def call(fn, *args):
    """Call extension function fn with args and a per-thread Err; raise
    NativeError if it reports a failure, else return its result."""
    if _runtime._forked_after_load:
        _runtime.check()  # a call into Go would hang this forked process
    e = _err()
    result = fn(*args, e)
    errno = e.Errno
    if errno:
        # Functions fill Err only on failure (a success path just returns),
        # so the failure is cleared here, before the next call on this
        # thread could mistake it for its own.
        err = NativeError(errno, e.Code, e.Message)
        e.Errno = 0
        raise err
    return result


def translate(exc: BaseException, path: str | None = None, path2: str | None = None) -> BaseException:
    """Return the exception to raise for a failure of the extension."""
    if not isinstance(exc, NativeError):
        # A Go panic surfaces as RuntimeError: not a file-system errno.
        return EmberFSError(str(exc))
    # OSError(errno, strerror, filename) picks the subclass from errno.
    err = OSError(exc.errno, f"{os.strerror(exc.errno)}: {exc.message}", path, None, path2)
    err.emberfs_code = exc.code
    return err


def raises_oserror(fn):
    """Decorator for methods whose first argument after self is a path."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except (NativeError, RuntimeError) as exc:
            path = args[0] if args and isinstance(args[0], str) else None
            path2 = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            raise translate(exc, path, path2) from None

    return wrapper


# Last: _runtime imports EmberFSError from here.
from . import _runtime  # noqa: E402
