"""KVM model: memory-attribute conversions, beside a dict-per-page reference.

Prints, in one run:
1. single-page KVM_SET_MEMORY_ATTRIBUTES conversions per second on a 1 TiB SW_PROTECTED guest
   whose attributes hold 100k fragments (target >= 50,000/s);
2. a whole-range conversion of 1 TiB (target <= 1 ms);
beside a reference that stores one dict entry per page (its whole-range figure is measured
on 1 GiB: 1 TiB of dict entries does not fit this machine's memory).

Run: .venv/bin/python benchmarks/kvm_model.py
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kit.host import Host  # noqa: E402
from kit.kvm import uapi as U  # noqa: E402
from kit.kvm.vm import Kvm  # noqa: E402

TiB_PAGES = (1 << 40) >> 12
GPA0 = 1 << 32
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE


class DictPerPage:
    """The naive reference: one dict entry per private page."""

    def __init__(self):
        self.pages = {}

    def set(self, gfn, npages, value):
        if value:
            self.pages.update(dict.fromkeys(range(gfn, gfn + npages), value))
        else:
            for g in range(gfn, gfn + npages):
                self.pages.pop(g, None)


def main() -> int:
    rng = np.random.default_rng(0)
    vm = Kvm(Host(mem="2GiB", cores=8)).create_vm(U.KVM_X86_SW_PROTECTED_VM)
    ref = DictPerPage()
    frag = np.sort(rng.choice(TiB_PAGES // 2, size=100_000, replace=False)) * 2   # isolated pages
    t = time.perf_counter()
    for g in frag:
        vm.set_memory_attributes(GPA0 + (int(g) << 12), 4096, P)
    build = time.perf_counter() - t
    for g in frag:
        ref.set(int(g), 1, P)
    print(f"== 1 TiB guest, {len(vm.attributes)} attribute ranges (built in {build:.1f} s)")
    picks = rng.choice(TiB_PAGES, size=20_000)
    flips = [(int(g), P if i % 2 == 0 else 0) for i, g in enumerate(picks)]
    t = time.perf_counter()
    for g, v in flips:
        vm.set_memory_attributes(GPA0 + (g << 12), 4096, v)
    kit_rate = len(flips) / (time.perf_counter() - t)
    t = time.perf_counter()
    for g, v in flips:
        ref.set(g, 1, v)
    ref_rate = len(flips) / (time.perf_counter() - t)
    print(f"   single-page conversions: kit {kit_rate:,.0f}/s (target >= 50,000/s: "
          f"{'met' if kit_rate >= 50_000 else 'MISSED'}), dict-per-page {ref_rate:,.0f}/s")
    t = time.perf_counter()
    vm.set_memory_attributes(GPA0, TiB_PAGES << 12, P)
    whole = time.perf_counter() - t
    t = time.perf_counter()
    vm.set_memory_attributes(GPA0, TiB_PAGES << 12, 0)
    whole_back = time.perf_counter() - t
    print(f"   whole-range 1 TiB: to private {whole * 1e3:.2f} ms, back to shared {whole_back * 1e3:.2f} ms "
          f"(target <= 1 ms: {'met' if max(whole, whole_back) <= 1e-3 else 'MISSED'}); "
          f"{len(vm.attributes)} ranges after")
    small = DictPerPage()
    t = time.perf_counter()
    small.set(0, (1 << 30) >> 12, P)
    d1 = time.perf_counter() - t
    print(f"   dict-per-page whole range, measured on 1 GiB: {d1 * 1e3:.1f} ms "
          f"({d1 * 1024:.1f} s if it scaled linearly to 1 TiB; not run: memory)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
