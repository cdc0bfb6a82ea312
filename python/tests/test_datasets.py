"""emberfs.datasets with real DataLoader workers under fork and spawn,
against a real local cluster. Each test runs in a fresh interpreter
(subprocess) where needed, because the pytest process itself has loaded the
Go runtime (other tests use EmberFS), and a child forked from it must be
refused, not used; that refusal is tested too."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader

from emberfs.datasets import EmberIterableDataset, EmberMapDataset, EmberReader

N = 23  # not a multiple of any worker count below


def read_all(r: EmberReader):
    """A transform: (path, bytes) of the file (module level: spawn pickles it)."""
    return r.path, r.read()


@pytest.fixture(scope="module")
def files(fs):
    root = "/ds-" + os.urandom(6).hex()
    fs.makedirs(f"{root}/train/b")
    want = {}
    for i in range(N):
        p = f"{root}/train/{'b/' if i % 3 == 0 else ''}s{i:03d}.bin"
        data = f"sample {i} ".encode() * (i + 1)
        with fs.open(p, "wb") as f:
            f.write(data)
        want[p] = data
    with fs.open(f"{root}/other.bin", "wb") as f:
        f.write(b"not in the prefix")
    return root, want


def test_map_dataset_in_process(cluster, files):
    root, want = files
    ds = EmberMapDataset.from_prefix(f"emberfs://{root}/train/", transform=read_all,
                                     mgmtd=cluster.mgmtd, token=cluster.token)
    assert len(ds) == N
    got = [ds[i] for i in range(len(ds))]
    assert [p for p, _ in got] == sorted(want)  # path order
    assert dict(got) == want
    # A name prefix, like S3's: only s00x under train/ (b/ is a directory name).
    ds2 = EmberMapDataset.from_prefix(f"emberfs://{root}/train/s00", transform=read_all,
                                      mgmtd=cluster.mgmtd, token=cluster.token)
    assert [p for p, _ in (ds2[i] for i in range(len(ds2)))] == sorted(
        p for p in want if p.startswith(f"{root}/train/s00"))
    r = EmberMapDataset.from_prefix(f"emberfs://{root}/train", mgmtd=cluster.mgmtd, token=cluster.token)[0]
    assert isinstance(r, EmberReader) and r.uri == f"emberfs://{sorted(want)[0]}" and r.size == len(want[r.path])
    assert r.read(3) == want[r.path][:3] and r.seek(0) == 0 and r.read() == want[r.path]


def test_small_files_are_read_in_one_call(cluster, files, monkeypatch):
    """A sample no larger than the reader's buffer is read with
    Client.read_bytes (one metadata call), never opened as a stream; a
    larger one is streamed."""
    from emberfs import _shared
    root, want = files
    client = _shared.client(cluster.mgmtd, cluster.token)
    real_open = client.open

    def no_open(*a, **kw):
        raise AssertionError("a small sample was opened as a stream")

    monkeypatch.setattr(client, "open", no_open)
    ds = EmberMapDataset.from_prefix(f"emberfs://{root}/train/", transform=read_all,
                                     mgmtd=cluster.mgmtd, token=cluster.token)
    assert dict(ds[i] for i in range(len(ds))) == want
    # A batch (DataLoader with a batch size) is read together, in its order.
    order = [5, 0, 22, 7, 7, 13]
    assert ds.__getitems__(order) == [ds[i] for i in order]
    dl = DataLoader(ds, batch_size=4, collate_fn=list)  # in process
    assert [item for batch in dl for item in batch] == sorted(want.items())
    # The iterable dataset reads ahead, in order; abandoning it early is clean.
    it = EmberIterableDataset.from_prefix(f"emberfs://{root}/train/", transform=read_all,
                                          mgmtd=cluster.mgmtd, token=cluster.token)
    assert list(it) == sorted(want.items())
    gen = iter(it)
    assert [next(gen), next(gen)] == sorted(want.items())[:2]
    gen.close()
    r = EmberMapDataset.from_prefix(f"emberfs://{root}/train/", mgmtd=cluster.mgmtd, token=cluster.token)[0]
    assert r.read(4) == want[r.path][:4] and r.tell() == 4 and r.read() == want[r.path][4:]
    # A reader whose buffer is smaller than the file streams it.
    opened = []
    monkeypatch.setattr(client, "open", lambda *a, **kw: opened.append(a[0]) or real_open(*a, **kw))
    path = sorted(want)[-1]
    big = EmberReader(cluster.mgmtd, cluster.token, path, size=len(want[path]), buffer_size=16)
    assert big.read() == want[path] and opened == [path]


def test_reads_overlap(cluster, files, monkeypatch):
    """The iterable dataset's read-ahead and the map dataset's batches have
    several reads in flight at once: the first two reads wait for each
    other at a barrier, which one-at-a-time reading would never pass."""
    import threading
    from emberfs import _shared
    root, want = files
    client = _shared.client(cluster.mgmtd, cluster.token)
    real = client.read_bytes
    kw = dict(transform=read_all, mgmtd=cluster.mgmtd, token=cluster.token)
    for make in (lambda: list(EmberIterableDataset.from_prefix(f"emberfs://{root}/train/", **kw)),
                 lambda: EmberMapDataset.from_prefix(f"emberfs://{root}/train/", **kw).__getitems__(range(N))):
        barrier = threading.Barrier(2, timeout=30)
        calls = []

        def together(path, size_hint=None):
            calls.append(path)
            if len(calls) <= 2:
                barrier.wait()  # BrokenBarrierError if the second read never starts
            return real(path, size_hint)

        monkeypatch.setattr(client, "read_bytes", together)
        assert make() == sorted(want.items())
        assert len(calls) == N


def test_missing_prefix_and_bad_uri(cluster):
    ds = EmberMapDataset.from_prefix("emberfs:///no-such-dir/", mgmtd=cluster.mgmtd, token=cluster.token)
    with pytest.raises(FileNotFoundError):
        len(ds)
    with pytest.raises(ValueError, match="not an emberfs:// URI"):
        EmberMapDataset.from_prefix("s3://bucket/x", mgmtd=cluster.mgmtd, token=cluster.token)
    with pytest.raises(TypeError, match="transform must be callable"):
        EmberIterableDataset.from_prefix("emberfs:///x", transform=3, mgmtd=cluster.mgmtd, token=cluster.token)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        EmberIterableDataset.from_prefix("emberfs:///x", rank=2, world_size=2, mgmtd=cluster.mgmtd, token=cluster.token)


def test_iterable_shards_by_rank_and_worker_in_process(cluster, files):
    root, want = files
    seen = []
    for rank in range(3):
        ds = EmberIterableDataset.from_prefix(f"emberfs://{root}/train/", transform=read_all, rank=rank,
                                              world_size=3, mgmtd=cluster.mgmtd, token=cluster.token)
        part = list(ds)
        assert [p for p, _ in part] == sorted(want)[rank::3]
        seen += part
    assert dict(seen) == want and len(seen) == N  # every file once across ranks


# One fresh interpreter runs the DataLoaders under every start method, fork
# first: the parent never loads the Go runtime (listing runs in a helper
# process), so forking stays possible throughout. What the run costs is
# starting the spawned workers (each imports torch: ~2.5 CPU-seconds), so:
# one interpreter and one listing for all methods; the map and iterable
# pools start together, so their workers' imports and exits overlap instead
# of queueing one behind the other (on a loaded machine four processes also
# get a larger share of the CPU than two); and the transform is defined here
# rather than imported from this module, so workers do not import pytest.
_CHILD = textwrap.dedent("""
    import json, sys
    import torch
    from torch.utils.data import DataLoader
    from emberfs.datasets import EmberIterableDataset, EmberMapDataset
    from emberfs import _runtime

    def read_all(r):
        return r.path, r.read()

    def main():
        args = json.loads(sys.argv[1])
        kw = dict(transform=read_all, mgmtd=args["mgmtd"], token=args["token"])
        m = EmberMapDataset.from_prefix(args["uri"], **kw)
        # Rank 1 of 2, two workers: each worker takes its quarter.
        it = EmberIterableDataset.from_prefix(args["uri"], rank=1, world_size=2, **kw)
        out = {}
        for method in args["methods"]:
            loaders = {name: DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=method)
                       for name, ds in (("map", m), ("iter", it))}
            # Both pools' workers start now and start together.
            iters = {name: iter(dl) for name, dl in loaders.items()}
            got = {name: [[p, d.decode()] for p, d in i] for name, i in iters.items()}
            del iters  # shuts both pools down
            got["parent_loaded_runtime"] = _runtime.loaded()
            out[method] = got
        print(json.dumps(out))

    if __name__ == "__main__":  # spawned workers import this file again
        main()
