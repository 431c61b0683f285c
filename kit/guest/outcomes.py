"""The outcome matrix: every guest behaviour against every #NPF policy, attribute owner and VMM,
each on a fresh small host, running the same short script, with what ended it.

One run (:func:`run_outcome`) builds a host, an SNP VM (one guest_memfd memslot of RAM at
:data:`RAM_GPA`, launched, the ``KVM_HC_MAP_GPA_RANGE`` exit enabled), a
:class:`~kit.guest.Guest` with the behaviour and a VMM, and runs :data:`SCRIPT`: accept the
first 2 MiB (``accept_memory``, with its guard unit), touch the first page, make the second
page shared (``set_memory_decrypted``), touch it, make it private again
(``set_memory_encrypted``) and touch it. The run stops at the first step that does not return,
and the outcome is one of :data:`OUTCOMES`, read from what the guest and KVM report:

``converted``
    Every step returned, every conversion returned 0, and no ``KVM_EXIT_MEMORY_FAULT`` reached
    the VMM: each page changed state through the guest's own requests (the GHCB or MSR
    page-state change, ``KVM_HC_MAP_GPA_RANGE``), answered by the VMM where userspace owns the
    attributes or converted inside KVM where the guest owns them, or through KVM's own
    ``auto-convert`` #NPF handling.
``exited``
    Every step returned, but userspace was reached off the request path or said no: a
    ``KVM_EXIT_MEMORY_FAULT`` (an access or PVALIDATE whose kind did not match the attribute,
    arch/x86/kvm/mmu/mmu_internal.h ``kvm_mmu_prepare_memory_fault_exit``) reached
    the VMM, which converted on it (an implicit conversion, QEMU's ``kvm_convert_memory``), or a
    conversion came back refused (``set_memory_*`` returned -EIO: the hypercall protocol, where
    a refusal is the call's failure, arch/x86/mm/pat/set_memory.c ``__set_memory_enc_pgtable``).
``stuck``
    The vCPU can make no progress and the guest never terminates:
    :class:`~kit.guest.GuestStuck` (an access or PVALIDATE still exiting after the VMM's
    ``max_exits`` answers, or an RMP #NPF KVM leaves unresolved), :class:`~kit.guest.PscLivelock`
    (a page-state change answered with success and no progress), or a VMM that cannot answer
    an exit at all (its ioctl fails, e.g. ``EPERM`` where the guest owns the attributes).
``#VC``
    The guest got a #VC that ended the script (:class:`~kit.errors.VmmCommunicationException`,
    ``SVM_EXIT_PAGE_NOT_VALIDATED``: a private access to a page whose RMP entry is not
    validated, or not the guest's at this GPA; AMD APM vol. 2 §15.36.10): the Linux handler
    terminated (arch/x86/coco/sev/vc-handle.c ``exc_vmm_communication`` ->
    ``sev_es_terminate(SEV_TERM_SET_GEN, GHCB_SEV_ES_GEN_REQ)``) or the behaviour declined it.
    A #VC the behaviour handles (``Revalidating``) does not end the script; it is counted.
``terminated``
    The guest asked to terminate (:class:`~kit.guest.GuestTerminated`, the VMM got
    ``KVM_EXIT_SYSTEM_EVENT`` / ``KVM_SYSTEM_EVENT_SEV_TERM``) for a reason other than a #VC: a
    page-state change refused (``SEV_TERM_SET_LINUX, GHCB_TERM_PSC``, arch/x86/coco/sev/core.c
    ``__set_pages_state``) or a PVALIDATE that failed (``GHCB_TERM_PVALIDATE``, ``pval_pages``).

The VMMs (:data:`VMMS`): ``qemu`` (:class:`~kit.kvm.vmm.Vmm`, which grants every conversion
it can back) and ``denies-first`` (:class:`DeniesFirst`). Where the guest owns the attributes
the VMM is never asked about a requested conversion: the request "either immediately succeeds
or terminates the guest" (Sean Christopherson in the thread "[RFC PATCH v12 11/33] KVM:
Introduce per-page memory attributes", October 2023); where userspace owns them the VMM can
also deny, defer or retry. The ``denies-first`` rows show where that decides the outcome
(docs/guest-model.md, "The outcome matrix").
"""
from __future__ import annotations

