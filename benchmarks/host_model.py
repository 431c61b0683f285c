"""Host model: state size and speed, side by side with the dense per-4K reference.

Prints, in one run:
1. state bytes of a 1.5 TiB host at boot, with 1 TiB private in 2M pages, and in the worst case
   (every 2M region smashed into 4K entries that differ, and every region's direct map split
   with not-present pages), against the dense reference (its bytes per 4K page measured on a
   small host, times the pages of 1.5 TiB: it is linear by construction) and the hardware RMP;
2. time to make 1 TiB private in 2M and in 4K pages on the 1.5 TiB host (targets 0.5 s, 10 s);
3. the same conversion, kit vs dense reference, measured side by side on the same small host,
   as a ratio (target >= 20x).

Run: .venv/bin/python benchmarks/host_model.py [--small 4GiB] [--skip-worst]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kit.host import Host  # noqa: E402
from kit.units import GiB, PAGE_2M, PAGE_4K, PAGES_PER_2M, TiB, parse_size  # noqa: E402
from tests.reference.dense import DenseHost  # noqa: E402

R = PAGES_PER_2M
MiB_ = 2**20


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def dense_bytes(d: DenseHost) -> int:
    return sum(v.nbytes for v in vars(d).values() if isinstance(v, np.ndarray))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem", default="1.5TiB")
    ap.add_argument("--small", default="4GiB", help="host size for the side-by-side runs")
    ap.add_argument("--skip-worst", action="store_true", help="skip the slow worst-case state build")
    a = ap.parse_args(argv)
    mem, small = parse_size(a.mem, name="mem"), parse_size(a.small, name="small")
    pages = mem // PAGE_4K

    print(f"== state bytes, {a.mem} host ({pages} 4K pages)")
    h = Host(mem=mem, cores=512)
    boot = h.nbytes
    assert h.rmp_make_private(0, 0, PAGE_2M, 1, False, npages=TiB // PAGE_4K) == 0
    two_m = h.nbytes
    d = DenseHost(small)
    per_page_dense = dense_bytes(d) / d.nr_pages
    rows = [("boot", boot), ("1 TiB private in 2M pages", two_m)]
    if not a.skip_worst:
        h = Host(mem=mem, cores=512, directmap_policy="invalidate-4k")
        t, _ = timed(lambda: h.rmp_make_private(0, 0, PAGE_4K, 1, False, npages=pages))
        t2 = time.perf_counter()
        for r in range(pages // R):          # one differing 4K entry per 2M region
            h.rmp.rmpupdate(r * R + 1, assigned=True, pagesize=PAGE_4K, asid=2, gpa=0x1000)
        t2 = time.perf_counter() - t2
        print(f"   (worst case built in {t + t2:.1f} s; RMP detail regions {h.rmp.detail_regions}, "
              f"direct-map regions split {h.directmap.counts()['DirectMap4k'] // 2048})")
        rows.append(("worst case: every 2M region smashed and split", h.nbytes))
    print(f"   {'case':48s} {'kit':>12s} {'B/4K':>7s} {'dense ref':>12s} {'B/4K':>7s} {'ratio':>7s}")
    for name, b in rows:
        dref = per_page_dense * pages
        print(f"   {name:48s} {b / MiB_:10.2f}Mi {b / pages:7.3f} {dref / MiB_:10.0f}Mi "
              f"{per_page_dense:7.2f} {dref / b:6.0f}x")
    print(f"   hardware RMP: {16 * pages / MiB_:.0f} MiB (16 B per 4K page); dense reference bytes/4K "
          f"measured on a {a.small} host and scaled by page count")
    print(f"   targets: 2M case <= 16 MiB -> {'met' if two_m <= 16 * MiB_ else 'MISSED'}; worst case "
          f"<= 8 B/4K -> {'met' if a.skip_worst or rows[-1][1] / pages <= 8 else 'MISSED'}")

    print(f"\n== time to make 1 TiB private, {a.mem} host (split-on-demand)")
    for level, target in ((PAGE_2M, 0.5), (PAGE_4K, 10.0)):
        h = Host(mem=mem, cores=512)
        t, rc = timed(lambda: h.rmp_make_private(0, 0, level, 1, False, npages=TiB // PAGE_4K))
        assert rc == 0
        print(f"   {('2M' if level == PAGE_2M else '4K')} pages: {t:.3f} s (target <= {target} s: "
              f"{'met' if t <= target else 'MISSED'}); DirectMap4k {h.directmap.counts()['DirectMap4k']} kB")

    print(f"\n== side by side on a {a.small} host: make {small // 4 // GiB} GiB private (one ranged call)")
    n = small // 4 // PAGE_4K
    for level in (PAGE_2M, PAGE_4K):
        k = Host(mem=small, cores=512)
        tk, rc1 = timed(lambda: k.rmp_make_private(0, 0, level, 1, False, npages=n))
        d = DenseHost(small)
        td, rc2 = timed(lambda: d.rmp_make_private(0, 0, level, 1, False, npages=n))
        assert rc1 == rc2 == 0
        same = all(k.rmp.rmpread(p).gpa == d.rmpread(p)["gpa"] for p in (0, 1, n // 2, n - 1))
        print(f"   {('2M' if level == PAGE_2M else '4K')}: kit {tk * 1e3:9.2f} ms, dense {td * 1e3:9.1f} ms, "
              f"ratio {td / tk:7.0f}x (target >= 20x: {'met' if td / tk >= 20 else 'MISSED'}); "
              f"same entries: {same}")
    calls = min(2048, small // PAGE_2M)
    print(f"   per-entry calls (one rmp_make_private per 2M page, {calls} pages):")
    k = Host(mem=small, cores=512)
    d = DenseHost(small)
    tk, rk = timed(lambda: [k.rmp_make_private(i * R, i * PAGE_2M, PAGE_2M, 1, False) for i in range(calls)])
    td, rd = timed(lambda: [d.rmp_make_private(i * R, i * PAGE_2M, PAGE_2M, 1, False) for i in range(calls)])
    assert set(rk) == set(rd) == {0}
    print(f"   kit {tk / calls * 1e6:.1f} us/call, dense {td / calls * 1e6:.1f} us/call, ratio {td / tk:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
