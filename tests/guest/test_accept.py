"""Lazy acceptance in the kernel's order: accept_memory (drivers/firmware/efi/unaccepted_memory.c)
-> snp_accept_memory -> set_pages_state -> vmgexit_psc, then pval_pages
(arch/x86/coco/sev/core.c)."""
import numpy as np
import pytest

from kit.guest import EFI_UNACCEPTED_UNIT_SIZE, VMGEXIT_PSC_MAX_ENTRY, Guest, Linux, psc_entries
from kit.kvm import uapi as U
from kit.units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

from .conftest import RAM_GPA

CHUNK = 4 * MiB


class CallByCall(Linux):
    """Linux, but not the class itself: the guest runs every accept_memory call on its own."""


def names(g, *wanted):
    return [s.name for s in g.log if s.name in wanted]


def test_bitmap_covers_the_guest_ram_in_2m_units(make_guest):
    g = make_guest(mem=64 * MiB)
    assert EFI_UNACCEPTED_UNIT_SIZE == PAGE_2M
    assert g.phys_base == RAM_GPA and len(g.unaccepted) == 32 and g.unaccepted.all()
    assert g.unaccepted_bytes == 64 * MiB
    assert g.is_private(RAM_GPA) and not g.is_validated(RAM_GPA)


def test_accept_changes_page_state_before_pvalidate(make_guest):
    g = make_guest(behaviour=CallByCall())
    mark = g.vm.kvm.host.ledger.mark()
    g.accept(RAM_GPA, CHUNK)
    assert names(g, "psc", "pvalidate") == ["psc", "pvalidate"]
    rows = g.vm.kvm.host.ledger.rows[mark:]
    psc = [i for i, (_, ev) in enumerate(rows) if "set_attributes" in ev]
    pval = [i for i, (_, ev) in enumerate(rows) if "pvalidate" in ev]
    assert psc and pval and max(psc) < min(pval)


def test_accept_takes_the_guard_unit_past_an_aligned_end_and_clears_bits_after(make_guest):
    g = make_guest(behaviour=CallByCall())
    assert g.accept(RAM_GPA, CHUNK) == 3                 # 2 units + the guard unit
    assert not g.unaccepted[:3].any() and g.unaccepted[3:].all()
    assert g.accept(RAM_GPA + CHUNK, CHUNK) == 2         # unit 2 was the guard: units 3, 4
    assert g.accept(RAM_GPA, CHUNK) == 0                 # nothing left there
    gfn = RAM_GPA >> PAGE_SHIFT
    assert g.validated.has(gfn, gfn + 5 * PAGES_PER_2M, 1)
    assert g.vm.attributes.has(gfn, gfn + 5 * PAGES_PER_2M, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)


def test_an_unaligned_end_takes_no_guard_and_the_bitmap_end_clamps(make_guest):
    g = make_guest(behaviour=CallByCall(), mem=8 * MiB)
    assert g.accept(RAM_GPA, PAGE_2M + PAGE_4K) == 2     # DIV_ROUND_UP: units 0 and 1
    assert g.accept(RAM_GPA + 6 * MiB, 2 * MiB) == 1     # the guard would be past the bitmap
    assert g.unaccepted.tolist() == [False, False, True, False]


def test_the_lock_is_taken_once_and_again_after_each_run(make_guest):
    g = make_guest(behaviour=CallByCall())
    g.unaccepted[1] = False                               # two runs in [0, 3): units 0 and 2
    g.accept(RAM_GPA, CHUNK)
    assert g.counts["unaccepted_memory_lock"] == 1 + 2
    assert g.accepting_list == []


def test_a_range_overlapping_one_being_accepted_would_spin(make_guest):
    g = make_guest(behaviour=CallByCall())
    g.accepting_list.append((0, 2))
    with pytest.raises(RuntimeError, match="spin"):
        g.accept(RAM_GPA, PAGE_2M)
    assert g.unaccepted.all()


def test_one_call_is_cut_into_descriptors_of_64_entries(make_guest):
    g = make_guest(behaviour=CallByCall(), mem=256 * MiB)
    n = g.accept(RAM_GPA, 200 * MiB)                      # 100 units + guard = 101 entries
    assert n == 101
    assert g.counts["vmgexit_psc"] == 2                   # 64 + 37 entries, one VMGEXIT each
    entries, nxt = psc_entries(RAM_GPA >> PAGE_SHIFT, (RAM_GPA >> PAGE_SHIFT) + 101 * PAGES_PER_2M)
    assert len(entries) == VMGEXIT_PSC_MAX_ENTRY and all(s == PAGE_2M for _, s in entries)


