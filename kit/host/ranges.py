"""Range stores and the helpers shared by the two-level (2M region + 4K detail) state arrays.

:class:`RangeStore` maps ``[start, end)`` integer ranges to non-zero values, like the kernel's
xarrays keyed by gfn or page index (``kvm->mem_attr_array`` in virt/kvm/kvm_main.c
``kvm_vm_set_mem_attributes``; a guest_memfd's page cache): a 1 TiB range is one entry, not
268M. KVM uses it for memory attributes, guest_memfd allocation and mempolicies, and page
contents. The pfn helpers (:func:`check_pfn_range`, :func:`region_span`, :func:`pfn_runs`) and
the detail-slot storage (:class:`SlotPool`, :class:`LazyIndex`) serve the host's two-level
arrays (:mod:`kit.host.rmptable`, :mod:`kit.host.directmap`, :mod:`kit.host.memory`).

This is the one public range module; ``kit.host._ranges`` and ``kit.kvm.attributes`` are its
old names (see CHANGELOG.md).
"""
from __future__ import annotations

import sys
from bisect import bisect_right

import numpy as np

from ..units import PAGES_PER_1G, PAGES_PER_2M  # noqa: F401  (old import path of both)
from ..units import PAGE_4K
from ..units import check_int as _check_int
from .limits import HOST_MEM


def check_int(value, name: str, min: int | None = None, max: int | None = None) -> int:
    """``value`` as a plain int; a bool or a non-integer raises ``TypeError`` naming ``name``, a
    value outside ``min..max`` a ``ValueError`` (:func:`kit.units.check_int`)."""
    return _check_int(value, name, min, max)


def check_pfn_range(pfn, npages, nr_pages: int, *, name: str = "pfn") -> tuple[int, int]:
    """Validate ``[pfn, pfn + npages)`` against memory; return it as plain ints."""
    pfn = check_int(pfn, name)
    npages = check_int(npages, "npages")
    if npages <= 0:
        raise ValueError(f"npages: must be at least 1, got {npages}")
    if pfn < 0 or pfn + npages > nr_pages:
        culprit = name if not 0 <= pfn < nr_pages else "npages"
        raise ValueError(
            f"{culprit}: pfn range [{pfn:#x}, {pfn + npages:#x}) is outside host memory "
            f"[0, {nr_pages:#x}) ({nr_pages} 4K frames)")
    return pfn, npages


