"""VM memory state (memslots, attributes, guest_memfd bindings and pages) against dict-per-page
references, driven by a hypothesis state machine; every failed call must leave the VM as it was,
and so must any call given a wrong argument (the "wrong argument" rule: a digest of the whole
KVM and host state before and after).
A second machine drives SEV contexts (init, mirror copy, move, destroy) and checks that no ASID
is handed out while any VM references it (arch/x86/kvm/svm/sev.c: ``sev_asid_new``,
``sev_vm_copy_enc_context_from``, ``sev_migrate_from``, ``sev_vm_destroy``).

The references re-state the rules of ``kvm_vm_ioctl_set_mem_attributes``,
``kvm_set_memory_region`` (virt/kvm/kvm_main.c) and ``kvm_gmem_bind``/``kvm_gmem_fallocate``
(virt/kvm/guest_memfd.c) in the most literal per-page form
(a dict gfn -> attribute, a dict gfn -> slot, a dict file page -> slot, a set of allocated
file pages), independent of the kit's range stores.
"""
from __future__ import annotations

import errno

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from types import SimpleNamespace

from kit.errors import KvmError
from kit.kvm import uapi as U
from tests.hostile import hostile_for, refused
from tests.test_hostile_api import CASES

PS = 4096
P = U.KVM_MEMORY_ATTRIBUTE_PRIVATE
GMEM = U.KVM_MEM_GUEST_MEMFD
WINDOW = 96                       # gfns the machine plays in
FILE_PAGES = 32


def call(fn):
    try:
        return fn()
    except KvmError as e:
        return -e.errno


#: the calls the "wrong argument" rule aims at (tests/test_hostile_api.py): the VM's memory
#: ioctls and its guest_memfd's fallocate, on the machine's own VM and files
VM_CASES = [c for c in CASES if c.label in (
    "VM.set_memory_attributes", "VM.kvm_vm_set_mem_attributes", "VM.memory_attributes", "VM.lpage_mixed",
    "VM.zap_gfn_range", "VM.create_guest_memfd", "VM.set_user_memory_region", "VM.set_user_memory_region2",
    "VM.slot_for_gfn", "VM.gmem_backed", "VM.create_vcpu", "VM.enable_cap", "VM.check_extension",
    "GuestMemfd.fallocate", "Kvm.create_vm", "Kvm.check_extension")]


