"""torch.save / torch.load through EmberFS."""

import pytest
import torch

import emberfs

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.uint8,
          torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]


def _state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    shapes = [(), (1,), (7,), (3, 5), (2, 3, 4), (128, 257), (0, 4)]
    for i, dt in enumerate(DTYPES):
        for j, shape in enumerate(shapes):
            t = torch.randn(shape, generator=g, dtype=torch.float64) * 100
            if dt == torch.bool:
                t = t > 0
            elif dt.is_complex:
                t = torch.complex(t.float(), t.float())
            sd[f"layer{i}.w{j}"] = t.to(dt)
    sd["strided"] = torch.arange(100, dtype=torch.float32).reshape(10, 10).t()
    sd["meta"] = {"step": 1234, "name": "ember"}
    return sd


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_state_dict_roundtrip(fs, tmpdir_fs):
    sd = _state_dict(0)
    emberfs.save(sd, f"{tmpdir_fs}/ckpt.pt", client=fs)
    back = emberfs.load(f"{tmpdir_fs}/ckpt.pt", map_location="cpu", client=fs)
    _assert_same(sd, back)


def test_save_is_atomic_and_leaves_no_temp(fs, tmpdir_fs):
    emberfs.save({"a": torch.ones(3)}, f"{tmpdir_fs}/c.pt", client=fs)
    emberfs.save({"a": torch.zeros(3)}, f"{tmpdir_fs}/c.pt", client=fs)
    assert fs.listdir(tmpdir_fs) == ["c.pt"]
    assert torch.equal(emberfs.load(f"{tmpdir_fs}/c.pt", client=fs)["a"], torch.zeros(3))


def test_failed_save_leaves_nothing(fs, tmpdir_fs):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        emberfs.save({"x": torch.ones(1 << 20), "bad": Boom()}, f"{tmpdir_fs}/bad.pt", client=fs)
    assert fs.listdir(tmpdir_fs) == []


class Custom:
    """A class torch's weights_only loader must refuse to rebuild."""


def test_weights_only_refuses_arbitrary_objects(fs, tmpdir_fs):
    emberfs.save({"c": Custom()}, f"{tmpdir_fs}/obj.pt", client=fs)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        emberfs.load(f"{tmpdir_fs}/obj.pt", client=fs)
    back = emberfs.load(f"{tmpdir_fs}/obj.pt", client=fs, weights_only=False)
    assert isinstance(back["c"], Custom)


def test_large_tensor_over_1gib(fs, tmpdir_fs):
    n = (1 << 30) // 4 + 12345  # just over 1 GiB of float32
    big = torch.arange(n, dtype=torch.float32)
    emberfs.save({"big": big}, f"{tmpdir_fs}/big.pt", client=fs)
    assert fs.getsize(f"{tmpdir_fs}/big.pt") > (1 << 30)
    back = emberfs.load(f"{tmpdir_fs}/big.pt", client=fs)["big"]
    assert back.shape == big.shape
    assert torch.equal(back, big)
