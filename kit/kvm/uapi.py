"""KVM uAPI: constants with the kernel's names and values, the structures ``KVM_RUN`` hands to
userspace (``struct kvm_run`` exits), and the integer-field rule every ioctl argument follows.

Sources: include/uapi/linux/kvm.h (ioctls, caps, ``struct kvm_run``, exit reasons),
arch/x86/include/uapi/asm/kvm.h (VM types, ``enum sev_cmd_id``), include/uapi/linux/kvm_para.h
(hypercall numbers, ``KVM_E*`` codes), arch/x86/include/uapi/asm/kvm_para.h
(``KVM_MAP_GPA_RANGE_*``), include/uapi/linux/falloc.h, include/linux/kvm_host.h (limits).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

import numpy as np

from ..units import PAGE_4K


# VM types (arch/x86/include/uapi/asm/kvm.h)
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
KVM_X86_TDX_VM = 5
VM_TYPE_NAMES = {0: "KVM_X86_DEFAULT_VM", 1: "KVM_X86_SW_PROTECTED_VM", 2: "KVM_X86_SEV_VM",
                 3: "KVM_X86_SEV_ES_VM", 4: "KVM_X86_SNP_VM", 5: "KVM_X86_TDX_VM"}

# memslot flags
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2

# memory attributes
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3

# guest_memfd flags
GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1

# fallocate modes (include/uapi/linux/falloc.h)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

# capabilities
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_VM_COPY_ENC_CONTEXT_FROM = 197
KVM_CAP_EXIT_HYPERCALL = 201
KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM = 206
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_PRE_FAULT_MEMORY = 236
KVM_CAP_GUEST_MEMFD_FLAGS = 244

# KVM_MEMORY_ENCRYPT_OP sub-commands (arch/x86/include/uapi/asm/kvm.h ``enum sev_cmd_id``)
(KVM_SEV_INIT, KVM_SEV_ES_INIT, KVM_SEV_LAUNCH_START, KVM_SEV_LAUNCH_UPDATE_DATA,
 KVM_SEV_LAUNCH_UPDATE_VMSA, KVM_SEV_LAUNCH_SECRET, KVM_SEV_LAUNCH_MEASURE, KVM_SEV_LAUNCH_FINISH,
 KVM_SEV_SEND_START, KVM_SEV_SEND_UPDATE_DATA, KVM_SEV_SEND_UPDATE_VMSA, KVM_SEV_SEND_FINISH,
 KVM_SEV_RECEIVE_START, KVM_SEV_RECEIVE_UPDATE_DATA, KVM_SEV_RECEIVE_UPDATE_VMSA,
 KVM_SEV_RECEIVE_FINISH, KVM_SEV_GUEST_STATUS, KVM_SEV_DBG_DECRYPT, KVM_SEV_DBG_ENCRYPT,
 KVM_SEV_CERT_EXPORT, KVM_SEV_GET_ATTESTATION_REPORT, KVM_SEV_SEND_CANCEL, KVM_SEV_INIT2) = range(23)
KVM_SEV_SNP_LAUNCH_START, KVM_SEV_SNP_LAUNCH_UPDATE, KVM_SEV_SNP_LAUNCH_FINISH = 100, 101, 102
SEV_CMD_NAMES = {v: k for k, v in dict(globals()).items() if k.startswith("KVM_SEV_")}

# exits
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_MMIO = 6
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_MEMORY_FAULT = 39
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
KVM_EXIT_HYPERCALL_LONG_MODE = 1 << 0

# kvm_run.system_event.type (include/uapi/linux/kvm.h)
KVM_SYSTEM_EVENT_SEV_TERM = 6

EXIT_REASON_NAMES = {KVM_EXIT_HYPERCALL: "KVM_EXIT_HYPERCALL", KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
                     KVM_EXIT_SYSTEM_EVENT: "KVM_EXIT_SYSTEM_EVENT",
                     KVM_EXIT_MEMORY_FAULT: "KVM_EXIT_MEMORY_FAULT"}

# hypercalls and their guest-visible errors (include/uapi/linux/kvm_para.h: KVM_EFAULT is
# defined as EFAULT, KVM_EINVAL as EINVAL, KVM_EPERM as EPERM; KVM_ENOSYS and KVM_EOPNOTSUPP
# are fixed numbers of the hypercall ABI, not the host's errno values)
KVM_HC_MAP_GPA_RANGE = 12
KVM_ENOSYS = 1000
KVM_EFAULT = errno.EFAULT
KVM_EINVAL = errno.EINVAL
KVM_EPERM = errno.EPERM
KVM_EOPNOTSUPP = 95

# KVM_HC_MAP_GPA_RANGE attributes (arch/x86/include/uapi/asm/kvm_para.h)
KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0
KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1
KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 2
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4
KVM_MAP_GPA_RANGE_DECRYPTED = 0

# limits (include/linux/kvm_host.h, x86)
KVM_MEM_SLOTS_NUM = 32767                 # SHRT_MAX
KVM_INTERNAL_MEM_SLOTS = 3
KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1

# integer limits of the uAPI fields and of the x86-64 user address space
U64 = (1 << 64) - 1
TASK_SIZE_MAX = (1 << 47) - PAGE_4K         # arch/x86/include/asm/page_64_types.h, for access_ok()


def check_field(value, name: str, bits: int = 64) -> int:
    """A uAPI integer field: ints only, and it must fit the field's unsigned width (a negative or
    too-wide value is the caller's error, so a ``ValueError`` naming ``name``, not an errno)."""
    if type(value) is int and 0 <= value and not value >> bits:      # the common case, at once
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < 0 or value >> bits:
        raise ValueError(f"{name}: must fit an unsigned {bits}-bit field, got {value!r}")
    return value


