"""Memory attributes of a VM: a range store keyed by gfn.

The kernel keeps ``kvm->mem_attr_array``, an xarray by gfn in which 0 is not stored
(virt/kvm/kvm_main.c ``kvm_vm_set_mem_attributes``). Here the same mapping is held as sorted,
non-overlapping ``[start, end)`` gfn ranges with a non-zero value (numpy arrays): a 1 TiB
private range is one entry, not 268M. Attributes need no memslot and outlive memslot deletion.
"""
from __future__ import annotations

import numpy as np


CHUNK = 1024   # ranges per chunk before it is split in two
# searchsorted keys as the arrays' own dtype: a Python int against uint64 arrays makes numpy
# convert the whole array to a common type on every call
_U64 = np.uint64


def _flat_set(s, e, v, start: int, end: int, value: int):
    """Store ``value`` over ``[start, end)`` in one sorted run of ranges: only the ranges at the
    two edges are looked at one by one; those inside are dropped in bulk."""
    i0 = int(e.searchsorted(_U64(start), "left"))    # end >= start
    i1 = int(s.searchsorted(_U64(end), "right"))     # start <= end
    pieces = []
    if i0 < i1 and int(s[i0]) < start:
        pieces.append([int(s[i0]), start, int(v[i0])])
    if value:
        pieces.append([start, end, value])
    if i0 < i1 and int(e[i1 - 1]) > end:
        pieces.append([end, int(e[i1 - 1]), int(v[i1 - 1])])
    merged = []
    for p in pieces:                      # at most 3, already in order
        if merged and merged[-1][1] == p[0] and merged[-1][2] == p[2]:
            merged[-1][1] = p[1]
        else:
            merged.append(p)
    arr = np.asarray(merged, dtype=np.uint64).reshape(-1, 3)
    return (np.concatenate([s[:i0], arr[:, 0], s[i1:]]), np.concatenate([e[:i0], arr[:, 1], e[i1:]]),
            np.concatenate([v[:i0], arr[:, 2], v[i1:]]))


class AttributeRanges:
    """Sorted non-overlapping ranges, held in chunks of at most ``2 * CHUNK`` ranges with an
    index of each chunk's first start, so that a one-page change copies one or two chunks and
    a change over a huge range drops the chunks inside it whole."""

    def __init__(self):
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._firsts = np.zeros(0, dtype=np.uint64)

    # whole-store views (for tests and reports; O(n))
    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([c[0] for c in self._chunks]) if self._chunks else np.zeros(0, np.uint64)

    @property
    def ends(self) -> np.ndarray:
        return np.concatenate([c[1] for c in self._chunks]) if self._chunks else np.zeros(0, np.uint64)

    @property
    def values(self) -> np.ndarray:
        return np.concatenate([c[2] for c in self._chunks]) if self._chunks else np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return sum(len(c[0]) for c in self._chunks)

    def _chunk_at(self, gfn: int) -> int:
        """Index of the last chunk starting at or before ``gfn`` (0 if none)."""
        return max(int(self._firsts.searchsorted(_U64(gfn), "right")) - 1, 0)

    def get(self, gfn: int) -> int:
        """``kvm_get_memory_attributes``: the value at ``gfn`` (0 when nothing is stored)."""
        if not self._chunks:
            return 0
        s, e, v = self._chunks[self._chunk_at(gfn)]
        i = int(e.searchsorted(_U64(gfn), "right"))
        return int(v[i]) if i < len(s) and s[i] <= gfn else 0

    def _overlapping(self, start: int, end: int):
        """Per chunk touching ``[start, end)``: its arrays and the slice ``[i0, i1)`` of ranges
        that overlap the query, in order."""
        for c in range(self._chunk_at(start), len(self._chunks)):
            s, e, v = self._chunks[c]
            if s[0] >= end:
                return
            i0, i1 = int(e.searchsorted(_U64(start), "right")), int(s.searchsorted(_U64(end), "left"))
            if i0 < i1:
                yield s, e, v, i0, i1

    def ranges(self, start: int, end: int):
        """Stored ranges overlapping ``[start, end)``, clipped: list of (start, end, value)."""
        return [(max(int(s[i]), start), min(int(e[i]), end), int(v[i]))
                for s, e, v, i0, i1 in self._overlapping(start, end) for i in range(i0, i1)]

    def has(self, start: int, end: int, value: int) -> bool:
        """``kvm_range_has_memory_attributes(kvm, start, end, ~0, value)``: does every gfn of
        ``[start, end)`` hold exactly ``value``? Stops at the first chunk that says no."""
        pos = start
        for s, e, v, i0, i1 in self._overlapping(start, end):
            if value == 0:
                return False
            if (int(s[i0]) > pos or not np.all(v[i0:i1] == value)
                    or not np.all(s[i0 + 1:i1] == e[i0:i1 - 1])):
                return False
            pos = int(e[i1 - 1])
        return value == 0 or pos >= end

    def set(self, start: int, end: int, value: int) -> None:
        """Store ``value`` over ``[start, end)`` (0 erases), merging equal neighbours.
        ``CHUNK`` is read at call time (tests shrink it to exercise chunk boundaries)."""
        CHUNK = globals()["CHUNK"]
        if not self._chunks:
            if value:
                one = np.asarray([start], np.uint64), np.asarray([end], np.uint64), np.asarray([value], np.uint64)
                self._chunks, self._firsts = [one], one[0].copy()
            return
        c0 = self._chunk_at(start)
        if c0 > 0 and int(self._chunks[c0 - 1][1][-1]) >= start:
            c0 -= 1                                     # a touching range just before
        c1 = max(int(self._firsts.searchsorted(_U64(end), "right")) - 1, c0)
        # chunks strictly between c0 and c1 lie inside [start, end]: dropped whole
        if c1 == c0:
            s, e, v = self._chunks[c0]
        else:
            s, e, v = (np.concatenate([self._chunks[c0][k], self._chunks[c1][k]]) for k in range(3))
        s, e, v = _flat_set(s, e, v, start, end, value)
        new = [(s[i:i + CHUNK], e[i:i + CHUNK], v[i:i + CHUNK]) for i in range(0, len(s), CHUNK)] \
            if len(s) > 2 * CHUNK else ([(s, e, v)] if len(s) else [])
        if c1 == c0 and len(new) == 1:            # the common case: one chunk rewritten
            self._chunks[c0] = new[0]
            self._firsts[c0] = new[0][0][0]
            return
        self._chunks[c0:c1 + 1] = new
        self._firsts = np.concatenate([self._firsts[:c0],
                                       np.asarray([c[0][0] for c in new], dtype=np.uint64),
                                       self._firsts[c1 + 1:]])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for c in self._chunks for a in c) + self._firsts.nbytes
