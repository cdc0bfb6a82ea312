"""emberfs.checkpoint: save/load, in-place and partial load, async save,
lifecycle, and damaged checkpoints, on a real cluster."""

import json
import threading

import pytest
import torch

import emberfs
import emberfs.checkpoint as ckpt

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
          torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64, torch.float8_e4m3fn]
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4), (128, 257), (0, 4)]


def _tensor(shape, dt, g):
    t = torch.randn(shape, generator=g, dtype=torch.float64) * 100
    if dt == torch.bool:
        return t > 0
    if dt.is_complex:
        return torch.complex(t.float(), -t.float()).to(dt)
    return t.to(dt)


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {f"layer{i}.w{j}": _tensor(s, dt, g) for i, dt in enumerate(DTYPES) for j, s in enumerate(SHAPES)}
    sd["strided"] = torch.arange(100, dtype=torch.float32).reshape(10, 10).t()
    sd["big"] = torch.randn(3 << 20, generator=g)  # 12 MiB: several pieces per read
    sd["optim"] = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.randn(4, 4, generator=g)}},
                   "param_groups": [{"lr": 0.1, "params": [0]}]}
    sd["pair"] = (torch.ones(2), "label", [torch.zeros(3, dtype=torch.int64), 7])
    sd["epoch"] = 3
    sd["name"] = "ember"
    return sd


def _same(a, b, where="<root>"):
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b), where
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


def test_roundtrip_nested_all_dtypes(fs, tmpdir_fs):
    sd = _state()
    path = ckpt.save(sd, f"{tmpdir_fs}/step-1", client=fs, concurrency=4)
    assert path == f"{tmpdir_fs}/step-1"
    back = ckpt.load(path, client=fs)
    _same(sd, back)
    files = fs.listdir(path)
    assert "manifest.json" in files and sum(f.endswith(".bin") for f in files) == 4
    # nothing left behind: the pending directory was renamed
    assert sorted(fs.listdir(tmpdir_fs)) == ["latest", "step-1"]


def test_manifest_records_every_tensor(fs, tmpdir_fs):
    sd = {"a": torch.arange(10, dtype=torch.int32), "b": {"c": torch.ones(2, 3, dtype=torch.bfloat16)}}
    ckpt.save(sd, f"{tmpdir_fs}/m", client=fs)
    with fs.open(f"{tmpdir_fs}/m/manifest.json") as f:
        m = json.load(f)
    ents = {e["name"]: e for e in m["tensors"]}
    assert ents["a"]["dtype"] == "int32" and ents["a"]["shape"] == [10] and ents["a"]["length"] == 40
    assert ents["b/c"]["dtype"] == "bfloat16" and ents["b/c"]["length"] == 12
    for e in ents.values():
        assert fs.getsize(f"{tmpdir_fs}/m/{e['file']}") >= e["offset"] + e["length"]


def test_shared_storage_written_once(fs, tmpdir_fs):
    w = torch.randn(64, 32)
    base = torch.arange(40, dtype=torch.float32)
    sd = {"embed": w, "lm_head": w, "base": base, "window": base[5:25], "grid": base.view(5, 8).t()}
    ckpt.save(sd, f"{tmpdir_fs}/tied", client=fs, concurrency=1)
    info = ckpt.inspect(f"{tmpdir_fs}/tied", client=fs)
    # one blob for the tied pair, one for the storage of base and its views
    assert info.num_tensors == 2
    assert info.nbytes == w.numel() * 4 + base.numel() * 4
    back = ckpt.load(f"{tmpdir_fs}/tied", client=fs)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
        assert back[k].stride() == sd[k].stride(), k
    assert back["embed"] is back["lm_head"]
    assert back["window"].untyped_storage().data_ptr() == back["base"].untyped_storage().data_ptr()


def test_load_into_fills_in_place(fs, tmpdir_fs):
    src = {"w": torch.randn(256, 128), "b": torch.randn(128), "n": {"k": torch.arange(9)}}
    ckpt.save(src, f"{tmpdir_fs}/c", client=fs)
    dst = {"w": torch.zeros(256, 128), "b": torch.zeros(128), "n": {"k": torch.zeros(9, dtype=torch.int64)}}
    ptrs = {k: dst[k].data_ptr() for k in ("w", "b")}
    out = ckpt.load(f"{tmpdir_fs}/c", into=dst, client=fs)
    assert out is dst
    assert dst["w"].data_ptr() == ptrs["w"] and dst["b"].data_ptr() == ptrs["b"]
    _same(src, dst)


