"""One Client per (process, cluster), made on first use, for the objects
that many callers create (fsspec instances, one per thread; datasets, one
per DataLoader worker): each Client is a full set of connections, so they
share one rather than each dialing the cluster.

The key holds the process id: a forked child never reuses (or drops, which
would call into the dead runtime) its parent's clients, and its first use
makes its own, or raises ForkedRuntimeError when the parent had loaded the
runtime (emberfs._runtime).
"""

from __future__ import annotations

import atexit
import os
import threading

from .client import Client

_lock = threading.Lock()
_clients: dict[tuple[int, str, str], Client] = {}


def client(mgmtd: str, token: str) -> Client:
    """The process's shared Client for the cluster at mgmtd."""
    key = (os.getpid(), mgmtd, token)
    c = _clients.get(key)
    if c is not None and c._c is not None:
        return c
    with _lock:
        c = _clients.get(key)
        if c is None or c._c is None:
            c = _clients[key] = Client(mgmtd, token)
        return c


@atexit.register
def _close_all() -> None:
    # Before the extension module is torn down at exit (a Client's finalizer
    # calls into it); only this process's own clients, never a parent's.
    pid = os.getpid()
    for key in [k for k in _clients if k[0] == pid]:
        c = _clients.pop(key)
        try:
            c.close()
        except Exception:  # noqa: BLE001 - exiting; nothing to tell
            pass
