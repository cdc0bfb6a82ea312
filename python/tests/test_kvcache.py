"""emberfs.kvcache on a real cluster: every operation, every buffer kind,
bad input, batches (one crossing into Go each), stats, collisions."""

import errno
import os
import threading
import uuid

import numpy as np
import pytest
import torch

import emberfs
from emberfs import kvcache


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ns(fs):
    name = _name()
    kvcache.create(fs, name, max_value_bytes=1 << 20, capacity_bytes=256 << 20)
    yield name
    kvcache.drop(fs, name)


@pytest.fixture
def kv(fs, ns):
    k = emberfs.KVCache(fs, ns)
    yield k
    k.close()


# -- namespaces ---------------------------------------------------------------
def test_create_info_list_drop(fs):
    name = _name()
    info = kvcache.create(fs, name, max_value_bytes=64 << 10, capacity_bytes=32 << 20, ttl=3600, evict=False)
    assert (info.name, info.max_value_bytes, info.capacity_bytes, info.ttl_seconds, info.evict) == (
        name, 64 << 10, 32 << 20, 3600.0, False)
    assert info.replicas == 3 and len(info.chain_ids) > 0
    assert kvcache.info(fs, name) == info
    assert name in [i.name for i in kvcache.list_namespaces(fs)]
    with pytest.raises(FileExistsError, match=name):
        kvcache.create(fs, name, max_value_bytes=1024, capacity_bytes=1 << 20)
    kvcache.drop(fs, name)
    assert name not in [i.name for i in kvcache.list_namespaces(fs)]
    with pytest.raises(FileNotFoundError, match=name):
        kvcache.info(fs, name)
    with pytest.raises(FileNotFoundError, match=name):
        emberfs.KVCache(fs, name)
    with pytest.raises(FileNotFoundError):
        kvcache.drop(fs, name)


def test_create_bad_settings(fs):
    with pytest.raises(ValueError, match="max_value_bytes"):
        kvcache.create(fs, _name(), max_value_bytes=0, capacity_bytes=1 << 20)
    with pytest.raises(ValueError, match="capacity_bytes"):
        kvcache.create(fs, _name(), max_value_bytes=1024, capacity_bytes=-1)
    with pytest.raises(ValueError, match="ttl"):
        kvcache.create(fs, _name(), max_value_bytes=1024, capacity_bytes=1 << 20, ttl=-1)
    with pytest.raises(OSError) as e:
        kvcache.create(fs, "bad/name", max_value_bytes=1024, capacity_bytes=1 << 20)
    assert e.value.errno == errno.EINVAL and "bad/name" in str(e.value)
    with pytest.raises(OSError) as e:
        kvcache.create(fs, _name(), max_value_bytes=1024, capacity_bytes=1 << 20, replicas=7)
    assert e.value.errno in (errno.EINVAL, errno.ENOENT), e.value


# -- single keys ----------------------------------------------------------------
def test_put_get_remove(kv):
    kv.put(b"k", b"value")
    assert kv.get(b"k") == b"value"
    assert kv.get("k") == b"value"  # str keys are UTF-8
    assert kv.get(b"missing") is None
    kv.put(b"k", b"")  # empty values are values
    assert kv.get(b"k") == b""
    kv.put(b"k", b"replaced")
    assert kv.get(b"k") == b"replaced"
    assert b"k" in kv and b"other" not in kv
    kv.remove(b"k")
    assert kv.get(b"k") is None
    kv.remove(b"k")  # removing a missing key is fine


def test_binary_keys_are_distinct(kv):
    keys = [bytes([i]) * (1 + i) for i in range(40)] + [os.urandom(256), b"\x00\x00", b"\x00\x00\x00"]
    assert len(set(keys)) == len(keys)
    for i, k in enumerate(keys):
        kv.put(k, f"v{i}".encode())
    for i, k in enumerate(keys):
        assert kv.get(k) == f"v{i}".encode()


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy", "torch-f32", "torch-bf16", "torch-i8"])
def test_put_from_get_into_buffer_kinds(kv, kind):
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, 200_003, dtype=np.uint8)
    if kind == "bytes":
        src, dst = raw.tobytes(), bytearray(len(raw))
    elif kind == "bytearray":
        src, dst = bytearray(raw.tobytes()), bytearray(len(raw))
    elif kind == "memoryview":
        src, dst = memoryview(raw.tobytes())[3:], memoryview(bytearray(len(raw)))[3:]
    elif kind == "numpy":
        src, dst = raw.view(np.uint8), np.zeros_like(raw)
    else:
        dtype = {"torch-f32": torch.float32, "torch-bf16": torch.bfloat16, "torch-i8": torch.int8}[kind]
        g = torch.Generator().manual_seed(3)
        src = (torch.randn(1000, 37, generator=g) * 100).to(dtype)
        dst = torch.zeros_like(src)
    kv.put_from(b"buf", src)
    n = kv.get_into(b"buf", dst)
    if isinstance(src, torch.Tensor):
        assert n == src.numel() * src.element_size()
        assert torch.equal(src, dst)
    else:
        assert n == memoryview(src).nbytes
        assert bytes(memoryview(dst)[:n]) == bytes(src)
    assert kv.get(b"buf") == (bytes(src.view(torch.uint8).numpy()) if isinstance(src, torch.Tensor) else bytes(src))