import errno
from typing import NamedTuple

from ..errors import KvmError, VmmCommunicationException
from ..host import Host
from ..kvm import Kvm, snp
from ..kvm import uapi as U
from ..kvm.ghcb import GHCB_SEV_ES_GEN_REQ, SEV_TERM_SET_GEN
from ..kvm.vmm import Vmm
from ..units import MiB, PAGE_2M, PAGE_4K, PAGE_SHIFT, Param, format_size
from .behaviours import BEHAVIOURS, Linux
from .guest import PROTOCOLS, Guest, GuestStuck, GuestTerminated, PscLivelock

#: the outcomes, from the guest's run to its end to its termination
OUTCOMES = ("converted", "exited", "stuck", "#VC", "terminated")
#: where the guest's RAM starts (4 GiB)
RAM_GPA = 1 << 32


class DeniesFirst(Vmm):
    """A VMM that refuses each conversion the first time it is asked and makes it when the same
    request (same GPA, size and direction) comes again: the userspace of the thread "[PATCH v4
    0/2] Extend KVM_HC_MAP_GPA_RANGE api to allow retry" (S. Shahar, 2026), which "might decide
    to split MAP_GPA requests and retry them the next time the guest runs", answering
    ``hypercall.ret = EAGAIN``. A refused ``KVM_EXIT_HYPERCALL`` gets EAGAIN back: a TDX guest
    retries its MapGPA (``TDVMCALL_STATUS_RETRY``), but on SNP KVM answers any non-zero ``ret``
    to a page-state change with ``VMGEXIT_PSC_ERROR_GENERIC`` (arch/x86/kvm/svm/sev.c
    ``snp_complete_one_psc``), which the Linux guest treats as fatal. A refused
    ``KVM_EXIT_MEMORY_FAULT`` is answered with nothing converted: the vCPU re-enters, faults
    again, and the second exit is granted. ``denied`` counts the refusals."""

    name = "denies-first"

    def __init__(self, vm, **kw):
        super().__init__(vm, **kw)
        self.asked: set = set()
        self.denied = 0

    def convert(self, gpa: int, size: int, private: bool) -> int:
        key = (gpa, size, bool(private))
        if key not in self.asked:
            self.asked.add(key)
            self.denied += 1
            return errno.EAGAIN
        return super().convert(gpa, size, private)


#: the VMMs of the matrix by name
VMMS = {"qemu": Vmm, "denies-first": DeniesFirst}


class ScriptStep(NamedTuple):
    """One step of a guest's script: ``op`` (``accept``, ``convert``, ``touch``) at
    ``RAM_GPA + offset`` over ``size`` bytes; ``private`` is the conversion's direction."""

    op: str
    offset: int
    size: int = PAGE_4K
    private: bool | None = None

    def __str__(self) -> str:
        what = {True: " to private", False: " to shared"}.get(self.private, "")
        return f"{self.op}{what} +{self.offset:#x}" + (f" ({format_size(self.size)})" if self.op != "touch" else "")


#: the script every behaviour runs: lazy acceptance of the first 2M unit, a private access, one
#: page made shared (set_memory_decrypted), a shared access, the page made private again
#: (set_memory_encrypted), a private access
SCRIPT = (ScriptStep("accept", 0, PAGE_2M), ScriptStep("touch", 0),
          ScriptStep("convert", PAGE_4K, PAGE_4K, False), ScriptStep("touch", PAGE_4K),
          ScriptStep("convert", PAGE_4K, PAGE_4K, True), ScriptStep("touch", PAGE_4K))

