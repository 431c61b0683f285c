"""Physical frames: who owns each 4K frame, and folio allocation at 4K or 2M.

A deliberately small page allocator: 2M folios come from wholly free 2M regions, 4K pages
first from regions already broken up (as the buddy allocator prefers splitting what is
already split), then by breaking a free 2M region. ``placement`` picks the free region:
``"lowest"`` (deterministic, address order) or ``"random"`` (the host's seeded generator).
Real buddy placement is not modelled; it matters here only for which 2M regions end up
holding both kernel pages and guest pages, so it is a named parameter.

Owners: FREE, KERNEL (host kernel allocations, written through the direct map), GUEST (guest
memory, e.g. guest_memfd folios), FIRMWARE (pages given to the SEV firmware), LEAKED
(``snp_leak_pages``: never freed).
"""
from __future__ import annotations

import numpy as np

from ..units import PAGES_PER_2M, PMD_ORDER
from .limits import ALLOC_4K_PAGES
from .ranges import LazyIndex, SlotPool, check_int, check_nr_pages, check_pfn_range, check_region, region_span

FREE, KERNEL, GUEST, FIRMWARE, LEAKED = 0, 1, 2, 3, 4
MIXED = 255  # region-level marker: look at the 4K detail
OWNER_NAMES = {FREE: "free", KERNEL: "kernel", GUEST: "guest", FIRMWARE: "firmware",
               LEAKED: "leaked"}
_OWNER_BY_NAME = {v: k for k, v in OWNER_NAMES.items()}


def owner_code(owner) -> int:
    """The owner code of a name or code (not FREE: freeing is :meth:`PhysicalMemory.free`)."""
    if isinstance(owner, str) and owner in _OWNER_BY_NAME and owner != "free":
        return _OWNER_BY_NAME[owner]
    if isinstance(owner, (int, np.integer)) and not isinstance(owner, (bool, np.bool_)) \
            and owner in OWNER_NAMES and owner != FREE:
        return int(owner)
    raise ValueError(f"owner: must be one of 'kernel', 'guest', 'firmware', 'leaked', got {owner!r}")


#: frame placements of the allocator (``Host(placement=...)``)
PLACEMENTS = ("lowest", "random")
_BLOCK = 1024         # regions per block of the free-region counts
_FEW_MIXED = 8        # MIXED regions a one-page allocation looks through one by one


class SeededRng:
    """``numpy.random.default_rng(seed)``, made at the first draw (a run that never draws does
    not load ``numpy.random``): use it as the generator (``rng.choice(...)``) or call it for
    the generator itself. It holds no reference to its owner, so a host and its allocator
    sharing one form no reference cycle."""

    def __init__(self, seed):
        self.seed, self._rng = seed, None

    def __call__(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return self._rng

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self(), name)


class OutOfMemory(MemoryError):
    """No free frames of the requested order (the allocator's -ENOMEM)."""


