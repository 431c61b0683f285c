"""The host kernel's direct map: page-table levels, splits, present bits, /proc/meminfo counts.

Source: arch/x86/mm/pat/set_memory.c (``__change_page_attr_set_clr``, ``__change_page_attr``,
``should_split_large_page``, ``split_large_page``, ``__split_large_page``, ``cpa_flush``,
``cpa_collapse_large_pages``, ``update_page_count``/``split_page_count``) and
arch/x86/mm/init_64.c (``phys_pud_init``/``phys_pmd_init``: 1G mappings where
``direct_gbpages`` and 1G-aligned RAM allow, else 2M).

State, two-level like the page tables: one level code per 2M region (4K = split, 2M, 1G) and,
only for split regions where some page is not present, 512 present bits. Ranged entry points do what the kernel does when it
calls the single-page function for each page in turn; the cost ledger gets the aggregate.
"""
from __future__ import annotations

import numpy as np

from ..units import LEVELS, PAGE_1G, PAGE_2M, PAGE_4K, PAGES_PER_1G, PAGES_PER_2M, KiB, check_bool
from .limits import TLB_FLUSH_CEILING
from .ranges import (LazyIndex, SlotPool, check_int, check_nr_pages, check_pfn_range, check_region, check_regions,
                     pfn_runs as _runs, region_span)
from .ledger import Ledger

