"""Memory addresses of Python buffers, so Go reads and writes them in place.

Any object with the buffer protocol works: bytes, bytearray, memoryview,
numpy arrays, torch tensors (through their numpy view or untyped storage).
The buffer is held (PyObject_GetBuffer) for the duration of the call, so
the memory cannot move or be freed while Go uses it.
"""

from __future__ import annotations

import contextlib
import ctypes


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.POINTER(ctypes.c_ssize_t)),
        ("strides", ctypes.POINTER(ctypes.c_ssize_t)),
        ("suboffsets", ctypes.POINTER(ctypes.c_ssize_t)),
        ("internal", ctypes.c_void_p),
    ]


_PyBUF_SIMPLE = 0
_PyBUF_WRITABLE = 0x0001

_get = ctypes.pythonapi.PyObject_GetBuffer
_get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get.restype = ctypes.c_int
_release = ctypes.pythonapi.PyBuffer_Release
_release.argtypes = [ctypes.POINTER(_PyBuffer)]
_release.restype = None


@contextlib.contextmanager
def address(obj, writable: bool):
    """Yield (address, length in bytes) of obj's contiguous memory."""
    view = _PyBuffer()
    flags = _PyBUF_WRITABLE if writable else _PyBUF_SIMPLE
    # PyObject_GetBuffer raises BufferError itself for read-only or
    # non-contiguous objects when the flags ask for more than they offer.
    _get(obj, ctypes.byref(view), flags)
    try:
        yield (view.buf or 0), view.len
    finally:
        _release(ctypes.byref(view))
