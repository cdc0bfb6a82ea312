"""emberfs.checkpoint against a cluster of real role processes (mgmtd,
meta, three storage services, replicas 3): a storage process SIGKILLed in
the middle of a Python save, and the `emberfs checkpoint` CLI (the real
binary) on checkpoints Python wrote."""

import os
import re
import signal
import subprocess
import threading
import time
import uuid

import pytest
import torch

import emberfs
import emberfs.checkpoint as ckpt
from emberfs.cluster import find_binary

TOKEN = "ckpt-proc-test-token"
# The storage services' own secret (storage config peer_token), which
# clients never get: it proves the storage role on chain traffic.
PEER_TOKEN = "ckpt-proc-test-peer-token"


class ProcCluster:
    """mgmtd, three storage processes and meta, each its own process."""

    def __init__(self, d):
        self.dir = str(d)
        self.bin = find_binary()
        self.procs = {}
        self.mgmtd = self._start("mgmtd", "mgmtd", r"listening on (\S+)", f"""listen = "127.0.0.1:0"
metrics_listen = ""
kv = "memory"
scan_interval = "20ms"
heartbeat_interval = "100ms"
node_failure_timeout = "600ms"
""", "--token", TOKEN)
        for i in (1, 2, 3):
            self._start(f"storage{i}", "storage", r"url=(http://\S+/metrics)", f"""node_id = {i}
targets = ["{self.dir}/node{i}"]
mgmtd = ["{self.mgmtd}"]
token = "{TOKEN}"
peer_token = "{PEER_TOKEN}"
listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
repair_interval = "100ms"
no_sync = true
""")
        deadline = time.monotonic() + 60
        while True:  # the chain table needs every target registered
            r = self.cli("admin", "create-chain-table", "--table", "1", "--replicas", "3")
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"create-chain-table: {r.stdout}{r.stderr}")
            time.sleep(0.1)
        self._start("meta", "meta", r"listening on (\S+)", f"""listen = "127.0.0.1:0"
metrics_listen = ""
kv = "badger:{self.dir}/meta-kv"
mgmtd = ["{self.mgmtd}"]
token = "{TOKEN}"
""")

    def _start(self, name, role, ready, config, *extra):
        cfg = os.path.join(self.dir, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(config)
        log = os.path.join(self.dir, f"{name}.log")
        p = subprocess.Popen([self.bin, role, "--config", cfg, *extra], stdout=open(log, "wb"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(log, errors="replace") as f:
                m = re.search(ready, f.read())
            if m:
                return m.group(1)
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start:\n{open(log, errors='replace').read()}")

    def cli(self, *args):
        env = dict(os.environ, EMBERFS_MGMTD=self.mgmtd, EMBERFS_TOKEN=TOKEN)
        return subprocess.run([self.bin, *args], env=env, capture_output=True, text=True, timeout=120)

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module")
def procs(tmp_path_factory):
    pc = ProcCluster(tmp_path_factory.mktemp("ckptprocs"))
    c = emberfs.connect(pc.mgmtd, TOKEN)
    yield pc, c
    c.close()
    pc.close()


def test_storage_process_killed_during_save(procs):
    pc, fs = procs
    job = f"/job-{uuid.uuid4().hex[:8]}"
    g = torch.Generator().manual_seed(5)
    old = {"w": torch.randn(1 << 16, generator=g)}
    ckpt.save(old, f"{job}/step-1", client=fs)
    state = {f"t{i}": torch.randn(2 << 20, generator=g) for i in range(24)}  # 192 MiB
    started = threading.Event()
    when = {}

    def on_progress(done, total):
        if done > 0:
            started.set()

    def killer():
        if started.wait(120):
            pc.kill("storage2")  # mid-save: some bytes acknowledged, more to come
            when["killed"] = time.monotonic()

    k = threading.Thread(target=killer)
    k.start()
    try:
        ckpt.save(state, f"{job}/step-2", client=fs, concurrency=4, progress=on_progress)
        saved = True
    except (OSError, ckpt.CheckpointError, emberfs.EmberFSError) as exc:
        saved = False
        assert str(exc), "a failed save must say why"
    when["returned"] = time.monotonic()
    k.join()
    assert started.is_set(), "the save finished before any progress was reported"
    assert when["killed"] < when["returned"], "storage2 was killed only after the save returned"
    assert pc.procs["storage2"].poll() is not None, "storage2 was not killed"
    names = [i.name for i in ckpt.list_checkpoints(job, client=fs)]
    if saved:
        # Completed on the surviving replicas: whole and verified.
        assert names == ["step-1", "step-2"]
        back = ckpt.load(f"{job}/step-2", client=fs)
        for key, t in state.items():
            assert torch.equal(back[key], t), key
    else:
        # Failed clearly: nothing torn published, the previous latest loads.
        assert names == ["step-1"] and not fs.exists(f"{job}/step-2")
        assert ckpt.latest(job, client=fs) == f"{job}/step-1"
    assert torch.equal(ckpt.load(f"{job}/step-1", client=fs)["w"], old["w"])


def test_cli_ls_show_rm_reclaim(procs):
    pc, fs = procs
    job = f"/cli-{uuid.uuid4().hex[:8]}"
    ckpt.save({"w": torch.ones(4, 5), "b": torch.zeros(3, dtype=torch.int64)}, f"{job}/step-1", client=fs)
    ckpt.save({"w": torch.ones(4, 5)}, f"{job}/step-2", client=fs)
    n = ckpt._store.native(fs)
    dead = ckpt._store.call(n.CheckpointBegin, job, "step-3", False)
    dead.Stop()  # an abandoned save

    r = pc.cli("checkpoint", "ls", job)
    assert r.returncode == 0, r.stderr
    assert re.search(r"step-1", r.stdout) and re.search(r"^step-2\s.*\*\s*$", r.stdout, re.M), r.stdout
    assert "pending" not in r.stdout and "step-3" not in r.stdout, r.stdout

    r = pc.cli("checkpoint", "show", f"{job}/step-1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^w\s+rank-0-\d\.bin\s+\d+\s+80 B\s+float32\s+\[4 5\]", r.stdout, re.M), r.stdout
    assert re.search(r"^b\s+rank-0-\d\.bin\s+\d+\s+24 B\s+int64\s+\[3\]", r.stdout, re.M), r.stdout
    assert "2 tensors" in r.stdout, r.stdout

    r = pc.cli("checkpoint", "rm", f"{job}/step-2")
    assert r.returncode == 0, r.stderr
    assert [i.name for i in ckpt.list_checkpoints(job, client=fs)] == ["step-1"]
    assert ckpt.latest(job, client=fs) == f"{job}/step-1"

    r = pc.cli("checkpoint", "rm", f"{job}/nope")
    assert r.returncode != 0 and "no checkpoint at" in (r.stdout + r.stderr)

    r = pc.cli("checkpoint", "reclaim", job, "--grace", "0s")
    assert r.returncode == 0, r.stderr
    assert dead.Pending() in (r.stdout + r.stderr)
    assert not any(x.startswith(".pending-") for x in fs.listdir(job))
    assert torch.equal(ckpt.load(f"{job}/step-1", client=fs)["w"], torch.ones(4, 5))
