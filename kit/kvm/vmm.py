"""A small userspace VMM that answers exits the way QEMU does (``kvm_convert_memory`` in
QEMU's accel/kvm/kvm-all.c, reached from ``KVM_EXIT_MEMORY_FAULT`` and from the
``KVM_HC_MAP_GPA_RANGE`` hypercall exit): set the attribute with
``KVM_SET_MEMORY_ATTRIBUTES``, and with ``discard=True`` punch the shared copy's backing or
the guest_memfd range it no longer needs (here: punch guest_memfd when going shared; allocate
when going private). A guest's termination request (``KVM_EXIT_SYSTEM_EVENT`` /
``KVM_SYSTEM_EVENT_SEV_TERM``) is a guest panic to QEMU (accel/kvm/kvm-all.c ``kvm_cpu_exec``:
``qemu_system_guest_panicked``).

With ``prefault=True`` the VMM also pre-faults the range of each page-state-change hypercall
it converted, as QEMU does since commit 4cdc489eb9c2 (T. Lendacky, "[PATCH] i386/kvm: Prefault
memory on page state change",
f5411c42340bd2f5c14972551edb4e959995e42b.1743193824.git.thomas.lendacky@amd.com):
target/i386/kvm/kvm.c ``kvm_handle_hc_map_gpa_range``, after a successful
``kvm_convert_memory`` and when ``KVM_CAP_PRE_FAULT_MEMORY`` is reported, calls
``KVM_PRE_FAULT_MEMORY`` on the exiting vCPU until the range is done or a call fails (failures
are ignored: the guest's own access faults the page in then). Both directions are pre-faulted,
shared as well as private. A ``KVM_EXIT_MEMORY_FAULT`` conversion is not pre-faulted (it goes
through ``kvm_convert_memory`` alone). X. Li's reply in the thread
(cc2dc418-8e33-4c01-9b8a-beca0a376400@intel.com) reports the same call on a TDX guest's shared
range hitting a KVM bug; the model's TDX VMs never allow the call (``pre_fault_allowed``).

Subclass :class:`Vmm` to deny, defer or retry: :meth:`Vmm.handle` returns the ``ret`` KVM hands
to the guest (``run->hypercall.ret``), and a subclass may return non-zero, or convert only on a
later attempt. Where the guest owns the attributes there is nothing to answer: KVM converts
inside, and the guest's request either succeeds at once or fails (docs/kvm-model.md)."""
from __future__ import annotations

import errno

from ..errors import KvmError
from ..units import PAGE_SHIFT, check_bool
from . import uapi as U
from .limits import VMM_MAX_EXITS
from .mmu import Vcpu
from .uapi import KVM_MAP_GPA_RANGE_ENCRYPTED, Exit, check_field
from .vm import VM


def _check_vcpu(vcpu) -> None:
    if not isinstance(vcpu, Vcpu):
        raise TypeError(f"vcpu: expected a kit.kvm.mmu.Vcpu, got {type(vcpu).__name__} {vcpu!r}")


