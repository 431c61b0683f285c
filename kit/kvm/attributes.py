"""Memory attributes of a VM: a range store keyed by gfn.

The kernel keeps ``kvm->mem_attr_array``, an xarray by gfn in which 0 is not stored
(virt/kvm/kvm_main.c ``kvm_vm_set_mem_attributes``). Here the same mapping is held as sorted,
non-overlapping ``[start, end)`` gfn ranges with a non-zero value (numpy arrays): a 1 TiB
private range is one entry, not 268M. Attributes need no memslot and outlive memslot deletion.
"""
from __future__ import annotations

import numpy as np


class AttributeRanges:
    def __init__(self):
        self.starts = np.zeros(0, dtype=np.uint64)
        self.ends = np.zeros(0, dtype=np.uint64)
        self.values = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.starts)

    def get(self, gfn: int) -> int:
        """``kvm_get_memory_attributes``: the value at ``gfn`` (0 when nothing is stored)."""
        i = int(np.searchsorted(self.ends, np.uint64(gfn), side="right"))
        if i < len(self.starts) and self.starts[i] <= gfn:
            return int(self.values[i])
        return 0

    def ranges(self, start: int, end: int):
        """Stored ranges overlapping ``[start, end)``, clipped: list of (start, end, value)."""
        lo = int(np.searchsorted(self.ends, np.uint64(start), side="right"))
        hi = int(np.searchsorted(self.starts, np.uint64(end), side="left"))
        return [(max(int(self.starts[i]), start), min(int(self.ends[i]), end), int(self.values[i]))
                for i in range(lo, hi)]

    def has(self, start: int, end: int, value: int) -> bool:
        """``kvm_range_has_memory_attributes(kvm, start, end, ~0, value)``: does every gfn of
        ``[start, end)`` hold exactly ``value``?"""
        i0 = int(np.searchsorted(self.ends, np.uint64(start), side="right"))
        i1 = int(np.searchsorted(self.starts, np.uint64(end), side="left"))
        if value == 0:
            return i0 == i1
        if i1 <= i0 or self.starts[i0] > start or self.ends[i1 - 1] < end:
            return False
        return bool(np.all(self.values[i0:i1] == value)
                    and np.all(self.starts[i0 + 1:i1] == self.ends[i0:i1 - 1]))

    def set(self, start: int, end: int, value: int) -> None:
        """Store ``value`` over ``[start, end)`` (0 erases), merging equal neighbours. Only the
        ranges at the two edges are looked at one by one; those inside are dropped in bulk."""
        i0 = int(np.searchsorted(self.ends, np.uint64(start), side="left"))    # end >= start
        i1 = int(np.searchsorted(self.starts, np.uint64(end), side="right"))   # start <= end
        pieces = []
        if i0 < i1 and int(self.starts[i0]) < start:
            pieces.append([int(self.starts[i0]), start, int(self.values[i0])])
        if value:
            pieces.append([start, end, value])
        if i0 < i1 and int(self.ends[i1 - 1]) > end:
            pieces.append([end, int(self.ends[i1 - 1]), int(self.values[i1 - 1])])
        merged = []
        for p in pieces:                      # at most 3, already in order
            if merged and merged[-1][1] == p[0] and merged[-1][2] == p[2]:
                merged[-1][1] = p[1]
            else:
                merged.append(p)
        arr = np.asarray(merged, dtype=np.uint64).reshape(-1, 3)
        self.starts = np.concatenate([self.starts[:i0], arr[:, 0], self.starts[i1:]])
        self.ends = np.concatenate([self.ends[:i0], arr[:, 1], self.ends[i1:]])
        self.values = np.concatenate([self.values[:i0], arr[:, 2], self.values[i1:]])

    @property
    def nbytes(self) -> int:
        return self.starts.nbytes + self.ends.nbytes + self.values.nbytes
