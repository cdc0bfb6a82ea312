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


def _is_torch_tensor(obj) -> bool:
    # Checked by type name so importing emberfs never imports torch.
    t = type(obj)
    return t.__module__.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(obj, "untyped_storage")


@contextlib.contextmanager
def region(obj, writable: bool):
    """Yield (address, length in bytes) of obj's memory: any buffer-protocol
    object, or a CPU torch tensor (any dtype, bfloat16 included, which has no
    numpy view). The object stays referenced, and a buffer held, during the
    with block.

    Raises TypeError for objects that are neither, ValueError for a tensor
    that is not on the CPU or not contiguous, and BufferError for read-only
    memory when writable is asked for (bytes, a read-only memoryview).
    """
    if _is_torch_tensor(obj):
        if obj.device.type != "cpu":
            raise ValueError(f"tensor is on {obj.device}, not the CPU: copy it to a CPU (pinned) tensor first")
        if not obj.is_contiguous():
            raise ValueError(f"tensor of shape {tuple(obj.shape)} is not contiguous: call .contiguous() first")
        if writable and obj.requires_grad and obj.is_leaf:
            raise ValueError("tensor requires grad: write into a tensor that does not (or use .detach())")
        yield (obj.data_ptr() or 0), obj.numel() * obj.element_size()
        return
    try:
        memoryview(obj).release()
    except TypeError:
        raise TypeError(
            f"a bytes-like object (buffer protocol) or CPU torch tensor is required, not {type(obj).__name__}"
        ) from None
    with contextlib.ExitStack() as stack:
        try:
            addr_len = stack.enter_context(address(obj, writable))
        except (BufferError, ValueError) as exc:  # numpy raises ValueError for strided arrays
            what = "read-only or not contiguous; a writable buffer is required" if writable else "not contiguous"
            raise BufferError(f"{type(obj).__name__} is {what}") from exc
        yield addr_len
