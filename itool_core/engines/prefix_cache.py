"""K/V of prompt prefixes kept across the transformers engine's calls (the search revisits its prompts).

The tree search asks the same policy about the same trees round after round: the tree's prompt, a leaf's state
and its self-evaluation prompt share long prefixes.  Keeping their K/V means one prefill per prefix instead of
one per call (docs/design.md#making-the-search-fast).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

__all__ = ["PrefixKVStore"]


class PrefixKVStore:
    """K/V of prompt prefixes kept across engine calls: one unpadded row per entry, least recently used first out.

    ``lookup(ids)`` returns the longest common prefix of ``ids`` with any stored row and that row's K/V cut to
    it (views: the cache layers concatenate into new tensors, so a stored row is never written to).  ``put``
    drops stored rows that the new one extends, then evicts the least recently used rows while the store holds
    more than ``max_bytes``.  Counters say how many prompt tokens were reused vs prefilled.  Rows are valid for
    the weights that computed them: an engine whose model is trained in place must ``clear()`` its store (the
    pipeline builds a new engine per policy, ``engines.policy_engine``).
    """

    def __init__(self, max_bytes: int, min_tokens: int = 16) -> None:
        self.max_bytes = int(max_bytes)
        self.min_tokens = min_tokens
        self.entries: OrderedDict[int, tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], int]] = (
            OrderedDict()
        )
        self.bytes = 0
        self.reused_tokens = 0
        self.prefilled_tokens = 0
        self._next = 0
        self._lock = threading.Lock()

    @staticmethod
    def _lcp(a: torch.Tensor, b: torch.Tensor) -> int:
        m = min(len(a), len(b))
        diff = (a[:m] != b[:m]).nonzero()
        return int(diff[0]) if len(diff) else m

    def lookup(self, ids: Sequence[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        q = torch.tensor(list(ids), dtype=torch.long)
        with self._lock:
            best, best_key = 0, None
            for key, (row, _kv, _b) in self.entries.items():
                c = self._lcp(row, q)
                if c > best:
                    best, best_key = c, key
            if best < self.min_tokens or best_key is None:
                return 0, None
            self.entries.move_to_end(best_key)
            kv = self.entries[best_key][1]
            return best, [(k[:, :, :best], v[:, :, :best]) for k, v in kv]

    def put(self, ids: Sequence[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        row = torch.tensor(list(ids), dtype=torch.long)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            return
        with self._lock:
            for key in [
                k for k, (r, _kv, _b) in self.entries.items() if len(r) <= len(row) and self._lcp(r, row) == len(r)
            ]:
                self.bytes -= self.entries.pop(key)[2]
            self._next += 1
            self.entries[self._next] = (row, kv, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                self.bytes -= self.entries.popitem(last=False)[1][2]

    def clear(self) -> None:
        """Empty the store and zero its counters."""
        with self._lock:
            self.entries.clear()
            self.bytes = self.reused_tokens = self.prefilled_tokens = 0
