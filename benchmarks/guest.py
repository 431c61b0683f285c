"""The guest: lazy acceptance on the fast path beside the same calls one by one, and GHCB
conversions per second.

Prints, in one run:
1. accepting 1 GiB in 4 MiB ``accept_memory`` calls (what the lazy-accept workload does per
   GiB): ``Guest.accept(..., step=4 MiB)`` on the fast path, and the same calls one by one
   through ``vmgexit_psc`` and PVALIDATE (a ``Linux`` subclass, which the fast path does not
   take), with the ratio and a check that both end in the same state and cost events;
2. 4K conversions private -> shared -> private over the GHCB protocol, per second.

Run: .venv/bin/python benchmarks/guest.py
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kit.guest import Guest, Linux  # noqa: E402
from kit.host import Host  # noqa: E402
from kit.kvm import snp  # noqa: E402
from kit.kvm import uapi as U  # noqa: E402
from kit.kvm.vm import Kvm  # noqa: E402
from kit.kvm.vmm import Vmm  # noqa: E402
from kit.units import GiB, MiB, PAGE_4K  # noqa: E402

RAM_GPA = 4 * GiB
CHUNK = 4 * MiB


class CallByCall(Linux):
    """Linux, one ``accept_memory`` call at a time."""


def guest(behaviour=None, mem=2 * GiB):
    kvm = Kvm(Host(mem="8GiB", cores=8), gmem_hugepages=True)
    vm = kvm.create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    f = vm.create_guest_memfd(mem)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, RAM_GPA, mem, 1 << 44, 0, f)
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vm.create_vcpu(0)
    snp.snp_launch_finish(vm)
    return Guest(vm, behaviour=behaviour, vmm=Vmm(vm, fallocate=False))


def accept_1g(behaviour):
    g = guest(behaviour)
    t0 = time.perf_counter()
    g.accept(RAM_GPA, 1 * GiB, step=CHUNK)
    return time.perf_counter() - t0, g


def main() -> None:
    fast_s, fast = accept_1g(None)
    slow_s, slow = accept_1g(CallByCall())
    same = (fast.vm.kvm.host.ledger.summary() == slow.vm.kvm.host.ledger.summary()
            and (fast.unaccepted == slow.unaccepted).all())
    print(f"accept 1 GiB in {1 * GiB // CHUNK} accept_memory calls of 4 MiB")
    print(f"  fast path     {fast_s * 1e3:8.1f} ms")
    print(f"  call by call  {slow_s * 1e3:8.1f} ms   (fast path {slow_s / fast_s:.0f}x faster; "
          f"same state and cost events: {same})")
    g = guest()
    g.accept(RAM_GPA, 64 * MiB)
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        gpa = RAM_GPA + i * PAGE_4K
        g.convert(gpa, PAGE_4K, private=False)
        g.convert(gpa, PAGE_4K, private=True)
    dt = time.perf_counter() - t0
    print(f"4K conversions over the GHCB (shared and back): {2 * n / dt:,.0f}/s")


if __name__ == "__main__":
    main()
