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
        rs = self.ranges(start, end)
        if value == 0:
            return not rs
        pos = start
        for s, e, v in rs:
            if s != pos or v != value:
                return False
            pos = e
        return pos == end

    def set(self, start: int, end: int, value: int) -> None:
        """Store ``value`` over ``[start, end)`` (0 erases), merging equal neighbours."""
        keep_lo = int(np.searchsorted(self.ends, np.uint64(start), side="left"))
        keep_hi = int(np.searchsorted(self.starts, np.uint64(end), side="right"))
        new_s, new_e, new_v = [], [], []
        for i in range(keep_lo, keep_hi):   # the ranges touching [start, end): at most a few
            s, e, v = int(self.starts[i]), int(self.ends[i]), int(self.values[i])
            if s < start:
                new_s.append(s), new_e.append(start), new_v.append(v)
            if e > end:
                new_s.append(end), new_e.append(e), new_v.append(v)
        if value:
            new_s.append(start), new_e.append(end), new_v.append(value)
        order = np.argsort(new_s, kind="stable")
        s = np.asarray(new_s, dtype=np.uint64)[order]
        e = np.asarray(new_e, dtype=np.uint64)[order]
        v = np.asarray(new_v, dtype=np.uint64)[order]
        # merge with each other and with the untouched neighbours when adjacent and equal
        s = np.concatenate([self.starts[:keep_lo], s, self.starts[keep_hi:]])
        e = np.concatenate([self.ends[:keep_lo], e, self.ends[keep_hi:]])
        v = np.concatenate([self.values[:keep_lo], v, self.values[keep_hi:]])
        if len(s) > 1:
            join = (s[1:] == e[:-1]) & (v[1:] == v[:-1])
            if join.any():
                first = np.concatenate([[True], ~join])
                group = np.cumsum(first) - 1
                ends = np.zeros(int(group[-1]) + 1, dtype=np.uint64)
                ends[group] = e                       # last write per group wins: its end
                s, v, e = s[first], v[first], ends
        self.starts, self.ends, self.values = s, e, v

    @property
    def nbytes(self) -> int:
        return self.starts.nbytes + self.ends.nbytes + self.values.nbytes
