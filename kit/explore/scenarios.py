"""The domain's scenarios on the kit's model: ``host-write-vs-conversion`` and ``mirror-setup``.

A scenario builds a *world* once per run (:class:`ConversionWorld`, :class:`MirrorWorld`): a
small host (:class:`kit.host.Host`, 64 MiB by default) with KVM and its VMs
(:class:`kit.kvm.Kvm`), the scheme's primitives (``w.p``) and the bookkeeping the invariants
read (``w.b``, a :class:`Book`); its threads come from :mod:`kit.explore.threads` and the
scheme's hooks.

State for the search (docs/explore.md, "Getting back to an earlier state"):

- ``state_key()``: what the steps and invariants read, cheaply: the RMP entries and direct-map
  state of the frames the threads touch (:meth:`kit.host.rmptable.RmpTable.entry`, the mapping
  level and present bit), the page's attribute and NPT mapping, its guest_memfd folio, the
  bookkeeping and the primitives; for mirrors, each VM's SEV state, vCPUs and
  ``migration_in_progress`` and the host's ASID bitmaps.
- ``snapshot()``: one ``pickle`` of the model objects and the bookkeeping together (shared
  references stay shared), plus the primitives' ``state()``; ``restore()`` unpickles a fresh
  copy into the world and puts the primitives' states back in place (their steps, which the
  threads hold, keep working). The threads reach the model through the world when a step runs,
  so they see the restored copy. ``benchmarks/explore.py`` measures what it costs.
- ``setup()`` builds the model once; later calls (a replay, a counterexample's shrinking)
  unpickle the first world's initial snapshot into a new world, the same state for less.
"""
from __future__ import annotations

import abc
import copy
import pickle

from ..host import Host
from ..host.directmap import LVL_4K
from ..kvm import Kvm
from ..kvm import uapi as U
from ..units import LEVEL_NAMES, PAGE_2M, PAGE_4K, PAGE_SHIFT, PAGES_PER_2M, PMD_ORDER
from . import threads as T
from .invariants import CONVERSION_INVARIANTS, MIRROR_INVARIANTS
from .params import check_scenario_params
from .primitives import Counter, Lock, Srcu
from .scenario import Scenario
from .schemes import BUILTIN_SCHEMES, ConversionScheme, MirrorScheme, Scheme, as_scheme

GPA_BASE = 0                  # the guest's RAM memslot
GUEST_PAGE_GFN = 0x10         # the page the guest converts and KVM writes
UADDR = 0x7F00_0000_0000      # the memslot's userspace address (the VMM's shared memory)
HOST_CORES = 2
MIRROR_HOST_MEM = "8MiB"      # the mirror ioctls touch no guest memory


class Book:
    """What the threads record for the invariants (:mod:`kit.explore.invariants`): plain
    values, updated in steps' actions, copied with the model by a snapshot.

    ``maps``: pfn -> (guarded, plain) live host maps; ``tracked``: maps the tracking counter
    registered; ``guarded_faults``: host faults on a page with a guarded map live;
    ``touched_private``: a host write faulted on the guest's private page; ``oopsed``: threads
    whose #PF handler oopsed; ``unexcused_oops``: an oops before the kernel-bug thread ran;
    ``bug_ran``; ``livelocked``: threads whose access did not complete within ``max_faults``;
    ``update_while_mapped``; ``guest_validated``: the guest believes its page validated;
    ``vmm_discarded``: the VMM punched the guest's private page; ``inval_seq``,
    ``inval_in_progress``: ``mmu_invalidate_seq``/``_in_progress``; ``spte_pfn``: the frame a
    private NPT mapping of the page maps; ``mirrored_with_vcpus``: VMs that became mirrors with
    vCPUs."""

    def __init__(self):
        self.maps: dict = {}
        self.tracked = 0
        self.guarded_faults = 0
        self.touched_private = False
        self.oopsed = frozenset()
        self.unexcused_oops = False
        self.bug_ran = False
        self.livelocked = frozenset()
        self.update_while_mapped = False
        self.guest_validated = False
        self.vmm_discarded = False
        self.inval_seq = 0
        self.inval_in_progress = 0
        self.spte_pfn = None
        self.mirrored_with_vcpus = frozenset()

    def key(self) -> tuple:
        return (tuple(sorted(self.maps.items())), self.tracked, self.guarded_faults, self.touched_private,
                self.oopsed, self.unexcused_oops, self.bug_ran, self.livelocked, self.update_while_mapped,
                self.guest_validated, self.vmm_discarded, self.inval_seq, self.inval_in_progress, self.spte_pfn,
                self.mirrored_with_vcpus)


