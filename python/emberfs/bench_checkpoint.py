"""Checkpoint benchmark: EmberFS beside the local disk, in one run.

    python -m emberfs.bench_checkpoint [--size-gib 1 | --size-gib 4] [--replicas 1]
        [--world 1 4] [--mgmtd ADDR --token T] [--local-dir DIR]

A state_dict of mixed tensor sizes (1 KiB to 512 MiB) is saved and loaded:
  * emberfs.checkpoint.save/load   beside torch.save/torch.load to a local file (fsynced)
  * dcp.save/dcp.load with EmberFSStorageWriter/Reader beside DCP's
    FileSystemWriter/Reader on the local disk, at world size 1 and 4 (spawned
    gloo ranks, each saving 1/world of the bytes), same thread_count
  * async save: time until training may resume (snapshot) and until durable.
Prints GB/s and EmberFS / local disk. Without --mgmtd a LocalCluster with
--replicas replicas on 3 storage services is started in a temp directory.
Loads read what was just written, so both sides may be served from the page
cache; the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import time

MiB = 1 << 20


def mixed_sizes(total: int) -> list[int]:
    """Tensor sizes in bytes from 512 MiB down to 1 KiB summing to ~total:
    the big ones carry the bytes, 64 small ones (1-64 KiB) the count."""
    small = [1024 << (i % 7) for i in range(64)]
    left = total - sum(small)
    sizes = []
    while left >= MiB:
        size = 512 * MiB
        while size > left:
            size //= 2
        sizes.append(size)
        left -= size
    return sizes + small


def state_dict(total: int, prefix: str = "", seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, n in enumerate(mixed_sizes(total)):
        t = torch.empty(n // 4, dtype=torch.float32)
        t.uniform_(generator=g)
        sd[f"{prefix}t{i:03d}"] = t
    return sd


def nbytes(sd) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _gbps(n, s):
    return n / s / 1e9


def bench_single(fs, total, local_dir, concurrency):
    import torch

    import emberfs.checkpoint as ckpt

    sd = state_dict(total)
    n = nbytes(sd)
    rows = []
    base = "/bench-ckpt"
    if fs.exists(base):
        fs.rmtree(base)
    _, t = _timed(lambda: ckpt.save(sd, f"{base}/s1", client=fs, concurrency=concurrency))
    rows.append(("emberfs.checkpoint.save", t))
    _, t = _timed(lambda: ckpt.load(f"{base}/s1", client=fs, concurrency=concurrency))
    rows.append(("emberfs.checkpoint.load", t))
    into = {k: torch.empty_like(v) for k, v in sd.items()}
    _, t = _timed(lambda: ckpt.load(f"{base}/s1", into=into, client=fs, concurrency=concurrency))
    rows.append(("emberfs.checkpoint.load(into=)", t))
    lp = os.path.join(local_dir, "bench-ckpt.pt")

    def local_save():
        with open(lp, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())

    _, t = _timed(local_save)
    rows.append(("torch.save local", t))
    _, t = _timed(lambda: torch.load(lp, weights_only=True))
    rows.append(("torch.load local", t))
    os.remove(lp)

    # async: time until the caller may touch the tensors again, then until durable
    t0 = time.perf_counter()
    fut = ckpt.async_save(sd, f"{base}/s2", client=fs, concurrency=concurrency)
    resume = time.perf_counter() - t0
    fut.result()
    done = time.perf_counter() - t0
    fs.rmtree(base)
    return n, rows, resume, done


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dcp_worker(rank, world, port, mgmtd, token, total, local_dir, threads, out_file):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

    import emberfs
    from emberfs.checkpoint.dcp import EmberFSStorageReader, EmberFSStorageWriter

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    emberfs.connect(mgmtd, token)
    sd = state_dict(total // world, prefix=f"r{rank}.", seed=rank)
    times = {}

    def run(name, fn):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dist.barrier()
        times[name] = time.perf_counter() - t0

    lp = os.path.join(local_dir, f"bench-dcp-{world}")
    run("dcp.save emberfs", lambda: dcp.save(sd, storage_writer=EmberFSStorageWriter(f"emberfs:///bench-dcp-{world}/s", thread_count=threads)))
    run("dcp.load emberfs", lambda: dcp.load(sd, storage_reader=EmberFSStorageReader(f"emberfs:///bench-dcp-{world}/s", thread_count=threads)))
    run("dcp.save local", lambda: dcp.save(sd, storage_writer=FileSystemWriter(lp, thread_count=threads)))
    run("dcp.load local", lambda: dcp.load(sd, storage_reader=FileSystemReader(lp)))
    t0 = time.perf_counter()
    fut = dcp.async_save(sd, storage_writer=EmberFSStorageWriter(f"emberfs:///bench-dcp-{world}/a", thread_count=threads))
    times["dcp.async_save resume"] = time.perf_counter() - t0
    fut.result()
    dist.barrier()
    times["dcp.async_save done"] = time.perf_counter() - t0
    if rank == 0:
        import json

        with open(out_file, "w") as f:
            json.dump(times, f)
    dist.destroy_process_group()


def bench_dcp(cluster_addr, token, fs, total, world, local_dir, threads):
    import json

    import torch.multiprocessing as mp

    out = os.path.join(local_dir, f"bench-dcp-{world}.json")
    for p in (f"/bench-dcp-{world}",):
        if fs.exists(p):
            fs.rmtree(p)
    mp.spawn(_dcp_worker, args=(world, _free_port(), cluster_addr, token, total, local_dir, threads, out), nprocs=world)
    with open(out) as f:
        times = json.load(f)
    os.remove(out)
    shutil.rmtree(os.path.join(local_dir, f"bench-dcp-{world}"), ignore_errors=True)
    fs.rmtree(f"/bench-dcp-{world}")
    return times


def main(argv=None):
    import emberfs

    ap = argparse.ArgumentParser(prog="python -m emberfs.bench_checkpoint")
    ap.add_argument("--size-gib", type=float, default=1.0, help="state_dict size (4 for the issue's full size)")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--world", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--concurrency", type=int, default=8, help="emberfs.checkpoint I/O threads")
    ap.add_argument("--dcp-threads", type=int, default=4, help="DCP thread_count, both sides")
    ap.add_argument("--mgmtd")
    ap.add_argument("--token")
    ap.add_argument("--local-dir", default=tempfile.gettempdir())
    args = ap.parse_args(argv)
    total = int(args.size_gib * (1 << 30))

    cluster = None
    if args.mgmtd:
        addr, token = args.mgmtd, args.token or os.environ.get("EMBERFS_TOKEN", "")
    else:
        print(f"starting a local cluster (3 storage services, {args.replicas} replicas) ...", flush=True)
        cluster = emberfs.LocalCluster(storage=3, replicas=args.replicas)
        addr, token = cluster.mgmtd, cluster.token
    fs = emberfs.connect(addr, token)
    try:
        n, rows, resume, done = bench_single(fs, total, args.local_dir, args.concurrency)
        print(f"\nstate_dict {n / (1 << 30):.2f} GiB, {len(mixed_sizes(total))} tensors (1 KiB - 512 MiB), "
              f"replicas {args.replicas}")
        t = dict(rows)
        print(f"\n{'operation':<32} {'EmberFS GB/s':>12} {'local GB/s':>11} {'ratio':>6}")
        for op, eo, lo in (("save (world 1)", "emberfs.checkpoint.save", "torch.save local"),
                           ("load (world 1)", "emberfs.checkpoint.load", "torch.load local"),
                           ("load into= (world 1)", "emberfs.checkpoint.load(into=)", "torch.load local")):
            e, lg = _gbps(n, t[eo]), _gbps(n, t[lo])
            print(f"{'emberfs.checkpoint ' + op:<32} {e:>12.2f} {lg:>11.2f} {e / lg:>5.2f}x")
        print(f"async_save: training resumes after {resume:.2f} s, durable after {done:.2f} s "
              f"(sync save {t['emberfs.checkpoint.save']:.2f} s)", flush=True)
        for w in args.world:
            times = bench_dcp(addr, token, fs, total, w, args.local_dir, args.dcp_threads)
            for op in ("save", "load"):
                e, lg = _gbps(n, times[f"dcp.{op} emberfs"]), _gbps(n, times[f"dcp.{op} local"])
                print(f"{f'dcp.{op} (world {w})':<32} {e:>12.2f} {lg:>11.2f} {e / lg:>5.2f}x")
            print(f"dcp.async_save (world {w}): resumes after {times['dcp.async_save resume']:.2f} s, "
                  f"durable after {times['dcp.async_save done']:.2f} s", flush=True)
    finally:
        fs.close()
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