class VmMemory(RuleBasedStateMachine):
    make_kvm = None               # the make_kvm fixture, set by _kvm_factory below

    @initialize()
    def boot(self):
        self.vm = self.make_kvm("2GiB", 2).create_vm(U.KVM_X86_SW_PROTECTED_VM)
        self.files = [self.vm.create_guest_memfd(FILE_PAGES * PS) for _ in range(2)]
        self.attrs: dict[int, int] = {}
        self.slots: dict[int, dict] = {}          # id -> base, npages, flags, file, pgoff, uaddr
        self.slot_of: dict[int, int] = {}         # gfn -> slot id
        self.bound: list[dict[int, int]] = [{}, {}]    # per file: page -> slot id
        self.allocated: list[set[int]] = [set(), set()]
        self.vcpu = self.vm.create_vcpu(0)

    # ------------------------------------------------------------ helpers
    def _snapshot(self):
        vm = self.vm
        return (vm.attributes.starts.tobytes(), vm.attributes.ends.tobytes(), vm.attributes.values.tobytes(),
                sorted((k, s.base_gfn, s.npages, s.flags, id(s.gmem), s.gmem_pgoff) for k, s in vm.memslots.items()),
                [sorted((a, b, s.id) for a, b, s in f.bindings) for f in self.files],
                [f.allocated.ranges(0, FILE_PAGES) for f in self.files])

    def _both(self, kit_fn, expected_errno):
        before = self._snapshot()
        got = call(kit_fn)
        want = -expected_errno if expected_errno else 0
        assert got == want, f"kit returned {got}, reference expects {want}"
        if got:
            assert self._snapshot() == before, "a failed call changed the VM"
        return got == 0

    # ------------------------------------------------------------ attributes (kvm_vm_ioctl_set_mem_attributes)
    @rule(start=st.integers(0, WINDOW - 1), n=st.integers(0, 24), value=st.sampled_from([0, P, P, 1 << 5]),
          flags=st.sampled_from([0] * 9 + [1]), skew=st.sampled_from([0] * 9 + [1]))
    def set_attributes(self, start, n, value, flags, skew):
        addr, size = start * PS + skew, n * PS
        expect = 0
        if flags or value & ~P or size == 0 or addr % PS:
            expect = errno.EINVAL
        if self._both(lambda: self.vm.set_memory_attributes(addr, size, value, flags), expect):
            for g in range(start, start + n):
                if value:
                    self.attrs[g] = value
                else:
                    self.attrs.pop(g, None)

    # ------------------------------------------------------------ memslots (kvm_set_memory_region) and kvm_gmem_bind
    @rule(sid=st.integers(0, 3), base=st.integers(0, WINDOW - 8), npages=st.integers(1, 8),
          use_gmem=st.booleans(), fidx=st.integers(0, 1), pgoff=st.integers(0, FILE_PAGES),
          log_dirty=st.sampled_from([False] * 4 + [True]), uaddr_page=st.sampled_from([16, 16, 32]))
    def set_slot(self, sid, base, npages, use_gmem, fidx, pgoff, log_dirty, uaddr_page):
        flags = (GMEM if use_gmem else 0) | (U.KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0)
        f = self.files[fidx] if use_gmem else None
        old = self.slots.get(sid)
        uaddr = uaddr_page << 20
        others = {g for g, s in self.slot_of.items() if s != sid}
        overlap = any(g in others for g in range(base, base + npages))
        if use_gmem and log_dirty:
            expect = errno.EINVAL
        elif old is not None:
            if use_gmem or uaddr != old["uaddr"] or npages != old["npages"] or \
                    (flags ^ old["flags"]) & (U.KVM_MEM_READONLY | GMEM):
                expect = errno.EINVAL
            elif base == old["base"] and flags == old["flags"]:
                expect = 0
            else:
                expect = errno.EEXIST if base != old["base"] and overlap else 0
        elif overlap:
            expect = errno.EEXIST
        elif use_gmem and (pgoff + npages > FILE_PAGES or
                           any(p in self.bound[fidx] for p in range(pgoff, pgoff + npages))):
            expect = errno.EINVAL
        else:
            expect = 0
        ok = self._both(lambda: self.vm.set_user_memory_region2(sid, flags, base * PS, npages * PS, uaddr,
                                                                 pgoff * PS, f), expect)
        if not ok:
            return
        if old is not None:
            for g in range(old["base"], old["base"] + old["npages"]):
                del self.slot_of[g]
            old.update(base=base, flags=flags)
        else:
            self.slots[sid] = dict(base=base, npages=npages, flags=flags, file=fidx if use_gmem else None,
                                   pgoff=pgoff, uaddr=uaddr)
            if use_gmem:
                for p in range(pgoff, pgoff + npages):
                    self.bound[fidx][p] = sid
        for g in range(base, base + npages):
            self.slot_of[g] = sid

    @rule(sid=st.integers(0, 3))
    def delete_slot(self, sid):
        old = self.slots.get(sid)
        if not self._both(lambda: self.vm.set_user_memory_region2(sid, 0, 0, 0, 0),
                          0 if old else errno.EINVAL):
            return
        for g in range(old["base"], old["base"] + old["npages"]):
            del self.slot_of[g]
        if old["file"] is not None:
            self.bound[old["file"]] = {p: s for p, s in self.bound[old["file"]].items() if s != sid}
        del self.slots[sid]

    # ------------------------------------------------------------ guest_memfd pages (kvm_gmem_fallocate)
    @rule(fidx=st.integers(0, 1), off=st.integers(0, FILE_PAGES + 4), n=st.integers(0, 8),
          punch=st.booleans(), mode_bad=st.sampled_from([False] * 9 + [True]), skew=st.sampled_from([0] * 9 + [1]))
    def fallocate(self, fidx, off, n, punch, mode_bad, skew):
        mode = U.FALLOC_FL_KEEP_SIZE | (U.FALLOC_FL_PUNCH_HOLE if punch else 0) | (0x10 if mode_bad else 0)
        offset, length = off * PS + skew, n * PS
        if n == 0:                      # fs/open.c vfs_fallocate: len <= 0 is EINVAL, before the mode
            expect = errno.EINVAL
        elif mode_bad:
            expect = errno.EOPNOTSUPP
        elif skew:
            expect = errno.EINVAL
        elif not punch and off + n > FILE_PAGES:
            expect = errno.EINVAL
        else:
            expect = 0
        if self._both(lambda: self.files[fidx].fallocate(mode, offset, length), expect):
            pages = set(range(off, min(off + n, FILE_PAGES)))
            self.allocated[fidx] = self.allocated[fidx] - pages if punch else self.allocated[fidx] | pages

    # ------------------------------------------------------------ KVM_PRE_FAULT_MEMORY (kvm_vcpu_pre_fault_memory)
    def _pre_fault_errno(self, g: int) -> int:
        """What mapping gfn ``g`` fails with (``kvm_arch_vcpu_pre_fault_memory``), or 0. Slots
        here are at most 8 pages and the files' folios 4K, so every mapping is one page."""
        sid, private = self.slot_of.get(g), self.attrs.get(g) == P
        if sid is None:
            return errno.EFAULT if private else errno.ENOENT
        return errno.EFAULT if private and self.slots[sid]["file"] is None else 0

    @rule(start=st.integers(0, WINDOW - 1), n=st.integers(1, 12))
    def pre_fault(self, start, n):
        """Map pages in; the first page that fails ends the call (its errno when it is the
        first page, else success with the rest left); a private page allocates its file page."""
        bad = next((g for g in range(start, start + n) if self._pre_fault_errno(g)), None)
        before = self._snapshot()
        got = call(lambda: self.vcpu.pre_fault_memory(start * PS, n * PS))
        if bad == start:
            assert got == -self._pre_fault_errno(start)
            assert self._snapshot() == before, "a failed call changed the VM"
            return
        end = start + n if bad is None else bad
        assert got == U.PreFaultMemory(end * PS, (start + n - end) * PS, 0)
        for g in range(start, end):
            if self.attrs.get(g) == P:
                s = self.slots[self.slot_of[g]]
                self.allocated[s["file"]].add(s["pgoff"] + g - s["base"])

    @rule(fidx=st.integers(0, 1))
    def fill_file(self, fidx):
        """Allocate the whole file, so that later punches meet allocated pages up to EOF."""
        if self._both(lambda: self.files[fidx].fallocate(U.FALLOC_FL_KEEP_SIZE, 0, FILE_PAGES * PS), 0):
            self.allocated[fidx] = set(range(FILE_PAGES))

    # ------------------------------------------------------------ wrong arguments
    @rule(case=st.sampled_from(VM_CASES), data=st.data())
    def wrong_argument(self, case, data):
        """Any VM, memslot, attribute or guest_memfd call with one argument of the wrong type
        or out of range: refused (ValueError/TypeError naming it, or the kernel's errno) and
        the whole KVM and host state (attributes, memslots, bindings, files, SPTEs, ledger,
        frames) exactly as before."""
        param = data.draw(st.sampled_from(sorted(case.params)), label="parameter")
        valid = case.ok.get(param, lambda v: False)
        value = data.draw(st.one_of(st.sampled_from(case.hostile(param)),
                                    hostile_for(case.params[param])).filter(lambda v: not valid(v)), label="value")
        w = SimpleNamespace(sw=self.vm, kvm=self.vm.kvm, host=self.vm.kvm.host, f=self.files[0], spare=self.files[1])
        why = refused(lambda: case.call(w, **{param: value}), self.vm.kvm, name=case.names.get(param, param),
                      codes=case.codes)
        assert why is None, f"{case.label}({param}={value!r}): {why}"

    # ------------------------------------------------------------ invariants
    @invariant()
    def same_state(self):
        if not hasattr(self, "vm"):
            return
        vm = self.vm
        for g in range(WINDOW + 8):
            assert vm.memory_attributes(g) == self.attrs.get(g, 0), f"attribute of gfn {g}"
            s = vm.slot_for_gfn(g)
            assert (s.id if s else None) == self.slot_of.get(g), f"slot of gfn {g}"
        for fidx, f in enumerate(self.files):
            got = {p: s.id for a, b, s in f.bindings for p in range(a, b)}
            assert got == self.bound[fidx]
            got_alloc = {p for a, b, _ in f.allocated.ranges(0, FILE_PAGES) for p in range(a, b)}
            assert got_alloc == self.allocated[fidx]


