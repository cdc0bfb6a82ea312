"""End to end on CPU: a small transformers causal LM (random weights from a
config, no download) stores the per-layer KV of its prompt's full blocks in
EmberFS under chained prefix-hash keys; a second request sharing the prefix
loads those blocks (longest_prefix + batch_get_into), computes only the rest,
and its logits and greedy generation equal the uncached run exactly. A
corrupted, removed or evicted-after-lookup block is recomputed, never used."""

import glob
import hashlib
import os
import uuid

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import emberfs
from emberfs import kvcache

BLOCK = 16
LAYERS = 2
KV_HEADS = 2
HEAD_DIM = 16
VALUE_BYTES = 2 * KV_HEADS * BLOCK * HEAD_DIM * 4  # K and V of one layer, one block, float32


@pytest.fixture(scope="module")
def model():
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4,
                      num_key_value_heads=KV_HEADS, vocab_size=128, max_position_embeddings=256)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval().to(torch.float32)


@pytest.fixture
def ns(fs):
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    info = kvcache.create(fs, name, max_value_bytes=64 << 10, capacity_bytes=64 << 20)
    with emberfs.KVCache(fs, name) as k:
        yield k, info
    kvcache.drop(fs, name)


def tokens(seed: int, n: int) -> torch.Tensor:
    return torch.randint(0, 128, (1, n), generator=torch.Generator().manual_seed(seed))


