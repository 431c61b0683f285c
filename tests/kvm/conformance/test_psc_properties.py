"""The GHCB page-state change under random descriptors and random userspace answers
(arch/x86/kvm/svm/sev.c ``snp_begin_psc``, ``snp_complete_one_psc``, ``snp_complete_psc``; the
guest's resubmission loop of arch/x86/coco/sev/core.c ``vmgexit_psc``), checked after every
step:

- ``cur_entry`` never goes backwards;
- every entry before ``cur_entry`` (from where the request started) is fully converted in KVM's
  attributes (descriptors the Linux guest builds: entries whole, disjoint, sizes aligned);
- a refused answer (``ret != 0``) changes nothing beyond what was already done: the attributes,
  ``cur_entry`` and every ``cur_page`` stay as they were, and KVM answers GENERIC;
- each exit asks for exactly the pages of the entries in flight.

A second property takes any descriptor (partly done, unaligned, unknown operations, overlapping)
and checks the first and third invariants and that KVM answers only with the codes it has.
"""
import errno

import hypothesis.strategies as st
from hypothesis import given

from kit.host import Host
from kit.kvm import Kvm, snp
from kit.kvm import uapi as U
from kit.kvm.ghcb import PscDesc, PscEntry
from kit.kvm.vmm import Vmm
from kit.units import PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M

GPA, SIZE = 1 << 32, 16 << 20
G, NPAGES = GPA >> PAGE_SHIFT, SIZE >> PAGE_SHIFT
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
PRIV, SHARED = snp.SNP_PAGE_STATE_PRIVATE, snp.SNP_PAGE_STATE_SHARED
ANSWERS = {0, snp.VMGEXIT_PSC_ERROR_GENERIC, snp.VMGEXIT_PSC_ERROR_INVALID_HDR, snp.VMGEXIT_PSC_ERROR_INVALID_ENTRY}


def make(owner):
    vm = Kvm(Host(mem="2GiB", cores=2)).create_vm(U.KVM_X86_SNP_VM, attribute_owner=owner)
    vm.sev_init()
    vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, GPA, SIZE, 0, 0, vm.create_guest_memfd(SIZE))
    if owner == "userspace":
        vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    return vm, vm.create_vcpu(0), Vmm(vm, fallocate=False)


