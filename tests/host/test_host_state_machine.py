"""kit.host against the dense per-4K reference (tests/reference/dense.py), step by step.

A hypothesis RuleBasedStateMachine drives random sequences of RMP instructions, kernel
helpers, direct-map calls, host accesses and policy changes through both models (and, on the
kit alone, public calls with a wrong argument, which must change nothing) and asserts,
after every step: identical return codes, faults and exceptions; identical RMP entries,
direct-map levels and present bits on every pfn the step touched plus a fixed sample; identical
/proc/meminfo counts and cost-event totals; and that a failed call changed nothing.

Profiles (tests/conftest.py): default >= 300 examples; HYPOTHESIS_PROFILE=long for 10,000.
"""
from __future__ import annotations

import os

import hypothesis.strategies as st
from hypothesis import event, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, multiple, rule

from types import SimpleNamespace

from kit.errors import HostOops, NestedPageFault, RmpUpdateLivelock
from kit.host import DIRECTMAP_POLICIES, Host
from kit.units import GiB, MiB, PAGE_2M, PAGE_4K
from tests.hostile import hostile_for, refused
from tests.reference.dense import DenseHost
from tests.test_hostile_api import CASES

#: the public calls of kit.host the "wrong argument" rule aims at (tests/test_hostile_api.py)
HOST_CASES = [c for c in CASES if c.label.split(".")[0] in
              ("Host", "DirectMap", "Rmp", "PhysicalMemory", "Ledger", "views") and c.label not in
              ("Host", "DirectMap", "Rmp", "PhysicalMemory")]       # the constructors build no state here

R = 512
MEM = 1 * GiB + 4 * MiB                 # one 1G chunk and a 2M-mapped tail of two regions
REGIONS = [0, 1, 2, 255, 510, 511, 512, 513]
OFFSETS = [0, 1, 2, 7, 255, 256, 510, 511]
SAMPLE = sorted({r * R + o for r in REGIONS for o in OFFSETS})
EVENTS = ("rmpupdate", "psmash", "pvalidate", "rmpadjust", "split_1g", "split_2m",
          "pgtable_alloc", "pgd_lock", "flush_tlb_all", "flush_tlb_range", "invlpg", "cpa_lock",
          "collapse_2m", "collapse_1g", "adjust_direct_map", "host_rmp_fault", "host_np_fault")

regions = st.sampled_from(REGIONS)
pfns = st.builds(lambda r, o: r * R + o, regions, st.sampled_from(OFFSETS) | st.integers(0, R - 1))
asids = st.sampled_from([1, 2])
levels = st.sampled_from([PAGE_4K, PAGE_2M])


def entry_tuple(e) -> tuple:
    if isinstance(e, dict):
        return (e["assigned"], e["pagesize"], e["immutable"], e["validated"], e["asid"], e["gpa"],
                e["vmsa"], tuple(e["vmpl_perms"]))
    return (e.assigned, e.pagesize, e.immutable, e.validated, e.asid, e.gpa, e.vmsa,
            tuple(e.vmpl_perms))


_LABEL_OUTCOMES = os.environ.get("HYPOTHESIS_PROFILE", "default") != "long"


def _event(got) -> None:
    """Outcome statistics (``--hypothesis-show-statistics``); off in the long profile, where
    10,000 examples' labels cost memory."""
    if not _LABEL_OUTCOMES:
        return
    try:
        event(f"outcome: {got[0]}{'' if got[0] != 'ok' else ' ' + str(got[1])}")
    except Exception:   # outside a hypothesis run (a hand-written replay)
        pass


def outcome(fn):
    """Run one call; return ("ok", value) or (exception kind, its comparable details)."""
    try:
        return ("ok", fn())
    except NestedPageFault as e:
        return ("npf", e.error_code, e.gpa)
    except HostOops as e:
        return ("oops", e.kind, e.pfn, e.level, e.write, e.error_code)
    except RmpUpdateLivelock as e:
        return ("livelock", e.pfn)
    except ValueError:
        return ("valueerror",)