class PhysicalMemory:
    """Who owns each physical frame, and the frame allocator. ``rng``: the generator of
    ``"random"`` placement, or a function returning it (called at the first random placement)."""

    def __init__(self, nr_pages: int, *, rng: np.random.Generator, placement: str = "lowest"):
        nr_pages = check_nr_pages(nr_pages)
        if not callable(rng) and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng: expected a numpy.random.Generator or a function returning one, "
                            f"got {type(rng).__name__}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement: must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        self.nr_pages = nr_pages
        self.nr_regions = nr_pages // PAGES_PER_2M
        self.placement = placement
        self._rng = rng
        self.region_owner = np.zeros(self.nr_regions, dtype=np.uint8)
        # FREE regions per block of _BLOCK regions, kept as region_owner changes: "random"
        # placement finds the k-th free region without scanning all of memory
        self._free_in_block = np.full(-(-self.nr_regions // _BLOCK), _BLOCK, dtype=np.int64)
        if len(self._free_in_block):
            self._free_in_block[-1] = self.nr_regions - (len(self._free_in_block) - 1) * _BLOCK
        self._didx = LazyIndex(self.nr_regions)
        self._pool = SlotPool(self.nr_regions, {"owner": (np.uint8, (PAGES_PER_2M,))})
        self._free_hint = 0   # no FREE region below this index (for "lowest" placement)
        self._mixed: set[int] = set()   # regions with per-4K owners (region_owner == MIXED)

    @property
    def nbytes(self) -> int:
        return self.region_owner.nbytes + self._didx.nbytes + self._pool.nbytes

    def _mixed_free(self, mixed: np.ndarray) -> np.ndarray:
        """Free 4K pages in each of the listed MIXED regions."""
        if not len(mixed):
            return np.zeros(0, dtype=np.int64)
        return np.count_nonzero(self._pool.owner[self._didx[mixed]] == FREE, axis=1)

    def free_regions(self) -> int:
        """Wholly free 2M regions."""
        return int(self._free_in_block.sum())

    def free_pages(self) -> int:
        mixed = np.flatnonzero(self.region_owner == MIXED)
        return (self.free_regions() * PAGES_PER_2M
                + int(self._mixed_free(mixed).sum()))

    def owner(self, pfn) -> str:
        pfn, _ = check_pfn_range(pfn, 1, self.nr_pages)
        return OWNER_NAMES[self._owner_of(pfn)]

    def _owner_of(self, pfn: int) -> int:
        r, off = divmod(pfn, PAGES_PER_2M)
        o = int(self.region_owner[r])
        return int(self._pool.owner[self._didx[r], off]) if o == MIXED else o

    def owners(self, region: int) -> np.ndarray:
        """(512,) owner codes of one 2M region."""
        region = check_region(region, self.nr_regions)
        o = self.region_owner[region]
        if o == MIXED:
            return self._pool.owner[self._didx[region]].copy()
        return np.full(PAGES_PER_2M, o, dtype=np.uint8)

    def _lowest_free(self, count: int) -> np.ndarray:
        """The ``count`` lowest FREE regions, scanning forward from a hint in growing windows
        (no full scan per allocation); fewer if there are not that many."""
        out, pos, window = [], self._free_hint, max(64, 2 * count)
        found = 0
        while pos < self.nr_regions and found < count:
            hits = pos + np.flatnonzero(self.region_owner[pos:pos + window] == FREE)
            if not found and len(hits):
                self._free_hint = int(hits[0])
            elif not found:
                self._free_hint = min(pos + window, self.nr_regions)
            out.append(hits[:count - found])
            found += len(out[-1])
            pos, window = pos + window, window * 2
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def _free_regions(self, count: int) -> np.ndarray:
        """``count`` FREE regions, sorted, by the placement: the lowest, or a uniform random
        choice (the seeded generator choosing ``count`` of the free regions by rank, the
        k-th free region found through the per-block counts); fewer if there are not that
        many (then no random number is drawn)."""
        if self.placement == "lowest":
            return self._lowest_free(count)
        nfree = self.free_regions()
        if nfree < count:
            return np.zeros(0, dtype=np.int64)
        rng = self._rng() if callable(self._rng) else self._rng
        rank = np.sort(rng.choice(nfree, size=count, replace=False))
        if count * _BLOCK >= self.nr_regions:          # many: one pass over memory is cheaper
            return np.flatnonzero(self.region_owner == FREE)[rank]
        ends = np.cumsum(self._free_in_block)
        blocks = np.searchsorted(ends, rank, side="right")          # sorted, as rank is
        out = np.empty(count, dtype=np.int64)
        firsts, sizes = np.unique(blocks, return_index=True, return_counts=True)[1:]
        for i, n in zip(firsts.tolist(), sizes.tolist()):           # one pass per block touched
            b = int(blocks[i])
            lo = b * _BLOCK
            here = lo + np.flatnonzero(self.region_owner[lo:lo + _BLOCK] == FREE)
            out[i:i + n] = here[rank[i:i + n] - (ends[b] - self._free_in_block[b])]
        return out

    def _set_owner(self, regions, code: int) -> None:
        """``region_owner[regions] = code`` (one region or an index array), keeping the
        per-block counts of FREE regions."""
        old = self.region_owner[regions]
        delta = (np.asarray(code == FREE, dtype=np.int64) - (old == FREE)).ravel()
        if delta.any():
            blocks = np.atleast_1d(np.asarray(regions)) // _BLOCK
            np.add.at(self._free_in_block, blocks, np.broadcast_to(delta, blocks.shape))
        self.region_owner[regions] = code

    def alloc(self, order: int, owner="kernel", count: int = 1) -> np.ndarray:
        """Allocate ``count`` folios of ``2**order`` pages (order 0, or ``PMD_ORDER`` for 2M);
        returns their first pfns. All or nothing: raises :class:`OutOfMemory` and changes nothing
        if they do not fit. ``count`` is 1 up to the 2M regions the host has, or up to
        :data:`~kit.host.limits.ALLOC_4K_PAGES`'s bound of 4K pages (more is the caller's
        error, a ``ValueError``)."""
        order = check_int(order, "order")
        if order not in (0, PMD_ORDER):
            raise ValueError(f"order: must be 0 (4K) or {PMD_ORDER} (2M), got {order!r}")
        code = owner_code(owner)
        count = check_int(count, "count", 1, self.nr_regions) if order == PMD_ORDER else ALLOC_4K_PAGES.check(count)
        if order == PMD_ORDER:
            left = self.free_regions()
            if left < count:
                raise OutOfMemory(f"alloc: {count} free 2M regions wanted, {left} left")
            free = self._free_regions(count)
            self._set_owner(free, code)
            return free.astype(np.int64) * PAGES_PER_2M
        if count == 1 and len(self._mixed) <= _FEW_MIXED:
            # one page (a VMSA, a page table): the first free page of the lowest MIXED region
            # that has one, as below, without counting every MIXED region's free pages
            for r in sorted(self._mixed):
                own = self._pool.owner[self._didx[r]]
                i = int(own.argmin())               # FREE is the lowest owner code
                if own[i] == FREE:
                    own[i] = code
                    return np.asarray([r * PAGES_PER_2M + i], dtype=np.int64)
        mixed = np.fromiter(sorted(self._mixed), dtype=np.int64, count=len(self._mixed))
        nfree = self._mixed_free(mixed)
        mixed = mixed[nfree > 0]
        have = int(nfree.sum())
        need_regions = max(0, -(-(count - have) // PAGES_PER_2M))
        if need_regions > self.free_regions():
            raise OutOfMemory(f"alloc: {count} free 4K pages wanted, fewer left")
        new = self._free_regions(need_regions) if need_regions else np.zeros(0, dtype=np.int64)
        if len(new):
            slots = self._pool.alloc(len(new))
            self._pool.owner[slots] = FREE
            self._didx[new] = slots
            self._set_owner(new, MIXED)
            self._mixed.update(int(r) for r in new)
        out = []
        remaining = count
        for r in np.concatenate([mixed, new]):
            own = self._pool.owner[self._didx[r]]
            idx = np.flatnonzero(own == FREE)[:remaining]
            own[idx] = code
            out.append(int(r) * PAGES_PER_2M + idx)
            remaining -= len(idx)
            if not remaining:
                break
        return np.concatenate(out).astype(np.int64)

    def set_owner(self, pfn, npages, owner) -> None:
        """Mark ``[pfn, pfn+npages)`` (all currently free) as owned, e.g. firmware reservations."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        code = owner_code(owner)
        if self._owned_in(pfn, npages):
            raise ValueError(f"pfn: [{pfn:#x}, {pfn + npages:#x}) is not all free")
        self._write(pfn, npages, code)

    def _owned_in(self, pfn: int, npages: int) -> bool:
        """Whether any frame of ``[pfn, pfn+npages)`` is not free: the whole regions inside the
        range by their region owner at once, the edge regions page by page."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        for r, lo, hi in self._edges(r0, r1, off0, off1):
            if np.any(self.owners(r)[lo:hi] != FREE):
                return True
        return bool(np.any(self.region_owner[self._whole(r0, r1, off0, off1)] != FREE))

    @staticmethod
    def _whole(r0: int, r1: int, off0: int, off1: int) -> slice:
        """The regions a range covers whole (a slice, maybe empty)."""
        return slice(r0 if off0 == 0 else r0 + 1, r1 + 1 if off1 == PAGES_PER_2M else r1)

    @staticmethod
    def _edges(r0: int, r1: int, off0: int, off1: int):
        """(region, lo, hi) of the one or two regions a range covers only in part."""
        out = []
        for r in sorted({r0, r1}):
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            if (lo, hi) != (0, PAGES_PER_2M):
                out.append((r, lo, hi))
        return out

    def _write(self, pfn: int, npages: int, code: int) -> None:
        """Owner of ``[pfn, pfn+npages)`` := ``code``: whole regions at once (their 4K detail
        dropped), the edge regions page by page."""
        if npages == 1:
            r, off = divmod(pfn, PAGES_PER_2M)
            if self.region_owner[r] == MIXED:       # one page of a region held page by page
                self._pool.owner[self._didx[r], off] = code
                return
        r0, r1, off0, off1 = region_span(pfn, npages)
        whole = np.arange(*self._whole(r0, r1, off0, off1).indices(self.nr_regions))
        if len(whole):
            mixed = whole[self.region_owner[whole] == MIXED]
            if len(mixed):
                self._pool.release(self._didx[mixed])
                self._didx[mixed] = -1
                self._mixed.difference_update(int(r) for r in mixed)
            self._set_owner(whole, code)
            if code == FREE:
                self._free_hint = min(self._free_hint, int(whole[0]))
        for r, lo, hi in self._edges(r0, r1, off0, off1):
            if self.region_owner[r] != MIXED:
                slot = self._pool.alloc(1)[0]
                self._pool.owner[slot] = self.region_owner[r]
                self._didx[r] = slot
                self._set_owner(r, MIXED)
                self._mixed.add(r)
            own = self._pool.owner[self._didx[r]]
            own[lo:hi] = code

    def free(self, pfn, order: int = 0) -> None:
        """Free one folio. Freeing a free or leaked page is a bug the kernel would catch
        (``bad_page``): raises ``ValueError`` and changes nothing."""
        order = check_int(order, "order")
        if order not in (0, PMD_ORDER):
            raise ValueError(f"order: must be 0 (4K) or {PMD_ORDER} (2M), got {order!r}")
        npages = 1 << order
        pfn, _ = check_pfn_range(pfn, npages, self.nr_pages)
        if order == PMD_ORDER and pfn % PAGES_PER_2M:
            raise ValueError(f"pfn: a 2M folio must start 2M-aligned, got {pfn:#x}")
        r0, off = divmod(pfn, PAGES_PER_2M)
        o = int(self.region_owner[r0])
        if o == MIXED:
            own = self._pool.owner[self._didx[r0], off:off + npages]
            bad = bool(((own == FREE) | (own == LEAKED)).any())
        else:
            bad = o in (FREE, LEAKED)
        if bad:
            raise ValueError(f"pfn: {pfn:#x} is free or leaked; it cannot be freed")
        self._write(pfn, npages, FREE)

    def leak(self, pfn, npages) -> None:
        """``snp_leak_pages``: the frames are never given back."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        self._write(pfn, npages, LEAKED)
