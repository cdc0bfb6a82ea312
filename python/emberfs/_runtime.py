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


def _after_fork_in_child() -> None:
    global _forked_after_load
    ext = sys.modules.get("emberfs._native._pybind")
    if _loaded_pid is None and ext is None:
        return
    _forked_after_load = True
    if ext is not None:
        # Objects inherited from the parent (a Client, a file) call into Go
        # from their finalizers when collected here, which would hang: make
        # those calls no-ops in this process (the handles die with it).
        ext.DecRef = _no_op
        ext.IncRef = _no_op


def _no_op(*args) -> None:
    return None


os.register_at_fork(after_in_child=_after_fork_in_child)


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
    from ._native import pybind

    if _loaded_pid is None:
        _loaded_pid = os.getpid()
    return pybind
