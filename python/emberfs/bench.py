"""EmberFS Python benchmarks.

    python -m emberfs.bench torch [--size-gib 2] [--mgmtd ADDR --token T]
    python -m emberfs.bench kvcache [--sizes 4K,...,4M] [--threads 1,16]   (see emberfs.bench_kvcache)

Without --mgmtd a LocalCluster is started in a temporary directory. Prints
torch.save/torch.load GB/s through EmberFS beside the same to local disk,
then raw read/write GB/s through the file API with 1, 4 and 16 threads.
"""

from __future__ import annotations

import argparse
import os
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


def bench_torch(fs, size: int, local_dir: str):
    import torch

    import emberfs

    sd = _state_dict(size)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    rows = []
    path = "/bench-torch.pt"
    _, t = _timed(lambda: emberfs.save(sd, path, client=fs))
    rows.append(("torch.save", "emberfs", _gbps(nbytes, t)))
    _, t = _timed(lambda: emberfs.load(path, client=fs))
    rows.append(("torch.load", "emberfs", _gbps(nbytes, t)))
    fs.remove(path)
    lp = os.path.join(local_dir, "bench-torch.pt")

    def local_save():
        with open(lp, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())

    _, t = _timed(local_save)
    rows.append(("torch.save", "local disk", _gbps(nbytes, t)))
    _, t = _timed(lambda: torch.load(lp, weights_only=True))
    rows.append(("torch.load", "local disk", _gbps(nbytes, t)))
    os.remove(lp)
    return nbytes, rows


def bench_raw(fs, size: int, threads: int):
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

    tw = run(write)
    tr = run(read)
    for i in range(threads):
        fs.remove(f"/bench-raw-{i}")
    return _gbps(per * threads, tw), _gbps(per * threads, tr)


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
    args = ap.parse_args(argv)

    cluster = None
    if args.mgmtd:
        fs = emberfs.connect(args.mgmtd, args.token or os.environ.get("EMBERFS_TOKEN", ""))
    else:
        print("starting a local cluster (3 storage services, 3 replicas) ...", flush=True)
        cluster = emberfs.LocalCluster()
        fs = cluster.connect()
    try:
        nbytes, rows = bench_torch(fs, int(args.size_gib * (1 << 30)), args.local_dir)
        print(f"\nstate_dict of {nbytes / (1 << 30):.2f} GiB")
        print(f"{'operation':<12} {'target':<11} {'GB/s':>7}")
        for op, target, gbps in rows:
            print(f"{op:<12} {target:<11} {gbps:>7.2f}")
        print(f"\nraw file I/O, {args.raw_mib} MiB per run, 4 MiB requests")
        print(f"{'threads':>7} {'write GB/s':>11} {'read GB/s':>10}")
        for n in (1, 4, 16):
            w, r = bench_raw(fs, args.raw_mib << 20, n)
            print(f"{n:>7} {w:>11.2f} {r:>10.2f}", flush=True)
    finally:
        fs.close()
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
