"""The RMP's packed storage: what the entries hold, not what the instructions do with them.

The kernel keeps the two apart in arch/x86/virt/svm/sev.c: ``struct rmpentry_raw`` is the
entry as it sits in the table (``__get_rmpentry`` finds it by pfn, ``dump_rmpentry`` prints it
raw), ``struct rmpentry`` is the decoded view RMPREAD returns (``get_rmpentry`` maps one onto
the other). Here :class:`RmpTable` is the table and :mod:`kit.host.rmp` the instructions
(RMPUPDATE, PSMASH, PVALIDATE, RMPADJUST, RMPREAD), which read and write entries only through
this module's methods. Nothing here checks a rule, returns a hardware code or records a cost.

Fields per 4K entry (the ``rmpentry_raw`` bits the model needs): assigned, page size,
immutable, validated, VMSA, ASID (10 bits), GPA (39-bit GFN), VMPL1-3 permission masks.

Representation, two-level like the hardware's 2M entries (docs/host-model.md, "RMP entries"):
per 2M region one *region word* (``flags``, ``asid``, GFN) that is either

- a 2M entry (``F_2M``): the 2M-aligned entry, governing all 512 pfns;
- 512 identical 4K entries (GFNs equal, or consecutive when ``F_LINEAR``);
- or a pointer (``F_DETAIL``) to a detail slot holding the region's 512 4K entries packed in 7
  bytes each (GFN 40 bits, then ASID 10 bits and the four entry bits in a 16-bit word).

VMPL1-3 masks, which only RMPADJUST sets, are kept sparsely by the entry's first pfn.
"""
from __future__ import annotations

import numpy as np

from ..units import PAGES_PER_2M
from .ranges import LazyIndex, SlotPool, check_nr_pages, region_span

# field widths of ``struct rmpentry_raw`` (arch/x86/virt/svm/sev.c)
MAX_ASID = (1 << 10) - 1   # ASID field is bits 51-60
MAX_GFN = (1 << 39) - 1    # GPA field is bits 12-50

# --- region-word flags: the four entry bits, then the form of the region
F_ASSIGNED, F_2M, F_IMMUTABLE, F_VALIDATED, F_VMSA, F_LINEAR, F_DETAIL = 1, 2, 4, 8, 16, 32, 64
_ENTRY_BITS = F_ASSIGNED | F_IMMUTABLE | F_VALIDATED | F_VMSA
# --- detail meta (uint16): ASID in bits 0-9, then the four entry bits
M_ASID = MAX_ASID
_META_SHIFT = M_ASID.bit_length()
_META_OF = {F_ASSIGNED: 1 << _META_SHIFT, F_IMMUTABLE: 1 << (_META_SHIFT + 1),
            F_VALIDATED: 1 << (_META_SHIFT + 2), F_VMSA: 1 << (_META_SHIFT + 3)}
_GFN_LO_MASK = 0xFFFFFFFF
_GFN_HI_SHIFT = 32
_NO_PERMS = (0, 0, 0)


def _flags_to_meta(flags: np.ndarray) -> np.ndarray:
    f = flags.astype(np.uint16)
    s = _META_SHIFT - 1        # F_IMMUTABLE, F_VALIDATED, F_VMSA sit one place above their meta bit
    return (((f & F_ASSIGNED) << _META_SHIFT) | ((f & F_IMMUTABLE) << s) | ((f & F_VALIDATED) << s)
            | ((f & F_VMSA) << s)).astype(np.uint16)


_META_WORDS: dict = {}


def _meta_word(bits: int) -> int:
    """The meta word of one entry's bits (:func:`_flags_to_meta` of one value), looked up once."""
    w = _META_WORDS.get(bits)
    if w is None:
        w = _META_WORDS[bits] = int(_flags_to_meta(np.uint8(bits)))
    return w


def _meta_to_flags(meta: np.ndarray) -> np.ndarray:
    m = meta.astype(np.uint16)
    s = _META_SHIFT - 1
    return (((m >> _META_SHIFT) & F_ASSIGNED) | ((m >> s) & F_IMMUTABLE) | ((m >> s) & F_VALIDATED)
            | ((m >> s) & F_VMSA)).astype(np.uint8)


