"""Read-only views of a host's state as data (no figures), computed from the model's arrays by
ranges, never page by page over all memory. Dashboards, reports and the ``_repr_html_``
displays draw from these.

- :func:`region_states`: one state code per 2M region of host memory (RMP form and owner);
- :func:`grid`: a per-region array laid out in rows (one row per 1 GiB for the host map);
- :func:`region_detail`: the 512 4K entries of one region (RMP state, owner, direct-map present);
- :func:`summary`: counts by region state and direct-map level;
- :func:`rmp_ranges`: runs of identical RMP entries over a pfn range (:class:`RmpRanges`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..units import PAGE_4K, PAGE_SHIFT, PAGES_PER_2M
from .directmap import LVL_1G, LVL_2M, LVL_4K
from .memory import FIRMWARE, GUEST, KERNEL, LEAKED, MIXED
from .limits import RMP_RANGES_LIMIT
from .ranges import check_int, check_pfn_range
from .rmptable import F_2M, F_ASSIGNED, F_DETAIL, F_LINEAR, F_VALIDATED

# region states, in legend order (code = index)
STATES = ("free", "host kernel", "shared guest", "private 2M", "private 4K", "mixed 4K",
          "firmware", "leaked")
S_FREE, S_KERNEL, S_SHARED_GUEST, S_PRIV_2M, S_PRIV_4K, S_MIXED, S_FIRMWARE, S_LEAKED = range(len(STATES))
DM_LEVELS = ("4K", "2M", "1G")                       # direct-map level codes = LVL_*
PAGE_STATES = ("shared", "private", "private validated", "firmware")
GRID_PAD = 255                                       # fills the last row of a grid
GRID_MAX_WIDTH = 1 << 16                             # cells in one row of a display grid


def region_states(host) -> np.ndarray:
    """(nr_regions,) uint8 state code per 2M region.

    RMP form first (the region words of :class:`~kit.host.rmptable.RmpTable`: a 2M assigned
    entry, 512 uniform assigned 4K entries, a region with per-4K detail = "mixed 4K");
    assigned entries with ASID 0 are firmware pages (``rmp_make_private`` never uses ASID 0:
    arch/x86/virt/svm/sev.c). Unassigned regions by frame owner
    (``PhysicalMemory.region_owner``)."""
    table = host.rmp.table
    f = table.region_forms(slice(None))
    asid = table.region_asids(slice(None))
    own = host.memory.region_owner
    out = np.full(len(f), S_FREE, dtype=np.uint8)
    out[own == KERNEL] = S_KERNEL
    out[own == GUEST] = S_SHARED_GUEST
    out[own == MIXED] = S_KERNEL          # shared, host and guest frames side by side
    out[own == FIRMWARE] = S_FIRMWARE
    out[own == LEAKED] = S_LEAKED
    assigned = (f & F_ASSIGNED) != 0
    out[assigned & ((f & F_2M) != 0)] = S_PRIV_2M
    out[assigned & ((f & F_2M) == 0)] = S_PRIV_4K
    out[assigned & (asid == 0)] = S_FIRMWARE
    out[(f & F_DETAIL) != 0] = S_MIXED
    return out


def grid(values: np.ndarray, width: int) -> np.ndarray:
    """Lay a 1-D array out as rows of ``width`` (the last row padded with ``GRID_PAD``)."""
    width = check_int(width, "width", 1, GRID_MAX_WIDTH)
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values: expected a 1-D array, got shape {values.shape}")
    rows = -(-len(values) // width)
    out = np.full(rows * width, GRID_PAD, dtype=np.uint8)
    out[:len(values)] = values
    return out.reshape(rows, width)


def region_detail(host, region: int) -> dict:
    """The 512 4K entries of one 2M region: page state code, owner code, direct-map present,
    ASID and GPA (from :meth:`RmpTable.entries`, the model's own 4K view), plus the region's
    mapping."""
    table = host.rmp.table
    if isinstance(region, bool) or not isinstance(region, (int, np.integer)) or not 0 <= region < table.nr_regions:
        raise ValueError(f"region: expected 0..{table.nr_regions - 1}, got {region!r}")
    region = int(region)
    fl = table.region_form(region)
    if fl & F_2M:
        bits = np.full(PAGES_PER_2M, fl & (F_ASSIGNED | F_VALIDATED), dtype=np.uint8)
        asid = np.full(PAGES_PER_2M, table.region_asids(region), dtype=np.uint16)
        gfn = int(table.region_gfns(region)) + np.arange(PAGES_PER_2M, dtype=np.uint64)
    else:
        bits, asid, gfn = table.entries(region)
    state = np.zeros(PAGES_PER_2M, dtype=np.uint8)
    assigned = (bits & F_ASSIGNED) != 0
    state[assigned] = 1
    state[assigned & ((bits & F_VALIDATED) != 0)] = 2
    state[assigned & (asid == 0)] = 3
    return {"region": region, "pfn": region * PAGES_PER_2M, "state": state,
            "owner": host.memory.owners(region), "present": host.directmap.present_mask(region),
            "asid": np.asarray(asid), "gpa": np.where(assigned, gfn << np.uint64(PAGE_SHIFT), 0),
            "rmp_2m": bool(fl & F_2M),
            "dm_level": DM_LEVELS[int(host.directmap.lvl[region])]}


def summary(host) -> dict:
    """Counts by region state and direct-map level (what the map's legend shows)."""
    st = np.bincount(region_states(host), minlength=len(STATES))
    lv = np.bincount(host.directmap.lvl, minlength=len(DM_LEVELS))
    return {"regions": {s: int(n) for s, n in zip(STATES, st)},
            "directmap_regions": {DM_LEVELS[LVL_4K]: int(lv[LVL_4K]), DM_LEVELS[LVL_2M]: int(lv[LVL_2M]),
                                  DM_LEVELS[LVL_1G]: int(lv[LVL_1G])},
            **host.directmap.counts()}


@dataclass
class RmpRanges:
    """Runs of identical RMP entries over a pfn range (as ``rmpread`` would report them)."""

    pfn: int
    npages: int
    runs: list       # dicts: start, npages, assigned, pagesize, validated, asid, gpa

    def _repr_html_(self) -> str:
        from ..viz.html import rmp_ranges_html
        return rmp_ranges_html(self)

    def __repr__(self) -> str:
        return f"<RmpRanges pfn {self.pfn:#x} +{self.npages}: {len(self.runs)} runs>"


def rmp_ranges(host, pfn: int = 0, npages: int | None = None, *, limit: int = RMP_RANGES_LIMIT.default) -> RmpRanges:
    """Runs of identical entries in ``[pfn, pfn+npages)`` (default: all memory), region by
    region: uniform regions merge with their neighbours; only mixed regions are expanded.
    At most ``limit`` runs are listed (1 up to :data:`~kit.host.limits.RMP_RANGES_LIMIT`'s
    bound)."""
    pfn = check_int(pfn, "pfn", 0, host.nr_pages - 1)
    npages = host.nr_pages - pfn if npages is None else npages
    pfn, npages = check_pfn_range(pfn, npages, host.nr_pages)
    limit = RMP_RANGES_LIMIT.check(limit)
    table = host.rmp.table
    r0, r1 = pfn // PAGES_PER_2M, -(-(pfn + npages) // PAGES_PER_2M)
    runs: list[dict] = []

    def add(start, n, assigned, size, validated, asid, gpa):
        if runs:
            last = runs[-1]
            same = (last["assigned"], last["pagesize"], last["validated"], last["asid"]) == (assigned, size, validated, asid)
            contiguous_gpa = (not assigned) or last["gpa"] + last["npages"] * PAGE_4K == gpa
            if same and contiguous_gpa and last["start"] + last["npages"] == start:
                last["npages"] += n
                return
        runs.append({"start": start, "npages": n, "assigned": assigned, "pagesize": size,
                     "validated": validated, "asid": asid, "gpa": gpa if assigned else 0})

    flags, asids = table.region_forms(slice(r0, r1)), table.region_asids(slice(r0, r1))
    gfn = table.region_gfns(slice(r0, r1)).astype(np.int64)
    # a new stretch starts where the region-level entry changes, at every region with 4K
    # detail, and where assigned regions' GPAs stop being contiguous
    key = flags.astype(np.int64) << 16 | asids
    brk = np.ones(r1 - r0, dtype=bool)
    brk[1:] = (key[1:] != key[:-1]) | ((flags[1:] & F_DETAIL) != 0) | ((flags[:-1] & F_DETAIL) != 0) \
        | (((flags[1:] & F_ASSIGNED) != 0) & (gfn[1:] != gfn[:-1] + PAGES_PER_2M))
    starts = np.flatnonzero(brk)
    ends = np.concatenate([starts[1:], [r1 - r0]])
    for s, e in zip(starts, ends):
        if len(runs) >= limit:
            break
        f, r = int(flags[s]), r0 + int(s)
        lo = max(pfn, r * PAGES_PER_2M)
        hi = min(pfn + npages, (r0 + int(e)) * PAGES_PER_2M)
        size = "2M" if f & F_2M else "4K"
        if not f & F_DETAIL and (f & F_2M or not f & F_ASSIGNED or f & F_LINEAR):
            g = (int(gfn[s]) + lo - r * PAGES_PER_2M) << PAGE_SHIFT
            add(lo, hi - lo, bool(f & F_ASSIGNED), size, bool(f & F_VALIDATED), int(asids[s]), g)
            continue
        d = region_detail(host, r)
        a, b = lo - r * PAGES_PER_2M, hi - r * PAGES_PER_2M
        st, asid, gpa = d["state"][a:b], d["asid"][a:b], d["gpa"][a:b].astype(np.int64)
        cut = np.flatnonzero((np.diff(st) != 0) | (np.diff(asid) != 0)
                             | ((np.diff(gpa) != PAGE_4K) & (st[1:] > 0))) + 1
        for x, y in zip(np.concatenate([[0], cut]), np.concatenate([cut, [b - a]])):
            add(lo + int(x), int(y - x), bool(st[x] > 0), size, bool(st[x] == 2), int(asid[x]), int(gpa[x]))
    return RmpRanges(pfn, npages, runs[:limit])
