"""Start a throwaway local EmberFS cluster (for tests and demos).

LocalCluster runs `emberfs up` in a temporary directory as a child process
and waits until it reports its mgmtd address; stop() ends it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def find_binary() -> str:
    """The emberfs binary: $EMBERFS_BIN, the one bundled in the wheel, or PATH."""
    env = os.environ.get("EMBERFS_BIN")
    if env:
        return env
    bundled = Path(__file__).parent / "bin" / "emberfs"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("emberfs")
    if found:
        return found
    raise FileNotFoundError("emberfs binary not found: set EMBERFS_BIN or install the emberfs wheel")


class LocalCluster:
    """A local cluster: mgmtd, meta and `storage` storage services."""

    def __init__(self, data_dir: str | None = None, storage: int = 3, replicas: int = 3, timeout: float = 60.0):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="emberfs-")
        self.info_file = os.path.join(self.data_dir, "cluster.json")
        if os.path.exists(self.info_file):
            os.remove(self.info_file)
        self.log_path = os.path.join(self.data_dir, "up.log")
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [find_binary(), "up", "--data", self.data_dir, "--storage", str(storage),
             "--replicas", str(replicas), "--info-file", self.info_file,
             "--mgmtd-listen", "127.0.0.1:0", "--no-demo"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.info_file):
            if self._proc.poll() is not None:
                raise RuntimeError(f"emberfs up exited with {self._proc.returncode}; log:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"emberfs up did not become ready in {timeout}s; log:\n{self.log()}")
            time.sleep(0.05)
        with open(self.info_file) as f:
            info = json.load(f)
        self.mgmtd = info["mgmtd"]
        self.token = info["token"]

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def connect(self):
        from .client import Client

        return Client(self.mgmtd, self.token)

    def stop(self, timeout: float = 30.0) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
