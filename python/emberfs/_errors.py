"""Turn errors from the Go extension into Python exceptions.

The extension reports failures as RuntimeError("[errno N] message"); file
errors become the OSError subclass Python itself would raise for errno N
(FileNotFoundError for ENOENT, PermissionError for EACCES/EPERM, ...), and
anything without an errno becomes EmberFSError.
"""

from __future__ import annotations

import functools
import os
import re

_PATTERN = re.compile(r"^\[errno (\d+)\] (.*)$", re.S)


class EmberFSError(Exception):
    """An EmberFS failure that is not a file-system errno."""


def translate(exc: BaseException, path: str | None = None, path2: str | None = None) -> BaseException:
    """Return the exception to raise for an error from the extension."""
    m = _PATTERN.match(str(exc))
    if not m:
        return EmberFSError(str(exc))
    code, msg = int(m.group(1)), m.group(2)
    if code == 0:
        return EmberFSError(msg)
    # OSError(errno, strerror, filename) picks the subclass from errno.
    return OSError(code, f"{os.strerror(code)}: {msg}", path, None, path2)


def raises_oserror(fn):
    """Decorator for methods whose first argument after self is a path."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except RuntimeError as exc:
            path = args[0] if args and isinstance(args[0], str) else None
            path2 = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            raise translate(exc, path, path2) from None

    return wrapper


