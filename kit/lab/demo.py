"""The host-model demonstration behind ``kit host-demo`` (no timing).

One host, every direct-map policy, the same seeded workload: an SNP guest whose memory is
backed by 2M folios and made private at 2M (``sev_gmem_prepare`` picks 2M when it can), a
second guest backed by 4K folios interleaved with host kernel pages, a few 4K conversions back
to shared inside 2M private pages (``sev_gmem_invalidate``: PSMASH, then a 4K
``rmp_make_shared``), and host kernel writes to every kernel page. Reported per policy: the
DirectMap lines of /proc/meminfo (while both guests run, and DirectMap4k after the first
exits), splits, global TLB flushes, ``cpa_lock`` acquisitions, RMP
instructions, whether any host write took an RMP fault, model state size and wall time.
"""
from __future__ import annotations

import time
from html import escape

import numpy as np

from ..errors import HostOops
from ..host import DIRECTMAP_POLICIES, Host
from ..units import GiB, MiB, PAGE_2M, PAGE_4K, PAGES_PER_2M, parse_size

R = PAGES_PER_2M
#: the defaults of `kit host-demo`: the host (memory, cores) and its SNP guest on 2M folios
HOST_MEM, HOST_CORES, GUEST_MEM = "1.5TiB", 512, "160GiB"
#: the second guest (4K folios) and the host kernel pages the demonstration adds to its guest
SMALL_GUEST_MEM, KERNEL_MEM = "2GiB", "128MiB"
EXTRA_MEMORY = parse_size(SMALL_GUEST_MEM) + parse_size(KERNEL_MEM)


def _runs(pfns: np.ndarray):
    """Split sorted pfns into runs of consecutive frames: (start, length) pairs."""
    if not len(pfns):
        return []
    cut = np.flatnonzero(np.diff(pfns) != 1) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(pfns)]])
    return [(int(pfns[s]), int(e - s)) for s, e in zip(starts, ends)]


def _private_runs(h: Host, pfns: np.ndarray, level: int, asid: int) -> None:
    """Make ``pfns`` private in GPA order (GPA 0 up), one helper call per run of frames."""
    step = R if level == PAGE_2M else 1
    gpa = 0
    for start, n in _runs(pfns // step):
        assert h.rmp_make_private(start * step, gpa, level, asid, False, npages=n * step) == 0
        gpa += n * step * PAGE_4K


def _shared_runs(h: Host, pfns: np.ndarray, level: int) -> None:
    step = R if level == PAGE_2M else 1
    for start, n in _runs(pfns // step):
        assert h.rmp_make_shared(start * step, level, npages=n * step) == 0


def run_policy(policy: str, *, mem=HOST_MEM, cores=HOST_CORES, guest_mem=GUEST_MEM, small_guest_mem=SMALL_GUEST_MEM,
               kernel_mem=KERNEL_MEM, convert_fraction=0.01, seed=0) -> dict:
    """Run the demonstration workload on one policy; returns one row of figures."""
    t0 = time.perf_counter()
    h = Host(mem=mem, cores=cores, directmap_policy=policy, seed=seed, placement="random")
    guest = parse_size(guest_mem, name="guest_mem")
    small = parse_size(small_guest_mem, name="small_guest_mem")
    kern = parse_size(kernel_mem, name="kernel_mem")
    # guest 1: 2M folios, private at 2M (sev_gmem_prepare -> is_large_rmp_possible)
    folios = np.sort(h.memory.alloc(9, "guest", guest // PAGE_2M))
    _private_runs(h, folios, PAGE_2M, 1)
    # guest 2 (4K folios, no huge pages) and the host kernel allocate side by side, so their
    # 4K pages share 2M regions, as they do from one buddy allocator
    kernel, small_pages = [], []
    chunk_k, chunk_g = 16, 240
    for _ in range(small // PAGE_4K // chunk_g):
        small_pages.append(h.memory.alloc(0, "guest", chunk_g))
        if len(kernel) * chunk_k < kern // PAGE_4K:
            kernel.append(h.memory.alloc(0, "kernel", chunk_k))
    small_pages = np.sort(np.concatenate(small_pages))
    kernel = np.sort(np.concatenate(kernel))
    _private_runs(h, small_pages, PAGE_4K, 2)
    # guest 1 converts one 4K page of some 2M pages back to shared (a hole punch:
    # sev_gmem_invalidate -> PSMASH, then a 4K rmp_make_shared)
    rng = np.random.default_rng(seed)
    pick = np.sort(folios[rng.choice(len(folios), size=max(1, int(len(folios) * convert_fraction)), replace=False)])
    for f in pick:
        assert h.rmp.psmash(int(f)) == 0
        assert h.rmp_make_shared(int(f) + 7, PAGE_4K) == 0
    # the host kernel writes its own pages through the direct map
    fault = None
    try:
        for start, n in _runs(kernel):
            h.write(start, n)
    except HostOops as e:
        fault = e
    running = h.directmap.counts()
    # guest 1 exits: guest_memfd gives its memory back (sev_gmem_invalidate: 2M where the
    # entry is 2M, else 4K)
    smashed = np.zeros(len(folios), dtype=bool)
    smashed[np.searchsorted(folios, pick)] = True
    _shared_runs(h, folios[~smashed], PAGE_2M)
    four_k = (folios[smashed][:, None] + np.arange(R)[None, :]).ravel()
    four_k = four_k[(four_k % R) != 7]
    _shared_runs(h, four_k, PAGE_4K)
    t = h.ledger.totals
    return {"policy": policy, "DirectMap4k": running["DirectMap4k"],
            "DirectMap4k_after_exit": h.directmap.counts()["DirectMap4k"],
            "DirectMap2M": running["DirectMap2M"], "DirectMap1G": running.get("DirectMap1G", 0),
            "splits": int(t["split_1g"] + t["split_2m"]), "collapses": int(t["collapse_2m"] + t["collapse_1g"]),
            "flush_tlb_all": int(t["flush_tlb_all"]), "cpa_lock": int(t["cpa_lock"]),
            "rmpupdate": int(t["rmpupdate"]), "psmash": int(t["psmash"]),
            "host_write": "ok" if fault is None else
            f"RMP #PF at pfn {fault.pfn:#x} via {'1G' if fault.level == GiB else '2M' if fault.level == PAGE_2M else '4K'} map",
            "state_mib": round(h.nbytes / MiB, 1), "wall_s": round(time.perf_counter() - t0, 2)}


def run_all(**kw) -> list[dict]:
    return [run_policy(p, **kw) for p in DIRECTMAP_POLICIES]


def html_report(rows: list[dict], cols: list[str], params: dict) -> str:
    """The demonstration's table and its provenance as a small script-free HTML page."""
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    prov = "".join(f"<li>{escape(k)}: {escape(str(v))}</li>" for k, v in params.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kit demo</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>"
            f"</head><body><h1>Direct-map policies on one SNP host</h1>"
            f"<table><tr>{head}</tr>{body}</table><h2>Provenance</h2><ul>{prov}</ul></body></html>")