def test_get_into_larger_buffer_and_too_small(kv):
    kv.put(b"k", b"0123456789")
    big = bytearray(b"x" * 20)
    assert kv.get_into(b"k", big) == 10
    assert big == bytearray(b"0123456789" + b"x" * 10)
    small = bytearray(b"y" * 9)
    with pytest.raises(ValueError, match="9 bytes"):
        kv.get_into(b"k", small)
    assert small == bytearray(b"y" * 9), "a failed get_into must not write"
    assert kv.get_into(b"absent", small) is None


def test_bad_keys(kv):
    for bad in (b"", "", b"x" * 257):
        with pytest.raises(ValueError, match="1..256"):
            kv.put(bad, b"v")
        with pytest.raises(ValueError, match="1..256"):
            kv.get(bad)
        with pytest.raises(ValueError, match="1..256"):
            kv.exists([b"ok", bad])
    kv.put(b"x" * 256, b"v")
    assert kv.get(b"x" * 256) == b"v"
    for bad in (123, None, [b"a"]):
        with pytest.raises(TypeError, match="key"):
            kv.get(bad)


def test_bad_buffers(kv):
    kv.put(b"k", b"abc")
    with pytest.raises(BufferError, match="read-only"):
        kv.get_into(b"k", b"immutable")
    with pytest.raises(BufferError, match="not contiguous"):
        kv.get_into(b"k", np.zeros((10, 10), dtype=np.uint8)[:, ::2])
    with pytest.raises(ValueError, match="not contiguous"):
        kv.put_from(b"k", torch.zeros(10, 10).t())
    with pytest.raises(TypeError, match="buffer protocol"):
        kv.put_from(b"k", "a str is not bytes")
    with pytest.raises(TypeError, match="buffer protocol"):
        kv.put_from(b"k", 42)
    assert kv.get(b"k") == b"abc", "refused puts leave the old value"


def test_value_over_namespace_size(kv):
    assert kv.max_value_bytes == 1 << 20
    kv.put(b"k", bytes(1 << 20))
    with pytest.raises(ValueError, match="1048577 bytes"):
        kv.put(b"k", bytes((1 << 20) + 1))
    assert kv.get(b"k") == bytes(1 << 20)


def test_closed_cache(fs, ns):
    k = emberfs.KVCache(fs, ns)
    k.close()
    k.close()
    with pytest.raises(emberfs.EmberFSError, match="closed"):
        k.get(b"k")


# -- batches ------------------------------------------------------------------------
def test_exists_and_longest_prefix(kv):
    keys = [f"chain-{i}".encode() for i in range(64)]
    for i in (0, 1, 2, 3, 5, 6):
        kv.put(keys[i], b"v")
    assert kv.exists(keys[:8]) == [True, True, True, True, False, True, True, False]
    assert kv.longest_prefix(keys) == 4
    assert kv.longest_prefix(keys[5:]) == 2
    assert kv.longest_prefix(keys[4:]) == 0
    assert kv.longest_prefix([]) == 0 and kv.exists([]) == []
    for k in keys:
        kv.put(k, b"v")
    assert kv.longest_prefix(keys) == 64
    kv.remove(keys[40])
    assert kv.longest_prefix(keys) == 40