def block_hashes(ids: torch.Tensor) -> list[bytes]:
    """Chained prefix hashes of the full blocks: block i hashes block i-1's
    hash and its own token ids, so equal hashes mean equal prefixes."""
    out, prev = [], b"emberfs-e2e-llama-tiny"
    toks = ids[0].tolist()
    for b in range(len(toks) // BLOCK):
        prev = hashlib.sha256(prev + repr(toks[b * BLOCK:(b + 1) * BLOCK]).encode()).digest()
        out.append(prev)
    return out


def layer_keys(hashes: list[bytes]) -> list[bytes]:
    """One key per (block, layer), block-major: a present block is a run of
    LAYERS present keys, so longest_prefix // LAYERS counts whole blocks."""
    return [h + b"/L%d" % layer for h in hashes for layer in range(LAYERS)]


def store_prompt(kv, model, ids: torch.Tensor) -> int:
    """Run the prompt uncached and store every full block's per-layer KV."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    hashes = block_hashes(ids)
    values = []
    for b in range(len(hashes)):
        for layer in range(LAYERS):
            k, v = cache.layers[layer].keys, cache.layers[layer].values  # [1, H, T, D]
            values.append(torch.stack([k[0, :, b * BLOCK:(b + 1) * BLOCK], v[0, :, b * BLOCK:(b + 1) * BLOCK]]).contiguous())
    assert all(t.numel() * t.element_size() == VALUE_BYTES for t in values)
    assert kv.batch_put_from(layer_keys(hashes), values) == [None] * len(values)
    return len(hashes)


def load_prefix(kv, ids: torch.Tensor, after_lookup=None) -> tuple[DynamicCache | None, int]:
    """The longest run of leading blocks EmberFS holds intact, as a
    DynamicCache, and how many blocks that is. The block holding the last
    token is never loaded (its logits must be computed)."""
    usable = (ids.shape[1] - 1) // BLOCK
    keys = layer_keys(block_hashes(ids)[:usable])
    n = kv.longest_prefix(keys) // LAYERS
    if after_lookup is not None:
        after_lookup()
    bufs = [torch.empty(2, KV_HEADS, BLOCK, HEAD_DIM) for _ in range(n * LAYERS)]
    got = kv.batch_get_into(keys[: n * LAYERS], bufs)
    # Use blocks only up to the first layer value that is missing or torn.
    good = 0
    while good < n and all(g == VALUE_BYTES for g in got[good * LAYERS:(good + 1) * LAYERS]):
        good += 1
    if good == 0:
        return None, 0
    cache = DynamicCache()
    for layer in range(LAYERS):
        blocks = [bufs[b * LAYERS + layer] for b in range(good)]
        k = torch.cat([t[0] for t in blocks], dim=1).unsqueeze(0)
        v = torch.cat([t[1] for t in blocks], dim=1).unsqueeze(0)
        cache.update(k, v, layer)
    return cache, good


def generate(model, ids: torch.Tensor, cache=None, done: int = 0, steps: int = 5):
    """Prefill ids[done:] on top of cache, then greedy-decode `steps` tokens.
    Returns the prefill logits and every decode step's logits."""
    with torch.no_grad():
        out = model(input_ids=ids[:, done:], past_key_values=cache, use_cache=True)
        prefill = out.logits
        cache, logits, steps_logits = out.past_key_values, out.logits[:, -1:], []
        for _ in range(steps):
            nxt = logits.argmax(-1)
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits
            steps_logits.append(logits)
    return prefill, (torch.cat(steps_logits, 1) if steps_logits else None)


def test_cached_prefix_gives_identical_logits(model, ns):
    kv, _ = ns
    prompt_a = tokens(1, 40)  # 2 full blocks + 8 tokens
    assert store_prompt(kv, model, prompt_a) == 2
    prompt_b = torch.cat([prompt_a[:, :32], tokens(2, 21)], 1)  # same 2 blocks, new tail
    ref_prefill, ref_steps = generate(model, prompt_b)

    cache, done = load_prefix(kv, prompt_b)
    assert done == 2, "both shared blocks come from EmberFS"
    prefill, steps = generate(model, prompt_b, cache, done * BLOCK)
    assert prefill.shape[1] == prompt_b.shape[1] - 32, "only the tail was computed"
    assert torch.equal(prefill, ref_prefill[:, 32:])
    assert torch.equal(steps, ref_steps)

    # A different prompt shares nothing.
    assert load_prefix(kv, tokens(3, 40)) == (None, 0)
    # Control: the check would catch wrong KV (another prefix's blocks).
    other = tokens(4, 40)
    store_prompt(kv, model, other)
    wrong, n = load_prefix(kv, other)
    assert n == 2
    bad_prefill, _ = generate(model, prompt_b, wrong, 32, steps=0)
    assert not torch.equal(bad_prefill, ref_prefill[:, 32:])


def _chunk_files(cluster, ns_id: int, key: bytes) -> list[str]:
    """Every replica's chunk file holding key (KV chunks' inodes start 0xFE,ns)."""
    found = []
    for path in glob.glob(os.path.join(cluster.data_dir, "**", f"fe{ns_id:06x}*"), recursive=True):
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"EKV1" and key in data[:36 + len(key)]:
            found.append(path)
    return found


def test_corrupt_block_is_recomputed(model, ns, cluster):
    kv, info = ns
    prompt = tokens(5, 40)
    store_prompt(kv, model, prompt)
    ref_prefill, ref_steps = generate(model, prompt)

    victim = layer_keys(block_hashes(prompt))[1 * LAYERS + 1]  # block 1, layer 1
    files = _chunk_files(cluster, info.id, victim)
    assert len(files) == info.replicas, files
    for path in files:  # flip value bytes on every replica (the header stays valid)
        with open(path, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            b = f.read(8)
            f.seek(-100, os.SEEK_END)
            f.write(bytes(x ^ 0xFF for x in b))
    before = kv.stats()

    assert kv.get(victim) is None, "a corrupt value reads as a miss"
    cache, done = load_prefix(kv, prompt)
    assert done == 1, "block 0 is used, the corrupt block 1 is not"
    prefill, steps = generate(model, prompt, cache, done * BLOCK)
    assert torch.equal(prefill, ref_prefill[:, BLOCK:])
    assert torch.equal(steps, ref_steps)
    assert kv.stats().client["misses"] > before.client["misses"]


def test_removed_block_is_recomputed(model, ns):
    kv, _ = ns
    prompt = tokens(6, 50)  # 3 full blocks; the 4th holds the last token
    assert store_prompt(kv, model, prompt) == 3
    ref_prefill, ref_steps = generate(model, prompt)
    keys = layer_keys(block_hashes(prompt))

    kv.remove(keys[2 * LAYERS])  # block 2, layer 0: a hole after two blocks
    cache, done = load_prefix(kv, prompt)
    assert done == 2
    prefill, steps = generate(model, prompt, cache, done * BLOCK)
    assert torch.equal(prefill, ref_prefill[:, 2 * BLOCK:]) and torch.equal(steps, ref_steps)

    kv.remove(keys[1])  # block 0, layer 1: nothing usable
    assert load_prefix(kv, prompt) == (None, 0)


def test_block_evicted_between_lookup_and_load_is_recomputed(model, ns):
    kv, _ = ns
    prompt = tokens(7, 40)
    store_prompt(kv, model, prompt)
    ref_prefill, ref_steps = generate(model, prompt)
    keys = layer_keys(block_hashes(prompt))
    assert kv.longest_prefix(keys) == 2 * LAYERS

    cache, done = load_prefix(kv, prompt, after_lookup=lambda: kv.remove(keys[LAYERS]))
    assert done == 1, "the block that vanished after the lookup is not used"
    prefill, steps = generate(model, prompt, cache, done * BLOCK)
    assert torch.equal(prefill, ref_prefill[:, BLOCK:]) and torch.equal(steps, ref_steps)