class RmpTable:
    """The raw entries of one host's RMP (16 bytes per 4K in hardware, far less here).

    Read the region words with :meth:`region_form`/:meth:`region_forms`,
    :meth:`region_asids`, :meth:`region_gfns`; one entry with :meth:`entry`; a region's 4K
    entries with :meth:`entries`/:meth:`page_bits`. Write whole regions
    (:meth:`set_regions`), ranges of entries (:meth:`set_range`), entry bits
    (:meth:`update_bits`, :meth:`update_region_bits`) and VMPL masks (:meth:`set_perms`).
    :meth:`smash` turns a 2M entry into 512 4K entries. ``flags`` and ``asid`` (the region
    words) may be read as arrays; they are written only through the methods.
    """

    def __init__(self, nr_pages: int):
        nr_pages = check_nr_pages(nr_pages)
        self.nr_pages = nr_pages
        self.nr_regions = n = nr_pages // PAGES_PER_2M
        self.flags = np.zeros(n, dtype=np.uint8)
        self.asid = np.zeros(n, dtype=np.uint16)
        self._gfn_lo = np.zeros(n, dtype=np.uint32)   # GFN (39 bits) in 5 bytes
        self._gfn_hi = np.zeros(n, dtype=np.uint8)
        self._didx = LazyIndex(n)
        self._pool = SlotPool(n, {"gfn_lo": (np.uint32, (PAGES_PER_2M,)),
                                  "gfn_hi": (np.uint8, (PAGES_PER_2M,)),
                                  "meta": (np.uint16, (PAGES_PER_2M,))})
        self._perms: dict[int, tuple] = {}   # entry's first pfn -> (vmpl1, vmpl2, vmpl3)

    # ================================================================ size
    @property
    def nbytes(self) -> int:
        """Bytes of storage: region words, the detail index and slots, the VMPL masks."""
        return (self.flags.nbytes + self.asid.nbytes + self._gfn_lo.nbytes + self._gfn_hi.nbytes
                + self._didx.nbytes + self._pool.nbytes + 64 * len(self._perms))

    @property
    def detail_regions(self) -> int:
        """Regions whose 4K entries are held one by one (a detail slot each)."""
        return self._pool.in_use

    # ================================================================ region words
    def region_form(self, region: int) -> int:
        """The flags of one region word (entry bits plus ``F_2M``/``F_LINEAR``/``F_DETAIL``)."""
        return int(self.flags[region])

    def region_forms(self, regions) -> np.ndarray:
        """The flags of the region words ``regions`` (an index array or a slice)."""
        return self.flags[regions]

    def region_asids(self, regions):
        """The ASIDs of the region words (0 for regions held entry by entry)."""
        return self.asid[regions]

    def region_gfns(self, regions):
        """The GFNs of the region words, as uint64 (the first entry's for ``F_LINEAR``)."""
        return self._gfn_lo[regions].astype(np.uint64) | (self._gfn_hi[regions].astype(np.uint64)
                                                          << np.uint64(_GFN_HI_SHIFT))

    def _set_gfn(self, regions, gfn) -> None:
        if isinstance(gfn, (int, np.integer)):
            self._gfn_lo[regions] = int(gfn) & _GFN_LO_MASK
            self._gfn_hi[regions] = int(gfn) >> _GFN_HI_SHIFT
            return
        gfn = np.asarray(gfn, dtype=np.uint64)
        self._gfn_lo[regions] = (gfn & np.uint64(_GFN_LO_MASK)).astype(np.uint32)
        self._gfn_hi[regions] = (gfn >> np.uint64(_GFN_HI_SHIFT)).astype(np.uint8)

    # ================================================================ reading entries
    def entry(self, pfn: int) -> tuple:
        """``(entry_bits, asid, gfn, is_2m)`` of the entry governing ``pfn``: the 2M entry of
        its region if there is one (``__snp_lookup_rmpentry`` reads the level from the
        2M-aligned entry), else its own 4K entry."""
        r, off = divmod(pfn, PAGES_PER_2M)
        f = int(self.flags[r])
        if f & F_2M:
            return f & _ENTRY_BITS, int(self.asid[r]), int(self.region_gfns(r)), True
        if f & F_DETAIL:
            s = self._didx[r]
            meta = int(self._pool.meta[s, off])
            gfn = int(self._pool.gfn_lo[s, off]) | (int(self._pool.gfn_hi[s, off]) << _GFN_HI_SHIFT)
            return int(_meta_to_flags(np.uint16(meta))), meta & M_ASID, gfn, False
        gfn = int(self.region_gfns(r)) + (off if f & F_LINEAR else 0)
        return f & _ENTRY_BITS, int(self.asid[r]), gfn, False

    def entries(self, region: int):
        """``(flags, asid, gfn)``, 512 each (uint8 entry bits, uint16, uint64), of a region's
        4K entries; for a 2M entry, its own fields repeated (the GFN not advanced)."""
        f = int(self.flags[region])
        if f & F_DETAIL:
            s = self._didx[region]
            meta = self._pool.meta[s]
            gfn = self._pool.gfn_lo[s].astype(np.uint64) | (self._pool.gfn_hi[s].astype(np.uint64)
                                                            << _GFN_HI_SHIFT)
            return _meta_to_flags(meta), (meta & M_ASID).astype(np.uint16), gfn
        flags = np.full(PAGES_PER_2M, f & _ENTRY_BITS, dtype=np.uint8)
        asid = np.full(PAGES_PER_2M, self.asid[region], dtype=np.uint16)
        gfn = np.full(PAGES_PER_2M, self.region_gfns(region), dtype=np.uint64)
        if f & F_LINEAR:
            gfn += np.arange(PAGES_PER_2M, dtype=np.uint64)
        return flags, asid, gfn

    def page_bits(self, region: int, lo: int = 0, hi: int = PAGES_PER_2M) -> np.ndarray:
        """The entry bits (uint8) of the 4K pages ``[lo, hi)`` of a region (a 2M entry's own
        bits for each of its pages)."""
        f = int(self.flags[region])
        if f & F_DETAIL:
            return _meta_to_flags(self._pool.meta[self._didx[region], lo:hi])
        return np.full(hi - lo, f & _ENTRY_BITS, dtype=np.uint8)

    def first_page_with(self, region: int, lo: int, hi: int, bit: int) -> int:
        """Offset in the region of the first 4K page in ``[lo, hi)`` whose entry has ``bit``
        (one of the four entry bits), or -1."""
        f = int(self.flags[region])
        if not f & F_DETAIL:
            return lo if f & bit else -1
        m = self._pool.meta[self._didx[region], lo:hi] & _META_OF[bit]
        return lo + int(np.argmax(m != 0)) if m.any() else -1

    def regions_any(self, regions, bit: int) -> np.ndarray:
        """Per region of ``regions``: does any of its 4K pages have ``bit`` (an entry bit)?"""
        regions = np.asarray(regions)
        f = self.flags[regions]
        out = (f & bit) != 0
        det = np.flatnonzero(f & F_DETAIL)
        if len(det):
            slots = self._didx[regions[det]]
            out[det] = np.any(self._pool.meta[slots] & _META_OF[bit], axis=1)
        return out

    def range_any(self, pfn: int, npages: int, bit: int) -> np.ndarray:
        """Per region r0..r1 of ``[pfn, pfn+npages)``: does any page of the range in it have
        ``bit`` (an entry bit)? Only regions held entry by entry are looked at page by page."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        f = self.flags[r0:r1 + 1]
        out = (f & bit) != 0
        for i in np.flatnonzero(f & F_DETAIL):
            r = r0 + int(i)
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            out[i] = bool(np.any(self._pool.meta[self._didx[r], lo:hi] & _META_OF[bit]))
        return out

    # ================================================================ VMPL masks
    def perms(self, pfn: int) -> tuple:
        """The VMPL1-3 masks of the entry starting at ``pfn`` ((0, 0, 0) when none is set)."""
        return self._perms.get(pfn, _NO_PERMS)

    def set_perms(self, pfn: int, masks) -> None:
        """Store the VMPL1-3 masks of the entry starting at ``pfn`` (all zero: forgotten)."""
        masks = tuple(int(m) for m in masks)
        if any(masks):
            self._perms[pfn] = masks
        else:
            self._perms.pop(pfn, None)

    def drop_perms(self, pfn: int, npages: int) -> None:
        """Forget the VMPL1-3 masks of every entry starting in ``[pfn, pfn+npages)``."""
        if self._perms:
            for k in [k for k in self._perms if pfn <= k < pfn + npages]:
                del self._perms[k]

    # ================================================================ writing
    def set_regions(self, regions, entry_bits: int, asid: int, gfn, *, linear: bool,
                    size2m: bool = False) -> None:
        """Regions (an index array or a slice) become one word each: a 2M entry
        (``size2m``), or 512 4K entries with the same GFN or, ``linear``, consecutive GFNs
        from ``gfn`` (an int, or one per region). Their detail slots are freed."""
        fl = self.flags[regions]
        if np.any(fl & F_DETAIL):
            idx = np.arange(*regions.indices(self.nr_regions)) if isinstance(regions, slice) else np.asarray(regions)
            det = idx[(fl & F_DETAIL) != 0]
            self._pool.release(self._didx[det])
            self._didx[det] = -1
        self.flags[regions] = entry_bits | (F_2M if size2m else 0) | (F_LINEAR if linear and not size2m else 0)
        self.asid[regions] = asid
        self._set_gfn(regions, gfn)

    def set_entries(self, region: int, flags, asid, gfn) -> None:
        """Store 512 4K entries (entry bits, ASIDs, GFNs) into ``region``, as one region word
        when they are uniform (or uniform with consecutive GFNs), else in a detail slot."""
        uniform = np.all(flags == flags[0]) and np.all(asid == asid[0])
        if uniform and np.all(gfn == gfn[0]):
            self.set_regions(slice(region, region + 1), int(flags[0]), int(asid[0]), int(gfn[0]),
                             linear=False)
            return
        if uniform and np.all(gfn == gfn[0] + np.arange(PAGES_PER_2M, dtype=np.uint64)):
            self.set_regions(slice(region, region + 1), int(flags[0]), int(asid[0]), int(gfn[0]),
                             linear=True)
            return
        if not self.flags[region] & F_DETAIL:
            self._didx[region] = self._pool.alloc(1)[0]
        s = self._didx[region]
        self._pool.meta[s] = _flags_to_meta(flags) | asid
        self._pool.gfn_lo[s] = (gfn & _GFN_LO_MASK).astype(np.uint32)
        self._pool.gfn_hi[s] = (gfn >> _GFN_HI_SHIFT).astype(np.uint8)
        self.flags[region] = F_DETAIL
        self.asid[region] = 0
        self._set_gfn(region, 0)

    def set_range(self, pfn: int, npages: int, entry_bits: int, asid: int, gfn: int, *,
                  linear: bool, size2m: bool) -> None:
        """Entries of ``[pfn, pfn+npages)`` := ``entry_bits``, ``asid`` and ``gfn`` (advancing
        page by page when ``linear``); ``size2m``: as 2M entries (whole regions only). Whole
        regions become one word each; a partial region is written entry by entry (a 2M entry
        there is first smashed into its 4K entries)."""
        r0, r1, off0, off1 = region_span(pfn, npages)
        full_lo = r0 if off0 == 0 else r0 + 1
        full_hi = r1 if off1 == PAGES_PER_2M else r1 - 1
        if full_hi >= full_lo:
            regions = slice(full_lo, full_hi + 1)
            if linear and full_hi > full_lo:
                gfns = np.uint64(gfn + full_lo * PAGES_PER_2M - pfn) + \
                    np.arange(full_hi - full_lo + 1, dtype=np.uint64) * np.uint64(PAGES_PER_2M)
            else:
                gfns = gfn + (full_lo * PAGES_PER_2M - pfn if linear else 0)
            self.set_regions(regions, entry_bits, asid, gfns, linear=linear, size2m=size2m)
        for r in {r0, r1}:
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            if lo == 0 and hi == PAGES_PER_2M:
                continue
            first = gfn + (r * PAGES_PER_2M + lo - pfn if linear else 0)
            self._write_4k(r, lo, hi, entry_bits, asid, first, linear=linear)

    def _write_4k(self, r, lo, hi, bits, asid, gfn_first, *, linear) -> None:
        """4K entries [lo, hi) of region r := bits/asid/gfn."""
        if self.flags[r] & F_DETAIL:
            # already held entry by entry: write the slice in place; the whole-region path
            # below only when the region may have become uniform (compressed again)
            s = self._didx[r]
            meta = self._pool.meta[s]
            word = _meta_word(bits) | asid
            if hi - lo == 1:                    # one entry (a VMSA, a 4K page): plain ints
                meta[lo] = word
                self._pool.gfn_lo[s, lo] = gfn_first & _GFN_LO_MASK
                self._pool.gfn_hi[s, lo] = gfn_first >> _GFN_HI_SHIFT
            else:
                meta[lo:hi] = word
                g = np.uint64(gfn_first) + (np.arange(hi - lo, dtype=np.uint64) if linear else np.uint64(0))
                self._pool.gfn_lo[s, lo:hi] = (g & np.uint64(_GFN_LO_MASK)).astype(np.uint32)
                self._pool.gfn_hi[s, lo:hi] = (g >> np.uint64(_GFN_HI_SHIFT)).astype(np.uint8)
            if meta[0] == meta[-1] and np.all(meta == meta[0]):
                self.set_entries(r, *self.entries(r))
            return
        if self.flags[r] & F_2M:
            self.smash(r)
        flags, asids, gfn = self.entries(r)
        flags[lo:hi] = bits
        asids[lo:hi] = asid
        gfn[lo:hi] = np.uint64(gfn_first) + (np.arange(hi - lo, dtype=np.uint64) if linear else np.uint64(0))
        self.set_entries(r, flags, asids, gfn)

    def update_bits(self, pfn: int, npages: int, *, set_bits: int = 0, clear_bits: int = 0) -> None:
        """Set and clear entry bits of the 4K entries ``[pfn, pfn+npages)`` (regions held as
        2M entries are not 4K entries: the caller smashes them first)."""
        keep = np.uint8(~clear_bits & 0xFF)
        r0, r1, off0, off1 = region_span(pfn, npages)
        one_by_one = sorted({r0, r1})
        lo_w, hi_w = r0 + 1, r1                      # regions strictly inside: whole
        if hi_w > lo_w:
            f = self.flags[lo_w:hi_w]
            word = (f & (F_DETAIL | F_2M)) == 0      # 512 uniform 4K entries: the word's bits
            f[word] = (f[word] & keep) | np.uint8(set_bits)
            one_by_one += (lo_w + np.flatnonzero(~word)).tolist()
        for r in one_by_one:
            lo = off0 if r == r0 else 0
            hi = off1 if r == r1 else PAGES_PER_2M
            flags, asids, gfn = self.entries(r)
            flags[lo:hi] = (flags[lo:hi] & keep) | np.uint8(set_bits)
            self.set_entries(r, flags, asids, gfn)

    def update_region_bits(self, regions, *, set_bits: int = 0, clear_bits: int = 0) -> None:
        """Set and clear entry bits of whole region words (2M entries, or uniform 4K ones):
        ``regions`` is one region or an index array."""
        if isinstance(regions, int):
            self.flags[regions] = (int(self.flags[regions]) & ~clear_bits & 0xFF) | set_bits
            return
        self.flags[regions] = (self.flags[regions] & np.uint8(~clear_bits & 0xFF)) | np.uint8(set_bits)

    def smash(self, region: int) -> None:
        """The region's 2M entry becomes 512 4K entries with consecutive GFNs from its own, all
        other fields and the VMPL masks copied (the storage side of PSMASH)."""
        f = int(self.flags[region])
        self.flags[region] = (f & ~F_2M & 0xFF) | F_LINEAR
        key = region * PAGES_PER_2M
        if key in self._perms:
            p = self._perms.pop(key)
            for i in range(PAGES_PER_2M):
                self._perms[key + i] = p
