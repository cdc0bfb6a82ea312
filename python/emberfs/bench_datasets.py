"""Samples/s through emberfs.datasets beside the same files on local disk.

    python -m emberfs.bench_datasets [--files 2000] [--kib 128] [--workers 0,4]
                                     [--mgmtd ADDR --token T] [--method fork] [--batch-size 0]

Writes N files of the given size under /bench-datasets-* on EmberFS (a
local cluster is started unless one is given) and the same bytes in a
local temporary directory, then reads every file once per configuration
through a DataLoader (batch_size=None; the transform returns the length, so
only the read is measured, not moving bytes between processes):

- EmberFS: EmberMapDataset and EmberIterableDataset from the prefix, which
  read a small sample whole in one call (Client.read_bytes);
- EmberFS, the same map dataset whose transform opens each file as a
  stream, reads it and closes it (what every sample cost before
  read_bytes: a session written to meta at open and again at close);
- local disk: a map dataset that open().read()s each path.

Local reads come from the page cache (the files were just written); so
may EmberFS's, in the storage services. A map dataset lists its prefix
before the clock starts (the iterable one lists in each reading process,
inside the timing). Prints one line per configuration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import torch.utils.data

from . import _shared
from .datasets import EmberIterableDataset, EmberMapDataset, EmberReader


def read_len(r: EmberReader) -> int:
    """Transform: read the whole file, return its length."""
    return len(r.read())


def read_len_opened(r: EmberReader) -> int:
    """Transform: open the file as a stream, read it whole, close it."""
    with _shared.client(r._mgmtd, r._token).open(r.path, "rb") as f:
        return len(f.read())


class LocalFiles(torch.utils.data.Dataset):
    """The local-disk baseline: item i is the length of file i read whole."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        with open(self.paths[i], "rb") as f:
            return len(f.read())


def _rate(ds, workers: int, method: str, want_bytes: int, batch: int) -> float:
    kw = dict(batch_size=batch or None, num_workers=workers)
    if workers:
        kw["multiprocessing_context"] = method
    loader = torch.utils.data.DataLoader(ds, **kw)
    t0 = time.perf_counter()
    n = total = 0
    for length in loader:
        if batch:  # a tensor of the batch's lengths
            n += len(length)
            total += int(length.sum())
        else:
            n += 1
            total += int(length)
    dt = time.perf_counter() - t0
    if total != want_bytes:
        raise RuntimeError(f"read {total} bytes, want {want_bytes}")
    return n / dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=128)
    ap.add_argument("--workers", default="0,4")
    ap.add_argument("--method", default="fork", choices=["fork", "spawn", "forkserver"])
    ap.add_argument("--batch-size", type=int, default=0,
                    help="DataLoader batch size (0: none, one sample at a time; a map dataset reads a batch's files together)")
    ap.add_argument("--mgmtd")
    ap.add_argument("--token")
    args = ap.parse_args(argv)

    cluster = None
    if not args.mgmtd:
        from .cluster import LocalCluster

        cluster = LocalCluster(storage=3, replicas=3)
        args.mgmtd, args.token = cluster.mgmtd, cluster.token
    local = tempfile.mkdtemp(prefix="emberfs-bench-ds-")
    root = f"/bench-datasets-{os.urandom(4).hex()}"
    try:
        # Files are written by a helper process so this one stays free of
        # the Go runtime and can fork DataLoader workers.
        import subprocess
        import sys

        size = args.kib << 10
        code = (
            "import os,sys; from emberfs.client import Client; c=Client(sys.argv[1], sys.argv[2]); "
            f"c.makedirs({root!r}, exist_ok=True); data=os.urandom({size})\n"
            f"for i in range({args.files}):\n"
            f"  f=c.open('{root}/s%06d.bin' % i, 'wb'); f.write(data); f.close()\n"
        )
        subprocess.run([sys.executable, "-c", code, args.mgmtd, args.token], check=True)
        data = os.urandom(size)
        paths = []
        for i in range(args.files):
            p = os.path.join(local, f"s{i:06d}.bin")
            with open(p, "wb") as f:
                f.write(data)
            paths.append(p)
        want = size * args.files
        print(f"{args.files} files of {args.kib} KiB, DataLoader start method {args.method}, "
              f"batch size {args.batch_size or None}")
        print(f"{'dataset':<34} {'workers':>7} {'samples/s':>10} {'local disk':>11} {'ratio':>6}")
        # Most workers first: num_workers=0 reads in this process, which
        # loads the Go runtime here, after which forked workers are refused.
        for w in sorted({int(x) for x in args.workers.split(",")}, reverse=True):
            base = _rate(LocalFiles(paths), w, args.method, want, args.batch_size)
            for name, ds in (
                ("EmberMapDataset", EmberMapDataset.from_prefix(f"emberfs://{root}/", transform=read_len,
                                                                mgmtd=args.mgmtd, token=args.token)),
                ("EmberIterableDataset", EmberIterableDataset.from_prefix(
                    f"emberfs://{root}/", transform=read_len, mgmtd=args.mgmtd, token=args.token)),
                ("EmberMapDataset, open/read/close", EmberMapDataset.from_prefix(
                    f"emberfs://{root}/", transform=read_len_opened, mgmtd=args.mgmtd, token=args.token)),
            ):
                if isinstance(ds, EmberMapDataset):
                    len(ds)  # lists once, before timing: the rate is of reading samples
                r = _rate(ds, w, args.method, want, args.batch_size)
                print(f"{name:<34} {w:>7} {r:>10.0f} {base:>11.0f} {r / base:>5.2f}x", flush=True)
    finally:
        shutil.rmtree(local, ignore_errors=True)
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