""")

METHODS = ["fork", "spawn"]


@pytest.fixture(scope="module")
def loader_runs(cluster, files, tmp_path_factory):
    """What DataLoaders with 2 workers read under each start method."""
    root, _ = files
    script = tmp_path_factory.mktemp("child") / "child.py"
    script.write_text(_CHILD)
    args = json.dumps({"mgmtd": cluster.mgmtd, "token": cluster.token, "uri": f"emberfs://{root}/train/",
                       "methods": METHODS})
    proc = subprocess.run([sys.executable, str(script), args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", METHODS)
def test_dataloader_workers(loader_runs, files, method):
    _, want = files
    out = loader_runs[method]
    wanted = {p: d.decode() for p, d in want.items()}
    # Map: every file exactly once, in sampler order.
    assert [p for p, _ in out["map"]] == sorted(want) and dict(out["map"]) == wanted
    # Iterable, rank 1 of 2 with 2 workers: worker w takes files (2+w)::4;
    # the DataLoader interleaves the workers' items.
    names = sorted(want)
    assert sorted(p for p, _ in out["iter"]) == sorted(names[2::4] + names[3::4])
    assert all(wanted[p] == d for p, d in out["iter"])
    # The parent never loaded the runtime, which is what lets fork work.
    assert out["parent_loaded_runtime"] is False


def test_fork_after_the_parent_used_emberfs_is_refused_clearly(cluster, files):
    """This pytest process has loaded the runtime (the fixtures connected),
    so a forked worker must raise ForkedRuntimeError, not hang."""
    root, _ = files
    ds = EmberMapDataset.from_prefix(f"emberfs://{root}/train/", transform=read_all,
                                     mgmtd=cluster.mgmtd, token=cluster.token)
    assert len(ds) == N
    dl = DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="fork")
    with pytest.raises(Exception, match="forked from process .* EmberFS \\(Go\\) runtime.*spawn"):
        next(iter(dl))
