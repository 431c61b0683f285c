"""What a guest does at each step of its memory management: the Linux SNP guest and the
misbehaving guests the review threads argue about.

A behaviour is a small object whose methods are the steps where guests differ; the
:class:`~kit.guest.Guest` calls them in the Linux kernel's order and each default method calls
back into the guest's own implementation of the kernel function it names. To try another
guest, subclass :class:`Linux` (in a notebook cell too), override the one step that differs and
pass it: ``Guest(vm, behaviour=MyGuest())``. Every step gets the guest and the vCPU index.

=====================  =======================================================================
step                   Linux (the default)
=====================  =======================================================================
``accept_memory``      ``accept_memory`` (drivers/firmware/efi/unaccepted_memory.c)
``set_memory``         ``set_memory_encrypted``/``decrypted`` -> ``__set_memory_enc_pgtable``
                       (arch/x86/mm/pat/set_memory.c)
``rescind``            ``pvalidate_pages(desc)`` with validate=0 before a PSC to shared
                       (arch/x86/coco/sev/core.c ``__set_pages_state``)
``validate``           ``pvalidate_pages(desc)`` with validate=1 after a PSC to private
``page_state_change``  the GHCB request, ``vmgexit_psc`` (arch/x86/coco/sev/core.c)
``on_psc_error``       ``sev_es_terminate(SEV_TERM_SET_LINUX, GHCB_TERM_PSC)``
``on_pvalidate_error`` ``__pval_terminate``: ``sev_es_terminate(SEV_TERM_SET_LINUX,
                       GHCB_TERM_PVALIDATE)``
``on_vc``              ``exc_vmm_communication`` (arch/x86/coco/sev/vc-handle.c): an exit code
                       ``vc_handle_exitcode`` does not handle -> ``sev_es_terminate(SEV_TERM_SET_GEN,
                       GHCB_SEV_ES_GEN_REQ)``. Returns True when the faulting access may be
                       retried.
``owns``               whether a range is the guest's own RAM (Linux converts only its own
                       memory: ``set_memory_*`` takes its own virtual addresses)
=====================  =======================================================================
"""
from __future__ import annotations

from ..errors import SVM_EXIT_PAGE_NOT_VALIDATED
from ..host.rmp import PVALIDATE_FAIL_NOUPDATE
from ..kvm.ghcb import (GHCB_SEV_ES_GEN_REQ, GHCB_TERM_PSC, GHCB_TERM_PVALIDATE, SEV_TERM_SET_GEN,
                        SEV_TERM_SET_LINUX)
from ..units import PAGE_4K, PAGE_SHIFT


class Linux:
    """The Linux SNP guest (and, on a ``KVM_X86_SW_PROTECTED_VM``, the selftests' guest of
    tools/testing/selftests/kvm/x86/private_mem_conversions_test.c, which asks for conversions
    with ``KVM_HC_MAP_GPA_RANGE``). Every method is one step of the kernel; see the module
    table."""

    name = "Linux"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} guest behaviour>"

    def owns(self, guest, gpa: int, size: int) -> bool:
        return guest.is_ram(gpa, size)

    def accept_memory(self, guest, start: int, end: int, cpu: int) -> int:
        return guest.accept_memory(start, end, cpu=cpu)

    def set_memory(self, guest, gpa: int, size: int, private: bool, protocol: str, cpu: int) -> int:
        return guest.set_memory_enc_dec(gpa, size, private, protocol=protocol, cpu=cpu)

    def rescind(self, guest, entries: list, cpu: int) -> None:
        guest.pvalidate_pages(entries, False, cpu=cpu)

    def validate(self, guest, entries: list, cpu: int) -> None:
        guest.pvalidate_pages(entries, True, cpu=cpu)

    def page_state_change(self, guest, entries: list, op: int, cpu: int) -> str | None:
        return guest.vmgexit_psc(entries, op, cpu=cpu)

    def on_psc_error(self, guest, why: str, cpu: int) -> None:
        guest.terminate(SEV_TERM_SET_LINUX, GHCB_TERM_PSC, why, cpu=cpu)

    def on_pvalidate_error(self, guest, gpa: int, pagesize: int, rc: int, cpu: int) -> None:
        guest.terminate(SEV_TERM_SET_LINUX, GHCB_TERM_PVALIDATE,
                        f"PVALIDATE({'2M' if pagesize != PAGE_4K else '4K'}) of gpa {gpa:#x} returned {rc}",
                        cpu=cpu)

    def on_vc(self, guest, exc, cpu: int) -> bool:
        guest.terminate(SEV_TERM_SET_GEN, GHCB_SEV_ES_GEN_REQ,
                        f"unhandled #VC in kernel mode: {exc}", cpu=cpu)
        return False


