"""LMCache remote connector storing KV chunks in an EmberFS KVCache namespace.

Use it from LMCache's own configuration (lmcache 0.5.6), as a remote
storage plugin:

    remote_url: "emberfs://10.0.0.1:7100/llama-8b"     # mgmtd address(es), namespace
    remote_storage_plugins: ["emberfs"]
    extra_config:
      remote_storage_plugin.emberfs.module_path: emberfs.integrations.lmcache
      remote_storage_plugin.emberfs.class_name: EmberFSConnectorAdapter
      emberfs.token: "..."                 # or EMBERFS_TOKEN in the environment
      emberfs.memory_tier_bytes: 0         # optional in-process tier

Several mgmtd addresses are comma separated in the host part
(`emberfs://h1:7100,h2:7100/ns`). `plugin://emberfs` works too, with
`emberfs.mgmtd` and `emberfs.namespace` in extra_config.

How a chunk maps to EmberFS, and how that differs from LMCache's hf3fs
connector: hf3fs stores each chunk as a file under a 3FS FUSE mount
(metadata header + data, written to a temp name and renamed), so every put
costs a create, a rename and a close in the metadata service, every
exists is a stat, every get an open + two reads staged through a shared-
memory iovec (one extra copy each way), and a torn file after a crash is
read back as data. Here a chunk's key (CacheEngineKey.to_string(), hashed
when over 256 bytes) hashes straight to a storage chain and chunk: put, get
and exists touch storage services only, the value goes from the MemoryObj's
memory to the network and back into a freshly allocated MemoryObj with no
copy, batched gets and contains are one frame per storage target, and every
value carries its key and CRC32C, so a corrupt, torn or colliding chunk is a
miss. Values are raw KV bytes (no chunk meta: shapes and dtype are the
engine's, a partial chunk is known by its length), so `save_chunk_meta` is
forced off. There is no key listing (no metadata by design): list() is empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional
from urllib.parse import parse_qs, urlsplit

try:
    from lmcache.logging import init_logger
    from lmcache.utils import CacheEngineKey
    from lmcache.v1.memory_management import MemoryObj
    from lmcache.v1.storage_backend.connector import ConnectorAdapter, ConnectorContext, extract_plugin_type
    from lmcache.v1.storage_backend.connector.base_connector import RemoteConnector
except ImportError as exc:  # pragma: no cover - exercised only without lmcache
    raise ImportError(
        f"emberfs.integrations.lmcache needs LMCache (tested with lmcache==0.5.6): pip install lmcache ({exc})"
    ) from exc

from .. import kvcache as _kvcache
from ..client import Client

logger = init_logger(__name__)

__all__ = ["EmberFSConnector", "EmberFSConnectorAdapter", "PLUGIN_TYPE", "chunk_key", "parse_url"]

PLUGIN_TYPE = "emberfs"


def chunk_key(key: CacheEngineKey) -> bytes:
    """The EmberFS key of an LMCache chunk key: its string form, or a
    sha256 of it when longer than a KVCache key may be."""
    s = key.to_string().encode()
    if len(s) <= _kvcache.MAX_KEY_BYTES:
        return s
    return b"lmc-sha256:" + hashlib.sha256(s).digest()


def parse_url(url: str) -> tuple[str, str, dict]:
    """emberfs://host:port[,host:port...]/namespace[?k=v] -> (mgmtd, namespace, query)."""
    if not url.startswith("emberfs://"):
        raise ValueError(f"not an emberfs:// URL: {url!r}")
    parts = urlsplit(url)
    mgmtd = parts.netloc
    namespace = parts.path.strip("/")
    if not mgmtd or not namespace or "/" in namespace:
        raise ValueError(f"EmberFS LMCache URL must be emberfs://HOST:PORT[,HOST:PORT]/NAMESPACE, got {url!r}")
    return mgmtd, namespace, {k: v[-1] for k, v in parse_qs(parts.query).items()}