def test_load_into_model_state_dict(fs, tmpdir_fs):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    ckpt.save(a.state_dict(), f"{tmpdir_fs}/model", client=fs)
    ckpt.load(f"{tmpdir_fs}/model", into=b.state_dict(), client=fs)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_load_into_non_contiguous_target(fs, tmpdir_fs):
    ckpt.save({"x": torch.arange(12.0).reshape(3, 4)}, f"{tmpdir_fs}/c", client=fs)
    target = torch.zeros(4, 3).t()
    ckpt.load(f"{tmpdir_fs}/c", into={"x": target}, client=fs)
    assert torch.equal(target, torch.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("bad,msg", [
    (torch.zeros(5, 4), r"tensor 'w'.*shape \[4, 5\].*shape \[5, 4\]"),
    (torch.zeros(4, 5, dtype=torch.float64), r"tensor 'w'.*dtype float32.*dtype float64"),
])
def test_load_into_wrong_shape_or_dtype(fs, tmpdir_fs, bad, msg):
    ckpt.save({"w": torch.ones(4, 5), "v": torch.ones(3)}, f"{tmpdir_fs}/c", client=fs)
    v = torch.zeros(3)
    with pytest.raises(ValueError, match=msg):
        ckpt.load(f"{tmpdir_fs}/c", into={"w": bad, "v": v}, client=fs)
    assert torch.equal(v, torch.zeros(3))  # checked before anything is read
    with pytest.raises(KeyError, match="'v'"):
        ckpt.load(f"{tmpdir_fs}/c", into={"w": torch.zeros(4, 5)}, client=fs)


def test_partial_load_keys(fs, tmpdir_fs):
    sd = _state(1)
    ckpt.save(sd, f"{tmpdir_fs}/c", client=fs)
    got = ckpt.load(f"{tmpdir_fs}/c", keys=["big", "optim/state"], client=fs)
    assert set(got) == {"big", "optim/state/0/step", "optim/state/0/exp_avg"}
    assert torch.equal(got["big"], sd["big"])
    assert torch.equal(got["optim/state/0/exp_avg"], sd["optim"]["state"][0]["exp_avg"])
    with pytest.raises(KeyError, match="nope"):
        ckpt.load(f"{tmpdir_fs}/c", keys=["nope"], client=fs)


def test_save_to_existing_path_fails_and_keeps_old(fs, tmpdir_fs):
    ckpt.save({"a": torch.ones(3)}, f"{tmpdir_fs}/c", client=fs)
    with pytest.raises(FileExistsError):
        ckpt.save({"a": torch.zeros(3)}, f"{tmpdir_fs}/c", client=fs)
    assert torch.equal(ckpt.load(f"{tmpdir_fs}/c", client=fs)["a"], torch.ones(3))


def test_two_jobs_race_to_one_path(fs, tmpdir_fs):
    # Both begin before either publishes (both pass the up-front existence
    # check); only one publish can win, and nothing is mixed.
    from emberfs.checkpoint import _store, api
    n = _store.native(fs)
    saves = [_store.call(n.CheckpointBegin, tmpdir_fs, "c", False) for _ in range(2)]
    plans = []
    for i, sv in enumerate(saves):
        plan = api._plan.make_plan([(("a",), torch.full((1000,), float(i)))], snapshot=False)
        api._write_shard(n, sv.Pending(), "rank-0-0.bin", plan.blobs, [])
        plans.append(plan)
    _store.call(saves[0].Commit, api._manifest_json(plans[0].blobs, {}), 0, False, False)
    with pytest.raises(FileExistsError, match="another save published it first"):
        _store.call(saves[1].Commit, api._manifest_json(plans[1].blobs, {}), 0, False, False)
    assert torch.equal(ckpt.load(f"{tmpdir_fs}/c", client=fs)["a"], torch.zeros(1000))
    assert sorted(fs.listdir(tmpdir_fs)) == ["c"]


def test_failed_save_leaves_nothing(fs, tmpdir_fs):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.save({"x": torch.ones(10), "bad": Boom()}, f"{tmpdir_fs}/c", client=fs)
    assert fs.listdir(tmpdir_fs) == []


def _flip_byte(fs, path, offset):
    with fs.open(path, "r+b", buffering=0) as f:
        f.seek(offset)
        b = bytearray(f.read(1))
        b[0] ^= 0xFF
        f.seek(offset)
        f.write(b)


def test_corrupt_shard_names_tensor_and_file(fs, tmpdir_fs):
    ckpt.save({"good": torch.ones(100), "victim": torch.arange(1000.0)}, f"{tmpdir_fs}/c", client=fs, concurrency=1)
    e = next(t for t in ckpt.inspect(f"{tmpdir_fs}/c", client=fs).tensors if t["name"] == "victim")
    _flip_byte(fs, f"{tmpdir_fs}/c/{e['file']}", e["offset"] + 123)
    with pytest.raises(ckpt.ChecksumError, match=rf"tensor 'victim'.*{e['file']}"):
        ckpt.load(f"{tmpdir_fs}/c", client=fs)
    # the undamaged tensor still loads on its own
    assert torch.equal(ckpt.load(f"{tmpdir_fs}/c", keys=["good"], client=fs)["good"], torch.ones(100))


def test_missing_and_truncated_shard(fs, tmpdir_fs):
    ckpt.save({"a": torch.ones(1000), "b": torch.ones(2000)}, f"{tmpdir_fs}/c", client=fs, concurrency=2)
    ents = {t["name"]: t for t in ckpt.inspect(f"{tmpdir_fs}/c", client=fs).tensors}
    assert ents["a"]["file"] != ents["b"]["file"]
    fs.remove(f"{tmpdir_fs}/c/{ents['a']['file']}")
    with pytest.raises(ckpt.CheckpointError, match=rf"{ents['a']['file']} of tensor 'a' is missing"):
        ckpt.load(f"{tmpdir_fs}/c", client=fs)
    fs.truncate(f"{tmpdir_fs}/c/{ents['b']['file']}", 100)
    with pytest.raises(ckpt.CheckpointError, match=rf"tensor 'b'.*{ents['b']['file']}.*truncated"):
        ckpt.load(f"{tmpdir_fs}/c", keys=["b"], client=fs)


def test_not_a_checkpoint(fs, tmpdir_fs):
    fs.mkdir(f"{tmpdir_fs}/plain")
    with pytest.raises(ckpt.CheckpointError, match="not a published checkpoint"):
        ckpt.load(f"{tmpdir_fs}/plain", client=fs)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load(f"{tmpdir_fs}/absent", client=fs)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.remove(f"{tmpdir_fs}/plain", client=fs)
    assert fs.isdir(f"{tmpdir_fs}/plain")


def test_bad_arguments(fs, tmpdir_fs):
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        ckpt.save([torch.ones(1)], f"{tmpdir_fs}/c", client=fs)
    with pytest.raises(ValueError, match="keep_last"):
        ckpt.save({"a": torch.ones(1)}, f"{tmpdir_fs}/c", client=fs, keep_last=0)
    with pytest.raises(ValueError, match="JSON"):
        ckpt.save({"a": torch.ones(1)}, f"{tmpdir_fs}/c", client=fs, metadata={"x": object()})
    with pytest.raises(ValueError, match="share the name 'a/b'"):
        ckpt.save({"a/b": torch.ones(1), "a": {"b": torch.ones(1)}}, f"{tmpdir_fs}/c", client=fs)
    with pytest.raises(TypeError, match="sparse|layout"):
        ckpt.save({"s": torch.eye(3).to_sparse()}, f"{tmpdir_fs}/c", client=fs)
    with pytest.raises(ValueError, match="invalid checkpoint path"):
        ckpt.save({"a": torch.ones(1)}, f"{tmpdir_fs}/latest", client=fs)
    assert fs.listdir(tmpdir_fs) == []


def test_weights_only_refuses_arbitrary_objects(fs, tmpdir_fs):
    ckpt.save({"w": torch.ones(2), "obj": Custom()}, f"{tmpdir_fs}/c", client=fs)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        ckpt.load(f"{tmpdir_fs}/c", client=fs)
    assert isinstance(ckpt.load(f"{tmpdir_fs}/c", client=fs, weights_only=False)["obj"], Custom)


class Custom:
    pass


def test_async_save_snapshots_and_reports_progress(fs, tmpdir_fs):
    w = torch.randn(4 << 20)  # 16 MiB
    expect = w.clone()
    events = []
    fut = ckpt.async_save({"w": w, "step": 7}, f"{tmpdir_fs}/a", client=fs,
                          progress=lambda done, total: events.append((done, total)))
    w.add_(1.0)  # training goes on right away
    w.zero_()
    assert fut.result(timeout=120) == f"{tmpdir_fs}/a"
    assert fut.bytes_total == w.numel() * 4 and fut.bytes_done == fut.bytes_total
    assert events and events[-1] == (fut.bytes_total, fut.bytes_total)
    assert all(a[0] <= b[0] for a, b in zip(events, events[1:]))
    back = ckpt.load(f"{tmpdir_fs}/a", client=fs)
    assert torch.equal(back["w"], expect) and back["step"] == 7


def test_async_save_error_surfaces_in_result(fs, tmpdir_fs):
    ckpt.save({"a": torch.ones(1)}, f"{tmpdir_fs}/a", client=fs)
    fut = ckpt.async_save({"a": torch.zeros(1)}, f"{tmpdir_fs}/a", client=fs)
    with pytest.raises(FileExistsError):
        fut.result(timeout=60)


def test_latest_retention_list_remove(fs, tmpdir_fs):
    job = f"{tmpdir_fs}/job"
    assert fs.exists(job) is False
    for step in range(5):
        ckpt.save({"step": torch.tensor(step)}, f"{job}/step-{step}", client=fs, keep_last=3,
                  metadata={"step": step})
        assert ckpt.latest(job, client=fs) == f"{job}/step-{step}"
    infos = ckpt.list_checkpoints(job, client=fs)
    assert [i.name for i in infos] == ["step-2", "step-3", "step-4"]
    assert [i.metadata["step"] for i in infos] == [2, 3, 4]
    assert infos[0].num_tensors == 1 and infos[0].nbytes == 8
    ckpt.remove(f"{job}/step-4", client=fs)
    assert ckpt.latest(job, client=fs) == f"{job}/step-3"
    assert int(ckpt.load(ckpt.latest(job, client=fs), client=fs)["step"]) == 3
    ckpt.remove(f"{job}/step-3", client=fs)
    ckpt.remove(f"{job}/step-2", client=fs)
    assert ckpt.latest(job, client=fs) is None
    assert sorted(fs.listdir(job)) == []


def test_reclaim_removes_only_stale_pending(fs, tmpdir_fs):
    from emberfs.checkpoint import _store, api
    n = _store.native(fs)
    dead = _store.call(n.CheckpointBegin, tmpdir_fs, "x", False)
    api._write_shard(n, dead.Pending(), "rank-0-0.bin", api._plan.make_plan([(("a",), torch.ones(10))], False).blobs, [])
    dead.Stop()  # its process "died": the lease is no longer renewed
    ckpt.save({"a": torch.ones(1)}, f"{tmpdir_fs}/y", client=fs)
    assert ckpt.reclaim(tmpdir_fs, older_than=3600, client=fs) == []
    assert ckpt.reclaim(tmpdir_fs, older_than=0, client=fs) == [dead.Pending()]
    assert sorted(fs.listdir(tmpdir_fs)) == ["latest", "y"]


def test_concurrent_saves_from_threads(fs, tmpdir_fs):
    errs = []

    def run(i):
        try:
            ckpt.save({"v": torch.full((1 << 16,), float(i))}, f"{tmpdir_fs}/c{i}", client=fs, update_latest=False)
        except Exception as e:
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    for i in range(4):
        assert torch.equal(ckpt.load(f"{tmpdir_fs}/c{i}", client=fs)["v"], torch.full((1 << 16,), float(i)))


def test_default_client_and_url_paths(cluster, tmpdir_fs, fs):
    emberfs.connect(cluster.mgmtd, cluster.token)  # the default client, if none yet
    ckpt.save({"a": torch.ones(2)}, f"emberfs://{tmpdir_fs}/u")
    assert torch.equal(ckpt.load(f"emberfs://{cluster.mgmtd}{tmpdir_fs}/u")["a"], torch.ones(2))