#: the matrix's parameters, one :class:`~kit.units.Param` each (the notebook's checks derive
#: from them)
OUTCOME_PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("behaviours", "list", 1, None, unique=True, help="guest behaviours (rows of the matrix)",
          item=Param("behaviour", "choice", choices=tuple(BEHAVIOURS), objects=(Linux,))),
    Param("npf_policies", "list", 1, None, unique=True, help="#NPF policies of the VM",
          item=Param("npf_policy", "choice", choices=("exit", "auto-convert"))),
    Param("owners", "list", 1, None, unique=True, help="who owns the memory attributes",
          item=Param("owner", "choice", choices=("userspace", "guest"))),
    Param("vmms", "list", 1, None, unique=True, help="the VMMs answering exits",
          item=Param("vmm", "choice", choices=tuple(VMMS), objects=(Vmm,))),
    Param("protocol", "choice", choices=PROTOCOLS, default="ghcb",
          help="how the guest asks for conversions: the GHCB page-state change, the GHCB MSR "
               "protocol, or KVM_HC_MAP_GPA_RANGE"),
    Param("guest_mem", "size", 2 * PAGE_2M, 64 * MiB, multiple=PAGE_2M, default="8MiB",
          help="the guest's RAM (one guest_memfd memslot)", why="a small host per run"),
    Param("max_exits", "int", 1, 1000, default=8,
          help="exits the VMM answers for one guest operation before it is stuck"),
    Param("gmem_hugepages", "bool", default=False,
          help="guest_memfd hands out 2M folios (the hugepage series) instead of upstream's order-0"),
)}
#: the host each run builds: small, so that a run costs milliseconds
HOST_MEM, HOST_CORES = "64MiB", 2


def _name(obj) -> str:
    """A behaviour's or VMM's name: its name in :data:`~kit.guest.BEHAVIOURS` or :data:`VMMS`,
    else its class's own ``name`` if it sets one, else the class name (a user's subclass that
    sets none is not mistaken for its parent)."""
    cls = obj if isinstance(obj, type) else type(obj)
    known = {c: n for table in (BEHAVIOURS, VMMS) for n, c in table.items()}
    return known.get(cls) or cls.__dict__.get("name") or cls.__name__


def _behaviour(b):
    if isinstance(b, str):
        return BEHAVIOURS[OUTCOME_PARAMS["behaviours"].item.check(b, "behaviour")]
    return OUTCOME_PARAMS["behaviours"].item.check(b, "behaviour")


def _vmm_class(v):
    if isinstance(v, str):
        return VMMS[OUTCOME_PARAMS["vmms"].item.check(v, "vmm")]
    if not (isinstance(v, type) and issubclass(v, Vmm)):
        raise ValueError(f"vmm: unknown {v!r}; allowed: {', '.join(VMMS)} (or a Vmm subclass)")
    return v


def build_guest(behaviour=Linux, *, npf_policy: str = "exit", owner: str = "userspace", vmm=Vmm,
                guest_mem=OUTCOME_PARAMS["guest_mem"].default, max_exits: int = 8,
                gmem_hugepages: bool = False, host_fault_policy="oops") -> Guest:
    """A fresh :data:`HOST_MEM` host with one launched SNP VM (``npf_policy``, ``owner`` as
    ``attribute_owner``): ``guest_mem`` of guest_memfd RAM at :data:`RAM_GPA`, the
    ``KVM_HC_MAP_GPA_RANGE`` exit enabled (without it KVM answers every page-state change
    GENERIC, arch/x86/kvm/svm/sev.c ``snp_begin_psc``; the selftests enable it the same way,
    tools/testing/selftests/kvm/x86/private_mem_conversions_test.c), one vCPU, and a
    :class:`~kit.guest.Guest` of ``behaviour`` whose exits ``vmm`` (a :class:`~kit.kvm.vmm.Vmm`
    class, QEMU-like: it punches guest_memfd going shared) answers."""
    mem = OUTCOME_PARAMS["guest_mem"].check(guest_mem)
    kvm = Kvm(Host(mem=HOST_MEM, cores=HOST_CORES, host_fault_policy=host_fault_policy),
              gmem_hugepages=gmem_hugepages)
    vm = kvm.create_vm(U.KVM_X86_SNP_VM, npf_policy=npf_policy, attribute_owner=owner)
    vm.sev_init()
    vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, RAM_GPA, mem, 0, 0, vm.create_guest_memfd(mem))
    vm.enable_cap(U.KVM_CAP_EXIT_HYPERCALL, 1 << U.KVM_HC_MAP_GPA_RANGE)
    vm.create_vcpu(0)
    snp.snp_launch_finish(vm)
    return Guest(vm, behaviour=behaviour, vmm=vmm(vm, max_exits=max_exits))