def check_nr_pages(nr_pages, *, name: str = "nr_pages") -> int:
    """The 4K frames of a host's memory: a whole number of 2M regions, within the host's
    bound (:data:`kit.host.limits.HOST_MEM`)."""
    nr_pages = check_int(nr_pages, name, PAGES_PER_2M, HOST_MEM.max // PAGE_4K)
    if nr_pages % PAGES_PER_2M:
        raise ValueError(f"{name}: host memory must be a whole number of 2M regions ({PAGES_PER_2M} pages), "
                         f"got {nr_pages}")
    return nr_pages


def check_region(region, nr_regions: int, *, name: str = "region") -> int:
    """One 2M region index of a host with ``nr_regions`` regions, as a plain int."""
    return check_int(region, name, 0, nr_regions - 1)


def check_regions(regions, nr_regions: int, *, name: str = "regions") -> np.ndarray:
    """A sequence (or array) of 2M region indices, each ``0..nr_regions-1``, as an int64 array.
    Floats, bools, strings, nested lists and indices outside memory raise ``TypeError`` or
    ``ValueError`` naming ``name``: a negative index must not wrap around to the last region."""
    if isinstance(regions, (str, bytes, dict, set, frozenset)) or np.isscalar(regions) or regions is None:
        raise TypeError(f"{name}: expected a sequence of region indices, got {type(regions).__name__} {regions!r}")
    if isinstance(regions, (list, tuple)) and any(isinstance(r, (bool, np.bool_)) for r in regions):
        raise TypeError(f"{name}: expected integer region indices, got a bool in {regions!r}")
    try:
        arr = np.asarray(regions)
    except (ValueError, TypeError):
        raise TypeError(f"{name}: expected a sequence of region indices, got {regions!r}") from None
    if arr.ndim != 1:
        raise TypeError(f"{name}: expected a flat sequence of region indices, got {regions!r}")
    if len(arr) and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
        if arr.dtype == object and all(isinstance(r, (int, np.integer)) and not isinstance(r, (bool, np.bool_))
                                       for r in arr):
            bad = [int(r) for r in arr if not 0 <= int(r) < nr_regions]
            raise ValueError(f"{name}: region indices must be 0..{nr_regions - 1}, got {bad[0]}")
        raise TypeError(f"{name}: expected integer region indices, got {arr.dtype} {regions!r}")
    arr = arr.astype(np.int64, copy=False)
    if len(arr) and (arr.min() < 0 or arr.max() >= nr_regions):
        bad = arr[(arr < 0) | (arr >= nr_regions)][0]
        raise ValueError(f"{name}: region indices must be 0..{nr_regions - 1}, got {int(bad)}")
    return arr


def region_span(pfn: int, npages: int) -> tuple[int, int, int, int]:
    """First region, last region (inclusive), offset in the first, end offset in the last."""
    end = pfn + npages
    r0, r1 = pfn // PAGES_PER_2M, (end - 1) // PAGES_PER_2M
    return r0, r1, pfn % PAGES_PER_2M, (end - 1) % PAGES_PER_2M + 1


def distinct(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-d array: ``np.unique`` without its first-call import
    of ``numpy.ma`` (about 10 ms of a short command's start-up)."""
    a = np.sort(a, kind="stable") if len(a) > 1 and np.any(a[1:] < a[:-1]) else a
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) > 1 else a


def pfn_runs(pfns) -> list[tuple[int, int]]:
    """(start, npages) runs of consecutive frames (or any indices) covering the distinct
    ``pfns``, in order: a per-page operation that does not depend on order, done once per run."""
    p = distinct(np.asarray(pfns, dtype=np.int64))
    if not len(p):
        return []
    cut = np.flatnonzero(np.diff(p) != 1) + 1
    starts, ends = np.concatenate(([0], cut)), np.concatenate((cut, [len(p)]))
    return [(int(p[a]), int(e - a)) for a, e in zip(starts, ends)]


def page_mask(r0: int, r1: int, off0: int, off1: int, regions: np.ndarray) -> np.ndarray:
    """(len(regions), 512) bool: which 4K pages of each listed region lie inside the range."""
    idx = np.arange(PAGES_PER_2M)
    lo = np.where(regions == r0, off0, 0)
    hi = np.where(regions == r1, off1, PAGES_PER_2M)
    return (idx[None, :] >= lo[:, None]) & (idx[None, :] < hi[:, None])


class SlotPool:
    """Detail slots (one per 2M region that needs 4K detail), grown by doubling.

    ``arrays`` maps a name to ``(dtype, shape_per_slot)``; slot ``i`` of array ``a`` is
    ``self.a[i]``. Capacity never exceeds the number of regions. Released slots are kept on a
    stack (a numpy array: a whole-memory release costs 8 bytes a slot, not a Python int each)
    and handed out again last-released first.
    """

    def __init__(self, max_slots: int, arrays: dict, initial: int = 64):
        self._spec = arrays
        self._max = max_slots
        self._cap = min(initial, max_slots)
        self._used = 0
        self._free = np.zeros(0, dtype=np.int64)   # released slots, a stack (top: the end)
        self._nfree = 0
        for name, (dtype, shape) in arrays.items():
            setattr(self, name, np.zeros((self._cap, *shape), dtype=dtype))

    def alloc(self, n: int) -> np.ndarray:
        take = min(n, self._nfree)
        reused = self._free[self._nfree - take:self._nfree][::-1].copy()
        self._nfree -= take
        rest = n - take
        if not rest:
            return reused
        if self._used + rest > self._cap:
            self._grow(self._used + rest)
        new = np.arange(self._used, self._used + rest, dtype=np.int64)
        self._used += rest
        return np.concatenate([reused, new]) if take else new

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more slots now (one allocation instead of doubling step by step)."""
        need = self._used + max(0, n - self._nfree)
        if need > self._cap:
            self._grow(need)

    def release(self, slots) -> None:
        slots = np.asarray(slots, dtype=np.int64).ravel()
        need = self._nfree + len(slots)
        if need > len(self._free):
            grown = np.zeros(max(need, 2 * len(self._free)), dtype=np.int64)
            grown[:self._nfree] = self._free[:self._nfree]
            self._free = grown
        self._free[self._nfree:need] = slots
        self._nfree = need

    def _grow(self, need: int) -> None:
        cap = self._cap
        while cap < need:
            cap = min(max(cap * 2, 1), self._max)
        for name, (dtype, shape) in self._spec.items():
            old = getattr(self, name)
            new = np.zeros((cap, *shape), dtype=dtype)
            new[: self._cap] = old[: self._cap]
            setattr(self, name, new)
        self._cap = cap

    @property
    def in_use(self) -> int:
        return self._used - self._nfree

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in self._spec)


class LazyIndex:
    """Per-region detail-slot index (-1 = no detail) that costs nothing until first written:
    until then it is a zero-stride read-only view of -1. Written, it holds slot + 1 in a
    zero-filled array, so the pages of regions never given a slot are never touched (a 1.5 TiB
    host's index is 3 MiB; ``np.zeros`` gets it from the allocator already zeroed)."""

    def __init__(self, n: int):
        self._a = np.broadcast_to(np.int32(-1), (n,))
        self._stored = False

    def __getitem__(self, key):
        return self._a[key] - 1 if self._stored else self._a[key]

    def __setitem__(self, key, value):
        if not self._stored:
            self._a = np.zeros(self._a.shape, dtype=np.int32)
            self._stored = True
        self._a[key] = np.add(value, 1)

    @property
    def nbytes(self) -> int:
        return self._a.nbytes if self._stored else 0


CHUNK = 4096   # ranges per chunk before it is split in two
#: single-page changes a chunk holds as pending pages before they are merged into its arrays
PENDING = 1024
# searchsorted keys as the arrays' own dtype: a Python int against uint64 arrays makes numpy
# convert the whole array to a common type on every call
_U64 = np.uint64
_ABSENT = object()


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


def _set_pages(s, e, v, pages: dict):
    """Store each ``{gfn: value}`` of ``pages`` over one sorted run of ranges at once: the
    ranges holding a page are cut around it, each page with a value becomes a range of its
    own, then the run is sorted (one merge of two sorted runs) and equal neighbours merged.
    A few numpy passes over the run, whatever the number of pages."""
    g = np.fromiter(pages, dtype=np.uint64, count=len(pages))
    w = np.fromiter(pages.values(), dtype=np.uint64, count=len(pages))
    order = np.argsort(g, kind="stable")
    g, w = g[order], w[order]
    r = e.searchsorted(g, "right")                      # the first range ending after each page
    inside = r < len(s)
    inside[inside] = s[r[inside]] <= g[inside]
    gi, ri = g[inside], r[inside]
    cut = np.zeros(len(s), dtype=bool)
    cut[ri] = True
    # pieces of the cut ranges: before each page (from the range's start or the previous
    # page of the same range) and after the last page of each range
    same = np.concatenate(([False], ri[1:] == ri[:-1]))
    last = np.concatenate((ri[1:] != ri[:-1], [True])) if len(ri) else np.zeros(0, dtype=bool)
    one = _U64(1)
    ps = np.concatenate([np.where(same, np.concatenate(([0], gi[:-1])).astype(np.uint64) + one, s[ri]),
                         gi[last] + one])
    pe = np.concatenate([gi, e[ri[last]]])
    pv = np.concatenate([v[ri], v[ri[last]]])
    keep, set_ = ps < pe, w != 0
    S = np.concatenate([s[~cut], ps[keep], g[set_]])
    E = np.concatenate([e[~cut], pe[keep], g[set_] + one])
    V = np.concatenate([v[~cut], pv[keep], w[set_]])
    order = np.argsort(S, kind="stable")
    S, E, V = S[order], E[order], V[order]
    if not len(S):
        return S, E, V
    first = np.concatenate(([True], (S[1:] != E[:-1]) | (V[1:] != V[:-1])))
    return S[first], E[np.concatenate((first[1:], [True]))], V[first]


def _chunk(s, e, v) -> list:
    """One chunk of a :class:`RangeStore`: its starts, ends and values (numpy arrays), its
    pending pages ``{gfn: value}``, and the three arrays' buffers (``memoryview``: a one-page
    lookup bisects them with no numpy call)."""
    return [s, e, v, {}, memoryview(s), memoryview(e), memoryview(v)]


class RangeStore:
    """Sorted non-overlapping ranges, held in chunks of at most ``2 * CHUNK`` ranges with an
    index of each chunk's first start, so that a one-page change copies one or two chunks and
    a change over a huge range drops the chunks inside it whole.

    A one-page :meth:`set` costs a dict store: the page waits in its chunk's pending pages
    (``{gfn: value}``, the chunk's span being from its first start to the next chunk's) and
    :meth:`get` looks there first; the pending pages are merged into the chunk's arrays in one
    vectorised pass (:func:`_set_pages`) when there are ``PENDING`` of them, or when a range
    operation or a whole-store view reads the chunk. A range change drops the pending pages of
    the chunks it covers whole. Like the kernel's ``mem_attr_array``, an xarray whose stores
    of single entries cost no more than a lookup (virt/kvm/kvm_main.c
    ``kvm_vm_set_mem_attributes``, ``kvm_range_has_memory_attributes``), while a 1 TiB
    range stays one entry."""

    def __init__(self):
        self._c: list[list] = []        # chunks (:func:`_chunk`)
        self._firsts: list[int] = []    # each chunk's first start

    def __getstate__(self) -> dict:
        """Pickled and deep-copied (snapshots) without the buffers, rebuilt on load."""
        return {"chunks": [x[:4] for x in self._c], "firsts": self._firsts}

    def __setstate__(self, state: dict) -> None:
        self._c = [[s, e, v, pending, memoryview(s), memoryview(e), memoryview(v)]
                   for s, e, v, pending in state["chunks"]]
        self._firsts = state["firsts"]

    # whole-store views (for tests and reports; O(n))
    @property
    def _chunks(self) -> list:
        """The chunks (:func:`_chunk`) with every pending page merged."""
        self._settle(0, None)
        return self._c

    @property
    def starts(self) -> np.ndarray:
        c = self._chunks
        return np.concatenate([x[0] for x in c]) if c else np.zeros(0, np.uint64)

    @property
    def ends(self) -> np.ndarray:
        c = self._chunks
        return np.concatenate([x[1] for x in c]) if c else np.zeros(0, np.uint64)

    @property
    def values(self) -> np.ndarray:
        c = self._chunks
        return np.concatenate([x[2] for x in c]) if c else np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return sum(len(x[0]) for x in self._chunks)

    def _chunk_at(self, gfn: int) -> int:
        """Index of the last chunk starting at or before ``gfn`` (0 if none)."""
        return max(bisect_right(self._firsts, gfn) - 1, 0)

    def get(self, gfn: int) -> int:
        """``kvm_get_memory_attributes``: the value at ``gfn`` (0 when nothing is stored)."""
        if not self._c:
            return 0
        c = bisect_right(self._firsts, gfn) - 1
        x = self._c[c if c > 0 else 0]
        if x[3]:
            value = x[3].get(gfn, _ABSENT)
            if value is not _ABSENT:
                return value
        e = x[5]                          # the arrays' buffers: a lookup with no numpy call
        i = bisect_right(e, gfn)
        return x[6][i] if i < len(e) and x[4][i] <= gfn else 0

    def _flush(self, c: int) -> None:
        """Merge chunk ``c``'s pending pages into its arrays. A chunk beside it is rebuilt with
        it when a page lies at the edge of the span (it may merge with the neighbour's range
        there), keeping its own pending pages."""
        pending = self._c[c][3]
        lo = c - 1 if c > 0 and self._firsts[c] in pending else c
        hi = c + 1 if c + 1 < len(self._c) and self._firsts[c + 1] - 1 in pending else c
        kept = {}
        for k in range(lo, hi + 1):
            if k != c:
                kept.update(self._c[k][3])
        s, e, v = (np.concatenate([self._c[k][i] for k in range(lo, hi + 1)]) for i in range(3))
        s, e, v = _set_pages(s, e, v, self._c[c][3])
        self._replace(lo, hi, s, e, v)
        for g, value in kept.items():
            self._c[self._chunk_at(g)][3][g] = value

    def _settle(self, start: int, end: int | None) -> None:
        """Merge the pending pages of every chunk whose span meets ``[start, end]`` (``end``
        None: to the last chunk)."""
        pos = start
        while self._c:
            c = self._chunk_at(pos)
            if self._c[c][3]:
                self._flush(c)
                continue
            if c + 1 >= len(self._c) or (end is not None and self._firsts[c + 1] > end):
                return
            pos = self._firsts[c + 1]

    def _overlapping(self, start: int, end: int):
        """Per chunk touching ``[start, end)``: its arrays and the slice ``[i0, i1)`` of ranges
        that overlap the query, in order (pending pages merged first)."""
        self._settle(start, end)
        for c in range(self._chunk_at(start), len(self._c)):
            s, e, v = self._c[c][:3]
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
        ``[start, end)`` hold exactly ``value``? Stops at the first chunk that says no
        (merging the pending pages of each chunk it reads, no further)."""
        if end == start + 1:
            return self.get(start) == value
        cur = start                         # for a non-zero value: [start, cur) holds it
        while self._c and cur < end:
            c = self._chunk_at(cur)
            if self._c[c][3]:
                self._flush(c)
                continue
            s, e, v = self._c[c][:3]
            i0, i1 = int(e.searchsorted(_U64(cur), "right")), int(s.searchsorted(_U64(end), "left"))
            if i0 < i1:
                if (value == 0 or int(s[i0]) > cur or not np.all(v[i0:i1] == value)
                        or not np.all(s[i0 + 1:i1] == e[i0:i1 - 1])):
                    return False
                cur = int(e[i1 - 1])
            elif value:
                return False
            if cur >= end or c + 1 >= len(self._c) or self._firsts[c + 1] >= end:
                break
            if value and cur < self._firsts[c + 1]:
                return False
            cur = self._firsts[c + 1]
        return value == 0 or cur >= end

    def set(self, start: int, end: int, value: int) -> None:
        """Store ``value`` over ``[start, end)`` (0 erases), merging equal neighbours.
        ``CHUNK`` and ``PENDING`` are read at call time (tests shrink them to exercise chunk
        boundaries and merges)."""
        if not self._c:
            if value:
                one = np.asarray([start], np.uint64), np.asarray([end], np.uint64), np.asarray([value], np.uint64)
                self._c, self._firsts = [_chunk(*one)], [start]
            return
        if end == start + 1:                            # one page: pending in its chunk
            c = bisect_right(self._firsts, start) - 1
            c = c if c > 0 else 0
            pending = self._c[c][3]
            pending[start] = value
            if len(pending) >= PENDING:
                self._flush(c)
            return
        for g in (start - 1, start, end):               # the edge chunks keep pages outside the range
            c = self._chunk_at(g)
            if self._c and self._c[c][3]:
                self._flush(c)
        if not self._c:                                 # the pending pages erased everything
            return self.set(start, end, value)
        c0 = self._chunk_at(start)
        if c0 > 0 and int(self._c[c0 - 1][1][-1]) >= start:
            c0 -= 1                                     # a touching range just before
        c1 = max(bisect_right(self._firsts, end) - 1, c0)
        # chunks strictly between c0 and c1 lie inside [start, end]: dropped whole, with
        # their pending pages
        if c1 == c0:
            s, e, v = self._c[c0][:3]
        else:
            s, e, v = (np.concatenate([self._c[c0][k], self._c[c1][k]]) for k in range(3))
        self._replace(c0, c1, *_flat_set(s, e, v, start, end, value))

    def _replace(self, c0: int, c1: int, s, e, v) -> None:
        """Chunks ``c0..c1`` := the run ``s, e, v``, cut into chunks of ``CHUNK`` ranges if it
        is longer than ``2 * CHUNK``; their pending pages are gone (merged or overwritten)."""
        CHUNK = globals()["CHUNK"]
        new = [_chunk(s[i:i + CHUNK], e[i:i + CHUNK], v[i:i + CHUNK]) for i in range(0, len(s), CHUNK)] \
            if len(s) > 2 * CHUNK else ([_chunk(s, e, v)] if len(s) else [])
        if c1 == c0 and len(new) == 1:            # the common case: one chunk rewritten
            self._c[c0] = new[0]
            self._firsts[c0] = int(s[0])
            return
        self._c[c0:c1 + 1] = new
        self._firsts[c0:c1 + 1] = [int(x[0][0]) for x in new]

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays and the pending pages' dicts."""
        return sum(a.nbytes for x in self._c for a in x[:3]) + sum(sys.getsizeof(x[3]) for x in self._c if x[3])
