"""KVCache benchmark from Python, beside Redis on the same machine.

    python -m emberfs.bench kvcache [--sizes 4K,64K,256K,1M,4M] [--threads 1,16]
        [--duration 1] [--mgmtd ADDR --token T]

Starts a redis-server of its own (on a free port, no persistence) and, unless
given --mgmtd, a LocalCluster (3 storage services, 3 replicas). For each
value size and thread count it runs put, get, get_into, exists and
longest_prefix (a 64-key chain) against an EmberFS KVCache namespace and the
same operations with the redis Python client (SET, GET, GET for get_into
since Redis has no receive-into-buffer, EXISTS, and 64 EXISTS in one
pipeline for the chain), and prints ops/s, MB/s, p50 and p99 side by side
with the EmberFS/Redis throughput ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(s: str) -> int:
    s = s.strip().upper().removesuffix("IB").removesuffix("B")
    if s and s[-1] in _UNITS:
        return int(float(s[:-1]) * _UNITS[s[-1]])
    return int(s)


def fmt_size(n: int) -> str:
    for u in ("M", "K"):
        if n >= _UNITS[u] and n % _UNITS[u] == 0:
            return f"{n // _UNITS[u]}{u}"
    return str(n)


class RedisServer:
    """A throwaway redis-server on 127.0.0.1 (no RDB, no AOF)."""

    def __init__(self, timeout: float = 10.0):
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server not found on PATH (Debian: apt-get install redis-server)")
        with socket.socket() as s:  # redis cannot listen on port 0: take a free one
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="emberfs-bench-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port, max_connections=128)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_cell(op, threads: int, duration: float):
    """Run op(thread, i) from `threads` threads for `duration` seconds; returns
    (ops, seconds, sorted latencies in seconds)."""
    lats: list[list[float]] = [[] for _ in range(threads)]
    errs: list[BaseException] = []
    stop = time.perf_counter() + duration

    def work(t):
        try:
            i = 0
            mine = lats[t]
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                op(t, i)
                mine.append(time.perf_counter() - t0)
                i += 1
        except BaseException as e:  # reported after join
            errs.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    if errs:
        raise errs[0]
    all_lats = sorted(x for m in lats for x in m)
    return len(all_lats), elapsed, all_lats


def _pct(lats, p):
    return lats[min(len(lats) - 1, int(len(lats) * p))] if lats else float("nan")


def bench(fs, redis_client, sizes, threads_list, duration, chain=64, progress=print):
    import emberfs
    from emberfs import kvcache

    name = f"bench-{uuid.uuid4().hex[:8]}"
    kvcache.create(fs, name, max_value_bytes=max(sizes), capacity_bytes=max(4 << 30, 64 * max(sizes) * 4))
    kv = emberfs.KVCache(fs, name)
    rows = []
    try:
        for size in sizes:
            nkeys = max(4, min(64, (64 << 20) // size))
            value = os.urandom(size)
            keys = [f"{name}-{size}-{i}".encode() for i in range(nkeys)]
            chain_keys = [f"{name}-chain-{i}".encode() for i in range(chain)]
            for k in keys:
                kv.put(k, value)
                redis_client.set(k, value)
            for k in chain_keys:
                kv.put(k, b"c")
                redis_client.set(k, b"c")
            for threads in threads_list:
                bufs = [bytearray(size) for _ in range(threads)]

                def redis_chain(t, i):
                    p = redis_client.pipeline(transaction=False)
                    for k in chain_keys:
                        p.exists(k)
                    n = 0
                    for r in p.execute():
                        if not r:
                            break
                        n += 1
                    assert n == chain

                ops = {
                    "put": (lambda t, i: kv.put_from(keys[(i + t) % nkeys], value),
                            lambda t, i: redis_client.set(keys[(i + t) % nkeys], value)),
                    "get": (lambda t, i: kv.get(keys[(i + t) % nkeys]),
                            lambda t, i: redis_client.get(keys[(i + t) % nkeys])),
                    "get_into": (lambda t, i: kv.get_into(keys[(i + t) % nkeys], bufs[t]),
                                 lambda t, i: redis_client.get(keys[(i + t) % nkeys])),
                    "exists": (lambda t, i: kv.exists([keys[(i + t) % nkeys]]),
                               lambda t, i: redis_client.exists(keys[(i + t) % nkeys])),
                    "longest_prefix": (lambda t, i: kv.longest_prefix(chain_keys), redis_chain),
                }
                for opname, (e_op, r_op) in ops.items():
                    moved = size if opname in ("put", "get", "get_into") else 0
                    res = []
                    for target, fn in (("emberfs", e_op), ("redis", r_op)):
                        progress(f"  {opname:<14} {fmt_size(size):>4} x{threads:<3} {target} ...")
                        n, secs, lats = run_cell(fn, threads, duration)
                        res.append((n / secs, n * moved / secs / 1e6, _pct(lats, 0.5), _pct(lats, 0.99)))
                    rows.append((opname, size, threads, res[0], res[1]))
            for k in keys + chain_keys:
                redis_client.delete(k)
    finally:
        kv.close()
        kvcache.drop(fs, name)
    return rows


def print_table(rows, out=print):
    out(f"{'op':<14} {'size':>5} {'thr':>4} | {'EmberFS ops/s':>13} {'MB/s':>8} {'p50 us':>8} {'p99 us':>8} | "
        f"{'Redis ops/s':>11} {'MB/s':>8} {'p50 us':>8} {'p99 us':>8} | {'ratio':>5}")
    for op, size, threads, e, r in rows:
        out(f"{op:<14} {fmt_size(size):>5} {threads:>4} | {e[0]:>13.0f} {e[1]:>8.0f} {e[2] * 1e6:>8.0f} "
            f"{e[3] * 1e6:>8.0f} | {r[0]:>11.0f} {r[1]:>8.0f} {r[2] * 1e6:>8.0f} {r[3] * 1e6:>8.0f} | "
            f"{e[0] / r[0]:>5.2f}")


def main(argv=None):
    import sys

    import emberfs

    ap = argparse.ArgumentParser(prog="python -m emberfs.bench kvcache")
    ap.add_argument("--sizes", default="4K,64K,256K,1M,4M")
    ap.add_argument("--threads", default="1,16")
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per cell")
    ap.add_argument("--mgmtd")
    ap.add_argument("--token")
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]

    def progress(msg):
        print(msg, file=sys.stderr, flush=True)

    cluster = None
    redis_server = RedisServer()
    try:
        if args.mgmtd:
            fs = emberfs.connect(args.mgmtd, args.token or os.environ.get("EMBERFS_TOKEN", ""))
        else:
            progress("starting a local cluster (3 storage services, 3 replicas) ...")
            cluster = emberfs.LocalCluster()
            fs = cluster.connect()
        try:
            rows = bench(fs, redis_server.client, sizes, threads, args.duration, progress=progress)
        finally:
            fs.close()
        print_table(rows)
    finally:
        redis_server.stop()
        if cluster:
            cluster.stop()


if __name__ == "__main__":
    main()