class Unenlightened(Linux):
    """A guest that uses its memory without any page-state change: no PSC, no PVALIDATE, no
    acceptance; converting only flips its own C-bit. Brijesh Singh in the thread "[PATCH Part2
    RFC v4 37/40] KVM: SVM: Add support to handle the RMP nested page fault" (July 2021): "the
    GHCB spec does not enforce that a guest *must* use page state. If the page state changes is
    not done by the guest then it will cause #NPF and its up to the hypervisor to decide", and
    "its possible that non Linux guest may access the page without going through the PSC".
    Its accesses therefore meet the VM's #NPF policy (``npf_policy``), and a private page it
    never validated meets #VC; its #VC handling is Linux's."""

    name = "Unenlightened"

    def accept_memory(self, guest, start: int, end: int, cpu: int) -> int:
        return 0

    def set_memory(self, guest, gpa: int, size: int, private: bool, protocol: str, cpu: int) -> int:
        guest.set_c_bit(gpa, size, private)
        return 0


class Revalidating(Linux):
    """A guest that PVALIDATEs pages it has already validated and does not treat "nothing
    changed" as an error: after every validation it validates the same pages again, ignores
    ``PVALIDATE_FAIL_NOUPDATE`` (rFLAGS.CF=1, arch/x86/include/asm/sev.h ``pvalidate``), and
    answers a #VC for a page that is not validated by validating it and retrying the access.
    Linux does neither: ``pval_pages`` terminates on any non-zero return, and the thread
    "[PATCH] x86/kernel: Validate ROM before DMI scanning when SEV-SNP is active" (Michael Roth,
    February 2024) explains why: RMPUPDATE rescinds Validated only when it changes the entry, so
    a guest that finds a page already validated has met a page it must not trust. This guest
    validates and uses a page the VMM replaced behind its back (a fresh guest_memfd folio, where
    Linux terminates); a page the host took back (no longer assigned) it cannot validate: its
    PVALIDATE meets an RMP #NPF that KVM leaves unresolved, and it is stuck."""

    name = "Revalidating"

    def validate(self, guest, entries: list, cpu: int) -> None:
        guest.pvalidate_pages(entries, True, cpu=cpu)
        guest.pvalidate_pages(entries, True, cpu=cpu)

    def on_pvalidate_error(self, guest, gpa: int, pagesize: int, rc: int, cpu: int) -> None:
        if rc != PVALIDATE_FAIL_NOUPDATE:
            super().on_pvalidate_error(guest, gpa, pagesize, rc, cpu)

    def on_vc(self, guest, exc, cpu: int) -> bool:
        if exc.exit_code != SVM_EXIT_PAGE_NOT_VALIDATED:
            return super().on_vc(guest, exc, cpu)
        gpa = exc.gpa >> PAGE_SHIFT << PAGE_SHIFT
        rc = guest.pvalidate(gpa, PAGE_4K, True, cpu=cpu)
        return rc in (0, PVALIDATE_FAIL_NOUPDATE)


class Malicious(Linux):
    """A guest that asks for conversions of pages that are not its RAM, rescinds nothing before
    sharing (so a page it shares stays validated in the RMP until the host frees it) and
    carries on whatever the hypervisor answers. The misbehaving guest of the thread "[RFC PATCH
    v12 11/33] KVM: Introduce per-page memory attributes" (Sean Christopherson, October 2023):
    with the guest in full control of what is shared, "dealing with errors and/or misbehaving
    guests becomes unnecessarily problematic". Linux rescinds first
    (arch/x86/mm/mem_encrypt_amd.c ``amd_enc_status_change_prepare`` ->
    ``snp_set_memory_shared``) and terminates on any error."""

    name = "Malicious"

    def owns(self, guest, gpa: int, size: int) -> bool:
        return True

    def rescind(self, guest, entries: list, cpu: int) -> None:
        return None

    def on_psc_error(self, guest, why: str, cpu: int) -> None:
        guest.note("psc_error_ignored", 0, 0, why)

    def on_pvalidate_error(self, guest, gpa: int, pagesize: int, rc: int, cpu: int) -> None:
        guest.note("pvalidate_error_ignored", gpa, pagesize, f"rc {rc}")


BEHAVIOURS = {b.name: b for b in (Linux, Unenlightened, Revalidating, Malicious)}
