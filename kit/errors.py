"""Errors with the kernel's and the hardware's meaning.

- ``KvmError`` is what a KVM ioctl failing with ``-errno`` looks like from userspace.
- ``NestedPageFault`` is the #NPF the hardware raises for a guest RMP violation, carrying the
  error-code bits KVM sees in ``npf_interception()`` (``PFERR_*`` in arch/x86/include/asm/kvm_host.h).
- ``HostOops`` is the host kernel dying on a page fault in kernel mode (``page_fault_oops`` in
  arch/x86/mm/fault.c), raised by the ``oops`` host-fault policy with the fault's details.
"""
from __future__ import annotations

import errno as _errno
import os

# #PF error-code bits (arch/x86/include/asm/trap_pf.h: enum x86_pf_error_code).
X86_PF_PROT = 1 << 0
X86_PF_WRITE = 1 << 1
X86_PF_USER = 1 << 2
X86_PF_RSVD = 1 << 3
X86_PF_INSTR = 1 << 4
X86_PF_PK = 1 << 5
X86_PF_SHSTK = 1 << 6
X86_PF_SGX = 1 << 15
X86_PF_RMP = 1 << 31

# #NPF error-code bits as KVM names them (arch/x86/include/asm/kvm_host.h).
PFERR_PRESENT_MASK = 1 << 0
PFERR_WRITE_MASK = 1 << 1
PFERR_USER_MASK = 1 << 2
PFERR_GUEST_RMP_MASK = 1 << 31
PFERR_GUEST_FINAL_MASK = 1 << 32
PFERR_GUEST_PAGE_MASK = 1 << 33
PFERR_GUEST_ENC_MASK = 1 << 34
PFERR_GUEST_SIZEM_MASK = 1 << 35
PFERR_GUEST_VMPL_MASK = 1 << 36


# the kernel's names where Python's errorcode picks an alias (95 is EOPNOTSUPP in the kernel's
# include/uapi/asm-generic/errno.h; glibc's ENOTSUP has the same value)
_KERNEL_NAMES = {_errno.EOPNOTSUPP: "EOPNOTSUPP", _errno.EAGAIN: "EAGAIN", _errno.EDEADLK: "EDEADLK"}


def errno_name(err: int) -> str:
    """The kernel's name of errno ``err`` (``EOPNOTSUPP``, not ``ENOTSUP``)."""
    return _KERNEL_NAMES.get(err) or _errno.errorcode.get(err, str(err))


class KitError(Exception):
    """Base class of the kit's own errors (not raised for bad arguments: those are ValueError)."""


class KernelError(OSError):
    """A kernel function failed with ``-errno``: ``.errno`` is the kernel's errno."""

    def __init__(self, err: int, detail: str = ""):
        name = errno_name(err)
        msg = f"{name}: {os.strerror(err)}" + (f" ({detail})" if detail else "")
        super().__init__(err, msg)
        self.detail = detail

    def __str__(self) -> str:  # "[Errno 22] EINVAL: Invalid argument (why)"
        return f"[Errno {self.errno}] {self.strerror}"


class KvmError(KernelError):
    """A KVM ioctl failed the way the kernel fails it: ``.errno`` is the kernel's errno."""


class RmpUpdateLivelock(KitError):
    """The kernel's ``rmpupdate()`` retries RMPUPDATE while it returns FAIL_OVERLAP, with no
    bound (arch/x86/virt/svm/sev.c); an overlap that nothing else will clear spins forever.
    Raised instead of hanging, with nothing changed (see ``Host(overlap_retries=...)``)."""

    def __init__(self, pfn: int, level: int):
        self.pfn = pfn
        self.level = level
        super().__init__(f"rmpupdate(pfn {pfn:#x}, level {level:#x}) would retry FAIL_OVERLAP "
                         "forever: a 2M/4K overlap that no other CPU is about to clear")


class SigBus(KitError):
    """A userspace access to a mapping that cannot be backed (the kernel sends SIGBUS)."""


class NestedPageFault(KitError):
    """#NPF raised by an instruction model (e.g. PVALIDATE at 4K on a 2M RMP entry).

    ``error_code`` holds the PFERR_* bits; ``gpa`` the faulting guest physical address.
    """

    def __init__(self, error_code: int, *, gpa: int, pfn: int, reason: str):
        self.error_code = error_code
        self.gpa = gpa
        self.pfn = pfn
        self.reason = reason
        bits = [n for n, v in _PFERR_NAMES if error_code & v]
        super().__init__(f"#NPF at gpa {gpa:#x} (pfn {pfn:#x}): {reason} [{'|'.join(bits)}]")


_PFERR_NAMES = [
    ("PRESENT", PFERR_PRESENT_MASK), ("WRITE", PFERR_WRITE_MASK), ("USER", PFERR_USER_MASK),
    ("GUEST_RMP", PFERR_GUEST_RMP_MASK), ("GUEST_FINAL", PFERR_GUEST_FINAL_MASK),
    ("GUEST_PAGE", PFERR_GUEST_PAGE_MASK), ("GUEST_ENC", PFERR_GUEST_ENC_MASK),
    ("GUEST_SIZEM", PFERR_GUEST_SIZEM_MASK), ("GUEST_VMPL", PFERR_GUEST_VMPL_MASK),
]


class HostOops(KitError):
    """The host kernel oopsed on a fault in a kernel-mode direct-map access.

    Fields: ``pfn``, ``write``, ``error_code`` (X86_PF_* bits), ``kind`` (``"rmp"`` when
    X86_PF_RMP is set, ``"not-present"`` otherwise), ``level`` (the direct-map mapping level
    the access went through), ``entry`` (the RmpEntry of ``pfn``, as ``snp_dump_hva_rmpentry``
    would print it).
    """

    def __init__(self, fault):
        self.fault = fault
        self.pfn = fault.pfn
        self.write = fault.write
        self.error_code = fault.error_code
        self.kind = fault.kind
        self.level = fault.level
        self.entry = fault.entry
        super().__init__(f"BUG: unable to handle page fault: {fault.describe()}")


SVM_EXIT_NPF = 0x400
SVM_EXIT_PAGE_NOT_VALIDATED = 0x404   # AMD APM vol. 2 §15.36.10; no kernel constant

class VmmCommunicationException(Exception):
    """#VC raised in an SEV-ES/SNP guest (arch/x86/coco/sev/vc-handle.c
    ``exc_vmm_communication``): ``exit_code`` says why, ``gpa`` where."""

    def __init__(self, exit_code: int, gpa: int, detail: str = ""):
        self.exit_code, self.gpa, self.detail = exit_code, gpa, detail
        super().__init__(f"#VC exit code {exit_code:#x} at gpa {gpa:#x}" + (f": {detail}" if detail else ""))
