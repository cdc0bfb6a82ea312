"""torch.distributed.checkpoint on EmberFS with real process groups: spawned
processes (a Go runtime does not survive fork), gloo on CPU, each process
connected to the cluster itself."""

import os
import signal
import socket

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.api import CheckpointException

import emberfs
import emberfs.checkpoint as ckpt
from emberfs.checkpoint.dcp import EmberFSStorageReader, EmberFSStorageWriter

ROWS, COLS = 16, 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _full(step):
    return torch.arange(ROWS * COLS, dtype=torch.float32).reshape(ROWS, COLS) * (step + 1)


def _state(world, rank, step):
    """A row-sharded DTensor, a replicated tensor and a per-rank tensor."""
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    return {
        "sharded": distribute_tensor(_full(step), mesh, [Shard(0)]),
        "replicated": torch.full((5,), float(step)),
        f"rank{rank}": torch.full((3,), float(rank * 100 + step)),
        "step": step,
    }


def _init(rank, world, port, mgmtd, token):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    emberfs.connect(mgmtd, token)


def _save_worker(rank, world, port, mgmtd, token, job):
    _init(rank, world, port, mgmtd, token)
    try:
        dcp.save(_state(world, rank, 1), storage_writer=EmberFSStorageWriter(f"emberfs://{job}/step-1"))
        # async: training changes the state right after async_save returns
        st = _state(world, rank, 2)
        fut = dcp.async_save(st, storage_writer=EmberFSStorageWriter(f"emberfs://{job}/step-2"))
        st["sharded"].to_local().fill_(-1)
        st["replicated"].fill_(-1)
        fut.result()
        # a second save to a published path fails on every rank
        with pytest.raises(CheckpointException, match="checkpoint already exists") as ei:
            dcp.save(_state(world, rank, 3), storage_writer=EmberFSStorageWriter(f"emberfs://{job}/step-1"))
        assert all(isinstance(exc, FileExistsError) for exc, _ in ei.value.failures.values())
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _load_worker(rank, world, port, mgmtd, token, job):
    _init(rank, world, port, mgmtd, token)
    try:
        for step in (1, 2):
            st = _state(world, rank, 0)
            st["sharded"].to_local().zero_()
            saved_ranks = [r for r in range(4)]
            for r in saved_ranks:  # every rank may read any saved rank's tensor
                st[f"rank{r}"] = torch.zeros(3)
            dcp.load(st, storage_reader=EmberFSStorageReader(f"emberfs://{job}/step-{step}"))
            full = _full(step)
            lo = rank * ROWS // world
            assert torch.equal(st["sharded"].to_local(), full[lo:lo + ROWS // world]), (rank, step)
            assert torch.equal(st["replicated"], torch.full((5,), float(step)))
            for r in saved_ranks:
                assert torch.equal(st[f"rank{r}"], torch.full((3,), float(r * 100 + step))), (r, step)
            assert st["step"] == step
    finally:
        dist.destroy_process_group()


class _DieAfterWriting(EmberFSStorageWriter):
    def write_data(self, plan, planner):
        fut = super().write_data(plan, planner)
        if dist.get_rank() == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # data written, never committed
        return fut


def _killed_worker(rank, world, port, mgmtd, token, job):
    _init(rank, world, port, mgmtd, token)
    dcp.save(_state(world, rank, 5), storage_writer=_DieAfterWriting(f"emberfs://{job}/step-5"))


def test_dcp_world4_save_then_load_resharded_2_and_1(cluster, fs, tmpdir_fs):
    job = f"{tmpdir_fs}/dcp"
    args = (cluster.mgmtd, cluster.token, job)
    mp.spawn(_save_worker, args=(4, _free_port()) + args, nprocs=4, join=True)
    assert sorted(n for n in fs.listdir(job)) == ["latest", "step-1", "step-2"]
    assert ckpt.latest(job, client=fs) == f"{job}/step-2"
    assert [i.name for i in ckpt.list_checkpoints(job, client=fs)] == ["step-1", "step-2"]
    # One protocol: the Go manifest lists a DCP checkpoint's files.
    info = ckpt.inspect(f"{job}/step-2", client=fs)
    assert info.num_tensors == 0 and ".metadata" in info.files
    assert sum(f.endswith(".distcp") for f in info.files) >= 4  # every rank wrote
    assert all(fs.getsize(f"{job}/step-2/{f}") == size for f, size in info.files.items())
    assert info.nbytes == sum(info.files.values()) > 0
    mp.spawn(_load_worker, args=(2, _free_port()) + args, nprocs=2, join=True)
    # world size 1, no process group: this process loads full tensors
    for step in (1, 2):
        st = {"sharded": torch.zeros(ROWS, COLS), "replicated": torch.zeros(5), "rank3": torch.zeros(3), "step": 0}
        dcp.load(st, checkpoint_id=f"emberfs://{job}/step-{step}", storage_reader=EmberFSStorageReader(f"emberfs://{job}/step-{step}", client=fs))
        assert torch.equal(st["sharded"], _full(step))
        assert torch.equal(st["rank3"], torch.full((3,), 300.0 + step)) and st["step"] == step


def test_dcp_rank_killed_mid_save_never_publishes(cluster, fs, tmpdir_fs):
    job = f"{tmpdir_fs}/dcp"
    sd = {"w": torch.arange(10.0)}
    dcp.save(sd, storage_writer=EmberFSStorageWriter(f"emberfs://{job}/step-4", client=fs))
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        mp.spawn(_killed_worker, args=(2, _free_port(), cluster.mgmtd, cluster.token, job), nprocs=2, join=True)
    names = fs.listdir(job)
    assert "step-5" not in names
    assert any(n.startswith(".pending-step-5-") for n in names)
    assert ckpt.latest(job, client=fs) == f"{job}/step-4"
    back = {"w": torch.zeros(10)}
    dcp.load(back, storage_reader=EmberFSStorageReader(f"emberfs://{job}/step-4", client=fs))
    assert torch.equal(back["w"], sd["w"])
    assert len(ckpt.reclaim(job, older_than=0, client=fs)) == 1
    with pytest.raises(CheckpointException, match="no published DCP checkpoint at .*step-5"):
        dcp.load(back, storage_reader=EmberFSStorageReader(f"emberfs://{job}/step-5", client=fs))


def test_validate_checkpoint_id():
    assert EmberFSStorageWriter.validate_checkpoint_id("emberfs:///a/b")
    assert EmberFSStorageReader.validate_checkpoint_id("emberfs://127.0.0.1:7000/a/b")
    assert not EmberFSStorageWriter.validate_checkpoint_id("/local/path")
    assert not EmberFSStorageReader.validate_checkpoint_id("s3://bucket/key")
