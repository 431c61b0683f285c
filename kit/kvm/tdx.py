"""TDX's private/shared convention, as far as the ownership question needs it: how a TD asks
for a conversion, what KVM and userspace see, and where it gets stuck. Not a TDX module model:
docs/tdx.md lists what is left out.

- **The shared bit.** A TD's GPA space is aliased: the same page is private at ``gpa`` and
  shared at ``gpa | shared bit``, the top bit of the guest physical address width
  (arch/x86/coco/tdx/tdx.c ``tdx_parse_tdinfo``: ``cc_mask = BIT_ULL(gpa_width - 1)``; bit 47
  for GPAW 48, bit 51 for GPAW 52; KVM: ``TDX_SHARED_BIT_PWL_4``/``_5`` in
  arch/x86/kvm/vmx/tdx.h, the only two widths ``setup_tdparams_eptp_controls`` accepts).
  KVM's fault path strips the bit and calls the access private when it is clear
  (:meth:`TdxX86Ops.fault_gpa`, reached from :meth:`kit.kvm.mmu.Vcpu.access`).
- **How the guest asks.** ``TDG.VP.VMCALL<MapGPA>`` (leaf ``TDVMCALL_MAP_GPA``, 0x10001) with
  R12 = start and R13 = size, start carrying the shared bit for a conversion to shared
  (arch/x86/coco/tdx/tdx.c ``tdx_map_gpa``). The guest retries from R11 when told
  ``TDVMCALL_STATUS_RETRY``, at most 3 times without progress, and gives up on any other
  error (``set_memory_decrypted`` then fails with -EIO).
- **What KVM and userspace see** (arch/x86/kvm/vmx/tdx.c ``tdx_map_gpa``, ``__tdx_map_gpa``,
  ``tdx_complete_vmcall_map_gpa``; series "[PATCH v2 5/8] KVM: TDX: Handle
  TDG.VP.VMCALL<MapGPA>", B. Wu, 2025): one ``KVM_EXIT_HYPERCALL`` with
  ``KVM_HC_MAP_GPA_RANGE`` per chunk of at most 2 MiB, args = (gpa without the shared bit,
  pages, ENCRYPTED or DECRYPTED); between chunks a pending event ends the call with RETRY
  and R11 = the next GPA. Userspace must have enabled ``KVM_CAP_EXIT_HYPERCALL`` for
  ``KVM_HC_MAP_GPA_RANGE``, or the guest gets ``TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED`` (the
  first merged text returned INVALID_OPERAND). Userspace answers each exit (e.g. with
  ``KVM_SET_MEMORY_ATTRIBUTES``) and a nonzero ``hypercall.ret`` ends the call with
  INVALID_OPERAND and R11 = the chunk's GPA.
- **Guest ownership** (the model's ``attribute_owner="guest"``, the pKVM proposal in the thread
  "[RFC PATCH v12 11/33] KVM: Introduce per-page memory attributes", 2023): KVM converts each
  chunk itself; userspace sees no exit and cannot refuse.

The function-level API: :func:`shared_alias`, :func:`tdvmcall_map_gpa` (the guest's call; an
``Exit`` for userspace or the status the guest gets) and :func:`complete_map_gpa` (userspace's
answer, then the next chunk's exit or the status). Registers the TD reads back are in
``vcpu.tdx`` (:class:`VcpuTdx`). An Intel host's tables: :data:`vt_x86_ops`,
:data:`vt_init_ops` (``Kvm(host, init_ops=vt_init_ops, vm_types=VT_VM_TYPES)``).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from ..errors import KvmError
from ..units import PAGE_2M, PAGE_4K, PAGE_SHIFT, check_int
from . import uapi as U
from .uapi import Exit, Hypercall, check_field
from .x86_ops import GENERIC_X86_OPS, KvmX86InitOps, KvmX86Ops

# arch/x86/include/asm/shared/tdx.h
TDVMCALL_MAP_GPA = 0x10001
TDVMCALL_STATUS_SUCCESS = 0x0000000000000000
TDVMCALL_STATUS_RETRY = 0x0000000000000001
TDVMCALL_STATUS_INVALID_OPERAND = 0x8000000000000000
TDVMCALL_STATUS_ALIGN_ERROR = 0x8000000000000002
TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED = 0x8000000000000003
TDVMCALL_STATUS_NAMES = {TDVMCALL_STATUS_SUCCESS: "SUCCESS", TDVMCALL_STATUS_RETRY: "RETRY",
                         TDVMCALL_STATUS_INVALID_OPERAND: "INVALID_OPERAND",
                         TDVMCALL_STATUS_ALIGN_ERROR: "ALIGN_ERROR",
                         TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED: "SUBFUNC_UNSUPPORTED"}

#: arch/x86/kvm/vmx/tdx.c: the largest range one MapGPA exit covers.
TDX_MAP_GPA_MAX_LEN = PAGE_2M
#: The guest physical address widths KVM accepts (``setup_tdparams_eptp_controls``).
TDX_GPAWS = (48, 52)
#: arch/x86/kvm/vmx/tdx.h: the shared bit as a gfn bit, 4- and 5-level EPT.
TDX_SHARED_BIT_PWL_4 = (1 << 47) >> PAGE_SHIFT
TDX_SHARED_BIT_PWL_5 = (1 << 51) >> PAGE_SHIFT
#: VM types an Intel host with TDX supports.
VT_VM_TYPES = (U.KVM_X86_DEFAULT_VM, U.KVM_X86_SW_PROTECTED_VM, U.KVM_X86_TDX_VM)
_U64 = U.U64 + 1                  # 2**64: the registers are 64-bit


def shared_bit(gpaw: int = 48) -> int:
    """The shared bit of a TD with guest physical address width ``gpaw`` (48 or 52):
    ``BIT_ULL(gpaw - 1)`` (``tdx_parse_tdinfo``)."""
    if isinstance(gpaw, bool) or not isinstance(gpaw, int) or gpaw not in TDX_GPAWS:
        raise ValueError(f"gpaw: must be one of {TDX_GPAWS}, got {gpaw!r}")
    return 1 << (gpaw - 1)


def shared_alias(gpa: int, gpaw: int = 48) -> int:
    """The shared alias of ``gpa``: ``gpa | BIT(gpaw - 1)`` (the guest's ``cc_mkdec``)."""
    bit = shared_bit(gpaw)
    if isinstance(gpa, bool) or not isinstance(gpa, int) or not 0 <= gpa < 2 * bit:
        raise ValueError(f"gpa: expected an int in [0, 2**{gpaw}), got {gpa!r}")
    return gpa | bit


def private_alias(gpa: int, gpaw: int = 48) -> int:
    """``gpa`` without the shared bit (KVM's ``kvm_get_unaliased_gpa``)."""
    bit = shared_bit(gpaw)
    if isinstance(gpa, bool) or not isinstance(gpa, int) or not 0 <= gpa < 2 * bit:
        raise ValueError(f"gpa: expected an int in [0, 2**{gpaw}), got {gpa!r}")
    return gpa & ~bit


@dataclass(eq=False)
class KvmTdx:
    """``struct kvm_tdx``, the field the model uses: the guest physical address width, which
    fixes the shared bit (KVM: ``kvm->arch.gfn_direct_bits``); ``vm.tdx``."""

    gpaw: int = 48

    @property
    def shared_gpa_mask(self) -> int:
        return shared_bit(self.gpaw)


@dataclass(eq=False)
class VcpuTdx:
    """``struct vcpu_tdx``, the fields MapGPA uses; ``vcpu.tdx``.

    ``map_gpa_next``/``map_gpa_end``: the call in progress (``None`` when none waits for
    userspace); ``r11``: what the TD reads back in R11 (the GPA to retry from, or the failing
    one); ``event_pending``: a knob, an interrupt or NMI waiting for the vCPU
    (``kvm_vcpu_has_events``; earlier text: ``pi_has_pending_interrupt`` or a pending NMI),
    delivered, and so cleared, when KVM returns to the TD."""

    map_gpa_next: int | None = None
    map_gpa_end: int = 0
    r11: int = 0
    event_pending: bool = False


def tdx_init_vm(vm, gpaw: int = 48) -> int:
    """``KVM_TDX_INIT_VM``, the part the model uses: the guest physical address width from the
    TD's CPUID (``setup_tdparams_eptp_controls``: 48 or 52, else EINVAL), before vCPUs exist
    (EINVAL). Returns 0."""
    vm.check_alive()
    gpaw = check_field(gpaw, "gpaw", 8)
    if vm.type != U.KVM_X86_TDX_VM:
        raise KvmError(errno.ENOTTY, "not a TD")
    if gpaw not in TDX_GPAWS or vm.vcpus:
        raise KvmError(errno.EINVAL, f"GPAW {gpaw} not 48/52, or vCPUs already created")
    vm.tdx.gpaw = gpaw
    return 0


def _private(vm, gpa: int) -> bool:
    """``tdx_is_private_gpa``: the shared bit is clear."""
    return not gpa & vm.tdx.shared_gpa_mask


def _guest_owned(vm) -> bool:
    return vm.attribute_owner == "guest"


def tdvmcall_map_gpa(vcpu, gpa: int, size: int):
    """The TD's ``TDG.VP.VMCALL<MapGPA>(gpa, size)`` (KVM ``tdx_map_gpa``). Returns the
    ``KVM_EXIT_HYPERCALL`` exit userspace must answer (:func:`complete_map_gpa`), or the
    status the TD gets (``TDVMCALL_STATUS_*``; R11 in ``vcpu.tdx.r11``). Checks, in KVM's
    order: exits for ``KVM_HC_MAP_GPA_RANGE`` not enabled -> SUBFUNC_UNSUPPORTED; an empty or
    wrapping range, a GPA beyond the width, or ends of different kinds (private/shared) ->
    INVALID_OPERAND; GPA or size not page aligned -> ALIGN_ERROR; R11 = gpa on each. With
    guest ownership (a model option) KVM converts the chunks itself and returns the status."""
    vm = vcpu.vm
    vm.check_alive()
    t = getattr(vcpu, "tdx", None)
    if t is None:
        raise ValueError(f"{vcpu!r} is not a TD vCPU: TDG.VP.VMCALL exists only in a TD")
    if t.map_gpa_next is not None:
        raise ValueError("a MapGPA exit is still waiting for complete_map_gpa")
    for name, v in (("gpa", gpa), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < _U64:
            raise ValueError(f"{name}: expected a 64-bit register value, got {v!r}")
    vm.kvm.host.ledger.record("tdvmcall", vm_exit=1)
    legal = 1 << vm.tdx.gpaw                       # kvm_vcpu_is_legal_gpa: MAXPHYADDR = GPAW
    end = (gpa + size) % _U64
    if not _guest_owned(vm) and not vm.exit_hypercalls & (1 << U.KVM_HC_MAP_GPA_RANGE):
        status = TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED
    elif (end <= gpa or gpa >= legal or end - 1 >= legal
          or _private(vm, gpa) != _private(vm, end - 1)):
        status = TDVMCALL_STATUS_INVALID_OPERAND
    elif gpa % PAGE_4K or size % PAGE_4K:
        status = TDVMCALL_STATUS_ALIGN_ERROR
    else:
        t.map_gpa_next, t.map_gpa_end = gpa, end
        return _next_chunk(vcpu)
    return _to_guest(vcpu, status, gpa)


def complete_map_gpa(vcpu, ret: int = 0):
    """Userspace's answer to a MapGPA exit (``KVM_RUN`` again with ``hypercall.ret = ret``;
    KVM ``tdx_complete_vmcall_map_gpa``): ret != 0 -> INVALID_OPERAND, R11 = the chunk's GPA;
    else the next chunk: the call is done -> SUCCESS; an event pending -> RETRY, R11 = the
    next GPA; otherwise the next chunk's exit."""
    ret = check_int(ret, "ret", -(1 << 63), U.U64)       # run->hypercall.ret, a 64-bit register
    t = getattr(vcpu, "tdx", None)
    if t is None or t.map_gpa_next is None:
        raise ValueError("ret: no MapGPA exit is waiting for an answer")
    vcpu.vm.check_alive()
    if ret:
        return _to_guest(vcpu, TDVMCALL_STATUS_INVALID_OPERAND, t.map_gpa_next)
    return _advance(vcpu)


def _advance(vcpu):
    t = vcpu.tdx
    t.map_gpa_next += TDX_MAP_GPA_MAX_LEN
    if t.map_gpa_next >= t.map_gpa_end:
        return _to_guest(vcpu, TDVMCALL_STATUS_SUCCESS, t.r11)   # R11 untouched
    if t.event_pending:
        return _to_guest(vcpu, TDVMCALL_STATUS_RETRY, t.map_gpa_next)
    return _next_chunk(vcpu)


def _next_chunk(vcpu):
    """``__tdx_map_gpa``: the exit for ``[next, next + min(2 MiB, end - next))``. Under guest
    ownership KVM makes the conversion itself and goes on."""
    vm, t = vcpu.vm, vcpu.tdx
    gpa = t.map_gpa_next
    size = min(t.map_gpa_end - gpa, TDX_MAP_GPA_MAX_LEN)
    unaliased = gpa & ~vm.tdx.shared_gpa_mask
    private = _private(vm, gpa)
    if _guest_owned(vm):
        value = U.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
        vm.kvm_vm_set_mem_attributes(unaliased, size, value)
        vm.kvm_conversions.append((unaliased >> PAGE_SHIFT, (unaliased + size) >> PAGE_SHIFT, value))
        return _advance(vcpu)
    vm.kvm.host.ledger.record("tdvmcall", user_exit=1)
    attrs = U.KVM_MAP_GPA_RANGE_ENCRYPTED if private else U.KVM_MAP_GPA_RANGE_DECRYPTED
    return Exit(U.KVM_EXIT_HYPERCALL, hypercall=Hypercall(
        U.KVM_HC_MAP_GPA_RANGE, (unaliased, size // PAGE_4K, attrs), U.KVM_EXIT_HYPERCALL_LONG_MODE))


def _to_guest(vcpu, status: int, r11: int) -> int:
    """Back to the TD with ``status`` in R10 and ``r11`` in R11; a pending event is delivered."""
    t = vcpu.tdx
    t.map_gpa_next, t.r11, t.event_pending = None, r11, False
    return status


class TdxX86Ops(KvmX86Ops):
    """The arch ops of ``KVM_X86_TDX_VM``: the TDX members of ``vt_x86_ops``
    (arch/x86/kvm/vmx/main.c, dispatching to arch/x86/kvm/vmx/tdx.c), the ones the model
    needs."""

    def vm_init(self, vm) -> None:
        """``tdx_vm_init``: protected state and private memory; the TD's width (``vm.tdx``,
        48 until :func:`tdx_init_vm`)."""
        vm.has_protected_state = True
        vm.has_private_mem = True
        vm.tdx = KvmTdx()

    def vcpu_create(self, vcpu) -> None:
        """``tdx_vcpu_create``: the MapGPA state (``vcpu.tdx``)."""
        vcpu.tdx = VcpuTdx()

    def private_max_mapping_level(self, vm, pfn) -> int:
        """``tdx_gmem_private_max_mapping_level``: 4K."""
        return PAGE_4K

    def gfn_direct_bits(self, vm) -> int:
        """``kvm_gfn_direct_bits``: the shared bit as a gfn bit (``kvm->arch.gfn_direct_bits``,
        set by ``tdx_td_init``)."""
        return vm.tdx.shared_gpa_mask >> PAGE_SHIFT

    def fault_gpa(self, vm, gpa: int, private: bool | None) -> tuple[int, bool]:
        """An EPT violation at ``gpa``: the GPA without the shared bit, private exactly when
        the bit is clear (``tdx_is_private_gpa``). ``private=False`` with the bit clear is
        taken as the same shared access spelled without the alias; ``private=True`` with the
        bit set contradicts the bit (ValueError), as does a GPA beyond the width."""
        bit = vm.tdx.shared_gpa_mask
        if gpa >= 2 * bit:
            raise ValueError(f"gpa: {gpa:#x} is beyond the TD's {vm.tdx.gpaw}-bit GPA width")
        shared = bool(gpa & bit)
        if private and shared:
            raise ValueError("private: the GPA carries the shared bit")
        return gpa & ~bit, (not shared) if private is None else private


TDX_X86_OPS = TdxX86Ops()

#: ``vt_x86_ops`` per VM type: an Intel host with TDX.
vt_x86_ops = {
    U.KVM_X86_DEFAULT_VM: GENERIC_X86_OPS,
    U.KVM_X86_SW_PROTECTED_VM: GENERIC_X86_OPS,
    U.KVM_X86_TDX_VM: TDX_X86_OPS,
}

#: ``vt_init_ops``: pass as ``Kvm(host, init_ops=vt_init_ops, vm_types=VT_VM_TYPES)``; not
#: installed by default (importing :mod:`kit.kvm` installs the AMD vendor, :mod:`kit.kvm.svm`).
vt_init_ops = KvmX86InitOps(vt_x86_ops)
