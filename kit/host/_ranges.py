"""Small helpers shared by the two-level (2M region + 4K detail) state arrays."""
from __future__ import annotations

import numpy as np

PAGES_PER_2M = 512
PAGES_PER_1G = 512 * 512


def check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def check_pfn_range(pfn, npages, nr_pages: int, *, name: str = "pfn") -> tuple[int, int]:
    """Validate ``[pfn, pfn + npages)`` against memory; return it as plain ints."""
    pfn = check_int(pfn, name)
    npages = check_int(npages, "npages")
    if npages <= 0:
        raise ValueError(f"npages: must be at least 1, got {npages}")
    if pfn < 0 or pfn + npages > nr_pages:
        raise ValueError(
            f"{name}: pfn range [{pfn:#x}, {pfn + npages:#x}) is outside host memory "
            f"[0, {nr_pages:#x}) ({nr_pages} 4K frames)")
    return pfn, npages


def region_span(pfn: int, npages: int) -> tuple[int, int, int, int]:
    """First region, last region (inclusive), offset in the first, end offset in the last."""
    end = pfn + npages
    r0, r1 = pfn // PAGES_PER_2M, (end - 1) // PAGES_PER_2M
    return r0, r1, pfn % PAGES_PER_2M, (end - 1) % PAGES_PER_2M + 1


def pfn_runs(pfns) -> list[tuple[int, int]]:
    """(start, npages) runs of consecutive frames (or any indices) covering the distinct
    ``pfns``, in order: a per-page operation that does not depend on order, done once per run."""
    p = np.unique(np.asarray(pfns, dtype=np.int64))
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
    ``self.a[i]``. Capacity never exceeds the number of regions.
    """

    def __init__(self, max_slots: int, arrays: dict, initial: int = 64):
        self._spec = arrays
        self._max = max_slots
        self._cap = min(initial, max_slots)
        self._used = 0
        self._free: list[int] = []
        for name, (dtype, shape) in arrays.items():
            setattr(self, name, np.zeros((self._cap, *shape), dtype=dtype))

    def alloc(self, n: int) -> np.ndarray:
        take = min(n, len(self._free))
        out = [self._free.pop() for _ in range(take)]
        rest = n - take
        if rest:
            if self._used + rest > self._cap:
                self._grow(self._used + rest)
            out.extend(range(self._used, self._used + rest))
            self._used += rest
        return np.asarray(out, dtype=np.int64)

    def release(self, slots) -> None:
        self._free.extend(int(s) for s in np.asarray(slots).ravel())

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
        return self._used - len(self._free)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in self._spec)


class LazyIndex:
    """Per-region detail-slot index (-1 = no detail) that costs nothing until first written:
    until then it is a zero-stride read-only view of -1."""

    def __init__(self, n: int):
        self._a = np.broadcast_to(np.int32(-1), (n,))

    def __getitem__(self, key):
        return self._a[key]

    def __setitem__(self, key, value):
        if not self._a.flags.writeable:
            self._a = np.full(self._a.shape, -1, dtype=np.int32)
        self._a[key] = value

    @property
    def nbytes(self) -> int:
        return self._a.nbytes if self._a.flags.writeable else 0