def _prim_view(p) -> dict:
    out = {}
    for prim in p.values():
        if isinstance(prim, Lock):
            out[prim.name] = prim.view() or "-"
        elif isinstance(prim, Srcu):
            out[f"{prim.name} readers"] = prim.view()
        elif isinstance(prim, Counter):
            out[prim.name] = prim.view()
    return out


def _scheme_named(scheme) -> Scheme:
    if isinstance(scheme, str):
        for cls in BUILTIN_SCHEMES:
            if cls.name == scheme:
                return cls()
        raise ValueError(f"scheme: unknown {scheme!r}; built-ins: {', '.join(c.name for c in BUILTIN_SCHEMES)}")
    return as_scheme(scheme)


class _World:
    """Common to both worlds: the primitives, the bookkeeping, and snapshot/restore."""

    MODEL: tuple = ()

    def make_primitives(self) -> dict:
        return self.scheme.primitives()

    def prim_state(self) -> tuple:
        return tuple(p.state() for p in self.p.values())

    def snapshot(self):
        blob = pickle.dumps(tuple(getattr(self, a) for a in self.MODEL), protocol=pickle.HIGHEST_PROTOCOL)
        return blob, self.prim_state()

    def restore(self, snap) -> None:
        blob, prims = snap
        for attr, value in zip(self.MODEL, pickle.loads(blob)):
            setattr(self, attr, value)
        for p, state in zip(self.p.values(), prims):
            p.set_state(state)

    def fresh(self, initial):
        """Another world in the state ``initial`` (a snapshot of this one): the same fixed facts,
        new primitives, the model unpickled. Cheaper than building the model again, and the
        same state, since building is deterministic."""
        w = copy.copy(self)
        w.p = self.make_primitives()
        w.restore(initial)
        return w


