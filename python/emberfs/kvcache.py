"""Inference KVCache on EmberFS: put/get KV blocks by prefix-hash keys.

    from emberfs import kvcache
    kvcache.create(fs, "llama-8b", max_value_bytes=4 << 20, capacity_bytes=64 << 30, ttl=3600)
    kv = kvcache.KVCache(fs, "llama-8b")
    kv.put_from(key, tensor)                 # any buffer, sent with no copy
    n = kv.get_into(key, out_tensor)         # value length, or None on a miss
    hits = kv.longest_prefix(chain_keys)     # leading keys present, one round trip per target

A key is 1..256 bytes (bytes-like, or str encoded as UTF-8). A value lives in
one storage chunk with its key, length and CRC32C, so a miss, an expired, a
corrupt or a colliding value all read as None, never as wrong bytes. Put and
get touch only storage services (no metadata), see docs/kvcache.md.

Buffers are anything with the buffer protocol (bytes, bytearray, memoryview,
numpy arrays) or CPU torch tensors (any dtype); Go reads and writes their
memory in place. Batch calls cross into Go once for the whole batch.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
from array import array
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import _buffers
from ._errors import EmberFSError, NativeError, call, translate

__all__ = [
    "KVCache", "KVStats", "NamespaceInfo", "MAX_KEY_BYTES",
    "create", "list_namespaces", "info", "drop",
]

MAX_KEY_BYTES = 256


def _key(key) -> bytes:
    """A key as bytes, checked for its size."""
    if isinstance(key, str):
        b = key.encode()
    elif isinstance(key, (bytes, bytearray, memoryview)):
        b = bytes(key)
    else:
        raise TypeError(f"a KVCache key must be bytes-like or str, not {type(key).__name__}")
    if not 1 <= len(b) <= MAX_KEY_BYTES:
        raise ValueError(f"a KVCache key must be 1..{MAX_KEY_BYTES} bytes, got {len(b)}")
    return b


def _pack(keys: Iterable) -> tuple[bytes, array, int]:
    """Keys packed into one bytes object plus an int64 array of lengths."""
    ks = [_key(k) for k in keys]
    return b"".join(ks), array("q", map(len, ks)), len(ks)


def _addr(a: array) -> int:
    return a.buffer_info()[0] if len(a) else 0


def _raise(exc: NativeError, name: str | None = None):
    raise translate(exc, name) from None


@dataclass(frozen=True)
class NamespaceInfo:
    """A namespace's settings and placement, as the cluster's registry holds them."""

    name: str
    id: int
    max_value_bytes: int
    capacity_bytes: int
    ttl_seconds: float
    evict: bool
    replicas: int
    chain_table: int
    chain_ids: tuple[int, ...]
    slot_bits: int
    raw: dict

    @classmethod
    def _from(cls, d: dict) -> "NamespaceInfo":
        return cls(
            name=d["name"], id=int(d["id"]), max_value_bytes=int(d["max_value_bytes"]),
            capacity_bytes=int(d["capacity_bytes"]), ttl_seconds=int(d.get("ttl_ns", 0)) / 1e9,
            evict=bool(d["evict"]), replicas=int(d.get("replicas", 0)), chain_table=int(d.get("chain_table", 0)),
            chain_ids=tuple(d.get("chain_ids") or ()), slot_bits=int(d.get("slot_bits", 0)), raw=d,
        )


@dataclass(frozen=True)
class KVStats:
    """A namespace's counters summed over its chains (`cluster`: hits,
    misses, bytes_read, bytes_stored, values, evictions, expirations,
    corrupt_misses) and this handle's own since it was opened (`client`:
    hits, misses, tier_hits, puts, put_bytes, get_bytes, removes)."""

    cluster: dict[str, int]
    client: dict[str, int]

    @classmethod
    def _from(cls, d: dict) -> "KVStats":
        return cls(cluster=_snake(d.get("Cluster") or {}), client=_snake(d.get("Client") or {}))


def _snake(d: dict) -> dict[str, int]:
    """Go field names (BytesRead) as snake case (bytes_read)."""
    out = {}
    for k, v in d.items():
        s = "".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_")
        out[s] = v
    return out


def _native(client):
    c = getattr(client, "_c", None)
    if c is None:
        raise EmberFSError("client is closed or not an emberfs.Client")
    return c


def create(
    client,
    name: str,
    *,
    max_value_bytes: int,
    capacity_bytes: int,
    ttl: float = 0,
    replicas: int = 0,
    evict: bool = True,
    chain_table: int = 0,
    slot_bits: int = 0,
) -> NamespaceInfo:
    """Create namespace `name` (one per model/config).

    max_value_bytes is the largest value it accepts; capacity_bytes bounds
    its storage (least recently used values are evicted above it, or puts
    fail with ENOSPC when evict is False); ttl is in seconds (0 = never
    expire); replicas 0 uses the cluster's replication; slot_bits (tests
    only) shrinks the key hash to force collisions. FileExistsError if the
    name is taken.
    """
    for what, v in (("max_value_bytes", max_value_bytes), ("capacity_bytes", capacity_bytes),
                    ("replicas", replicas), ("chain_table", chain_table)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    if max_value_bytes == 0:
        raise ValueError("max_value_bytes must be positive")
    if ttl < 0:
        raise ValueError(f"ttl must be >= 0 seconds, got {ttl!r}")
    if not 0 <= slot_bits <= 64:
        raise ValueError(f"slot_bits must be 0..64, got {slot_bits!r}")
    try:
        js = call(_native(client).KVCreate, name, max_value_bytes, int(ttl * 1e9), capacity_bytes, replicas, evict,
                                      chain_table, slot_bits)
    except NativeError as exc:
        _raise(exc, name)
    return NamespaceInfo._from(json.loads(js))


def list_namespaces(client) -> list[NamespaceInfo]:
    """Every KVCache namespace of the cluster."""
    try:
        js = call(_native(client).KVList)
    except NativeError as exc:
        _raise(exc)
    return [NamespaceInfo._from(d) for d in json.loads(js)]


def info(client, name: str) -> NamespaceInfo:
    """Settings of namespace `name`; FileNotFoundError if there is none."""
    try:
        js = call(_native(client).KVInfo, name)
    except NativeError as exc:
        _raise(exc, name)
    return NamespaceInfo._from(json.loads(js))


def drop(client, name: str) -> None:
    """Remove namespace `name` and every value in it."""
    try:
        call(_native(client).KVDrop, name)
    except NativeError as exc:
        _raise(exc, name)


class KVCache:
    """An open KVCache namespace. Thread-safe; calls release the GIL."""

    def __init__(self, client, name: str, memory_tier_bytes: int = 0):
        """Open namespace `name` of the cluster `client` is connected to.

        memory_tier_bytes > 0 keeps the hottest values in this process too
        (bounded in bytes). FileNotFoundError if the namespace does not exist.
        """
        if not isinstance(memory_tier_bytes, int) or memory_tier_bytes < 0:
            raise ValueError(f"memory_tier_bytes must be a non-negative int, got {memory_tier_bytes!r}")
        self.name = name
        self._client = client  # keeps the connection alive as long as the cache
        try:
            self._k = call(_native(client).KVOpen, name, memory_tier_bytes)
        except NativeError as exc:
            _raise(exc, name)
        self.max_value_bytes: int = self._k.MaxValueBytes()
        self._info: NamespaceInfo | None = None

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        k, self._k = getattr(self, "_k", None), None
        if k is not None:
            call(k.Close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _h(self):
        if self._k is None:
            raise EmberFSError(f"KVCache {self.name!r} is closed")
        return self._k

    @property
    def info(self) -> NamespaceInfo:
        """The namespace's settings (read once, then cached)."""
        if self._info is None:
            self._info = info(self._client, self.name)
        return self._info

    # -- single keys -----------------------------------------------------
    def put_from(self, key, buffer) -> None:
        """Store the bytes of `buffer` under `key`; Go sends them from the
        buffer's memory with no copy. Replaces any earlier value."""
        k = _key(key)
        with _buffers.region(buffer, writable=False) as (addr, n):
            self._check_size(n)
            try:
                call(self._h().PutFrom, _buffers_addr(k), len(k), addr, n)
            except NativeError as exc:
                _raise(exc, self.name)

    put = put_from

    def _check_size(self, n: int, i: int | None = None) -> None:
        if n > self.max_value_bytes:
            which = "value" if i is None else f"value {i}"
            raise ValueError(f"{which} of {n} bytes is over namespace {self.name!r}'s max value size of "
                             f"{self.max_value_bytes} bytes")

    def get_into(self, key, buffer) -> int | None:
        """Read `key`'s value into `buffer`; returns its length, or None on a
        miss. ValueError (naming both sizes) if the buffer is too small;
        nothing is written then."""
        k = _key(key)
        with _buffers.region(buffer, writable=True) as (addr, n):
            try:
                got = call(self._h().GetInto, _buffers_addr(k), len(k), addr, n)
            except NativeError as exc:
                e = translate(exc, self.name)
                if isinstance(e, OSError) and e.errno == _errno.ERANGE:
                    raise ValueError(f"buffer of {n} bytes is too small for the value of key {k!r}: {e.strerror}") from None
                raise e from None
        return None if got < 0 else got

    def get(self, key) -> bytes | None:
        """`key`'s value as bytes, or None on a miss."""
        k = _key(key)
        try:
            v = call(self._h().Get, _buffers_addr(k), len(k))
        except NativeError as exc:
            _raise(exc, self.name)
        if not v.Found():
            return None
        n = v.Len()
        out = bytearray(n)
        if n:
            with _buffers.region(out, writable=True) as (addr, _):
                call(v.CopyTo, addr, n)
        return bytes(out)

    def remove(self, key) -> None:
        """Delete `key`'s value; a missing key is not an error."""
        k = _key(key)
        try:
            call(self._h().Remove, _buffers_addr(k), len(k))
        except NativeError as exc:
            _raise(exc, self.name)

    def __contains__(self, key) -> bool:
        return self.exists([key])[0]

    # -- batches (one crossing into Go each) --------------------------------
    def exists(self, keys: Sequence) -> list[bool]:
        """Which of `keys` are present, in one round trip per storage target."""
        packed, lens, n = _pack(keys)
        out = bytearray(n)
        if n == 0:
            return []
        with _buffers.region(out, writable=True) as (oaddr, _):
            try:
                call(self._h().Exists, _buffers_addr(packed), len(packed), _addr(lens), n, oaddr)
            except NativeError as exc:
                _raise(exc, self.name)
        return [b == 1 for b in out]

    def longest_prefix(self, keys: Sequence) -> int:
        """How many leading keys of `keys` (a prefix-hash chain) are present."""
        packed, lens, n = _pack(keys)
        if n == 0:
            return 0
        try:
            return call(self._h().LongestPrefix, _buffers_addr(packed), len(packed), _addr(lens), n)
        except NativeError as exc:
            _raise(exc, self.name)

    def batch_put_from(self, keys: Sequence, buffers: Sequence) -> list[OSError | None]:
        """Store each buffer under its key, concurrently, in one call.

        Returns one entry per key: None when stored, else the OSError of its
        failure (the others are still stored: a cache put is per block)."""
        packed, lens, n = _pack(keys)
        if len(buffers) != n:
            raise ValueError(f"batch_put_from: {n} keys but {len(buffers)} buffers")
        if n == 0:
            return []
        errnos = array("q", bytes(8 * n))
        with contextlib.ExitStack() as stack:
            addrs, blens = _regions(stack, buffers, writable=False)
            for i, size in enumerate(blens):
                self._check_size(size, i)
            try:
                msgs = call(self._h().BatchPutFrom, _buffers_addr(packed), len(packed), _addr(lens), n,
                                              _addr(addrs), _addr(blens), _addr(errnos))
            except NativeError as exc:
                _raise(exc, self.name)
        by_index = {}
        for line in msgs.splitlines() if msgs else []:
            i, _, msg = line.partition(": ")
            by_index[int(i)] = msg
        return [None if e == 0 else OSError(e, f"{os.strerror(e)}: {by_index.get(i, '')}", self.name)
                for i, e in enumerate(errnos)]

    def batch_get_into(self, keys: Sequence, buffers: Sequence) -> list[int | None]:
        """Read each key's value into its buffer, in one call (one frame per
        storage target). Returns each value's length, or None for a miss; a
        value larger than its buffer is a miss for that key."""
        packed, lens, n = _pack(keys)
        if len(buffers) != n:
            raise ValueError(f"batch_get_into: {n} keys but {len(buffers)} buffers")
        if n == 0:
            return []
        results = array("q", bytes(8 * n))
        with contextlib.ExitStack() as stack:
            addrs, blens = _regions(stack, buffers, writable=True)
            try:
                call(self._h().BatchGetInto, _buffers_addr(packed), len(packed), _addr(lens), n,
                                       _addr(addrs), _addr(blens), _addr(results))
            except NativeError as exc:
                _raise(exc, self.name)
        return [None if r < 0 else r for r in results]

    # -- stats -----------------------------------------------------------
    def stats(self) -> KVStats:
        """The namespace's cluster-wide counters and this handle's own."""
        try:
            return KVStats._from(json.loads(call(self._h().Stats)))
        except NativeError as exc:
            _raise(exc, self.name)

    def __repr__(self) -> str:
        return f"KVCache({self.name!r})"


def _buffers_addr(b: bytes) -> int:
    """Address of an immutable bytes object's data. bytes never move and the
    caller holds a reference for the duration of the call."""
    with _buffers.address(b, writable=False) as (addr, _):
        return addr


def _regions(stack: contextlib.ExitStack, buffers: Sequence, writable: bool) -> tuple[array, array]:
    """Hold every buffer for the with block; their addresses and lengths as int64 arrays."""
    addrs, lens = array("q"), array("q")
    for i, b in enumerate(buffers):
        try:
            addr, n = stack.enter_context(_buffers.region(b, writable))
        except (TypeError, ValueError, BufferError) as exc:
            raise type(exc)(f"buffer {i}: {exc}") from None
        addrs.append(addr)
        lens.append(n)
    return addrs, lens
