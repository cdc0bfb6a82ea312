"""The LMCache connector through LMCache 0.5.6's own classes on CPU: its
configuration loads our adapter as a remote storage plugin, its
CreateConnector builds the connector, chunks are its MemoryObjs allocated by
its LocalCPUBackend and keyed by its CacheEngineKeys."""

import asyncio
import uuid

import pytest
import torch
from lmcache.utils import CacheEngineKey
from lmcache.v1.config import LMCacheEngineConfig
from lmcache.v1.metadata import LMCacheMetadata
from lmcache.v1.storage_backend.connector import CreateConnector
from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend

import emberfs
from emberfs import kvcache
from emberfs.integrations.lmcache import EmberFSConnector, chunk_key, parse_url

CHUNK = 16
KV_SHAPE = (2, 2, CHUNK, 2, 16)  # layers, K/V, tokens, heads, head size


@pytest.fixture
def ns(fs):
    name = f"lmc-{uuid.uuid4().hex[:10]}"
    kvcache.create(fs, name, max_value_bytes=1 << 20, capacity_bytes=64 << 20)
    yield name
    kvcache.drop(fs, name)


def lmcache_config(remote_url: str, extra: dict) -> LMCacheEngineConfig:
    return LMCacheEngineConfig.from_defaults(
        chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=0.05, remote_url=remote_url,
        remote_storage_plugins=["emberfs"],
        extra_config={"remote_storage_plugin.emberfs.module_path": "emberfs.integrations.lmcache",
                      "remote_storage_plugin.emberfs.class_name": "EmberFSConnectorAdapter", **extra},
    )


@pytest.fixture
def lmc(cluster, ns):
    """(connector as LMCache hands it out, its CPU backend, an event loop)."""
    cfg = lmcache_config(f"emberfs://{cluster.mgmtd}/{ns}", {"emberfs.token": cluster.token})
    md = LMCacheMetadata(model_name="tiny", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
                         kv_dtype=torch.float32, kv_shape=KV_SHAPE, chunk_size=CHUNK)
    backend = LocalCPUBackend(cfg, md)
    loop = asyncio.new_event_loop()
    conn = CreateConnector(cfg.remote_url, loop, backend, cfg, md)
    yield conn, backend, loop
    loop.run_until_complete(conn.close())
    loop.close()


def key(i: int) -> CacheEngineKey:
    return CacheEngineKey("tiny", 1, 0, 0x1000 + i, torch.float32)


def chunk(backend, seed: int, tokens: int = CHUNK):
    obj = backend.allocate([torch.Size([2, 2, tokens, 32])], [torch.float32])
    obj.tensor.copy_(torch.randn(obj.tensor.shape, generator=torch.Generator().manual_seed(seed)))
    return obj


def test_created_from_lmcache_config(lmc):
    conn, _, _ = lmc
    inner = getattr(conn, "_connector", conn)  # LMCache wraps connectors for metrics
    assert isinstance(inner, EmberFSConnector)
    assert inner.save_chunk_meta is False


def test_put_exists_get(lmc):
    conn, backend, loop = lmc
    run = loop.run_until_complete
    obj = chunk(backend, 1)
    expect = obj.tensor.clone()
    run(conn.put(key(1), obj))
    assert run(conn.exists(key(1))) and conn.exists_sync(key(1))
    assert not run(conn.exists(key(2)))
    got = run(conn.get(key(1)))
    assert got is not None and torch.equal(got.tensor, expect)
    assert got.get_shapes() == [torch.Size([2, 2, CHUNK, 32])]
    got.ref_count_down()
    assert run(conn.get(key(2))) is None
    assert conn.remove_sync(key(1)) and run(conn.get(key(1))) is None
    assert run(conn.list()) == []
    assert run(conn.ping()) == 0


def test_partial_chunk_comes_back_with_its_token_count(lmc):
    conn, backend, loop = lmc
    run = loop.run_until_complete
    obj = chunk(backend, 2, tokens=5)
    expect = obj.tensor.clone()
    run(conn.put(key(3), obj))
    got = run(conn.get(key(3)))
    assert got.tensor.shape == expect.shape and len(got.byte_array) == expect.numel() * 4
    assert torch.equal(got.tensor, expect)


def test_batches(lmc):
    conn, backend, loop = lmc
    run = loop.run_until_complete
    objs = [chunk(backend, 10 + i) for i in range(4)]
    expect = [o.tensor.clone() for o in objs]
    run(conn.batched_put([key(10 + i) for i in range(4)], objs))
    chain = [key(10), key(11), key(12), key(13), key(99), key(10)]
    assert conn.batched_contains(chain) == 4
    assert run(conn.batched_async_contains("lookup-1", chain)) == 4
    got = run(conn.batched_get([key(10), key(99), key(12)]))
    assert got[1] is None and torch.equal(got[0].tensor, expect[0]) and torch.equal(got[2].tensor, expect[2])
    prefix = run(conn.batched_get_non_blocking("lookup-2", [key(10), key(11), key(99), key(13)]))
    assert len(prefix) == 2 and torch.equal(prefix[1].tensor, expect[1])


def test_foreign_value_is_a_miss(lmc, fs, ns):
    """A value that is not a whole number of this engine's tokens (another
    layout, a truncated write) is never handed to LMCache."""
    conn, _, loop = lmc
    with emberfs.KVCache(fs, ns) as kv:
        kv.put(chunk_key(key(20)), b"x" * 1001)
        kv.put(chunk_key(key(21)), b"x" * (8192 + 512))  # bigger than a full chunk
    assert loop.run_until_complete(conn.get(key(20))) is None
    assert loop.run_until_complete(conn.get(key(21))) is None


def test_long_keys_are_hashed():
    k = CacheEngineKey("m" * 300, 1, 0, 1, torch.float32)
    ck = chunk_key(k)
    assert len(ck) <= 256 and ck == chunk_key(CacheEngineKey("m" * 300, 1, 0, 1, torch.float32))
    assert ck != chunk_key(CacheEngineKey("m" * 300, 1, 0, 2, torch.float32))


def test_urls():
    assert parse_url("emberfs://10.0.0.1:7100,10.0.0.2:7100/llama?memory_tier_bytes=5") == (
        "10.0.0.1:7100,10.0.0.2:7100", "llama", {"memory_tier_bytes": "5"})
    for bad in ("emberfs://host:1", "emberfs:///ns", "redis://h:1/ns", "emberfs://h:1/a/b"):
        with pytest.raises(ValueError, match="emberfs"):
            parse_url(bad)


def test_plugin_url_form(cluster, ns):
    cfg = lmcache_config("plugin://emberfs", {"emberfs.mgmtd": cluster.mgmtd, "emberfs.namespace": ns,
                                              "emberfs.token": cluster.token})
    md = LMCacheMetadata(model_name="tiny", world_size=1, local_world_size=1, worker_id=0, local_worker_id=0,
                         kv_dtype=torch.float32, kv_shape=KV_SHAPE, chunk_size=CHUNK)
    backend = LocalCPUBackend(cfg, md)
    loop = asyncio.new_event_loop()
    conn = CreateConnector(cfg.remote_url, loop, backend, cfg, md, plugin_name="emberfs")
    try:
        obj = chunk(backend, 5)
        loop.run_until_complete(conn.put(key(30), obj))
        assert conn.batched_contains([key(30)]) == 1
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
