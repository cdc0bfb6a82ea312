"""EmberFS Python benchmarks.

    python -m emberfs.bench torch [--size-gib 2] [--replicas 3] [--mgmtd ADDR --token T]
    python -m emberfs.bench kvcache [--sizes 4K,...,4M] [--threads 1,16]   (see emberfs.bench_kvcache)

Without --mgmtd a LocalCluster (--storage services, --replicas per chain,
fsync on) is started in a temporary directory. Prints torch.save/torch.load
GB/s through EmberFS beside the same to local disk, then raw read/write GB/s
through the file API with 1, 4 and 16 threads beside plain files on local
disk (written, then fsynced at close: EmberFS data is durable at close), and
the CPU-seconds per GB of this process (the client) and of the local
cluster's process (the servers).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


def _state_dict(total_bytes: int):
    import torch

    per = 64 << 20
    n = max(1, total_bytes // per)
    return {f"layer{i}": torch.full((per // 4,), float(i), dtype=torch.float32) for i in range(n)}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid) -> float:
    """User+system CPU seconds of process pid (0.0 when unknown)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class _CPU:
    """CPU-seconds per GB of the client (this process) and the servers."""

    def __init__(self, server_pid):
        self.server_pid = server_pid

    def measure(self, fn, nbytes):
        c0, s0 = _self_cpu(), _proc_cpu(self.server_pid)
        out = fn()
        gb = nbytes / 1e9
        return out, (_self_cpu() - c0) / gb, (_proc_cpu(self.server_pid) - s0) / gb if self.server_pid else None


def bench_torch(fs, size: int, local_dir: str, cpu: _CPU):
    import torch

    import emberfs

    sd = _state_dict(size)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    rows = []
    path = "/bench-torch.pt"
    (_, t), cc, sc = cpu.measure(lambda: _timed(lambda: emberfs.save(sd, path, client=fs)), nbytes)
    rows.append(("torch.save", "emberfs", _gbps(nbytes, t), cc, sc))
    (_, t), cc, sc = cpu.measure(lambda: _timed(lambda: emberfs.load(path, client=fs)), nbytes)
    rows.append(("torch.load", "emberfs", _gbps(nbytes, t), cc, sc))
    fs.remove(path)
    lp = os.path.join(local_dir, "bench-torch.pt")

    def local_save():
        with open(lp, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())

    _, t = _timed(local_save)
    rows.append(("torch.save", "local disk", _gbps(nbytes, t), None, None))
    _, t = _timed(lambda: torch.load(lp, weights_only=True))
    rows.append(("torch.load", "local disk", _gbps(nbytes, t), None, None))
    os.remove(lp)
    return nbytes, rows


