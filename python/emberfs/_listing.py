"""List the files under an emberfs:// prefix, here or in a helper process.

A prefix works like an S3 prefix: every regular file whose path starts
with it, in path order. ``emberfs:///data/train/`` (or a path naming a
directory) is everything below that directory; ``emberfs:///data/train/shard-``
is the files and trees in /data/train whose names start with ``shard-``.
Symbolic links to files are included; links to directories are not
followed (no loops).

``list_prefix_forksafe`` lists in a short-lived child process (``python -m
emberfs._listing``) when this process has not loaded the Go runtime, so a
DataLoader parent that only builds a dataset stays able to fork workers
(emberfs._runtime). This module imports no torch, so the helper starts fast.
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys

from . import _runtime, _shared


def strip_uri(uri: str) -> tuple[str, bool]:
    """(absolute EmberFS path, whether the URI ended with "/") of an
    emberfs:// URI or a plain absolute path."""
    if not isinstance(uri, str):
        uri = os.fspath(uri)
    if uri.startswith("emberfs://"):
        rest = uri[len("emberfs://"):]
    elif "://" in uri:
        raise ValueError(f"not an emberfs:// URI: {uri!r}")
    else:
        rest = uri
    slash = rest.endswith("/")
    p = "/" + posixpath.normpath("/" + rest).lstrip("/")
    return p, slash


def list_prefix(mgmtd: str, token: str, uri: str) -> list[tuple[str, int]]:
    """[(path, size)] of the regular files under prefix uri, in path order;
    FileNotFoundError when the prefix's directory does not exist."""
    c = _shared.client(mgmtd, token)
    p, slash = strip_uri(uri)
    if slash or p == "/" or c.isdir(p):
        base, want = p, None
    else:
        base, want = posixpath.dirname(p), p
    out: list[tuple[str, int]] = []

    def visit(d: str, filtered: bool) -> None:
        for e in c.scandir(d):
            if filtered and not e.path.startswith(want):
                continue
            if e.is_dir(follow_symlinks=False):
                visit(e.path, False)
            elif e.is_file(follow_symlinks=True):
                out.append((e.path, e.stat().st_size))

    visit(base, want is not None)
    return out


def list_prefix_forksafe(mgmtd: str, token: str, uri: str) -> list[tuple[str, int]]:
    """list_prefix, run in a helper process unless this process already
    has the Go runtime loaded (then forking is already off the table)."""
    if _runtime.loaded():
        return list_prefix(mgmtd, token, uri)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # The token goes over stdin, not the command line (ps shows that).
    proc = subprocess.run([sys.executable, "-m", "emberfs._listing"], input=json.dumps(
        {"mgmtd": mgmtd, "token": token, "uri": uri}), capture_output=True, text=True, env=env)
    try:
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"emberfs listing helper failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}") from None
    if "error" in reply:
        err = reply["error"]
        if err.get("errno"):
            raise OSError(err["errno"], err["message"], err.get("filename"))
        raise RuntimeError(f"emberfs listing helper: {err['type']}: {err['message']}")
    return [(p, s) for p, s in reply["files"]]


def _main() -> None:
    req = json.loads(sys.stdin.read())
    try:
        reply = {"files": list_prefix(req["mgmtd"], req["token"], req["uri"])}
    except OSError as exc:
        reply = {"error": {"type": type(exc).__name__, "errno": exc.errno, "message": exc.strerror or str(exc),
                           "filename": exc.filename}}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        reply = {"error": {"type": type(exc).__name__, "errno": None, "message": str(exc)}}
    print(json.dumps(reply))


if __name__ == "__main__":
    _main()
