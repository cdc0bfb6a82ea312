"""vLLM KV connector storing paged KV blocks in an EmberFS KVCache namespace.

Use it from vLLM's own configuration (vllm 0.33, KVConnectorBase_V1):

    --kv-transfer-config '{"kv_connector": "EmberFSConnector",
        "kv_connector_module_path": "emberfs.integrations.vllm",
        "kv_role": "kv_both", "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"emberfs.mgmtd": "10.0.0.1:7100",
            "emberfs.token": "...", "emberfs.namespace": "llama-8b"}}'

Keys are vLLM's own block hashes (`Request.block_hashes`: each chains the
previous block's hash with the block's tokens, extra keys and cache salt,
sha256 by default, so they are stable across processes), plus the tensor-
parallel rank and size, since each rank holds different heads. One value
holds one block of one rank: every layer's page of that block, back to back
in the order of register_kv_caches, so a block is stored and found whole or
not at all. The namespace should be one per model and KV layout.

Scheduler side: get_num_new_matched_tokens asks longest_prefix over the
request's block hashes (one round trip per storage target), never counting
the prompt's last token; update_state_after_alloc records the blocks to load
into; build_connector_meta lists, per request, blocks to load and full blocks
computed this step to save.

Worker side: start_load_kv fetches every block to load with one
batch_get_into into CPU staging tensors and copies each layer's page into
the paged cache; a block that is missing or the wrong size by then (evicted,
corrupt: EmberFS verifies CRC32C and returns a miss) is reported through
get_block_ids_with_load_errors, so vLLM (kv_load_failure_policy "recompute")
recomputes it. save_kv_layer copies the layer's pages of blocks to save into
staging as each layer finishes; wait_for_save writes them all with one
batch_put_from. Loads and saves are synchronous: the step ends only when
its KV is in EmberFS or in the paged cache.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    import torch
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (
        KVConnectorBase_V1,
        KVConnectorMetadata,
        KVConnectorRole,
    )
    from vllm.logger import init_logger
    from vllm.v1.core.sched.output import SchedulerOutput
except ImportError as exc:  # pragma: no cover - exercised only without vllm
    raise ImportError(
        "emberfs.integrations.vllm needs vLLM (tested with vllm==0.33.0) and torch: "
        f"pip install vllm ({exc})"
    ) from exc

from .. import kvcache as _kvcache
from ..client import Client

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = init_logger(__name__)

__all__ = ["EmberFSConnector", "EmberFSConnectorMetadata", "BlockTransfer", "rank_key"]


def rank_key(block_hash: bytes, tp_rank: int, tp_size: int) -> bytes:
    """The EmberFS key of one block of one tensor-parallel rank."""
    return bytes(block_hash) + struct.pack("<HH", tp_rank, tp_size)


@dataclass
class BlockTransfer:
    """Blocks of one request to load or save: block hashes (the keys, before
    the rank suffix) and the paged-cache block ids they go to or come from."""

    req_id: str
    block_hashes: list[bytes]
    block_ids: list[int]


@dataclass
class EmberFSConnectorMetadata(KVConnectorMetadata):
    """What the scheduler asks the workers to do this step."""

    loads: list[BlockTransfer] = field(default_factory=list)
    saves: list[BlockTransfer] = field(default_factory=list)


@dataclass
class _ReqState:
    """Scheduler-side bookkeeping of one request."""

    request: Any
    block_ids: list[int] = field(default_factory=list)
    # Leading blocks longest_prefix found in EmberFS at lookup.
    found: int = 0
    # Blocks known to be in EmberFS (found, loaded from it or saved to it).
    stored_blocks: int = 0
    # Set by get_num_new_matched_tokens: [first, first+count) to load.
    load_first: int = 0
    load_count: int = 0
    load_ready: bool = False


def _extra(cfg, name: str, default=None):
    return cfg.get_from_extra_config("emberfs." + name, default)


class EmberFSConnector(KVConnectorBase_V1):
    """KVConnectorBase_V1 over an EmberFS KVCache namespace."""

    def __init__(self, vllm_config: "VllmConfig", role: KVConnectorRole, kv_cache_config: "KVCacheConfig" = None):
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        cfg = self._kv_transfer_config
        self._block_size = vllm_config.cache_config.block_size
        pc = vllm_config.parallel_config
        self._tp_size = pc.tensor_parallel_size
        self._tp_rank = 0
        if role == KVConnectorRole.WORKER and self._tp_size > 1:
            from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

            self._tp_rank = get_tensor_model_parallel_rank()
        mgmtd, namespace = _extra(cfg, "mgmtd"), _extra(cfg, "namespace")
        if not mgmtd or not namespace:
            raise ValueError(
                "EmberFSConnector needs kv_connector_extra_config 'emberfs.mgmtd' (mgmtd address), "
                "'emberfs.token' and 'emberfs.namespace' (a KVCache namespace, see `emberfs kvcache create`)"
            )
        self._client = Client(mgmtd, _extra(cfg, "token", ""))
        self._kv = _kvcache.KVCache(self._client, namespace, int(_extra(cfg, "memory_tier_bytes", 0)))
        # Scheduler side.
        self._reqs: dict[str, _ReqState] = {}
        # Worker side.
        self._kv_caches: dict[str, torch.Tensor] = {}
        self._layer_index: dict[str, int] = {}
        self._saves: list[tuple[BlockTransfer, list[torch.Tensor]]] = []
        self._load_errors: set[int] = set()
        self._lock = threading.Lock()
        self.counters = {"blocks_loaded": 0, "blocks_load_failed": 0, "blocks_saved": 0, "blocks_save_failed": 0}

    # ------------------------------------------------------------------
    # Worker side
    # ------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]):
        """Remember the paged caches: per layer a [num_blocks, ...] view
        whose index 0 is the block id. A stored block is every layer's page
        in this order."""
        if not kv_caches:
            raise ValueError("EmberFSConnector.register_kv_caches: no KV cache layers given")
        first = next(iter(kv_caches.values()))
        for name, t in kv_caches.items():
            if t.shape[1:] != first.shape[1:] or t.dtype != first.dtype:
                raise ValueError(
                    f"EmberFSConnector needs uniform layers: {name} is {tuple(t.shape)} {t.dtype}, "
                    f"the first is {tuple(first.shape)} {first.dtype}"
                )
        self._kv_caches = dict(kv_caches)
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}
        self._page_shape = tuple(first.shape[1:])
        self._dtype = first.dtype
        self._block_bytes = len(kv_caches) * first[0].numel() * first.element_size()

    def _staging(self) -> torch.Tensor:
        """A CPU tensor holding one block of every layer (pinned when a GPU is in use)."""
        pin = any(t.is_cuda for t in self._kv_caches.values())
        return torch.empty((len(self._kv_caches), *self._page_shape), dtype=self._dtype, pin_memory=pin)

    def _keys(self, hashes: list[bytes]) -> list[bytes]:
        return [rank_key(h, self._tp_rank, self._tp_size) for h in hashes]

    def start_load_kv(self, forward_context: "ForwardContext", **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        assert isinstance(meta, EmberFSConnectorMetadata), type(meta)
        if not meta.loads:
            return
        if not self._kv_caches:
            raise RuntimeError("EmberFSConnector.start_load_kv before register_kv_caches")
        keys, ids, bufs = [], [], []
        for t in meta.loads:
            keys += self._keys(t.block_hashes)
            ids += t.block_ids
            bufs += [self._staging() for _ in t.block_ids]
        try:
            got = self._kv.batch_get_into(keys, bufs)
        except OSError as exc:
            logger.warning("EmberFS: loading %d blocks failed, they are recomputed: %s", len(ids), exc)
            got = [None] * len(ids)
        for n, block_id, buf in zip(got, ids, bufs):
            if n != self._block_bytes:
                # A miss (evicted, expired, corrupt) or a value of another
                # layout: never copy it; vLLM recomputes the block.
                self._load_errors.add(block_id)
                self.counters["blocks_load_failed"] += 1
                continue
            for name, layer in self._kv_caches.items():
                layer[block_id].copy_(buf[self._layer_index[name]], non_blocking=True)
            self.counters["blocks_loaded"] += 1
        if self._load_errors:
            logger.warning("EmberFS: %d of %d blocks could not be loaded; they are recomputed",
                           len(self._load_errors), len(ids))

    def wait_for_layer_load(self, layer_name: str) -> None:
        # start_load_kv loads every layer before the forward pass starts.
        if any(t.is_cuda for t in self._kv_caches.values()):
            torch.cuda.current_stream().synchronize()

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: "AttentionMetadata", **kwargs: Any) -> None:
        if not self.has_connector_metadata():
            return
        meta = self._get_connector_metadata()
        assert isinstance(meta, EmberFSConnectorMetadata), type(meta)
        if not meta.saves:
            return
        li = self._layer_index.get(layer_name)
        if li is None:
            return  # a layer without paged KV (not registered)
        with self._lock:
            if not self._saves:
                self._saves = [(t, [self._staging() for _ in t.block_ids]) for t in meta.saves]
            for t, bufs in self._saves:
                for block_id, buf in zip(t.block_ids, bufs):
                    buf[li].copy_(kv_layer[block_id], non_blocking=True)

    def wait_for_save(self):
        with self._lock:
            saves, self._saves = self._saves, []
        if not saves:
            return
        if any(t.is_cuda for t in self._kv_caches.values()):
            torch.cuda.current_stream().synchronize()
        keys, bufs = [], []
        for t, tbufs in saves:
            keys += self._keys(t.block_hashes)
            bufs += tbufs
        try:
            errs = self._kv.batch_put_from(keys, bufs)
        except OSError as exc:
            errs = [exc] * len(keys)
        failed = [e for e in errs if e is not None]
        self.counters["blocks_saved"] += len(errs) - len(failed)
        self.counters["blocks_save_failed"] += len(failed)
        if failed:
            # A block that was not stored is a later miss, not an error.
            logger.warning("EmberFS: %d of %d block saves failed, first: %s", len(failed), len(errs), failed[0])

    def get_block_ids_with_load_errors(self) -> set[int]:
        errs, self._load_errors = self._load_errors, set()
        return errs

    def shutdown(self):
        self._kv.close()
        self._client.close()

    # ------------------------------------------------------------------
    # Scheduler side
    # ------------------------------------------------------------------
    def _state(self, request: "Request") -> _ReqState:
        st = self._reqs.get(request.request_id)
        if st is None:
            st = self._reqs[request.request_id] = _ReqState(request=request)
        st.request = request
        return st

    def get_num_new_matched_tokens(self, request: "Request", num_computed_tokens: int) -> tuple[int | None, bool]:
        st = self._state(request)
        # The last prompt token is always computed (its logits are needed),
        # so never offer the block that holds it as a full hit.
        usable = min(len(request.block_hashes), (request.num_tokens - 1) // self._block_size)
        first = num_computed_tokens // self._block_size
        st.load_first, st.load_count, st.load_ready, st.found = first, 0, False, 0
        if usable <= first:
            return 0, False
        hashes = [bytes(h) for h in request.block_hashes[:usable]]
        hit = usable
        for rank in range(self._tp_size):
            try:
                hit = min(hit, self._kv.longest_prefix([rank_key(h, rank, self._tp_size) for h in hashes[:hit]]))
            except OSError as exc:
                # The cache being unreachable is a miss: compute everything.
                logger.warning("EmberFS: lookup for %s failed, computing it all: %s", request.request_id, exc)
                hit = 0
            st.found = hit
            if hit <= first:
                return 0, False
        st.load_count = hit - first
        return st.load_count * self._block_size, False

    def update_state_after_alloc(self, request: "Request", blocks: "KVCacheBlocks", num_external_tokens: int):
        st = self._state(request)
        st.block_ids = list(blocks.get_block_ids()[0])
        if num_external_tokens <= 0:
            st.load_count = 0
            return
        want = num_external_tokens // self._block_size
        if want > st.load_count or num_external_tokens % self._block_size:
            raise RuntimeError(
                f"EmberFSConnector: request {request.request_id} was allocated {num_external_tokens} external "
                f"tokens, the connector offered {st.load_count * self._block_size} in whole blocks"
            )
        # The scheduler may take fewer blocks than offered; load only those.
        st.load_count = want
        st.load_ready = True

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> KVConnectorMetadata:
        meta = EmberFSConnectorMetadata()
        for req_id in scheduler_output.finished_req_ids:
            self._reqs.pop(req_id, None)
        for new in scheduler_output.scheduled_new_reqs:
            st = self._reqs.get(new.req_id)
            if st is None:
                continue  # never seen by get_num_new_matched_tokens: not ours to save
            st.block_ids = list(new.block_ids[0])
            st.stored_blocks = st.found
            self._plan(st, new.req_id, new.num_computed_tokens + scheduler_output.num_scheduled_tokens[new.req_id], meta)
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            st = self._reqs.get(req_id)
            if st is None:
                continue
            new_ids = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:
                st.block_ids = list(new_ids[0]) if new_ids is not None else []
                st.stored_blocks = 0
            elif new_ids is not None:
                st.block_ids += list(new_ids[0])
            self._plan(st, req_id, cached.num_computed_tokens[i] + scheduler_output.num_scheduled_tokens[req_id], meta)
        return meta

    def _plan(self, st: _ReqState, req_id: str, tokens_after_step: int, meta: EmberFSConnectorMetadata) -> None:
        """Add this step's load (if one is pending) and the saves of blocks
        that become full this step and are not in EmberFS yet."""
        hashes = st.request.block_hashes
        if st.load_ready and st.load_count:
            lo, hi = st.load_first, st.load_first + st.load_count
            meta.loads.append(BlockTransfer(req_id, [bytes(h) for h in hashes[lo:hi]], st.block_ids[lo:hi]))
            st.stored_blocks = max(st.stored_blocks, hi)
            st.load_ready, st.load_count = False, 0
        full = min(tokens_after_step // self._block_size, len(hashes), len(st.block_ids))
        if full > st.stored_blocks:
            lo = st.stored_blocks
            meta.saves.append(BlockTransfer(req_id, [bytes(h) for h in hashes[lo:full]], st.block_ids[lo:full]))
            st.stored_blocks = full

    def request_finished(self, request: "Request", block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._reqs.pop(request.request_id, None)
        return False, None