class Vmm:
    def __init__(self, vm, *, fallocate: bool = True, max_exits: int = VMM_MAX_EXITS.default,
                 prefault: bool = False):
        if not isinstance(vm, VM):
            raise TypeError(f"vm: expected a kit.kvm.VM, got {type(vm).__name__} {vm!r}")
        self.vm = vm
        self.fallocate = check_bool(fallocate, "fallocate")
        self.max_exits = VMM_MAX_EXITS.check(max_exits)
        self.prefault = check_bool(prefault, "prefault")
        self.ioctls = 0            # KVM_SET_MEMORY_ATTRIBUTES calls made (the cost of userspace control)
        self.pre_faults = 0        # KVM_PRE_FAULT_MEMORY calls made
        self.log: list = []
        self.panicked = None       # the termination exit, once the guest asked to terminate

    def convert(self, gpa: int, size: int, private: bool) -> int:
        """``kvm_convert_memory``: a private conversion of memory that no guest_memfd slot
        backs is refused (the guest's hypercall gets -KVM_EINVAL, nothing changes); otherwise
        attributes first, then the guest_memfd range."""
        gpa, size, private = check_field(gpa, "gpa"), check_field(size, "size"), check_bool(private, "private")
        start, end = gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT
        if private and not self._gmem_backed(start, end):
            return -U.KVM_EINVAL
        self.vm.set_memory_attributes(gpa, size, U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0)
        self.ioctls += 1
        self.vm.kvm.host.ledger.record("KVM_SET_MEMORY_ATTRIBUTES", set_attributes=1)
        if self.fallocate:
            for slot in list(self.vm.memslots.values()):
                s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
                if s < e and slot.gmem is not None:
                    mode = U.FALLOC_FL_KEEP_SIZE | (0 if private else U.FALLOC_FL_PUNCH_HOLE)
                    slot.gmem.fallocate(mode, slot.gmem_index(s) << PAGE_SHIFT, (e - s) << PAGE_SHIFT)
        return 0

    def pre_fault(self, gpa: int, size: int, vcpu=None) -> int:
        """QEMU's pre-fault loop in ``kvm_handle_hc_map_gpa_range``: nothing unless the VM
        reports ``KVM_CAP_PRE_FAULT_MEMORY``; then ``KVM_PRE_FAULT_MEMORY`` on ``vcpu`` (default:
        the VM's first vCPU) while some of ``[gpa, gpa + size)`` is left, stopping at the first
        failure, which is ignored. Returns the bytes left unmapped."""
        gpa, size = check_field(gpa, "gpa"), check_field(size, "size")
        if vcpu is None:
            vcpu = next(iter(self.vm.vcpus.values()), None)
        elif not isinstance(vcpu, Vcpu) or vcpu.vm is not self.vm:
            raise TypeError(f"vcpu: expected a vCPU of this VMM's VM, got {type(vcpu).__name__} {vcpu!r}")
        if vcpu is None or not self.vm.check_extension(U.KVM_CAP_PRE_FAULT_MEMORY):
            return size
        while size:
            self.pre_faults += 1
            try:
                left = vcpu.pre_fault_memory(gpa, size)
            except KvmError:
                break
            gpa, size = left.gpa, left.size
        return size

    def _exiting_vcpu(self, exit):
        """The vCPU whose exit ``exit`` is (the one it waits on), else None (then
        :meth:`pre_fault` takes the VM's first: the NPT is the VM's, shared by its vCPUs)."""
        return next((v for v in self.vm.vcpus.values() if v.pending_exit is exit), None)

    def _gmem_backed(self, start: int, end: int) -> bool:
        covered = 0
        for slot in self.vm.memslots.values():
            s, e = max(start, slot.base_gfn), min(end, slot.end_gfn)
            if s < e:
                if not slot.flags & U.KVM_MEM_GUEST_MEMFD:
                    return False
                covered += e - s
        return covered == end - start

    def handle(self, exit: Exit) -> int:
        """Answer one exit; returns the hypercall's ``ret`` (0, or the conversion's refusal) or 0
        for a memory fault. A termination request is recorded in :attr:`panicked` (0)."""
        if not isinstance(exit, Exit):
            raise TypeError(f"exit: expected a kit.kvm.uapi.Exit, got {type(exit).__name__} {exit!r}")
        self.log.append(exit)
        if exit.reason == U.KVM_EXIT_SYSTEM_EVENT and exit.system_event \
                and exit.system_event[0] == U.KVM_SYSTEM_EVENT_SEV_TERM:
            self.panicked = exit
            return 0
        if exit.reason == U.KVM_EXIT_HYPERCALL and exit.hypercall.nr == U.KVM_HC_MAP_GPA_RANGE:
            gpa, npages, attrs = exit.hypercall.args
            ret = self.convert(gpa, npages << PAGE_SHIFT, bool(attrs & KVM_MAP_GPA_RANGE_ENCRYPTED))
            if ret == 0 and self.prefault:
                self.pre_fault(gpa, npages << PAGE_SHIFT, self._exiting_vcpu(exit))
            return ret
        if exit.reason == U.KVM_EXIT_MEMORY_FAULT:
            mf = exit.memory_fault
            return self.convert(mf.gpa, mf.size, bool(mf.flags & U.KVM_MEMORY_EXIT_FLAG_PRIVATE))
        raise ValueError(f"exit: the VMM cannot answer exit reason {exit.reason}")

    def answer(self, vcpu, exit) -> int:
        """``KVM_RUN``'s loop for an exit that left a completion in KVM (a GHCB page-state
        change, the MSR protocol): answer it, hand the ``ret`` back
        (:meth:`~kit.kvm.mmu.Vcpu.complete_hypercall`) and answer every exit KVM hands out
        next, until KVM answers the guest. ``exit`` None (KVM answered at once) does nothing.
        Returns the number of exits answered."""
        _check_vcpu(vcpu)
        if exit is not None and not isinstance(exit, Exit):
            raise TypeError(f"exit: expected a kit.kvm.uapi.Exit or None, got {type(exit).__name__} {exit!r}")
        n = 0
        while exit is not None:
            ret = self.handle(exit)
            n += 1
            if vcpu.complete_userspace_io is None:     # nothing to complete (e.g. a VMCALL)
                return n
            exit = vcpu.complete_hypercall(ret)
        return n

    def access(self, vcpu, gpa: int, *, write: bool = True, private: bool | None = None):
        """Run a guest access to completion, answering its exits; returns the exits seen.
        A conversion the VMM cannot make (e.g. no memslot can back private memory) raises
        the KvmError; an access still exiting after ``max_exits`` answers is stuck."""
        _check_vcpu(vcpu)
        seen = []
        for _ in range(self.max_exits):
            out = vcpu.access(gpa, write=write, private=private)
            if out is None:
                return seen
            seen.append(out)
            self.handle(out)
        raise KvmError(errno.EFAULT, f"guest access at {gpa:#x} still exits after {self.max_exits} answers (stuck)")