def test_batch_put_get(kv):
    keys = [f"b{i}".encode() for i in range(50)]
    vals = [np.full(1000 + i, i, dtype=np.uint8) for i in range(50)]
    assert kv.batch_put_from(keys, vals) == [None] * 50
    bufs = [bytearray(2000) for _ in range(52)]
    got = kv.batch_get_into(keys + [b"miss1", b"miss2"], bufs)
    assert got == [1000 + i for i in range(50)] + [None, None]
    for i in range(50):
        assert bufs[i][: 1000 + i] == bytes([i]) * (1000 + i)
        assert bufs[i][1000 + i:] == bytes(2000 - 1000 - i)
    # A value larger than its buffer is a miss for that key only.
    small = [bytearray(1010) for _ in range(20)]
    got = kv.batch_get_into(keys[:20], small)
    assert got == [1000 + i if 1000 + i <= 1010 else None for i in range(20)]
    with pytest.raises(ValueError, match="2 keys but 1 buffers"):
        kv.batch_get_into(keys[:2], [bytearray(10)])
    with pytest.raises(ValueError, match="2 keys but 3 buffers"):
        kv.batch_put_from(keys[:2], [b"a", b"b", b"c"])
    with pytest.raises(BufferError, match="buffer 1"):
        kv.batch_get_into(keys[:2], [bytearray(10), b"read-only"])
    with pytest.raises(ValueError, match="value 1"):
        kv.batch_put_from(keys[:2], [b"a", bytes((1 << 20) + 1)])
    assert kv.batch_put_from([], []) == [] and kv.batch_get_into([], []) == []


class _Counting:
    """Counts calls into the native handle (each is one Python->Go crossing)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def call(*a):
            self.calls += 1
            return fn(*a)

        return call


def test_batch_is_one_crossing(kv):
    keys = [f"x{i}".encode() for i in range(64)]
    native = kv._k
    kv._k = counting = _Counting(native)
    try:
        assert kv.batch_put_from(keys, [b"v" * 100] * 64) == [None] * 64
        assert counting.calls == 1
        assert kv.batch_get_into(keys, [bytearray(100) for _ in keys]) == [100] * 64
        assert counting.calls == 2
        assert kv.exists(keys) == [True] * 64
        assert counting.calls == 3
        assert kv.longest_prefix(keys) == 64
        assert counting.calls == 4
    finally:
        kv._k = native


# -- concurrency, collisions, tier, stats ------------------------------------------
def test_threads(kv):
    errors = []

    def worker(t):
        try:
            for i in range(30):
                key = f"t{t}-{i}".encode()
                val = os.urandom(5000 + i)
                kv.put(key, val)
                buf = bytearray(6000)
                n = kv.get_into(key, buf)
                assert bytes(buf[:n]) == val
        except Exception as e:  # reported after join
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


def test_colliding_slots_never_return_another_keys_bytes(fs):
    """slot_bits=3: 64 keys share 8 slots, so most puts overwrite another
    key's value. Every get must return the key's own bytes or a miss."""
    name = _name()
    kvcache.create(fs, name, max_value_bytes=4096, capacity_bytes=64 << 20, slot_bits=3)
    try:
        with emberfs.KVCache(fs, name) as k:
            keys = [f"collide-{i}".encode() for i in range(64)]
            for round_ in range(3):
                for i, key in enumerate(keys):
                    k.put(key, key + b"|" + bytes([round_]) * 100)
                hits = 0
                for key in keys:
                    v = k.get(key)
                    assert v is None or v == key + b"|" + bytes([round_]) * 100, (key, v[:40])
                    hits += v is not None
                    buf = bytearray(4096)
                    n = k.get_into(key, buf)
                    assert n is None or bytes(buf[:n]) == key + b"|" + bytes([round_]) * 100
                got = k.batch_get_into(keys, [bytearray(4096) for _ in keys])
                assert 1 <= hits <= 8 and sum(g is not None for g in got) == hits
    finally:
        kvcache.drop(fs, name)


def test_memory_tier_and_stats(fs, ns):
    with emberfs.KVCache(fs, ns, memory_tier_bytes=8 << 20) as k:
        before = k.stats()
        k.put(b"hot", b"h" * 1000)
        for _ in range(5):
            assert k.get(b"hot") == b"h" * 1000
        assert k.get(b"cold") is None
        s = k.stats()
        assert s.client["puts"] - before.client["puts"] == 1
        assert s.client["hits"] - before.client["hits"] == 5
        assert s.client["misses"] - before.client["misses"] == 1
        assert s.client["tier_hits"] >= 1
        assert s.cluster["values"] >= 1 and s.cluster["bytes_stored"] >= 1000
    with pytest.raises(ValueError, match="memory_tier_bytes"):
        emberfs.KVCache(fs, ns, memory_tier_bytes=-1)


def test_cluster_stats_count_hits_and_misses(kv):
    before = kv.stats().cluster
    kv.put(b"s", b"x" * 4096)
    for _ in range(3):
        assert kv.get(b"s") is not None
    assert kv.get(b"nope") is None
    after = kv.stats().cluster
    assert after["hits"] - before["hits"] == 3
    assert after["misses"] - before["misses"] == 1
    assert after["bytes_read"] - before["bytes_read"] == 3 * 4096
