"""A small LRU cache for the unconditional (negative) embeddings, with hit/miss counters."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheInfo:
    """Counters of :class:`EmbeddingCache` (like ``functools.lru_cache``'s ``cache_info()``)."""

    hits: int
    misses: int
    size: int


class EmbeddingCache:
    """Maps a key (negative prompt, device, dtype, ...) to a pair of tensors, keeping the newest ``max_entries``."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached value for ``key`` (counted as a hit), or ``None`` (counted as a miss)."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop all entries and reset the counters."""
        self._entries.clear()
        self.hits = self.misses = 0

    def info(self) -> CacheInfo:
        return CacheInfo(hits=self.hits, misses=self.misses, size=len(self._entries))
