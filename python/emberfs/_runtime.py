"""Load the Go extension lazily, and refuse to use it after fork().

The extension embeds a Go runtime, which starts its threads when the module
is loaded. fork() copies only the calling thread, so in a child forked after
the load every call into Go hangs (the scheduler waits for threads that do
not exist; measured: a Connect in such a child never returns). Two rules
follow:

- ``import emberfs`` does not load the extension; the first call that needs
  it does (``native()``). A process that only describes work for others (a
  DataLoader parent building datasets, see emberfs.datasets) can fork
  workers that then load their own runtime.
- A process forked from one that had loaded it gets ``ForkedRuntimeError``
  from every EmberFS call instead of a hang, naming the ways out.
- Nor may the child call into Go implicitly, from finalizers of objects it
  inherited. Some run before any after-fork hook can: Python clears the
  states of the threads fork() did not copy inside fork() itself, and a
  thread's per-thread ``Err`` (emberfs._errors) is freed there, its
  finalizer calling ``DecRef``. So the extension's ``DecRef``/``IncRef``
  are wrapped at load time to do nothing from the moment a fork starts
  (``_forking``, set by a before-fork hook) in the child; the parent clears
  the flag right after fork() returns in it.
"""

from __future__ import annotations

import os
import sys

from ._errors import EmberFSError

_loaded_pid: int | None = None
_forked_after_load = False


class ForkedRuntimeError(EmberFSError):
    """EmberFS was used in a process forked after its parent loaded the Go
    runtime; the runtime cannot work there."""


# In a process that loaded the runtime: True from the start of a fork()
# until it returns in the parent, and
# from then on in the child: handle reference counts are not touched in
# Go while it is set (see the module docstring).
_forking = False


def _before_fork() -> None:
    global _forking
    # Only a process with the runtime loaded has handles to guard; a child
    # of one without may load its own.
    _forking = _loaded_pid is not None


def _after_fork_in_parent() -> None:
    global _forking
    _forking = False


def _after_fork_in_child() -> None:
    global _forked_after_load
    if _loaded_pid is None and "emberfs._native._pybind" not in sys.modules:
        return
    _forked_after_load = True


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


# The extension's own DecRef/IncRef, which the guards below call (a test
# puts a recorder here to see that none is called in a forked child).
_ext_refcount: dict = {}


def _guard_refcounts(ext) -> None:
    """Wrap ext's DecRef/IncRef so that finalizers of objects inherited by a
    forked child (a Client, a file, a thread's Err) do not call into Go,
    which would hang there; the handles die with the child."""
    if _ext_refcount:
        return
    _ext_refcount.update(dec=ext.DecRef, inc=ext.IncRef)

    def dec_ref(handle):
        if not _forking:
            _ext_refcount["dec"](handle)

    def inc_ref(handle):
        if not _forking:
            _ext_refcount["inc"](handle)

    ext.DecRef, ext.IncRef = dec_ref, inc_ref


def check() -> None:
    """Raise ForkedRuntimeError if calling into Go would hang this process."""
    if _forked_after_load:
        raise ForkedRuntimeError(
            f"EmberFS cannot be used in process {os.getpid()}: it was forked from process "
            f"{_loaded_pid} after that process had loaded the EmberFS (Go) runtime, which does "
            "not survive fork(). Use the 'spawn' or 'forkserver' start method "
            "(DataLoader(multiprocessing_context='spawn')), or do not use EmberFS in the parent "
            "before forking (emberfs.datasets keep the parent free of it)."
        )


def loaded() -> bool:
    """Whether this process has loaded the Go runtime (so forked children
    cannot use EmberFS)."""
    return _loaded_pid is not None or "emberfs._native._pybind" in sys.modules


def native():
    """The extension module (emberfs._native.pybind), loading it on first use."""
    global _loaded_pid
    check()
    from ._native import _pybind, pybind

    if _loaded_pid is None:
        _guard_refcounts(_pybind)
        _loaded_pid = os.getpid()
    return pybind
