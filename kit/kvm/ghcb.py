"""The GHCB protocol as guest and KVM share it: the MSR protocol's requests and responses, the
page-state-change descriptor the guest puts in the GHCB shared buffer, and the codes KVM
answers with.

Sources: arch/x86/include/asm/sev-common.h (``GHCB_MSR_*``, ``struct psc_hdr``,
``struct psc_entry``, ``VMGEXIT_PSC_*``, ``SEV_TERM_SET_*``, ``GHCB_TERM_*``),
arch/x86/include/asm/svm.h (``GHCB_HV_RESP_*``, ``GHCB_ERR_*``), arch/x86/include/uapi/asm/svm.h
(``SVM_VMGEXIT_PSC``, ``SVM_VMGEXIT_TERM_REQUEST``), the GHCB specification ("Page State
Change", "MSR Protocol", "Termination Request").

Generic code may import this module (it holds no SEV behaviour): the vCPU composes the
termination request here, KVM's SEV-ES and SNP handlers (:mod:`.sev`, :mod:`.snp`) decode it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..units import PAGE_2M, PAGE_4K, check_int

# ----------------------------------------------------------------- the MSR protocol
GHCB_MSR_INFO_MASK = 0xFFF
GHCB_MSR_PSC_REQ = 0x014
GHCB_MSR_PSC_RESP = 0x015
GHCB_MSR_PSC_RESP_ERROR = (1 << 63) | GHCB_MSR_PSC_RESP      # "highest bit as a generic error"
GHCB_MSR_PSC_GFN_POS, GHCB_MSR_PSC_GFN_MASK = 12, (1 << 40) - 1
GHCB_MSR_PSC_OP_POS, GHCB_MSR_PSC_OP_MASK = 52, 0xF
GHCB_MSR_TERM_REQ = 0x100
GHCB_MSR_TERM_REASON_SET_POS, GHCB_MSR_TERM_REASON_SET_MASK = 12, 0xF
GHCB_MSR_TERM_REASON_POS, GHCB_MSR_TERM_REASON_MASK = 16, 0xFF

# termination reasons: set 0 (GHCB specification), set 1 (the Linux guest's own)
SEV_TERM_SET_GEN, SEV_TERM_SET_LINUX = 0, 1
GHCB_SEV_ES_GEN_REQ, GHCB_SEV_ES_PROT_UNSUPPORTED, GHCB_SNP_UNSUPPORTED = 0, 1, 2
GHCB_TERM_REGISTER, GHCB_TERM_PSC, GHCB_TERM_PVALIDATE = 0, 1, 2

# VMGEXIT exit codes carried in the GHCB (arch/x86/include/uapi/asm/svm.h)
SVM_VMGEXIT_PSC = 0x80000010
SVM_VMGEXIT_TERM_REQUEST = 0x8000FFFE

# sw_exit_info_1 of a GHCB answer, and the reasons in sw_exit_info_2 of a malformed request
GHCB_HV_RESP_NO_ACTION, GHCB_HV_RESP_ISSUE_EXCEPTION, GHCB_HV_RESP_MALFORMED_INPUT = 0, 1, 2
GHCB_ERR_NOT_REGISTERED, GHCB_ERR_INVALID_USAGE, GHCB_ERR_INVALID_SCRATCH_AREA = 1, 2, 3
GHCB_ERR_MISSING_INPUT, GHCB_ERR_INVALID_INPUT, GHCB_ERR_INVALID_EVENT = 4, 5, 6


def ghcb_msr_psc_req(gfn: int, op: int) -> int:
    """The guest's MSR-protocol page-state request (``GHCB_MSR_PSC_REQ_GFN``): GFN in bits
    51:12, operation in bits 55:52. A value that does not fit its field is the caller's error
    (ValueError): the macro would silently cut it."""
    gfn = check_int(gfn, "gfn", 0, GHCB_MSR_PSC_GFN_MASK)
    op = check_int(op, "op", 0, GHCB_MSR_PSC_OP_MASK)
    return (GHCB_MSR_PSC_REQ | ((gfn & GHCB_MSR_PSC_GFN_MASK) << GHCB_MSR_PSC_GFN_POS)
            | ((op & GHCB_MSR_PSC_OP_MASK) << GHCB_MSR_PSC_OP_POS))


def ghcb_msr_term_req(reason_set: int, reason_code: int) -> int:
    """The guest's termination request (arch/x86/boot/startup/sev-shared.c ``sev_es_terminate``):
    ``GHCB_MSR_TERM_REQ | set << 12 | code << 16``. ``reason_set`` is 4 bits, ``reason_code`` 8;
    a value that does not fit is the caller's error (ValueError)."""
    for v, name, mask in ((reason_set, "reason_set", GHCB_MSR_TERM_REASON_SET_MASK),
                          (reason_code, "reason_code", GHCB_MSR_TERM_REASON_MASK)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= mask:
            raise ValueError(f"{name}: must be an int in 0..{mask:#x}, got {v!r}")
    return (GHCB_MSR_TERM_REQ | reason_set << GHCB_MSR_TERM_REASON_SET_POS
            | reason_code << GHCB_MSR_TERM_REASON_POS)


def ghcb_msr_term_reason(msr: int) -> tuple[int, int]:
    """(reason set, reason code) of a termination request, as KVM reads them
    (``sev_handle_vmgexit_msr_protocol``, ``GHCB_MSR_TERM_REQ``)."""
    return ((msr >> GHCB_MSR_TERM_REASON_SET_POS) & GHCB_MSR_TERM_REASON_SET_MASK,
            (msr >> GHCB_MSR_TERM_REASON_POS) & GHCB_MSR_TERM_REASON_MASK)


# ----------------------------------------------------------------- page-state change (GHCB)
SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED = 1, 2
SNP_PAGE_STATE_PSMASH, SNP_PAGE_STATE_UNSMASH = 3, 4
RMP_PG_SIZE_4K, RMP_PG_SIZE_2M = 0, 1          # the entry's one-bit ``pagesize``
VMGEXIT_PSC_MAX_COUNT = 253                     # "the actual GHCB-defined max value" (KVM's limit)
VMGEXIT_PSC_MAX_ENTRY = 64                      # the Linux guest's descriptor (current trees)
VMGEXIT_PSC_ERROR_GENERIC = 0x100 << 32
VMGEXIT_PSC_ERROR_INVALID_HDR = (1 << 32) | 1
VMGEXIT_PSC_ERROR_INVALID_ENTRY = (1 << 32) | 2
PSC_GFN_BITS, PSC_OP_BITS, PSC_CUR_PAGE_BITS = 40, 4, 12   # struct psc_entry's bit fields
PSC_OPS = (SNP_PAGE_STATE_PRIVATE, SNP_PAGE_STATE_SHARED, SNP_PAGE_STATE_PSMASH, SNP_PAGE_STATE_UNSMASH)
_U16 = 0xFFFF


def psc_pagesize_2m(pagesize) -> bool | None:
    """Whether an entry's ``pagesize`` says 2M: the kernel's bit (``RMP_PG_SIZE_4K``/``_2M``) or
    the kit's sizes (``PAGE_4K``/``PAGE_2M``) are both accepted; None for anything else."""
    if isinstance(pagesize, bool):
        return None
    if pagesize in (RMP_PG_SIZE_4K, PAGE_4K):
        return False
    if pagesize in (RMP_PG_SIZE_2M, PAGE_2M):
        return True
    return None


@dataclass
class PscEntry:
    """``struct psc_entry``: ``gfn``, ``op`` (``SNP_PAGE_STATE_*``), ``pagesize``
    (``PAGE_4K``/``PAGE_2M``, or the kernel's bit ``RMP_PG_SIZE_4K``/``_2M``) and ``cur_page``,
    the pages of the entry already done, which KVM writes back (512 or 1 when it finishes one)."""

    gfn: int
    op: int
    pagesize: int
    cur_page: int = 0

    def __post_init__(self):
        """Each field fits ``struct psc_entry``'s bit field (gfn 40 bits, operation 4,
        cur_page 12); ``pagesize`` is the entry's bit or the kit's size. Any value the guest can
        write is accepted (KVM answers a bad one with INVALID_ENTRY); others are the caller's
        error (ValueError/TypeError naming the field)."""
        self.gfn = check_int(self.gfn, "gfn", 0, (1 << PSC_GFN_BITS) - 1)
        self.op = check_int(self.op, "op", 0, (1 << PSC_OP_BITS) - 1)
        self.cur_page = check_int(self.cur_page, "cur_page", 0, (1 << PSC_CUR_PAGE_BITS) - 1)
        if psc_pagesize_2m(check_int(self.pagesize, "pagesize")) is None:
            raise ValueError(f"pagesize: must be PAGE_4K, PAGE_2M, RMP_PG_SIZE_4K (0) or RMP_PG_SIZE_2M (1), "
                             f"got {self.pagesize!r}")
        self.pagesize = int(self.pagesize)

    @property
    def npages(self) -> int:
        """The entry's 4K pages: 512 for a 2M entry, else 1."""
        return PAGE_2M // PAGE_4K if psc_pagesize_2m(self.pagesize) else 1


@dataclass
class PscDesc:
    """``struct snp_psc_desc``: the header (``cur_entry``, ``end_entry``, ``reserved``) and the
    entries, in the GHCB shared buffer. KVM processes it in place
    (arch/x86/kvm/svm/sev.c ``snp_begin_psc``, ``__snp_complete_one_psc``): it advances
    ``cur_entry`` past finished entries and sets their ``cur_page``; the guest resubmits the
    same descriptor until ``cur_entry > end_entry`` (arch/x86/coco/sev/core.c ``vmgexit_psc``).
    ``end_entry`` defaults to the last entry's index. The header fields are 16-bit."""

    entries: list = field(default_factory=list)
    cur_entry: int = 0
    end_entry: int | None = None
    reserved: int = 0

    def __post_init__(self):
        if isinstance(self.entries, (str, bytes, dict)) or not hasattr(self.entries, "__iter__"):
            raise TypeError(f"entries: expected a list of PscEntry, got {self.entries!r}")
        self.entries = list(self.entries)
        if self.end_entry is None:
            self.end_entry = len(self.entries) - 1 if self.entries else 0
        for v, name in ((self.cur_entry, "cur_entry"), (self.end_entry, "end_entry")):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _U16:
                raise ValueError(f"{name}: a 16-bit header field, got {v!r}")
        if not all(isinstance(e, PscEntry) for e in self.entries):
            raise TypeError("entries: expected PscEntry objects")

    @property
    def done(self) -> bool:
        """The guest's loop condition is false: ``cur_entry > end_entry``."""
        return self.cur_entry > self.end_entry