# level codes: indexes into kit.units.LEVELS
LVL_4K, LVL_2M, LVL_1G = (LEVELS.index(size) for size in (PAGE_4K, PAGE_2M, PAGE_1G))
REGIONS_PER_1G = PAGES_PER_1G // PAGES_PER_2M
_KB_PER_REGION = PAGE_2M // KiB
_PRESENT_RUN = 1 << 20        # regions one step of a present-bit change covers (2 TiB)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` for the common case of an already sorted array (a range of regions):
    drop repeats with one comparison pass instead of a hash or sort."""
    if len(a) < 2:
        return a
    d = a[1:] != a[:-1]
    if np.all(a[1:] >= a[:-1]):
        return a[np.concatenate(([True], d))]
    return np.unique(a)


class DirectMap:
    """Direct-map page tables of one host.

    ``tlb_single_page_flush_ceiling`` is the kernel tunable of the same name
    (arch/x86/mm/tlb.c, default 33): ``cpa_flush`` of more pages flushes everything.
    """

    def __init__(self, nr_pages: int, *, ledger: Ledger, gbpages: bool = True,
                 tlb_single_page_flush_ceiling: int = 33):
        nr_pages = check_nr_pages(nr_pages)
        self.nr_pages = nr_pages
        self.nr_regions = nr_pages // PAGES_PER_2M
        self.gbpages = check_bool(gbpages, "gbpages")
        self.tlb_single_page_flush_ceiling = TLB_FLUSH_CEILING.check(tlb_single_page_flush_ceiling)
        self.ledger = ledger
        self.lvl = np.full(self.nr_regions, LVL_2M, dtype=np.uint8)
        full = (self.nr_regions // REGIONS_PER_1G) * REGIONS_PER_1G if self.gbpages else 0
        self.lvl[:full] = LVL_1G
        # 2M regions mapped at each level, kept up to date as the kernel keeps
        # ``direct_pages_count[]`` (set_memory.c ``update_page_count``/``split_page_count``)
        self._nregions = [0] * len(LEVELS)
        self._nregions[LVL_1G], self._nregions[LVL_2M] = full, self.nr_regions - full
        self._didx = LazyIndex(self.nr_regions)
        # 512 present bits (little-endian bit order, 1 = present) for each split region that has
        # a not-present page; a split region without a slot is all present
        self._pool = SlotPool(self.nr_regions, {"bits": (np.uint8, (PAGES_PER_2M // 8,))})
        self.vmstat = {"direct_map_level2_splits": 0, "direct_map_level3_splits": 0,
                       "direct_map_level2_collapses": 0, "direct_map_level3_collapses": 0}

    # ----------------------------------------------------------------- queries
    def level(self, pfn) -> int:
        """Mapping level of ``pfn`` (``lookup_address``): PAGE_4K, PAGE_2M or PAGE_1G."""
        pfn, _ = check_pfn_range(pfn, 1, self.nr_pages)
        return LEVELS[int(self.lvl[pfn // PAGES_PER_2M])]

    def present(self, pfn) -> bool:
        """Whether the direct-map PTE of ``pfn`` is present. Large mappings are always present
        here: the kit's helpers only clear PRESENT one 4K page at a time (``__set_pages_np``)."""
        pfn, _ = check_pfn_range(pfn, 1, self.nr_pages)
        return bool(self._present_bits(pfn))

    def _present_bits(self, pfn: int) -> bool:
        r, off = divmod(pfn, PAGES_PER_2M)
        if self.lvl[r] != LVL_4K or self._didx[r] < 0:
            return True
        return bool((self._pool.bits[self._didx[r], off >> 3] >> (off & 7)) & 1)

    def present_mask(self, region: int) -> np.ndarray:
        """(512,) bool present bits of one 2M region (all True when it is not split)."""
        region = check_region(region, self.nr_regions)
        if self.lvl[region] != LVL_4K or self._didx[region] < 0:
            return np.ones(PAGES_PER_2M, dtype=bool)
        return np.unpackbits(self._pool.bits[self._didx[region]], bitorder="little").astype(bool)

    def counts(self) -> dict:
        """The DirectMap lines of /proc/meminfo, in kB (``arch_report_meminfo``).

        ``DirectMap1G`` is shown only with ``direct_gbpages``, as in the kernel."""
        n = self._nregions
        out = {"DirectMap4k": int(n[LVL_4K]) * _KB_PER_REGION, "DirectMap2M": int(n[LVL_2M]) * _KB_PER_REGION}
        if self.gbpages:
            out["DirectMap1G"] = int(n[LVL_1G]) * _KB_PER_REGION
        return out

    @property
    def nbytes(self) -> int:
        return self.lvl.nbytes + self._didx.nbytes + self._pool.nbytes

    def _move(self, src: int, dst: int, n: int) -> None:
        """``n`` 2M regions change mapping level (the page counts of ``split_page_count``)."""
        self._nregions[src] -= n
        self._nregions[dst] += n

    # ----------------------------------------------------------------- splits
    def _split(self, regions: np.ndarray) -> dict:
        """Split every large mapping covering ``regions`` down to 4K (``split_large_page``).

        A 1G mapping first becomes 512 x 2M (one table page, one ``flush_tlb_all`` under
        ``pgd_lock``), then the 2M one becomes 512 x 4K (the same again): 2 splits from 1G to 4K.
        Returns the event counts; the caller records them.
        """
        if not len(regions):
            return {"cpa_lock": 0}
        regions = _sorted_unique(np.asarray(regions))
        lv = self.lvl[regions]
        chunks_1g = _sorted_unique(regions[lv == LVL_1G] // REGIONS_PER_1G)
        if len(chunks_1g):
            self.lvl[(chunks_1g[:, None] * REGIONS_PER_1G + np.arange(REGIONS_PER_1G)).ravel()] = LVL_2M
        to_4k = regions[self.lvl[regions] == LVL_2M]
        if len(to_4k):
            self.lvl[to_4k] = LVL_4K
        return self._split_events(len(chunks_1g), len(to_4k))

    def _split_span(self, lo: int, hi: int) -> dict:
        """:meth:`_split` of every region in ``[lo, hi)``, on slices of the level array (a
        1G mapping's 512 regions are all LVL_1G, so its first region tells)."""
        if hi <= lo:
            return {"cpa_lock": 0}
        c0, c1 = lo // REGIONS_PER_1G, (hi - 1) // REGIONS_PER_1G
        firsts = self.lvl[c0 * REGIONS_PER_1G:(c1 + 1) * REGIONS_PER_1G:REGIONS_PER_1G]
        chunks_1g = c0 + np.flatnonzero(firsts == LVL_1G)
        for a, n in _runs(chunks_1g):
            self.lvl[a * REGIONS_PER_1G:(a + n) * REGIONS_PER_1G] = LVL_2M
        span = self.lvl[lo:hi]
        is2m = span == LVL_2M
        n2 = int(np.count_nonzero(is2m))
        if n2:
            span[is2m] = LVL_4K
        return self._split_events(len(chunks_1g), n2)

    def _split_events(self, n1g: int, n2m: int) -> dict:
        """Counts and events of ``n1g`` 1G -> 2M and ``n2m`` 2M -> 4K splits just made."""
        splits = n1g + n2m
        if not splits:
            return {"cpa_lock": 0}
        self._move(LVL_1G, LVL_2M, n1g * REGIONS_PER_1G)
        self._move(LVL_2M, LVL_4K, n2m)
        self.vmstat["direct_map_level3_splits"] += n1g
        self.vmstat["direct_map_level2_splits"] += n2m
        return {"split_1g": n1g, "split_2m": n2m, "pgtable_alloc": splits,
                "pgd_lock": splits, "flush_tlb_all": splits, "cpa_lock": splits}

    def any_not_present(self, regions: np.ndarray) -> np.ndarray:
        """Vector: does each region hold a not-present 4K PTE?"""
        slots = self._didx[check_regions(regions, self.nr_regions)]
        out = slots >= 0
        if out.any():
            out[out] = np.any(self._pool.bits[slots[out]] != 0xFF, axis=1)
        return out

    def _set_present(self, pfn: int, npages: int, value: bool) -> None:
        """Set the present bits of ``[pfn, pfn+npages)`` in split regions (large mappings have
        no per-4K bits and are always present). Slots come and go with not-present pages.
        Worked through in runs of regions (:data:`_PRESENT_RUN`), so that a range over all of
        a large host needs its slots, not also temporaries the size of memory."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        runs = [(a, min(a + _PRESENT_RUN, r1 + 1)) for a in range(r0, r1 + 1, _PRESENT_RUN)]
        if not value:                 # the slots all runs will need, taken room for at once
            self._pool.reserve(sum(int(np.count_nonzero((self.lvl[a:b] == LVL_4K) & (self._didx[a:b] < 0)))
                                   for a, b in runs))
        for a, b in runs:
            self._set_present_run(np.arange(a, b), r0, r1, off0, off1, value)

    def _set_present_run(self, regions, r0, r1, off0, off1, value: bool) -> None:
        regions = regions[self.lvl[regions] == LVL_4K]
        if not value:
            need = regions[self._didx[regions] < 0]
            if len(need):
                slots = self._pool.alloc(len(need))
                self._pool.bits[slots] = 0xFF
                self._didx[need] = slots
        else:
            regions = regions[self._didx[regions] >= 0]
        if not len(regions):
            return
        edge = regions[(regions == r0) | (regions == r1)]
        for r in edge:
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            bits = np.unpackbits(self._pool.bits[self._didx[r]], bitorder="little")
            bits[lo:hi] = value
            self._pool.bits[self._didx[r]] = np.packbits(bits, bitorder="little")
        mid = regions[(regions != r0) & (regions != r1)]
        self._pool.bits[self._didx[mid]] = 0xFF if value else 0x00
        if value:  # all present again: drop the slot
            slots = self._didx[regions]
            done = np.all(self._pool.bits[slots] == 0xFF, axis=1)
            self._pool.release(slots[done])
            self._didx[regions[done]] = -1

    # ----------------------------------------------------------------- kernel API
    def set_memory_4k(self, pfn, npages=1) -> int:
        """``set_memory_4k(addr, numpages)``: ``force_split`` every large mapping overlapping the
        range. No PTE changes, so no ``cpa_flush`` beyond the splits' own ``flush_tlb_all``.
        ``cpa_lock`` is taken once per 4K chunk plus once more per split. Returns 0."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        r0, r1, _, _ = region_span(pfn, npages)
        ev = self._split_span(r0, r1 + 1)
        ev["cpa_lock"] += npages
        self.ledger.record("set_memory_4k", **ev)
        return 0

    def split_regions(self, regions) -> int:
        """``set_memory_4k(vaddr, 1)`` on one page of each listed region, in order, as
        ``adjust_direct_map`` does for the first 4K RMP change under a large mapping.
        ``cpa_lock``: one per call plus one per split. Returns 0. Every index is checked
        first (``ValueError``/``TypeError`` naming ``regions``): a negative one must not wrap
        around to the last region."""
        regions = check_regions(regions, self.nr_regions)
        if len(regions):
            ev = self._split(regions[self.lvl[regions] != LVL_4K])
            ev["cpa_lock"] += len(regions)
            self.ledger.record("set_memory_4k", **ev)
        return 0

    def set_direct_map_invalid_noflush(self, pfn, npages=1) -> int:
        """``set_direct_map_invalid_noflush(page)`` -> ``__set_pages_np``: clear PRESENT|RW of one
        4K page (``npages`` > 1 = the kernel calling it page after page, as the v1
        ``invalidate_direct_map`` did). A large mapping under the page is split first (its own
        ``flush_tlb_all``); no ``cpa_flush`` for the PTE change itself: the caller must flush."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        r0, r1, _, _ = region_span(pfn, npages)
        ev = self._split_span(r0, r1 + 1)
        ev["cpa_lock"] += npages
        self._set_present(pfn, npages, False)
        self.ledger.record("set_direct_map_invalid_noflush", **ev)
        return 0

    def set_direct_map_default_noflush(self, pfn, npages=1) -> int:
        """``set_direct_map_default_noflush(page)`` -> ``__set_pages_p``: set PRESENT|RW. On a
        large mapping the protection is already that ("sameprot"): nothing is split."""
        pfn, npages = check_pfn_range(pfn, npages, self.nr_pages)
        self._set_present(pfn, npages, True)
        self.ledger.record("set_direct_map_default_noflush", cpa_lock=npages)
        return 0

    def cpa_flush(self, npages: int) -> None:
        """``cpa_flush``: a full flush above ``tlb_single_page_flush_ceiling`` pages, else one
        INVLPG per page on every CPU (``on_each_cpu``). Either way an IPI to every CPU.
        ``npages``: 1 up to the host's pages."""
        npages = check_int(npages, "npages", 1, self.nr_pages)
        if npages > self.tlb_single_page_flush_ceiling:
            self.ledger.record("cpa_flush", flush_tlb_all=1)
        else:
            self.ledger.record("cpa_flush", flush_tlb_range=1, invlpg=npages)

    def collapse(self, regions, *, gbpages: bool | None = None) -> int:
        """``cpa_collapse_large_pages`` (commit 41d88484c71c, only reached via ``set_memory_rox``
        upstream): re-merge split 2M regions whose 512 PTEs are all present with the same flags
        (the caller decides which regions qualify beyond that), then 1G where all 512 2M of a
        1G-aligned chunk are 2M. ``flush_tlb_all`` before the old tables are freed; ``pgd_lock``
        held. Returns the number of 2M collapses. Every index is checked first
        (``ValueError``/``TypeError`` naming ``regions``)."""
        regions = np.unique(check_regions(regions, self.nr_regions))
        if gbpages is not None:
            gbpages = check_bool(gbpages, "gbpages")
        regions = regions[self.lvl[regions] == LVL_4K]
        regions = regions[~self.any_not_present(regions)]
        n2 = len(regions)
        if n2:
            self.lvl[regions] = LVL_2M
            self._move(LVL_4K, LVL_2M, n2)
        n1 = 0
        if (self.gbpages if gbpages is None else gbpages) and n2:
            for c in np.unique(regions // REGIONS_PER_1G):
                sl = slice(c * REGIONS_PER_1G, (c + 1) * REGIONS_PER_1G)
                if sl.stop <= self.nr_regions and np.all(self.lvl[sl] == LVL_2M):
                    self.lvl[sl] = LVL_1G
                    self._move(LVL_2M, LVL_1G, REGIONS_PER_1G)
                    n1 += 1
        self.vmstat["direct_map_level2_collapses"] += n2
        self.vmstat["direct_map_level3_collapses"] += n1
        if n2:
            self.ledger.record("collapse", collapse_2m=n2, collapse_1g=n1, pgd_lock=n2 + n1,
                               flush_tlb_all=n2 + n1)
        return n2