# ----------------------------------------------------------------- ioctl structures
@dataclass(frozen=True)
class PreFaultMemory:
    """``struct kvm_pre_fault_memory`` as ``KVM_PRE_FAULT_MEMORY`` hands it back: ``gpa`` and
    ``size`` of the range still to do (in/out), ``flags`` as given (in). ``size`` 0: the whole
    range was mapped. The struct's ``padding[5]`` is not read by the kernel
    (virt/kvm/kvm_main.c ``kvm_vcpu_pre_fault_memory`` checks only ``flags``), so it is not
    modelled."""

    gpa: int
    size: int
    flags: int = 0


# ----------------------------------------------------------------- struct kvm_run exits
@dataclass(frozen=True)
class MemoryFault:
    """``kvm_run.memory_fault`` (``KVM_EXIT_MEMORY_FAULT``)."""

    gpa: int
    size: int
    flags: int


@dataclass(frozen=True)
class Hypercall:
    """``kvm_run.hypercall`` (``KVM_EXIT_HYPERCALL``): ``ret`` is what userspace writes back."""

    nr: int
    args: tuple
    flags: int
    ret: int = 0


@dataclass(frozen=True)
class Exit:
    """What ``KVM_RUN`` hands to userspace (``struct kvm_run``); for ``KVM_EXIT_MEMORY_FAULT``
    KVM_RUN itself returns -1/EFAULT, recorded in ``errno``. ``system_event`` is
    ``kvm_run.system_event`` of ``KVM_EXIT_SYSTEM_EVENT`` as ``(type, data[0])``, e.g.
    ``(KVM_SYSTEM_EVENT_SEV_TERM, the guest's GHCB MSR)`` (arch/x86/kvm/svm/sev.c
    ``sev_handle_vmgexit_msr_protocol``, ``out_terminate``: ``ndata`` 1)."""

    reason: int
    memory_fault: MemoryFault | None = None
    hypercall: Hypercall | None = None
    errno: int = 0
    system_event: tuple | None = None

    @property
    def reason_name(self) -> str:
        return EXIT_REASON_NAMES.get(self.reason, str(self.reason))