class EmberFSConnector(RemoteConnector):
    """RemoteConnector over an EmberFS KVCache namespace."""

    def __init__(self, loop: asyncio.AbstractEventLoop, local_cpu_backend, mgmtd: str, token: str, namespace: str,
                 memory_tier_bytes: int = 0, io_threads: int = 8):
        super().__init__(local_cpu_backend.config, local_cpu_backend.metadata)
        # Values are self-delimiting by length: no RemoteMetadata header.
        self.save_chunk_meta = False
        self.loop = loop
        self.local_cpu_backend = local_cpu_backend
        self.namespace = namespace
        self._client = Client(mgmtd, token)
        self._kv = _kvcache.KVCache(self._client, namespace, memory_tier_bytes)
        # Go releases the GIL, so these threads do I/O in parallel.
        self._pool = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="emberfs-lmcache")

    def __repr__(self) -> str:
        return f"<EmberFSConnector namespace={self.namespace!r}>"

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- lookups ----------------------------------------------------------
    async def exists(self, key: CacheEngineKey) -> bool:
        return await self._run(self.exists_sync, key)

    def exists_sync(self, key: CacheEngineKey) -> bool:
        return self._kv.exists([chunk_key(key)])[0]

    def support_batched_contains(self) -> bool:
        return True

    def batched_contains(self, keys: List[CacheEngineKey]) -> int:
        """Leading chunks present: one longest_prefix, one round trip per target.
        A failed lookup counts as no hit (LMCache then computes the chunks)."""
        try:
            return self._kv.longest_prefix([chunk_key(k) for k in keys])
        except OSError as exc:
            logger.warning("EmberFS: lookup of %d chunks failed, treating it as a miss: %s", len(keys), exc)
            return 0

    def support_batched_async_contains(self) -> bool:
        return True

    async def batched_async_contains(self, lookup_id: str, keys: List[CacheEngineKey], pin: bool = False) -> int:
        return await self._run(self.batched_contains, keys)

    # -- reads ------------------------------------------------------------
    def _allocate(self) -> Optional[MemoryObj]:
        obj = self.local_cpu_backend.allocate(self.meta_shapes, self.meta_dtypes, self.meta_fmt)
        if obj is None:
            logger.warning("EmberFS: no LMCache CPU memory for a chunk; treating it as a miss")
        return obj

    def _finish(self, obj: MemoryObj, n: Optional[int]) -> Optional[MemoryObj]:
        """A filled MemoryObj shaped to the bytes read, or None (and the
        object released) on a miss or a length that is no whole token count."""
        if n is None:
            obj.ref_count_down()
            return None
        try:
            return self.reshape_partial_chunk(obj, n)
        except ValueError as exc:
            logger.warning("EmberFS: stored chunk of %d bytes does not fit this engine's layout (%s): miss", n, exc)
            obj.ref_count_down()
            return None

    def get_sync(self, key: CacheEngineKey) -> Optional[MemoryObj]:
        obj = self._allocate()
        if obj is None:
            return None
        try:
            n = self._kv.get_into(chunk_key(key), obj.byte_array)
        except ValueError:  # stored value larger than a full chunk
            n = None
        except OSError as exc:  # the cache unreachable: a miss, LMCache recomputes
            logger.warning("EmberFS: get of %s failed, treating it as a miss: %s", key.to_string(), exc)
            n = None
        except BaseException:
            obj.ref_count_down()
            raise
        return self._finish(obj, n)

    async def get(self, key: CacheEngineKey) -> Optional[MemoryObj]:
        return await self._run(self.get_sync, key)

    def support_batched_get(self) -> bool:
        return True

    def batched_get_sync(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        objs: list[MemoryObj] = []
        try:
            for _ in keys:
                o = self._allocate()
                if o is None:
                    break
                objs.append(o)
            got = self._kv.batch_get_into([chunk_key(k) for k in keys[: len(objs)]], [o.byte_array for o in objs])
        except OSError as exc:
            logger.warning("EmberFS: batched get of %d chunks failed, treating them as misses: %s", len(keys), exc)
            got = [None] * len(objs)
        except BaseException:
            for o in objs:
                o.ref_count_down()
            raise
        out = [self._finish(o, n) for o, n in zip(objs, got)]
        return out + [None] * (len(keys) - len(out))

    async def batched_get(self, keys: List[CacheEngineKey]) -> List[Optional[MemoryObj]]:
        return await self._run(self.batched_get_sync, keys)

    def support_batched_get_non_blocking(self) -> bool:
        return True

    async def batched_get_non_blocking(self, lookup_id: str, keys: List[CacheEngineKey]) -> List[MemoryObj]:
        """The leading chunks found, up to the first miss (later hits released)."""
        got = await self.batched_get(keys)
        out: list[MemoryObj] = []
        for i, o in enumerate(got):
            if o is None:
                for rest in got[i + 1:]:
                    if rest is not None:
                        rest.ref_count_down()
                break
            out.append(o)
        return out

    # -- writes -----------------------------------------------------------
    def _check(self, obj: MemoryObj) -> None:
        if obj.get_memory_format() != self.meta_fmt or list(obj.get_dtypes()) != list(self.meta_dtypes):
            raise ValueError(
                f"EmberFS LMCache connector stores chunks of format {self.meta_fmt} and dtypes {self.meta_dtypes}; "
                f"got {obj.get_memory_format()} {obj.get_dtypes()}"
            )

    def put_sync(self, key: CacheEngineKey, memory_obj: MemoryObj) -> None:
        self._check(memory_obj)
        self._kv.put_from(chunk_key(key), memory_obj.byte_array)

    async def put(self, key: CacheEngineKey, memory_obj: MemoryObj):
        await self._run(self.put_sync, key, memory_obj)

    def support_batched_put(self) -> bool:
        return True

    def batched_put_sync(self, keys: List[CacheEngineKey], memory_objs: List[MemoryObj]) -> None:
        for o in memory_objs:
            self._check(o)
        errs = self._kv.batch_put_from([chunk_key(k) for k in keys], [o.byte_array for o in memory_objs])
        failed = [(k, e) for k, e in zip(keys, errs) if e is not None]
        if failed:
            raise OSError(failed[0][1].errno, f"EmberFS: {len(failed)} of {len(keys)} chunk puts failed; first "
                                              f"{failed[0][0].to_string()}: {failed[0][1]}")

    async def batched_put(self, keys: List[CacheEngineKey], memory_objs: List[MemoryObj]):
        await self._run(self.batched_put_sync, keys, memory_objs)

    def remove_sync(self, key: CacheEngineKey) -> bool:
        self._kv.remove(chunk_key(key))
        return True

    # -- misc -------------------------------------------------------------
    async def list(self) -> List[str]:
        # Keys hash straight to storage chunks; there is no index to list.
        return []

    def support_ping(self) -> bool:
        return True

    async def ping(self) -> int:
        try:
            await self._run(self._kv.stats)
            return 0
        except OSError as exc:
            return exc.errno or 1

    async def close(self):
        self._pool.shutdown(wait=True)
        self._kv.close()
        self._client.close()


class EmberFSConnectorAdapter(ConnectorAdapter):
    """Creates EmberFSConnector for emberfs:// URLs and plugin://emberfs."""

    def __init__(self) -> None:
        super().__init__("emberfs://")

    def can_parse(self, url: str) -> bool:
        if url.startswith(self.schema):
            return True
        return url.startswith("plugin://") and extract_plugin_type(url[len("plugin://"):]) == PLUGIN_TYPE

    def create_connector(self, context: ConnectorContext) -> RemoteConnector:
        extra = (context.config.extra_config if context.config is not None else None) or {}
        query: dict = {}
        if context.url.startswith(self.schema):
            mgmtd, namespace, query = parse_url(context.url)
        else:
            mgmtd, namespace = extra.get("emberfs.mgmtd"), extra.get("emberfs.namespace")
            if not mgmtd or not namespace:
                raise ValueError("plugin://emberfs needs extra_config 'emberfs.mgmtd' and 'emberfs.namespace'")
        token = query.get("token") or extra.get("emberfs.token") or os.environ.get("EMBERFS_TOKEN", "")
        tier = int(query.get("memory_tier_bytes", extra.get("emberfs.memory_tier_bytes", 0)))
        threads = int(extra.get("emberfs.io_threads", 8))
        logger.info("Creating EmberFS connector: mgmtd %s, namespace %s", mgmtd, namespace)
        return EmberFSConnector(context.loop, context.local_cpu_backend, mgmtd, token, namespace, tier, threads)
