"""The vLLM connector with real vLLM 0.33 objects on CPU: vLLM's own
Scheduler (with its KVCacheManager) asks our scheduler side, real paged KV
caches from vLLM's allocate_kv_cache go through our worker side, and the
blocks land in and come back from a real EmberFS cluster."""

import uuid

import pytest
import torch

import vllm  # noqa: E402,F401  a missing vllm fails the module loudly
from transformers import LlamaConfig  # noqa: E402
from vllm.config import CacheConfig, DeviceConfig, KVTransferConfig, ModelConfig, SchedulerConfig, VllmConfig  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory  # noqa: E402
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, KVConnectorRole  # noqa: E402
from vllm.forward_context import ForwardContext  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256  # noqa: E402
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec, KVCacheTensor  # noqa: E402
from vllm.v1.kv_cache_layout import KVCacheLayout  # noqa: E402
from vllm.v1.request import Request  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402
from vllm.v1.worker.utils import allocate_kv_cache  # noqa: E402

import emberfs  # noqa: E402
from emberfs import kvcache  # noqa: E402
from emberfs.integrations.vllm import EmberFSConnector, EmberFSConnectorMetadata, rank_key  # noqa: E402

BLOCK = 16
NUM_BLOCKS = 64
LAYERS = ["model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=128, max_position_embeddings=256).save_pretrained(d)
    init_none_hash(sha256)
    return str(d)


@pytest.fixture
def ns(fs):
    name = f"vllm-{uuid.uuid4().hex[:10]}"
    kvcache.create(fs, name, max_value_bytes=1 << 20, capacity_bytes=64 << 20)
    yield name
    kvcache.drop(fs, name)


def vllm_config(model_dir, cluster, namespace, **extra) -> VllmConfig:
    cache = CacheConfig(block_size=BLOCK)
    cache.num_gpu_blocks = NUM_BLOCKS
    return VllmConfig(
        model_config=ModelConfig(model=model_dir, tokenizer=model_dir, skip_tokenizer_init=True, dtype="float32",
                                 max_model_len=256, seed=0),
        cache_config=cache,
        scheduler_config=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_model_len=256,
                                         is_encoder_decoder=False),
        device_config=DeviceConfig("cpu"),
        kv_transfer_config=KVTransferConfig(
            kv_connector="EmberFSConnector", kv_connector_module_path="emberfs.integrations.vllm",
            kv_role="kv_both", kv_load_failure_policy="recompute",
            kv_connector_extra_config={"emberfs.mgmtd": cluster.mgmtd, "emberfs.token": cluster.token,
                                       "emberfs.namespace": namespace, **extra}),
    )


def kv_cache_config() -> KVCacheConfig:
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=2, head_size=16, dtype=torch.float32)
    page = spec.page_size_bytes
    return KVCacheConfig(
        num_blocks=NUM_BLOCKS,
        kv_cache_tensors=[KVCacheTensor(size=NUM_BLOCKS * page * len(LAYERS), layers=LAYERS,
                                        layer_stride=NUM_BLOCKS * page, block_stride=page)],
        kv_cache_groups=[KVCacheGroupSpec(LAYERS, spec)],
    )


def scheduler(vc) -> Scheduler:
    return Scheduler(vllm_config=vc, kv_cache_config=kv_cache_config(),
                     structured_output_manager=StructuredOutputManager(vc), block_size=BLOCK)


def worker(vc):
    conn = KVConnectorFactory.create_connector(config=vc, role=KVConnectorRole.WORKER, kv_cache_config=kv_cache_config())
    caches = allocate_kv_cache(kv_cache_config(), torch.device("cpu"), KVCacheLayout.LBHNC)
    conn.register_kv_caches(caches)
    return conn, caches


def request(req_id: str, token_ids: list[int]) -> Request:
    return Request(req_id, token_ids, SamplingParams(max_tokens=4), None,
                   block_hasher=get_request_block_hasher(BLOCK, sha256))


def forward_context() -> ForwardContext:
    return ForwardContext(no_compile_layers={}, attn_metadata={}, slot_mapping={})


