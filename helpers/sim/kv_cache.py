"""The KV cache as vLLM V1 manages it: fixed-size blocks, automatic prefix caching, LRU eviction.

Mirrors vllm/v1/core/kv_cache_manager.py and block_pool.py for one attention group:
- The cache holds `num_blocks` blocks of `block_size` token slots. Block 0 is vLLM's null block,
  never handed out, so `num_blocks - 1` are usable (vLLM's `kv_cache_usage_perc` counts those).
- A request holds the blocks its computed tokens fill, plus the one its next tokens go into.
  `allocate()` takes what the next step needs from the free queue, or refuses when too few are
  free (the scheduler then preempts, see scheduler.py).
- Prefix caching: a block that is FULL gets a hash chained over its token ids and the previous
  block's hash, and is entered into the cache. A new request's longest run of cached full blocks
  (at most its length minus one token: the last token is always computed, to sample from) is
  shared, not recomputed. A freed block keeps its hash and goes to the tail of the free queue;
  blocks are handed out from the head, so the least recently freed cached block is evicted
  first. A request's blocks are freed tail first, so its prefix outlives its suffix.
With prefix caching off nothing is hashed, looked up or counted.
"""

from __future__ import annotations

from collections import OrderedDict

# Qwen3-0.6B: 28 layers x 8 KV heads x 128 dims x 2 (K and V) x 2 bytes (bf16).
QWEN3_06B_KV_BYTES_PER_TOKEN = 28 * 8 * 128 * 2 * 2


class Block:
    """One KV block: how many requests hold it, and its prefix hash once full and cached."""

    __slots__ = ("block_hash", "block_id", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: int | None = None


class KVCache:
    """Block pool, per-request block tables and the prefix cache of one engine."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (block 0 is vLLM's null block)")
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.num_blocks = num_blocks
        self.usable_blocks = num_blocks - 1
        blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in blocks[1:])
        self._cached: dict[int, Block] = {}
        self._tables: dict[int, list[Block]] = {}  # id(request) -> its blocks, in order
        self._hashes: dict[int, list[int]] = {}  # id(request) -> hashes of its full blocks
        self._done: dict[int, int] = {}  # id(request) -> leading full blocks already cached (or not)

    @property
    def capacity_tokens(self) -> int:
        """Token slots of the usable blocks (vLLM's `kv_cache_size_tokens` counts all blocks)."""
        return self.usable_blocks * self.block_size

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def usage(self) -> float:
        """Share of usable blocks held by requests, as vLLM's `kv_cache_usage_perc` (0..1)."""
        return 1.0 - len(self._free) / self.usable_blocks

    def blocks_of(self, request: object) -> int:
        return len(self._tables.get(id(request), ()))

    def lookup(self, request: object, tokens: list, num_tokens: int) -> list[Block]:
        """The cached full blocks that start `tokens[:num_tokens]` (at most num_tokens - 1 tokens)."""
        if not self.enable_prefix_caching:
            return []
        hashes = self._block_hashes(request, tokens, (num_tokens - 1) // self.block_size)
        hits = []
        for block_hash in hashes:
            block = self._cached.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate(
        self,
        request: object,
        tokens: list | None,
        num_computed: int,
        num_new_tokens: int,
        hits: list[Block] = (),  # type: ignore[assignment]
    ) -> bool:
        """Give `request` the blocks for `num_computed + num_new_tokens` tokens; False if too few free.

        `hits` are cached blocks found by `lookup()` for a request being admitted (its first
        `num_computed` tokens). Full blocks are entered into the prefix cache as vLLM does when
        the step is scheduled.
        """
        table = self._tables.get(id(request))
        held = len(table) if table else 0
        needed = -(-(num_computed + num_new_tokens) // self.block_size) - held - len(hits)
        evictable_hits = sum(1 for block in hits if block.ref_cnt == 0) if hits else 0
        if needed + evictable_hits > len(self._free):
            return False
        if table is None:
            table = self._tables[id(request)] = []
        free = self._free
        for block in hits:
            if block.ref_cnt == 0:
                del free[block.block_id]
            block.ref_cnt += 1
            table.append(block)
        for _ in range(max(needed, 0)):
            block = free.popitem(last=False)[1]
            if block.block_hash is not None:  # evict: its prefix is about to be overwritten
                if self._cached.get(block.block_hash) is block:
                    del self._cached[block.block_hash]
                block.block_hash = None
            block.ref_cnt = 1
            table.append(block)
        if self.enable_prefix_caching and tokens is not None:
            self._cache_full_blocks(request, table, tokens, num_computed + num_new_tokens)
        return True

    def free(self, request: object) -> None:
        """Release `request`'s blocks, tail first (its last blocks are evicted first)."""
        table = self._tables.pop(id(request), None)
        self._hashes.pop(id(request), None)
        self._done.pop(id(request), None)
        if not table:
            return
        free = self._free
        for block in reversed(table):
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                free[block.block_id] = block

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (blocks held by requests stay)."""
        for block in self._cached.values():
            block.block_hash = None
        self._cached.clear()

    def _cache_full_blocks(self, request: object, table: list[Block], tokens: list, num_tokens: int) -> None:
        full = min(num_tokens, len(tokens)) // self.block_size
        done = self._done.get(id(request), 0)
        if full <= done:
            return
        self._done[id(request)] = full
        hashes = self._block_hashes(request, tokens, full)
        cached = self._cached
        for index in range(done, full):
            block = table[index]
            if block.block_hash is not None:
                continue
            block_hash = hashes[index]
            if block_hash in cached:  # another request computed the same prefix meanwhile
                continue
            block.block_hash = block_hash
            cached[block_hash] = block

    def _block_hashes(self, request: object, tokens: list, count: int) -> list[int]:
        """Hashes of the first `count` full blocks of `tokens`, each chained on the one before."""
        hashes = self._hashes.setdefault(id(request), [])
        size = self.block_size
        parent = hashes[-1] if hashes else None
        for index in range(len(hashes), count):
            parent = hash((parent, tuple(tokens[index * size : (index + 1) * size])))
            hashes.append(parent)
        return hashes[:count] if len(hashes) > count else hashes