@st.composite
def linux_descriptors(draw):
    """Whole entries (``cur_page`` 0, or all done), disjoint and in address order, 2M entries
    aligned, some contiguous (to coalesce); a header that may start late, end early or point
    past the list."""
    entries, cursor = [], G
    for _ in range(draw(st.integers(1, 12))):
        huge = draw(st.booleans())
        cursor += draw(st.sampled_from([0, 0, 1, 7, PAGES_PER_2M]))
        if huge:
            cursor = -(-cursor // PAGES_PER_2M) * PAGES_PER_2M
        n = PAGES_PER_2M if huge else 1
        if cursor + n > G + NPAGES:
            break
        op = draw(st.sampled_from([PRIV, PRIV, SHARED, SHARED, snp.SNP_PAGE_STATE_PSMASH]))
        done = draw(st.integers(0, 5)) == 0
        entries.append(PscEntry(cursor, op, PAGE_2M if huge else PAGE_4K, n if done else 0))
        cursor += n
    cur = draw(st.integers(0, len(entries)))
    end = draw(st.one_of(st.just(len(entries) - 1), st.integers(0, len(entries) + 1)))
    return PscDesc(entries, cur, end)


@st.composite
def any_descriptors(draw):
    gfn = st.integers(G, G + NPAGES - PAGES_PER_2M)
    entries = [PscEntry(draw(st.one_of(gfn, gfn.map(lambda g: g - g % PAGES_PER_2M))),
                        draw(st.sampled_from([PRIV, SHARED, 3, 4, 0, 5])),
                        draw(st.sampled_from([PAGE_4K, PAGE_2M, snp.RMP_PG_SIZE_4K, snp.RMP_PG_SIZE_2M])),
                        draw(st.sampled_from([0, 0, 0, 1, 100, PAGES_PER_2M, PAGES_PER_2M + 1])))
               for _ in range(draw(st.integers(1, 8)))]
    return PscDesc(entries, draw(st.integers(0, 9)), draw(st.integers(0, 9)))


def snapshot(vm, desc):
    return (vm.attributes.ranges(G, G + NPAGES), desc.cur_entry, [e.cur_page for e in desc.entries])


def converted(vm, e) -> bool:
    want = P if e.op == PRIV else 0
    return vm.attributes.has(e.gfn, e.gfn + e.npages, want)


def run(vm, cpu, vmm, desc, data, check, resubmits=4):
    """The guest's loop: VMGEXIT, the VMM answers each exit (converting, or refusing with a
    random non-zero ``ret``), resubmit after a refusal. ``check(desc)`` after every step."""
    for _ in range(resubmits):
        ex = cpu.vmgexit_psc(desc)
        check(desc)
        while ex is not None:
            state = cpu.psc
            first = desc.entries[state.idx]
            want = sum(e.npages for e in desc.entries[state.idx:state.idx + state.inflight])
            if first.cur_page:                  # a partly done entry is finished as 4K pages
                want -= first.cur_page
            check(desc, exit=ex, want=want)
            if data.draw(st.booleans(), label="userspace converts"):
                ex = cpu.complete_hypercall(vmm.handle(ex))
            else:
                before = snapshot(vm, desc)
                ret = data.draw(st.sampled_from([-errno.EAGAIN, -errno.ENOMEM, 1]), label="refusal")
                ex = cpu.complete_hypercall(ret)
                assert ex is None and cpu.psc_result == (0, snp.VMGEXIT_PSC_ERROR_GENERIC)
                assert snapshot(vm, desc) == before
            check(desc)
        assert cpu.psc_result[1] in ANSWERS
        if cpu.psc_result[1] != snp.VMGEXIT_PSC_ERROR_GENERIC:
            return cpu.psc_result
    return cpu.psc_result


@given(desc=linux_descriptors(), owner=st.sampled_from(["userspace", "guest"]), data=st.data())
def test_psc_progress_is_monotonic_and_what_is_done_is_converted(desc, owner, data):
    vm, cpu, vmm = make(owner)
    start, seen = desc.cur_entry, [desc.cur_entry]
    whole = [e.cur_page == 0 for e in desc.entries]

    def check(d, exit=None, want=None):
        assert d.cur_entry >= seen[-1], "cur_entry went backwards"
        seen.append(d.cur_entry)
        for i in range(start, min(d.cur_entry, len(d.entries))):
            e = d.entries[i]
            if whole[i] and e.op in (PRIV, SHARED):
                assert converted(vm, e), f"entry {i} before cur_entry {d.cur_entry} not converted"
        if exit is not None:
            assert exit.hypercall.args[1] == want

    result = run(vm, cpu, vmm, desc, data, check)
    if result == (0, 0):
        assert desc.cur_entry > desc.end_entry
        for i in range(start, desc.end_entry + 1):
            assert not whole[i] or desc.entries[i].op not in (PRIV, SHARED) or converted(vm, desc.entries[i])
    if result[1] == snp.VMGEXIT_PSC_ERROR_INVALID_HDR:       # checked before anything was done
        assert desc.end_entry >= len(desc.entries) and vm.attributes.has(G, G + NPAGES, 0)


@given(desc=any_descriptors(), data=st.data())
def test_psc_on_any_descriptor_never_goes_backwards_and_a_refusal_changes_nothing(desc, data):
    vm, cpu, vmm = make("userspace")
    seen = [desc.cur_entry]

    def check(d, exit=None, want=None):
        assert d.cur_entry >= seen[-1], "cur_entry went backwards"
        seen.append(d.cur_entry)
        if exit is not None:
            assert exit.hypercall.args[1] == want and want > 0
            gpa, n = exit.hypercall.args[:2]
            assert G <= gpa >> PAGE_SHIFT and (gpa >> PAGE_SHIFT) + n <= G + NPAGES + PAGE_2M // PAGE_4K

    run(vm, cpu, vmm, desc, data, check)