def test_psc_entries_use_2m_only_where_aligned_and_whole():
    start, end = PAGES_PER_2M - 2, 3 * PAGES_PER_2M + 1
    entries, nxt = psc_entries(start, end)
    assert entries == [(start, PAGE_4K), (start + 1, PAGE_4K), (PAGES_PER_2M, PAGE_2M),
                       (2 * PAGES_PER_2M, PAGE_2M), (3 * PAGES_PER_2M, PAGE_4K)]
    assert nxt == end
    entries, nxt = psc_entries(1, end)                    # 64 4K entries at most
    assert len(entries) == VMGEXIT_PSC_MAX_ENTRY and nxt == 1 + VMGEXIT_PSC_MAX_ENTRY


def test_a_2m_pvalidate_on_4k_backing_falls_back_to_512_4k_pvalidates(make_guest):
    g = make_guest(behaviour=CallByCall(), hugepages=False, mem=8 * MiB)
    ledger = g.vm.kvm.host.ledger
    before = ledger.totals.get("pvalidate", 0)
    g.accept(RAM_GPA + 6 * MiB, PAGE_2M)                  # the last unit: no guard
    assert ledger.totals["pvalidate"] - before == PAGES_PER_2M
    assert names(g, "pvalidate_4k_fallback") == ["pvalidate_4k_fallback"]
    gfn = (RAM_GPA + 6 * MiB) >> PAGE_SHIFT
    assert g.validated.has(gfn, gfn + PAGES_PER_2M, 1)
    assert g.terminated is None


def state(g):
    host, vm = g.vm.kvm.host, g.vm
    return (g.unaccepted.copy(), list(zip(g.validated.starts, g.validated.ends, g.validated.values)),
            list(zip(vm.attributes.starts, vm.attributes.ends, vm.attributes.values)),
            list(zip(vm.sptes.starts, vm.sptes.ends, vm.sptes.values)),
            host.rmp.region_summary(), host.directmap.counts())


@pytest.mark.parametrize("fallocate", [False, True])
def test_the_fast_path_equals_the_calls_one_by_one(make_guest, fallocate):
    fast, slow = make_guest(fallocate=fallocate), make_guest(CallByCall(), fallocate=fallocate)
    for g in (fast, slow):
        g.accept(RAM_GPA, 8 * CHUNK, step=CHUNK)
        g.accept(RAM_GPA + 8 * CHUNK, 4 * CHUNK, step=CHUNK)     # starts on the previous guard
    a, b = state(fast), state(slow)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    ta, tb = fast.vm.kvm.host.ledger.summary(), slow.vm.kvm.host.ledger.summary()
    assert ta == tb
    assert fast.counts["unaccepted_memory_lock"] == slow.counts["unaccepted_memory_lock"]
    assert fast.counts["accept_memory"] == slow.counts["accept_memory"] == 12
    assert fast.vmm.ioctls == slow.vmm.ioctls == 12
    assert [s.name for s in fast.log if s.name == "psc"] == ["psc", "psc"]     # one per accept()


def test_the_fast_path_is_not_taken_for_another_behaviour_or_vmm(make_guest):
    from kit.kvm.vmm import Vmm

    class MyVmm(Vmm):
        pass
    for g in (make_guest(CallByCall()), make_guest(vmm=MyVmm)):
        g.accept(RAM_GPA, 2 * CHUNK, step=CHUNK)
        assert g.counts["vmgexit_psc"] == 2 and names(g, "psc").count("psc") == 2


def test_a_sw_protected_guest_has_no_unaccepted_table(make_kvm):
    kvm = make_kvm()
    vm = kvm.create_vm(U.KVM_X86_SW_PROTECTED_VM)
    f = vm.create_guest_memfd(8 * MiB)
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, RAM_GPA, 8 * MiB, 1 << 44, 0, f)
    g = Guest(vm)
    assert len(g.unaccepted) == 0
    assert g.accept(RAM_GPA, CHUNK) == 0 and g.log == []


def test_a_run_of_calls_past_the_bitmap_runs_call_by_call(make_guest):
    g = make_guest(mem=64 * MiB)
    assert g.accept(RAM_GPA + 60 * MiB, 2 * CHUNK, step=CHUNK) == 2
    assert g.counts["accept_memory"] == 2                  # the second call finds nothing to do
    assert g.counts["unaccepted_memory_lock"] == 2 + 1
    assert not g.unaccepted[30:].any()


def test_the_fast_path_is_one_step_per_kernel_function(make_guest):
    g = make_guest()
    assert g.accept(RAM_GPA, 4 * CHUNK, step=CHUNK) == 9
    assert [s.name for s in g.log] == ["accept", "psc", "pvalidate"]
    assert "4 accept_memory calls" in g.log[0].detail
    assert g.counts["unaccepted_memory_lock"] == 8 and g.counts["vmgexit_psc"] == 4