def run_step(conn, caches, meta, fill=None):
    """What vLLM's model runner does with the connector around one forward pass."""
    conn.bind_connector_metadata(meta)
    conn.start_load_kv(forward_context())
    for name in LAYERS:
        conn.wait_for_layer_load(name)
        if fill is not None:
            fill(name, caches[name])  # the attention layer writes this step's KV
        conn.save_kv_layer(name, caches[name], None)
    conn.wait_for_save()
    errors = conn.get_block_ids_with_load_errors()
    conn.clear_connector_metadata()
    return errors


def prompt(seed: int, n: int) -> list[int]:
    return torch.randint(0, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def save_prompt(vc, tokens):
    """Schedule a prompt on a fresh scheduler, let a worker 'compute' random
    KV into the blocks vLLM allocated, and save it. Returns the request, its
    block ids and the caches."""
    sched = scheduler(vc)
    req = request("writer", tokens)
    sched.add_request(req)
    out = sched.schedule()
    meta = out.kv_connector_metadata
    assert isinstance(meta, EmberFSConnectorMetadata) and meta.loads == []
    ids = out.scheduled_new_reqs[0].block_ids[0]
    full = len(tokens) // BLOCK
    assert [t.block_hashes for t in meta.saves] == [[bytes(h) for h in req.block_hashes[:full]]]
    assert meta.saves[0].block_ids == ids[:full]
    conn, caches = worker(vc)
    g = torch.Generator().manual_seed(99)
    assert run_step(conn, caches, meta, fill=lambda name, t: t.copy_(torch.randn(t.shape, generator=g))) == set()
    assert conn.counters["blocks_saved"] == full
    conn.shutdown()
    return req, ids, caches


def test_is_a_real_vllm_connector(model_dir, cluster, ns):
    vc = vllm_config(model_dir, cluster, ns)
    cls = KVConnectorFactory.get_connector_class(vc.kv_transfer_config)
    assert cls is EmberFSConnector and issubclass(cls, KVConnectorBase_V1)
    sched = scheduler(vc)
    assert isinstance(sched.connector, EmberFSConnector)


def test_save_then_load_through_vllm_scheduler(model_dir, cluster, fs, ns):
    vc = vllm_config(model_dir, cluster, ns)
    shared = prompt(1, 32)
    writer, writer_ids, written = save_prompt(vc, shared + prompt(2, 8))  # 2 full blocks + 8 tokens
    with emberfs.KVCache(fs, ns) as kv:
        assert kv.longest_prefix([rank_key(h, 0, 1) for h in writer.block_hashes]) == 2

    # A fresh scheduler (another engine) sees the shared prefix in EmberFS.
    sched = scheduler(vc)
    reader = request("reader", shared + prompt(3, 20))  # 52 tokens: 3 full blocks
    sched.add_request(reader)
    out = sched.schedule()
    assert out.num_scheduled_tokens["reader"] == 52 - 32, "vLLM computes only what EmberFS lacks"
    meta = out.kv_connector_metadata
    ids = out.scheduled_new_reqs[0].block_ids[0]
    assert [(t.block_hashes, t.block_ids) for t in meta.loads] == [([bytes(h) for h in reader.block_hashes[:2]], ids[:2])]
    # The third block is computed this step and then saved.
    assert [(t.block_hashes, t.block_ids) for t in meta.saves] == [([bytes(reader.block_hashes[2])], [ids[2]])]

    conn, caches = worker(vc)
    assert run_step(conn, caches, meta) == set()
    for name in LAYERS:
        for i in range(2):
            assert torch.equal(caches[name][ids[i]], written[name][writer_ids[i]])
            assert caches[name][ids[i]].abs().sum() > 0
    assert conn.counters["blocks_loaded"] == 2
    conn.shutdown()


def test_last_token_is_never_a_hit(model_dir, cluster, ns):
    vc = vllm_config(model_dir, cluster, ns)
    tokens = prompt(4, 32)
    save_prompt(vc, tokens)
    sched = scheduler(vc)
    conn = sched.connector
    # 32 tokens = 2 full blocks, but the last token must be computed: 1 block.
    assert conn.get_num_new_matched_tokens(request("same", tokens), 0) == (16, False)
    assert conn.get_num_new_matched_tokens(request("longer", tokens + [1, 2, 3]), 0) == (32, False)
    assert conn.get_num_new_matched_tokens(request("longer2", tokens + [1, 2, 3]), 16) == (16, False)
    assert conn.get_num_new_matched_tokens(request("other", prompt(5, 40)), 0) == (0, False)
    assert conn.get_num_new_matched_tokens(request("short", tokens[:10]), 0) == (0, False)


def test_block_gone_after_lookup_is_reported_and_not_used(model_dir, cluster, fs, ns):
    vc = vllm_config(model_dir, cluster, ns)
    shared = prompt(6, 48)
    save_prompt(vc, shared + [7])  # 3 full blocks
    sched = scheduler(vc)
    reader = request("reader", shared + prompt(7, 10))
    sched.add_request(reader)
    out = sched.schedule()
    meta = out.kv_connector_metadata
    ids = out.scheduled_new_reqs[0].block_ids[0]
    assert out.num_scheduled_tokens["reader"] == 10 and meta.loads[0].block_ids == ids[:3]

    with emberfs.KVCache(fs, ns) as kv:
        kv.remove(rank_key(reader.block_hashes[1], 0, 1))  # evicted after the lookup
        kv.put(rank_key(reader.block_hashes[2], 0, 1), b"not a KV block")  # wrong size
    conn, caches = worker(vc)
    for name in LAYERS:
        caches[name].zero_()
    errors = run_step(conn, caches, meta)
    assert errors == {ids[1], ids[2]}, "vLLM recomputes these blocks (kv_load_failure_policy=recompute)"
    for name in LAYERS:
        assert caches[name][ids[0]].abs().sum() > 0
        assert caches[name][ids[1]].abs().sum() == 0 and caches[name][ids[2]].abs().sum() == 0
    assert conn.get_block_ids_with_load_errors() == set(), "reported once"
    conn.shutdown()


def test_bad_configuration(model_dir, cluster, ns):
    vc = vllm_config(model_dir, cluster, ns)
    vc.kv_transfer_config.kv_connector_extra_config.pop("emberfs.namespace")
    with pytest.raises(ValueError, match="emberfs.namespace"):
        EmberFSConnector(vc, KVConnectorRole.SCHEDULER, kv_cache_config())
    vc = vllm_config(model_dir, cluster, "no-such-namespace")
    with pytest.raises(FileNotFoundError, match="no-such-namespace"):
        EmberFSConnector(vc, KVConnectorRole.SCHEDULER, kv_cache_config())


def test_decode_saves_blocks_as_they_fill(model_dir, cluster, fs, ns):
    """Through vLLM's own step loop (schedule, model output, update): a block
    completed by generated tokens is saved in the step that computes its last
    KV, with the block hash vLLM computed for it, and only once."""
    from vllm.v1.outputs import ModelRunnerOutput

    vc = vllm_config(model_dir, cluster, ns)
    sched = scheduler(vc)
    req = request("gen", prompt(8, 30))  # 1 full block + 14 tokens
    sched.add_request(req)
    conn, caches = worker(vc)
    g = torch.Generator().manual_seed(5)
    saved = []
    for step in range(4):
        out = sched.schedule()
        meta = out.kv_connector_metadata
        saved.append([(t.block_hashes, t.block_ids) for t in meta.saves])
        ids = sched.kv_cache_manager.get_blocks("gen").get_block_ids()[0]
        assert run_step(conn, caches, meta, fill=lambda name, t: t.copy_(torch.randn(t.shape, generator=g))) == set()
        sched.update_from_output(out, ModelRunnerOutput(req_ids=["gen"], req_id_to_index={"gen": 0},
                                                        sampled_token_ids=[[100 + step]]))
    # Step 0 computes tokens 0..29 (block 0 full); steps 1, 2 compute tokens
    # 30 and 31, so block 1 becomes full in step 2; step 3 saves nothing.
    assert saved == [[([bytes(req.block_hashes[0])], [ids[0]])], [], [([bytes(req.block_hashes[1])], [ids[1]])], []]
    with emberfs.KVCache(fs, ns) as kv:
        assert kv.longest_prefix([rank_key(h, 0, 1) for h in req.block_hashes[:2]]) == 2
    conn.shutdown()