def _do(guest: Guest, step: ScriptStep, protocol: str):
    gpa = RAM_GPA + step.offset
    if step.op == "accept":
        return guest.accept(gpa, step.size)
    if step.op == "convert":
        return guest.convert(gpa, step.size, private=bool(step.private), protocol=protocol)
    if step.op == "touch":
        return guest.touch(gpa)
    raise ValueError(f"script: unknown op {step.op!r}; allowed: accept, convert, touch")


def view_agrees(guest: Guest, gpa: int, size: int) -> bool:
    """Whether the guest's view (the C-bit it maps each page with) and KVM's
    ``KVM_MEMORY_ATTRIBUTE_PRIVATE`` agree on every page of ``[gpa, gpa + size)``, run by run."""
    attrs, private = guest.vm.attributes, U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    start, end = gpa >> PAGE_SHIFT, -(-(gpa + size) >> PAGE_SHIFT)
    pos = start
    for s, e, v in guest.view.ranges(start, end) + [(end, end, 0)]:
        if pos < s and not attrs.has(pos, s, 0):          # a gap in the view: mapped shared
            return False
        if s < e and not attrs.has(s, e, private if v else 0):
            return False
        pos = e
    return True


def _script_agrees(guest: Guest, script) -> bool:
    return all(view_agrees(guest, RAM_GPA + s.offset, max(s.size, PAGE_4K)) for s in script)


def run_outcome(behaviour=Linux, *, npf_policy: str = "exit", owner: str = "userspace", vmm="qemu",
                protocol: str = "ghcb", script=SCRIPT, **build) -> dict:
    """One cell of the matrix: :func:`build_guest`, then ``script`` until a step does not
    return. Returns a row: ``behaviour``, ``npf_policy``, ``owner``, ``vmm``, ``outcome`` (one
    of :data:`OUTCOMES`, defined in the module docstring), ``reason`` (the termination's reason,
    the #VC's detail, why it is stuck, or what reached userspace), ``step`` (the step it ended
    on, or ``"-"``), ``steps_done``, ``user_exits`` (exits ``KVM_RUN`` handed to userspace: the
    ledger's ``user_exit`` events), ``memory_faults`` (the ``KVM_EXIT_MEMORY_FAULT`` exits among
    them), ``refusals`` (``KVM_EXIT_HYPERCALL`` exits the VMM answered with a non-zero
    ``hypercall.ret``), ``ioctls`` (its
    ``KVM_SET_MEMORY_ATTRIBUTES`` calls), ``kvm_conversions`` (conversions KVM made itself),
    ``vcs`` (#VCs the guest got) and ``view_agrees`` (the guest's view and KVM's attributes
    agree on the script's pages at the end)."""
    b = _behaviour(behaviour)
    protocol = OUTCOME_PARAMS["protocol"].check(protocol)
    vmm_cls = _vmm_class(vmm)
    guest = build_guest(b, npf_policy=npf_policy, owner=owner, vmm=vmm_cls, **build)
    answers = _count_answers(guest.vmm)
    ledger = guest.vm.kvm.host.ledger
    mark = ledger.mark()
    done, ended, exc, vcs_before = 0, None, None, 0
    for step in script:
        vcs_before = len(guest.vcs)
        try:
            _do(guest, step, protocol)
        except (GuestTerminated, GuestStuck, PscLivelock, VmmCommunicationException, KvmError) as e:
            ended, exc = step, e
            break
        done += 1
    log = guest.vmm.log
    faults = sum(x.reason == U.KVM_EXIT_MEMORY_FAULT for x in log)
    outcome, reason = _classify(guest, exc, faults, len(answers), vcs_before)
    return {"behaviour": _name(b), "npf_policy": npf_policy, "owner": owner, "vmm": _name(vmm_cls),
            "outcome": outcome, "reason": reason, "step": str(ended) if ended else "-", "steps_done": done,
            "user_exits": int(ledger.since(mark).get("user_exit", 0)), "memory_faults": faults,
            "refusals": len(answers), "ioctls": guest.vmm.ioctls, "kvm_conversions": len(guest.vm.kvm_conversions),
            "vcs": len(guest.vcs), "view_agrees": _script_agrees(guest, script)}