def bench_raw(fs, size: int, threads: int, local_dir: str, cpu: _CPU):
    """Raw write and read GB/s through EmberFS and on local disk, and the
    EmberFS runs' client and server CPU-seconds per GB."""
    per = max(size // threads, 1 << 20)
    block = bytearray(os.urandom(4 << 20))

    def run(fn):
        errs = []

        def wrap(i):
            try:
                fn(i)
            except Exception as e:  # reported after join
                errs.append(e)

        ts = [threading.Thread(target=wrap, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errs:
            raise errs[0]
        return time.perf_counter() - t0

    def write(i):
        with fs.open(f"/bench-raw-{i}", "wb", buffering=0) as f:
            left = per
            while left > 0:
                n = f.write(memoryview(block)[: min(len(block), left)])
                left -= n

    def read(i):
        buf = bytearray(len(block))
        with fs.open(f"/bench-raw-{i}", "rb", buffering=0) as f:
            while f.readinto(buf):
                pass

    def local_write(i):
        with open(os.path.join(local_dir, f"bench-raw-{i}"), "wb", buffering=0) as f:
            left = per
            while left > 0:
                left -= f.write(memoryview(block)[: min(len(block), left)])
            os.fsync(f.fileno())

    def local_read(i):
        buf = bytearray(len(block))
        with open(os.path.join(local_dir, f"bench-raw-{i}"), "rb", buffering=0) as f:
            while f.readinto(buf):
                pass

    total = per * threads
    tw, wc, ws = cpu.measure(lambda: run(write), total)
    tr, rc, rs = cpu.measure(lambda: run(read), total)
    for i in range(threads):
        fs.remove(f"/bench-raw-{i}")
    ltw = run(local_write)
    ltr = run(local_read)
    for i in range(threads):
        os.remove(os.path.join(local_dir, f"bench-raw-{i}"))
    return {
        "write": _gbps(total, tw), "read": _gbps(total, tr),
        "local_write": _gbps(total, ltw), "local_read": _gbps(total, ltr),
        "cpu": (wc, ws, rc, rs),
    }


def _cpu_str(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv=None):
    import sys

    import emberfs

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kvcache"]:
        from . import bench_kvcache

        return bench_kvcache.main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m emberfs.bench")
    ap.add_argument("what", choices=["torch", "kvcache"])
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--raw-mib", type=int, default=512, help="bytes per raw read/write run")
    ap.add_argument("--mgmtd")
    ap.add_argument("--token")
    ap.add_argument("--local-dir", default=tempfile.gettempdir())
    ap.add_argument("--storage", type=int, default=3, help="storage services of the local cluster")
    ap.add_argument("--replicas", type=int, default=3, help="replicas per chain of the local cluster")
    args = ap.parse_args(argv)

    cluster = None
    if args.mgmtd:
        fs = emberfs.connect(args.mgmtd, args.token or os.environ.get("EMBERFS_TOKEN", ""))
    else:
        print(f"starting a local cluster ({args.storage} storage services, {args.replicas} replicas) ...", flush=True)
        cluster = emberfs.LocalCluster(storage=args.storage, replicas=args.replicas)
        fs = cluster.connect()
    cpu = _CPU(cluster._proc.pid if cluster else None)
    try:
        nbytes, rows = bench_torch(fs, int(args.size_gib * (1 << 30)), args.local_dir, cpu)
        print(f"\nstate_dict of {nbytes / (1 << 30):.2f} GiB")
        print(f"{'operation':<12} {'target':<11} {'GB/s':>7} {'client CPU s/GB':>16} {'server CPU s/GB':>16}")
        for op, target, gbps, cc, sc in rows:
            print(f"{op:<12} {target:<11} {gbps:>7.2f} {_cpu_str(cc):>16} {_cpu_str(sc):>16}")
        print(f"\nraw file I/O, {args.raw_mib} MiB per run, 4 MiB requests; CPU-seconds per GB: client / servers")
        print(f"{'threads':>7} {'write GB/s':>11} {'local write':>12} {'read GB/s':>10} {'local read':>11} {'write CPU':>12} {'read CPU':>12}")
        for n in (1, 4, 16):
            r = bench_raw(fs, args.raw_mib << 20, n, args.local_dir, cpu)
            wc, ws, rc, rs = r["cpu"]
            print(f"{n:>7} {r['write']:>11.2f} {r['local_write']:>12.2f} {r['read']:>10.2f} {r['local_read']:>11.2f}"
                  f" {_cpu_str(wc) + ' / ' + _cpu_str(ws):>12} {_cpu_str(rc) + ' / ' + _cpu_str(rs):>12}", flush=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        srv = ""
        if cluster:
            try:
                with open(f"/proc/{cluster._proc.pid}/status") as f:
                    hwm = [ln.split()[1] for ln in f if ln.startswith("VmHWM")]
                srv = f", servers (emberfs up) {int(hwm[0]) >> 10} MiB" if hwm else ""
            except OSError:
                pass
        print(f"\npeak RSS: client (this Python process, tensors included) {rss} MiB{srv}")
    finally:
        fs.close()
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