class HostVsDense(RuleBasedStateMachine):
    # (pfn, level, asid) of entries this run made private: the guest instructions, PSMASH,
    # re-updates and host writes below aim at them, so that validated/smashed/immutable states
    # are reached and revisited
    entries = Bundle("entries")

    @initialize(policy=st.sampled_from(sorted(DIRECTMAP_POLICIES)),
                fault_policy=st.sampled_from(["oops", "auto-convert"]))
    def boot(self, policy, fault_policy):
        self.policy, self.fault_policy = policy, fault_policy
        self._boot()

    def _boot(self):
        self.kit = Host(mem=MEM, cores=8, directmap_policy=self.policy,
                        host_fault_policy=self.fault_policy)
        self.ref = DenseHost(MEM, directmap_policy=self.policy, host_fault_policy=self.fault_policy)
        self.touched: set[int] = set()

    # ------------------------------------------------------------ helpers
    def _state(self, pfn_list):
        k = self.kit
        return ([entry_tuple(k.rmp.rmpread(p)) for p in pfn_list],
                [k.directmap.level(p) for p in pfn_list], [k.directmap.present(p) for p in pfn_list],
                k.directmap.counts(), dict(k.ledger.totals), list(k.guest_notices))

    def _both(self, touched, kit_call, ref_call):
        """Run a call on both models; compare outcomes; check a failure changed nothing."""
        span = sorted(p for p in touched if 0 <= p < self.kit.nr_pages)
        before = self._state(span)
        got, want = outcome(kit_call), outcome(ref_call)
        assert got == want, f"kit {got} != reference {want}"
        _event(got)
        self.touched.update(span)
        failed = got[0] in ("npf", "livelock", "valueerror") or (got[0] == "ok" and got[1] not in (0, None))
        if failed:
            assert self._state(span) == before, "a failed call changed the model"
        if got[0] == "oops":   # the host died: both reboot
            self._boot()
        return got

    @staticmethod
    def _span(pfn, npages):
        """The pfns worth checking around a call: its edges, its neighbours, the edges of the
        2M regions it spans."""
        end = pfn + npages
        pts = {pfn - 1, pfn, pfn + 1, end - 2, end - 1, end}
        for r in range(pfn // R, (end - 1) // R + 1):
            pts |= {r * R, r * R + 1, r * R + R - 1}
        return pts

    # ------------------------------------------------------------ RMP instructions
    @rule(target=entries, pfn=pfns, level=levels, assigned=st.booleans(),
          immutable=st.sampled_from([False] * 5 + [True]),
          asid=st.sampled_from([0, 1, 2]), gpa_page=st.integers(0, 1030), entries=st.integers(1, 3))
    def rmpupdate(self, pfn, level, assigned, immutable, asid, gpa_page, entries):
        if level == PAGE_2M:
            pfn -= pfn % R
        n = entries * (R if level == PAGE_2M else 1)
        gpa = gpa_page * level // (R if level == PAGE_2M else 1) if level == PAGE_2M else gpa_page * PAGE_4K
        gpa -= gpa % level
        kw = dict(assigned=assigned, pagesize=level, immutable=immutable, asid=asid, gpa=gpa, npages=n)
        got = self._both(self._span(pfn, n), lambda: self.kit.rmp.rmpupdate(pfn, **kw),
                         lambda: self.ref.rmpupdate(pfn, **kw))
        if got[0] == "ok" and got[1]:
            assert self.kit.rmp.last_failed_pfn == self.ref.last_failed_pfn
        return self._made(got, pfn, level, n, asid if assigned else 0)

    @staticmethod
    def _made(got, pfn, level, n, asid):
        if got != ("ok", 0) or not asid:
            return multiple()
        step = R if level == PAGE_2M else 1
        return multiple(*[(p, level, asid) for p in range(pfn, pfn + n, step)])

    @rule(e=entries, assigned=st.booleans(), immutable=st.sampled_from([False, False, True]),
          same_gpa=st.booleans(), level=levels)
    def update_entry(self, e, assigned, immutable, same_gpa, level):
        pfn, _, asid = e
        if level == PAGE_2M:
            pfn -= pfn % R
        cur = self.kit.rmp.rmpread(pfn).gpa
        gpa = (cur if same_gpa else cur + level) if assigned else 0
        gpa -= gpa % level
        kw = dict(assigned=assigned, pagesize=level, immutable=immutable,
                  asid=asid if assigned else 0, gpa=gpa)
        self._both(self._span(pfn, 1), lambda: self.kit.rmp.rmpupdate(pfn, **kw),
                   lambda: self.ref.rmpupdate(pfn, **kw))

    @rule(target=entries, region=regions, asid=asids, gpa_2m=st.integers(0, 8))
    def guest_accepts_2m(self, region, asid, gpa_2m):
        """What a guest's lazy acceptance does to a 2M page: private at 2M, PVALIDATE at 2M."""
        pfn, gpa = region * R, gpa_2m * PAGE_2M
        got = self._both(self._span(pfn, R),
                         lambda: self.kit.rmp_make_private(pfn, gpa, PAGE_2M, asid, False),
                         lambda: self.ref.rmp_make_private(pfn, gpa, PAGE_2M, asid, False))
        if got != ("ok", 0):
            return multiple()
        kw = dict(pagesize=PAGE_2M, validate=True, asid=asid, gpa=gpa)
        self._both(self._span(pfn, 1), lambda: self.kit.rmp.pvalidate(pfn, **kw),
                   lambda: self.ref.pvalidate(pfn, **kw))
        return multiple((pfn, PAGE_2M, asid))

    @rule(e=entries, level=levels, perms=st.sampled_from([0x1F, 0x1F, 0x3, 0x1]))
    def vmpl0_grants_vmpl1(self, e, level, perms):
        """VMPL0 gives VMPL1 permissions (an SVSM-style setup), so VMPL1 can act next."""
        pfn, _, asid = e
        if level == PAGE_2M:
            pfn -= pfn % R
        kw = dict(pagesize=level, target_vmpl=1, perms=perms, asid=asid,
                  gpa=self._guest_gpa(pfn, level, True))
        self._both(self._span(pfn, 1), lambda: self.kit.rmp.rmpadjust(pfn, **kw),
                   lambda: self.ref.rmpadjust(pfn, **kw))

    @rule(e=entries | st.tuples(pfns, st.just(PAGE_4K), asids))
    def psmash_entry(self, e):
        pfn = e[0] - e[0] % R
        self._both(self._span(pfn, R), lambda: self.kit.rmp.psmash(pfn), lambda: self.ref.psmash(pfn))

    @rule(e=entries, validate=st.sampled_from([True, True, False]), level=levels,
          vmpl=st.sampled_from([0] * 5 + [1]), use_entry=st.sampled_from([True] * 4 + [False]))
    def pvalidate_entry(self, e, validate, level, vmpl, use_entry):
        pfn, _, asid = e
        if level == PAGE_2M:
            pfn -= pfn % R
        gpa = self._guest_gpa(pfn, level, use_entry)
        kw = dict(pagesize=level, validate=validate, asid=asid, gpa=gpa, vmpl=vmpl)
        self._both(self._span(pfn, 1), lambda: self.kit.rmp.pvalidate(pfn, **kw),
                   lambda: self.ref.pvalidate(pfn, **kw))

    @rule(e=entries, level=levels, tvmpl=st.integers(1, 3), perms=st.integers(0, 0x1F),
          vmsa=st.booleans(), vmpl=st.sampled_from([0, 0, 1, 2]),
          use_entry=st.sampled_from([True] * 4 + [False]))
    def rmpadjust_entry(self, e, level, tvmpl, perms, vmsa, vmpl, use_entry):
        pfn, _, asid = e
        if level == PAGE_2M:
            pfn -= pfn % R
        gpa = self._guest_gpa(pfn, level, use_entry)
        kw = dict(pagesize=level, target_vmpl=tvmpl, perms=perms, vmsa=vmsa, asid=asid, gpa=gpa, vmpl=vmpl)
        self._both(self._span(pfn, 1), lambda: self.kit.rmp.rmpadjust(pfn, **kw),
                   lambda: self.ref.rmpadjust(pfn, **kw))

    @rule(e=entries, delta=st.integers(-3, 3), n=st.integers(1, 4), write=st.booleans())
    def access_near_entry(self, e, delta, n, write):
        pfn = min(max(0, e[0] + delta), self.kit.nr_pages - n)
        k, r = (self.kit.write, self.ref.write) if write else (self.kit.read, self.ref.read)
        self._both(self._span(pfn, n), lambda: k(pfn, n), lambda: r(pfn, n))

    def _guest_gpa(self, pfn, level, use_entry):
        """Mostly the gpa the entry expects (so that the instruction gets past #NPF)."""
        e = self.kit.rmp.rmpread(pfn)
        gpa = e.gpa + (pfn % R) * PAGE_4K if e.pagesize == PAGE_2M and level == PAGE_4K else e.gpa
        if not use_entry:
            gpa += level
        return gpa - gpa % level

    @rule(pfn=pfns, on=st.booleans())
    def mark_in_use(self, pfn, on):
        self.kit.rmp.mark_in_use(pfn, on)
        self.ref.mark_in_use(pfn, on)

    # ------------------------------------------------------------ kernel helpers
    @rule(target=entries, pfn=pfns, level=levels, asid=asids, gpa_page=st.integers(0, 4096),
          entries=st.integers(1, 3), private=st.booleans())
    def helper(self, pfn, level, asid, gpa_page, entries, private):
        if level == PAGE_2M:
            pfn -= pfn % R
        n = entries * (R if level == PAGE_2M else 1)
        gpa = gpa_page * PAGE_4K
        gpa -= gpa % level
        if private:
            got = self._both(self._span(pfn, n),
                             lambda: self.kit.rmp_make_private(pfn, gpa, level, asid, False, npages=n),
                             lambda: self.ref.rmp_make_private(pfn, gpa, level, asid, False, npages=n))
            return self._made(got, pfn, level, n, asid)
        self._both(self._span(pfn, n), lambda: self.kit.rmp_make_shared(pfn, level, npages=n),
                   lambda: self.ref.rmp_make_shared(pfn, level, npages=n))
        return multiple()

    # ------------------------------------------------------------ direct map
    @rule(pfn=pfns, n=st.integers(1, 600), op=st.sampled_from(["4k", "invalid", "default"]))
    def directmap(self, pfn, n, op):
        n = min(n, self.kit.nr_pages - pfn)
        name = {"4k": "set_memory_4k", "invalid": "set_direct_map_invalid_noflush",
                "default": "set_direct_map_default_noflush"}[op]
        self._both(self._span(pfn, n), lambda: getattr(self.kit.directmap, name)(pfn, n),
                   lambda: getattr(self.ref, name)(pfn, n))

    @rule(policy=st.sampled_from(sorted(DIRECTMAP_POLICIES)))
    def switch_policy(self, policy):
        self.kit.directmap_policy = policy
        self.ref.set_directmap_policy(policy)
        self.policy = policy

    # ------------------------------------------------------------ host accesses
    @rule(pfn=pfns, n=st.integers(1, 40), write=st.booleans())
    def access(self, pfn, n, write):
        n = min(n, self.kit.nr_pages - pfn)
        k, r = (self.kit.write, self.ref.write) if write else (self.kit.read, self.ref.read)
        self._both(self._span(pfn, n), lambda: k(pfn, n), lambda: r(pfn, n))

    # ------------------------------------------------------------ wrong arguments
    @rule(case=st.sampled_from(HOST_CASES), data=st.data())
    def wrong_argument(self, case, data):
        """Any public call with one argument of the wrong type or out of range: refused with a
        ValueError/TypeError naming it, and the whole host (RMP arrays, direct map and its
        counts, frame owners, ledger, faults, ...) exactly as before."""
        param = data.draw(st.sampled_from(sorted(case.params)), label="parameter")
        valid = case.ok.get(param, lambda v: False)
        value = data.draw(st.one_of(st.sampled_from(case.hostile(param)),
                                    hostile_for(case.params[param])).filter(lambda v: not valid(v)), label="value")
        k = self.kit
        w = SimpleNamespace(host=k, dm=k.directmap, rmp=k.rmp, mem=k.memory, kernel_page=0)
        why = refused(lambda: case.call(w, **{param: value}), k, name=case.names.get(param, param),
                      codes=case.codes)
        assert why is None, f"{case.label}({param}={value!r}): {why}"

    # ------------------------------------------------------------ invariants
    @invariant()
    def same_state(self):
        if not hasattr(self, "kit"):
            return
        pfn_list = sorted(set(SAMPLE) | self.touched)
        for p in pfn_list:
            assert entry_tuple(self.kit.rmp.rmpread(p)) == entry_tuple(self.ref.rmpread(p)), f"pfn {p:#x}"
            assert self.kit.directmap.level(p) == self.ref.dm_level(p), f"level of pfn {p:#x}"
            assert self.kit.directmap.present(p) == self.ref.dm_present(p), f"present of pfn {p:#x}"
        assert self.kit.directmap.counts() == self.ref.dm_counts()
        for ev in EVENTS:
            assert self.kit.ledger.totals.get(ev, 0) == self.ref.events.get(ev, 0), ev
        assert self.kit.guest_notices == self.ref.guest_notices


HostVsDense.TestCase.settings = settings(settings.default, stateful_step_count=40)
TestHostVsDense = HostVsDense.TestCase