AIM = st.sampled_from([True, True, True, False])


class SevContexts(RuleBasedStateMachine):
    """SEV VMs, mirrors and moves against a reference of who references which ASID.

    The reference: ``holder[vm]`` is the ASID a VM references (its own after
    ``KVM_SEV_INIT2``, its owner's as a mirror, the source's after a move) until userspace
    destroys it; ``owner[vm]`` the VM a mirror shares the context of. The invariant: every
    ASID KVM hands out is referenced by no VM, and KVM's ASIDs in use are exactly the
    referenced ones (a mirror keeps its owner's ASID in use after the owner is gone; the last
    VM of a context gives it back)."""

    make_kvm = None
    MIN_ASID, MAX_ASID = 4, 6      # the SEV range: three ASIDs, so recycling happens

    @initialize()
    def boot(self):
        self.kvm = self.make_kvm("2GiB", 2, min_sev_asid=self.MIN_ASID, max_sev_asid=self.MAX_ASID)
        self.vms: list = []
        self.destroyed: set = set()
        self.dead: set = set()             # sources of a move: every ioctl is EIO
        self.vcpus: dict = {}
        self.holder: dict = {}             # vm -> the ASID it references
        self.owner: dict = {}              # mirror -> its owner
        for sev_type in (True, True, False, False):
            self.create_vm(sev_type)

    def _pick(self, i, want=None):
        """The i-th live VM (userspace still holds its fd); ``want`` narrows the choice to the
        VMs a call can succeed on, so that the machine reaches deep states, when any fits."""
        live = [v for v in self.vms if v not in self.destroyed]
        fit = [v for v in live if want(v)] if want else []
        pool = fit or live
        return pool[i % len(pool)] if pool else None

    def _fresh(self, v):
        return v not in self.dead and v not in self.holder

    def _expect(self, fn, want):
        got = call(fn)
        got = got if isinstance(got, int) else 0
        assert got == (-want if want else 0), f"kit returned {got}, reference expects {-want if want else 0}"
        return got == 0

    # ------------------------------------------------------------ rules
    @rule(sev_type=st.booleans())
    def create_vm(self, sev_type):
        if len([v for v in self.vms if v not in self.destroyed and v not in self.dead]) < 8:
            vm = self.kvm.create_vm(U.KVM_X86_SEV_VM if sev_type else U.KVM_X86_DEFAULT_VM)
            self.vms.append(vm)
            self.vcpus[vm] = 0

    @rule(i=st.integers(0, 9), go=st.sampled_from([False] * 3 + [True]))
    def create_vcpu(self, i, go):
        vm = self._pick(i)
        if go and vm is not None and self._expect(lambda: vm.create_vcpu(self.vcpus[vm]),
                                           errno.EIO if vm in self.dead else 0):
            self.vcpus[vm] += 1

    @rule(i=st.integers(0, 9), aim=AIM)
    def sev_init(self, i, aim):
        vm = self._pick(i, aim and (lambda v: self._fresh(v) and v.type == U.KVM_X86_SEV_VM
                                     and v not in self.owner and not self.vcpus[v]))
        if vm is None:
            return
        held = set(self.holder.values())
        if vm in self.dead:
            want = errno.EIO
        elif vm in self.owner:
            want = errno.EINVAL                         # a mirror: the command is not allowed
        elif vm.type != U.KVM_X86_SEV_VM or vm in self.holder or self.vcpus[vm]:
            want = errno.EINVAL
        elif len(held & set(range(self.MIN_ASID, self.MAX_ASID + 1))) == self.MAX_ASID - self.MIN_ASID + 1:
            want = errno.EBUSY
        else:
            want = 0
        if self._expect(vm.sev_init, want):
            assert vm.asid not in held, f"ASID {vm.asid} handed out while a VM references it"
            self.holder[vm] = vm.asid

    @rule(d=st.integers(0, 9), s=st.integers(0, 9), aim=AIM)
    def copy(self, d, s, aim):
        src = self._pick(s, aim and (lambda v: v in self.holder and v not in self.owner))
        dst = self._pick(d, aim and (lambda v: self._fresh(v) and v is not src and not self.vcpus[v]))
        if dst is None:
            return
        if dst in self.dead:
            want = errno.EIO
        elif (dst is src or dst in self.holder or src not in self.holder or src in self.owner
              or self.vcpus[dst]):
            want = errno.EINVAL
        else:
            want = 0
        if self._expect(lambda: dst.enable_cap(U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, src), want):
            self.holder[dst] = self.holder[src]
            self.owner[dst] = src

    @rule(d=st.integers(0, 9), s=st.integers(0, 9), aim=AIM)
    def move(self, d, s, aim):
        src = self._pick(s, aim and (lambda v: v in self.holder))
        dst = self._pick(d, aim and (lambda v: self._fresh(v) and v is not src and v.type == src.type))
        if dst is None:
            return
        if dst in self.dead:
            want = errno.EIO
        elif dst is src or dst.type != src.type or dst in self.holder or src not in self.holder:
            want = errno.EINVAL
        else:
            want = 0
        if self._expect(lambda: dst.enable_cap(U.KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM, src), want):
            self.holder[dst] = self.holder.pop(src)
            if src in self.owner:                       # a mirror moved: still a mirror
                self.owner[dst] = self.owner.pop(src)
            for m, o in list(self.owner.items()):
                if o is src:
                    self.owner[m] = dst
            self.dead.add(src)

    @rule(i=st.integers(0, 9))
    def destroy(self, i):
        vm = self._pick(i)
        if vm is not None:
            vm.destroy()
            self.destroyed.add(vm)
            self.holder.pop(vm, None)

    # ------------------------------------------------------------ invariants
    @invariant()
    def no_asid_handed_out_while_referenced(self):
        if not hasattr(self, "kvm"):
            return
        held = set(self.holder.values())
        asids = self.kvm.asids
        assert asids.used == held, f"ASIDs in use {sorted(asids.used)}, referenced {sorted(held)}"
        assert not asids.reclaim & held, f"referenced ASIDs up for reclaim: {sorted(asids.reclaim & held)}"

    @invariant()
    def vms_agree_with_the_reference(self):
        if not hasattr(self, "kvm"):
            return
        for vm in self.vms:
            if vm in self.destroyed:
                continue
            assert vm.sev_active == (vm in self.holder) and vm.asid == self.holder.get(vm, 0)
            assert vm.mirror_of is self.owner.get(vm)
            assert vm.dead == (vm in self.dead)
            if vm in self.owner:
                assert vm in self.owner[vm].mirrors
        for vm, o in self.owner.items():
            if vm in self.holder:
                assert self.holder[vm] == self.holder.get(o, self.holder[vm])


@pytest.fixture(autouse=True)
def _kvm_factory(make_kvm):
    """A state machine takes no fixtures: hand it the factory before each run."""
    VmMemory.make_kvm = staticmethod(make_kvm)
    SevContexts.make_kvm = staticmethod(make_kvm)


VmMemory.TestCase.settings = settings(settings.default, stateful_step_count=30)
TestVmMemory = VmMemory.TestCase
SevContexts.TestCase.settings = settings(settings.default, stateful_step_count=40)
TestSevContexts = SevContexts.TestCase