# ===================================================================== host-write-vs-conversion
class ConversionWorld(_World):
    """The model of ``host-write-vs-conversion``: a host of ``host_mem`` with the scheme's
    direct-map and host-fault policies, an SNP VM (ASID from ``KVM_SEV_INIT2``) with one vCPU
    and a 2 MiB guest_memfd-backed memslot at GPA 0, and the guest's page (gfn 0x10) with a
    guest_memfd folio (``fallocate``). ``pfn`` is that folio's frame: the guest's private
    frame. ``shared_pfn`` is the frame KVM's host writes reach: ``pfn`` itself for a scheme that
    converts in place (the 2021 designs), else a frame of the VMM's shared memory in another
    2M region (upstream)."""

    MODEL = ("host", "kvm", "vm", "gmem", "vcpu", "b")

    def __init__(self, scheme: ConversionScheme, params: dict):
        self.scheme = scheme
        self.max_faults = params["max_faults"]
        self.psc_retries = params["psc_retries"]
        self.p = self.make_primitives()
        host = Host(mem=params["host_mem"], cores=HOST_CORES, directmap_policy=scheme.directmap_policy,
                    host_fault_policy=scheme.host_fault_policy)
        self.dm_policy_name = host.directmap_policy.name
        host.memory.alloc(PMD_ORDER, "kernel")       # the kernel's own first 2M: no guest frame at pfn 0
        kvm = Kvm(host)
        vm = kvm.create_vm(U.KVM_X86_SNP_VM)
        vm.sev_init()
        gmem = vm.create_guest_memfd(PAGE_2M)
        vm.set_user_memory_region2(0, U.KVM_MEM_GUEST_MEMFD, GPA_BASE, PAGE_2M, UADDR, 0, gmem)
        self.vcpu = vm.create_vcpu(0)
        self.host, self.kvm, self.vm, self.gmem = host, kvm, vm, gmem
        self.gfn = GUEST_PAGE_GFN
        self.gpa = self.gfn << PAGE_SHIFT
        self.index = self.gfn - (GPA_BASE >> PAGE_SHIFT)
        gmem.fallocate(U.FALLOC_FL_KEEP_SIZE, self.index * PAGE_4K, PAGE_4K)
        self.pfn = int(gmem.folios[self.index])
        self.asid = vm.asid
        if scheme.in_place:
            self.shared_pfn = self.pfn
        else:
            self.shared_pfn = int(host.memory.alloc(PMD_ORDER, "guest")[0]) + self.gfn % PAGES_PER_2M
        self.frames = tuple(dict.fromkeys((self.pfn, self.shared_pfn)))
        self.b = Book()

    def counter(self) -> Counter | None:
        name = self.scheme.counter
        return None if name is None else self.p[name]

    def gmem_frame(self) -> int | None:
        """The frame guest_memfd holds for the guest's page now (None: no folio)."""
        pfn = self.gmem.folios.get(self.index)
        return None if pfn is None else int(pfn)

    def live_maps(self) -> int:
        return sum(g + p for g, p in self.b.maps.values())

    def key(self):
        table, dm = self.host.rmp.table, self.host.directmap
        frames = tuple((table.entry(pfn), int(dm.lvl[pfn // PAGES_PER_2M]), dm.present(pfn)) for pfn in self.frames)
        vm, f = self.vm, self.gmem
        return (frames, vm.attributes.get(self.gfn), vm.sptes.get(self.gfn), f.folios.get(self.index),
                f.prepared.get(self.index), self.b.key(), self.prim_state())

    def view(self) -> dict:
        v = {"rmp": _entry_text(self.host, self.pfn), "directmap": _dm_text(self.host, self.pfn)}
        if self.shared_pfn != self.pfn:
            v["rmp (shared frame)"] = _entry_text(self.host, self.shared_pfn)
            v["directmap (shared frame)"] = _dm_text(self.host, self.shared_pfn)
        private = self.vm.memory_attributes(self.gfn) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE
        v["attributes"] = "private" if private else "shared"
        v["host maps"] = self.live_maps()
        v["host faults"] = len(self.host.faults)
        v.update(_prim_view(self.p))
        v["guest"] = "validated" if self.b.guest_validated else "-"
        v["oops"] = ", ".join(sorted(self.b.oopsed)) or "-"
        return v


def _entry_text(host, pfn: int) -> str:
    e = host.rmp.rmpread(pfn)
    if not e.assigned:
        return "shared"
    return f"private asid {e.asid} gpa {e.gpa:#x}" + (" validated" if e.validated else "")


def _dm_text(host, pfn: int) -> str:
    dm = host.directmap
    lvl = int(dm.lvl[pfn // PAGES_PER_2M])
    text = LEVEL_NAMES[dm.level(pfn)]
    if lvl == LVL_4K and not dm.present(pfn):
        text += " not present"
    return text


class _SchemeScenario(Scenario):
    """A scenario on a world of the kit's model under a scheme: the shared part of the
    built-in scenarios (scheme and parameter checks, a world built once and copied for each
    run, the state hooks of :class:`~kit.explore.scenario.Scenario`). A subclass names its
    ``scheme_type``, ``invariant_classes``, :meth:`world` and ``threads``."""

    scheme_type: type = Scheme
    invariant_classes: tuple = ()

    def __init__(self, scheme, **params):
        self.scheme = _scheme_named(scheme)
        if not isinstance(self.scheme, self.scheme_type) or self.name not in self.scheme.scenarios:
            raise ValueError(f"scheme: {self.scheme.name!r} does not apply to scenario {self.name}")
        self.params = check_scenario_params(self.name, params)
        self.invariants = [cls() for cls in self.invariant_classes]
        self.w = None
        self._first: tuple | None = None

    @abc.abstractmethod
    def world(self):
        """A new world for this scenario's scheme and parameters."""

    def setup(self):
        if self._first is None:
            self.w = self.world()
            self._first = (self.w, self.w.snapshot())
        else:
            self.w = self._first[0].fresh(self._first[1])
        return self.threads()

    def state_key(self):
        return self.w.key()

    def state_view(self):
        return self.w.view()

    def snapshot(self):
        return self.w.snapshot()

    def restore(self, snap):
        self.w.restore(snap)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scheme.name!r})"


class HostWriteVsConversion(_SchemeScenario):
    """``host-write-vs-conversion``: the races of "[PATCH Part2 v5 39/45] KVM: SVM: Introduce
    ops for the post gfn map and unmap" (October 2021) on the kit's model, under a
    :class:`~kit.explore.schemes.ConversionScheme`.

    Threads, in exploration order:

    - ``writer``: a KVM host writer (:func:`kit.explore.threads.kvm_host_writer`), ``writes``
      times;
    - ``conversion``: the guest's page-state change to private and KVM's path (the scheme's
      ``convert``);
    - ``writer2`` (``second_writer``): a second host thread writing the same page, so that two
      threads can fault on it (CASE1);
    - ``kernel-bug`` (``kernel_bug``): a kernel bug unmaps the page from the direct map (CASE2);
    - ``punch-hole`` (``punch_hole``, schemes with private memory in guest_memfd): the VMM
      punches the page out of guest_memfd.

    The #PF handler runs in the faulting thread's context, as a step of its own
    (:func:`kit.explore.threads.handler_step`). Parameters: ``kit.explore.params``
    (``SCENARIO_PARAMS["host-write-vs-conversion"]``)."""

    name = "host-write-vs-conversion"

    scheme_type = ConversionScheme
    invariant_classes = CONVERSION_INVARIANTS

    def __init__(self, scheme="srcu", **params):
        super().__init__(scheme, **params)
        if self.params["punch_hole"] and self.scheme.in_place:
            raise ValueError(f"punch_hole: scheme {self.scheme.name!r} has no guest_memfd private memory "
                             f"(its pages convert in place)")

    def world(self):
        return ConversionWorld(self.scheme, self.params)

    def threads(self):
        w, s, p = self.w, self.scheme, self.params
        out = {"writer": T.kvm_host_writer(w, s, p["writes"]), "conversion": T.guest_conversion(w, s)}
        if p["second_writer"]:
            out["writer2"] = T.kvm_host_writer(w, s, 1)
        if p["kernel_bug"]:
            out["kernel-bug"] = T.kernel_bug(w)
        if p["punch_hole"]:
            out["punch-hole"] = T.gmem_punch_hole(w)
        return out



# ===================================================================== mirror-setup
VM_NAMES = ("A", "B")


class MirrorWorld(_World):
    """The model of ``mirror-setup``: a small host, KVM, two SEV VMs ``A`` and ``B`` (both with
    their own SEV context from ``KVM_SEV_INIT2``, or only ``A``), each with its ``kvm->lock``
    (``w.p["A->lock"]``), and ``pending``: vCPUs between their arch creation and their
    installation."""

    MODEL = ("kvm", "vms", "pending", "b")

    def __init__(self, scheme: MirrorScheme, params: dict):
        self.scheme = scheme
        self.kvm = Kvm(Host(mem=MIRROR_HOST_MEM, cores=HOST_CORES))
        self.vms = {n: self.kvm.create_vm(U.KVM_X86_SEV_VM) for n in VM_NAMES}
        self.vms["A"].sev_init()
        if params["initialised"] == "both":
            self.vms["B"].sev_init()
        self.p = self.make_primitives()
        self.pending: dict = {}
        self.b = Book()

    def make_primitives(self) -> dict:
        return {**{f"{n}->lock": Lock(f"{n}->lock") for n in VM_NAMES}, **self.scheme.primitives()}

    def name_of(self, vm) -> str | None:
        for n, v in self.vms.items():
            if v is vm:
                return n
        return None

    def key(self):
        vms = []
        for n, vm in self.vms.items():
            s = vm.sev
            vms.append((s.active, s.asid, self.name_of(s.enc_context_owner), tuple(self.name_of(m) for m in s.mirror_vms),
                        s.migration_in_progress, vm.dead, vm.created_vcpus, tuple(sorted(vm.vcpus))))
        a = self.kvm.asids
        return (tuple(vms), frozenset(a.used), frozenset(a.reclaim), tuple(sorted(self.pending)), self.b.key(),
                self.prim_state())

    def view(self) -> dict:
        v = {}
        for n, vm in self.vms.items():
            s = vm.sev
            if vm.dead:
                text = "dead"
            elif not s.active:
                text = "not SEV"
            elif s.enc_context_owner is not None:
                text = f"mirror of {self.name_of(s.enc_context_owner)}, asid {s.asid}"
            else:
                text = f"SEV, asid {s.asid}"
            v[n] = text
            v[f"{n} vCPUs"] = vm.created_vcpus
            v[f"{n} migration_in_progress"] = int(s.migration_in_progress)
        v.update(_prim_view(self.p))
        return v


class MirrorSetup(_SchemeScenario):
    """``mirror-setup``: two VMs' crossing ``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM`` (or ``MOVE``)
    ioctls and a vCPU creation, under a :class:`~kit.explore.schemes.MirrorScheme` (the review
    of "[RFC] KVM: x86: Support KVM VMs sharing SEV context", 2021).

    Threads: ``copy1`` (``B`` becomes a mirror of ``A``), ``copy2`` (``A`` becomes a mirror of
    ``B``), or ``move1``/``move2`` with ``op="move"`` (the destination takes the source's
    context); ``vcpu`` (``vcpu``): ``KVM_CREATE_VCPU`` on ``B``."""

    name = "mirror-setup"

    scheme_type = MirrorScheme
    invariant_classes = MIRROR_INVARIANTS

    def __init__(self, scheme="mirror-merged", **params):
        super().__init__(scheme, **params)
        if self.params["op"] == "move" and not self.scheme.has_move:
            raise ValueError(f"op: scheme {self.scheme.name!r} has no MOVE path")

    def world(self):
        return MirrorWorld(self.scheme, self.params)

    def threads(self):
        w, s, op = self.w, self.scheme, self.params["op"]
        run = T.copy_enc_context if op == "copy" else T.move_enc_context
        out = {f"{op}1": run(w, s, "B", "A"), f"{op}2": run(w, s, "A", "B")}
        if self.params["vcpu"]:
            out["vcpu"] = T.create_vcpu(w, "B", 0)
        return out



__all__ = ["Book", "ConversionWorld", "MirrorWorld", "HostWriteVsConversion", "MirrorSetup", "GUEST_PAGE_GFN",
           "VM_NAMES"]