def _count_answers(vmm) -> list:
    """Record, in the returned list, every ``KVM_EXIT_HYPERCALL`` that ``vmm`` answers with a
    non-zero ``hypercall.ret`` (a refusal), whatever its class does to decide."""
    refused, handle = [], vmm.handle

    def counted(exit):
        ret = handle(exit)
        if exit.reason == U.KVM_EXIT_HYPERCALL and ret:
            refused.append((exit, ret))
        return ret
    vmm.handle = counted
    return refused


def _classify(guest: Guest, exc, faults: int, refusals: int, vcs_before: int) -> tuple[str, str]:
    if isinstance(exc, GuestTerminated):
        t = exc.termination
        if len(guest.vcs) > vcs_before and (t.reason_set, t.reason_code) == (SEV_TERM_SET_GEN, GHCB_SEV_ES_GEN_REQ):
            return "#VC", f"{_vc_text(guest.vcs[-1])}; the guest terminated (set {t.reason_set}, code {t.reason_code})"
        return "terminated", str(t)
    if isinstance(exc, VmmCommunicationException):
        return "#VC", f"{_vc_text(exc)}; the behaviour declined it"
    if isinstance(exc, (GuestStuck, PscLivelock)):
        return "stuck", str(exc)
    if isinstance(exc, KvmError):
        return "stuck", f"the VMM cannot answer: {exc}"
    handled = f"; {len(guest.vcs)} #VC handled" if guest.vcs else ""
    if faults or refusals:
        parts = ([f"{faults} KVM_EXIT_MEMORY_FAULT answered by the VMM"] if faults else []) + \
                ([f"{refusals} requests refused by the VMM"] if refusals else [])
        return "exited", "; ".join(parts) + handled
    return "converted", "every conversion through the guest's requests" + handled


def _vc_text(e: VmmCommunicationException) -> str:
    return f"#VC at {e.gpa:#x}" + (f" ({e.detail})" if getattr(e, "detail", "") else "")


def outcome_matrix(behaviours=tuple(BEHAVIOURS), *, npf_policies=("exit", "auto-convert"),
                   owners=("userspace", "guest"), vmms=tuple(VMMS), protocol: str = "ghcb", script=SCRIPT,
                   **build) -> list[dict]:
    """:func:`run_outcome` for every behaviour x #NPF policy x attribute owner x VMM, each on a
    fresh host: a tidy table (a list of dicts, one per run, in that order). ``behaviours``:
    names of :data:`~kit.guest.BEHAVIOURS` or behaviour classes/instances (a user's subclass of
    :class:`~kit.guest.Linux`); ``vmms``: names of :data:`VMMS` or
    :class:`~kit.kvm.vmm.Vmm` subclasses; ``build``: :func:`build_guest`'s ``guest_mem``,
    ``max_exits``, ``gmem_hugepages``."""
    P = OUTCOME_PARAMS
    behaviours = [_behaviour(b) for b in P["behaviours"].check(behaviours)]
    vmms = [_vmm_class(v) for v in P["vmms"].check(vmms)]
    npf_policies, owners = P["npf_policies"].check(npf_policies), P["owners"].check(owners)
    protocol = P["protocol"].check(protocol)
    return [run_outcome(b, npf_policy=npf, owner=owner, vmm=v, protocol=protocol, script=script, **build)
            for b in behaviours for npf in npf_policies for owner in owners for v in vmms]


def ownership_decides(matrix: list[dict]) -> list[dict]:
    """The cells where the attribute owner alone changes the outcome: for each behaviour, #NPF
    policy and VMM, the userspace and guest rows side by side when their outcomes differ."""
    by = {}
    for r in matrix:
        by.setdefault((r["behaviour"], r["npf_policy"], r["vmm"]), {})[r["owner"]] = r
    out = []
    for (b, npf, vmm), rows in by.items():
        u, g = rows.get("userspace"), rows.get("guest")
        if u and g and u["outcome"] != g["outcome"]:
            out.append({"behaviour": b, "npf_policy": npf, "vmm": vmm, "userspace": u["outcome"],
                        "guest": g["outcome"], "userspace reason": u["reason"], "guest reason": g["reason"]})
    return out
