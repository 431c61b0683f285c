"""The outcome matrix (kit.guest.outcomes): each behaviour's script against each #NPF policy,
attribute owner and VMM, the outcome definitions, and the VMM that denies first."""
import errno

import pytest

from kit.errors import KvmError
from kit.guest import BEHAVIOURS, GuestStuck, GuestTerminated, Linux, Revalidating
from kit.guest.outcomes import (OUTCOMES, RAM_GPA, SCRIPT, VMMS, DeniesFirst, ScriptStep, build_guest,
                                outcome_matrix, ownership_decides, run_outcome, view_agrees)
from kit.kvm import snp
from kit.kvm import uapi as U
from kit.kvm.vmm import Vmm
from kit.units import PAGE_2M, PAGE_4K, PAGE_SHIFT

FAST = dict(gmem_hugepages=True)          # 2M folios: one PVALIDATE per unit, no 4K fallback


@pytest.fixture(scope="module")
def matrix():
    return outcome_matrix(**FAST)


def cell(rows, behaviour, npf, owner, vmm="qemu"):
    (r,) = [r for r in rows if (r["behaviour"], r["npf_policy"], r["owner"], r["vmm"]) == (behaviour, npf, owner, vmm)]
    return r


class Resubmits(Linux):
    """Resubmits a page-state change the hypervisor refused, once, instead of terminating at
    once (as a TDX guest retries a MapGPA answered TDVMCALL_STATUS_RETRY)."""

    def page_state_change(self, guest, entries, op, cpu):
        return guest.vmgexit_psc(entries, op, cpu=cpu) and guest.vmgexit_psc(entries, op, cpu=cpu)


def test_the_matrix_is_a_tidy_table_of_every_combination(matrix):
    assert len(matrix) == len(BEHAVIOURS) * 2 * 2 * len(VMMS)
    keys = {"behaviour", "npf_policy", "owner", "vmm", "outcome", "reason", "step", "steps_done", "user_exits",
            "memory_faults", "refusals", "ioctls", "kvm_conversions", "vcs", "view_agrees"}
    assert all(set(r) == keys for r in matrix)
    assert {r["outcome"] for r in matrix} == set(OUTCOMES)           # every outcome is reached
    assert [r["behaviour"] for r in matrix[:8]] == ["Linux"] * 8      # behaviour, #NPF policy, owner, VMM
    assert [(r["npf_policy"], r["owner"], r["vmm"]) for r in matrix[:3]] == [
        ("exit", "userspace", "qemu"), ("exit", "userspace", "denies-first"), ("exit", "guest", "qemu")]
    assert all(r["reason"] for r in matrix)


EXPECTED_QEMU = {
    # behaviour: {(npf_policy, owner): outcome of the script with the QEMU-like VMM}
    "Linux": {(p, o): "converted" for p in ("exit", "auto-convert") for o in ("userspace", "guest")},
    "Revalidating": {(p, o): "converted" for p in ("exit", "auto-convert") for o in ("userspace", "guest")},
    "Malicious": {(p, o): "converted" for p in ("exit", "auto-convert") for o in ("userspace", "guest")},
    # touches private memory it never validated: the #NPF policy converts (or the VMM on the
    # exit), then the RMP check: #VC; under guest ownership the VMM may not convert: stuck
    "Unenlightened": {("exit", "userspace"): "#VC", ("auto-convert", "userspace"): "#VC",
                      ("exit", "guest"): "stuck", ("auto-convert", "guest"): "#VC"},
}


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_each_behaviour_with_the_qemu_vmm(matrix, name):
    for (npf, owner), want in EXPECTED_QEMU[name].items():
        r = cell(matrix, name, npf, owner)
        assert r["outcome"] == want, r
        assert r["refusals"] == 0
        if want == "converted":
            assert r["view_agrees"] and r["steps_done"] == len(SCRIPT) and r["step"] == "-"
            # userspace answers each request (2 acceptance units + 2 conversions coalesce to 3
            # exits); under guest ownership KVM converts with no exit
            assert (r["user_exits"], r["kvm_conversions"]) == ((3, 0) if owner == "userspace" else (0, 3))


def test_unenlightened_outcomes_say_why(matrix):
    vc = cell(matrix, "Unenlightened", "exit", "userspace")
    assert vc["step"] == str(ScriptStep("touch", 0)) and vc["memory_faults"] == 1 and vc["vcs"] == 1
    assert "Validated=0" in vc["reason"] and "terminated (set 0, code 0)" in vc["reason"]
    stuck = cell(matrix, "Unenlightened", "exit", "guest")
    assert "still exits after 8 answers" in stuck["reason"] and stuck["memory_faults"] == 8 and stuck["vcs"] == 0
    auto = cell(matrix, "Unenlightened", "auto-convert", "guest")
    assert auto["memory_faults"] == 0 and auto["kvm_conversions"] == 1


# ------------------------------------------------------------------ the VMM that denies first
def test_denies_first_refuses_a_request_once_and_grants_it_when_asked_again():
    g = build_guest(Linux, vmm=DeniesFirst, **FAST)
    vmm = g.vmm
    assert vmm.convert(RAM_GPA, PAGE_4K, True) == errno.EAGAIN and vmm.ioctls == 0
    assert not g.vm.memory_attributes(RAM_GPA >> PAGE_SHIFT) & U.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert vmm.convert(RAM_GPA, PAGE_2M, True) == errno.EAGAIN          # another request
    assert vmm.convert(RAM_GPA, PAGE_4K, True) == 0 and vmm.ioctls == 1
    assert vmm.convert(RAM_GPA, PAGE_4K, False) == errno.EAGAIN         # the other direction
    assert vmm.denied == 3


def test_a_refused_memory_fault_is_granted_when_the_vcpu_faults_again(matrix):
    qemu = cell(matrix, "Unenlightened", "exit", "userspace")
    denies = cell(matrix, "Unenlightened", "exit", "userspace", "denies-first")
    assert denies["memory_faults"] == qemu["memory_faults"] + 1 and denies["ioctls"] == qemu["ioctls"] == 1
    assert denies["outcome"] == qemu["outcome"] == "#VC"


@pytest.mark.parametrize("npf", ["exit", "auto-convert"])
def test_who_owns_the_attributes_decides_when_the_vmm_denies_first(matrix, npf):
    """The pKVM thread's point: with guest ownership the request immediately succeeds (the VMM
    is never asked); with userspace ownership the VMM may deny it, and on SNP KVM answers the
    Linux guest's page-state change GENERIC, which terminates it."""
    user = cell(matrix, "Linux", npf, "userspace", "denies-first")
    guest = cell(matrix, "Linux", npf, "guest", "denies-first")
    assert user["outcome"] == "terminated" and guest["outcome"] == "converted"
    assert user["refusals"] == 1 and user["step"] == str(SCRIPT[0]) and "VMGEXIT(PSC) answered" in user["reason"]
    assert guest["user_exits"] == 0 and guest["kvm_conversions"] == 3
    decided = {(r["behaviour"], r["npf_policy"], r["vmm"]): (r["userspace"], r["guest"])
               for r in ownership_decides(matrix)}
    assert decided[("Linux", npf, "denies-first")] == ("terminated", "converted")
    assert ("Linux", npf, "qemu") not in decided                    # the stock VMM grants everything


def test_the_termination_is_the_linux_psc_one():
    with pytest.raises(GuestTerminated) as e:
        build_guest(Linux, vmm=DeniesFirst, **FAST).accept(RAM_GPA, PAGE_2M)
    t = e.value.termination
    assert (t.reason_set, t.reason_code) == (snp.SEV_TERM_SET_LINUX, snp.GHCB_TERM_PSC)


def test_a_guest_that_resubmits_is_granted_on_retry_where_linux_terminates():
    rows = outcome_matrix([Linux, Resubmits], npf_policies=["exit"], vmms=["denies-first"], **FAST)
    got = {(r["behaviour"], r["owner"]): r for r in rows}
    assert got[("Linux", "userspace")]["outcome"] == "terminated"
    retried = got[("Resubmits", "userspace")]
    assert retried["outcome"] == "exited" and retried["steps_done"] == len(SCRIPT)
    assert retried["refusals"] == 3 and retried["ioctls"] == 3 and retried["view_agrees"]
    assert "3 requests refused" in retried["reason"]
    assert got[("Resubmits", "guest")]["outcome"] == got[("Linux", "guest")]["outcome"] == "converted"


def test_malicious_goes_on_after_refusals_and_userspace_converts_on_its_faults(matrix):
    r = cell(matrix, "Malicious", "exit", "userspace", "denies-first")
    assert r["outcome"] == "exited" and r["memory_faults"] > 0 and r["refusals"] > 0
    assert "KVM_EXIT_MEMORY_FAULT" in r["reason"]


# ------------------------------------------------------------------ parameters and names
def test_user_behaviours_and_vmms_are_named_by_their_class():
    class Quiet(Vmm):
        pass

    rows = outcome_matrix([Resubmits, Revalidating()], npf_policies="exit", owners="userspace", vmms=[Quiet],
                          **FAST)
    assert [(r["behaviour"], r["vmm"], r["outcome"]) for r in rows] == [
        ("Resubmits", "Quiet", "converted"), ("Revalidating", "Quiet", "converted")]


@pytest.mark.parametrize("kw,msg", [
    (dict(behaviours=["Bogus"]), "behaviours: unknown 'Bogus'"),
    (dict(vmms=["libvirt"]), "vmms: unknown 'libvirt'"),
    (dict(owners=["pkvm"]), "owners: unknown 'pkvm'"),
    (dict(npf_policies=[]), "npf_policies: expected a non-empty list"),
    (dict(protocol="tdcall"), "protocol: unknown 'tdcall'"),
    (dict(guest_mem="3MiB"), "guest_mem: must be a whole number of 2MiB regions")])
def test_bad_arguments_are_refused_before_any_run(kw, msg):
    with pytest.raises(ValueError, match=msg):
        outcome_matrix(**kw)


def test_a_vc_the_behaviour_declines_is_a_vc_outcome():
    class Declines(Linux):
        def on_vc(self, guest, exc, cpu):
            return False

    r = run_outcome(Declines, npf_policy="auto-convert", script=[ScriptStep("touch", 0)], **FAST)
    assert r["outcome"] == "#VC" and "declined" in r["reason"] and r["vcs"] == 1


def test_a_vmm_that_cannot_answer_leaves_the_guest_stuck():
    class Broken(Vmm):
        def convert(self, gpa, size, private):
            raise KvmError(errno.EIO, "the VMM's ioctl failed")

    r = run_outcome(Linux, vmm=Broken, **FAST)
    assert r["outcome"] == "stuck" and "the VMM cannot answer" in r["reason"]


def test_view_agrees_compares_run_by_run():
    g = build_guest(Linux, **FAST)
    assert not view_agrees(g, RAM_GPA, PAGE_2M)          # the guest maps its RAM private; KVM: shared
    g.accept(RAM_GPA, PAGE_2M)
    assert view_agrees(g, RAM_GPA, PAGE_2M)
    g.vmm.convert(RAM_GPA + PAGE_4K, PAGE_4K, False)     # behind the guest's back
    assert not view_agrees(g, RAM_GPA, PAGE_2M) and view_agrees(g, RAM_GPA, PAGE_4K)


# ------------------------------------------------------------------ the figure
def test_the_figure_colours_each_outcome_apart_and_reads_recorded_json(matrix):
    import json

    from kit.lab.record import jsonable
    from kit.viz import figures as F

    colours = {o: F.outcome_colour(o) for o in OUTCOMES}
    assert len(set(colours.values())) == len(OUTCOMES)                  # five distinct colours
    assert colours["#VC"] == F.outcome_colour("#VC (Validated=0)") == F.VC_COLOUR
    assert colours["stuck"] == F.outcome_colour("stuck (EFAULT)") == F.STUCK_COLOUR
    assert colours["terminated"] == F.TERMINATED_COLOUR and colours["converted"] == F.OUTCOME_COLOURS["completed"]
    assert F.outcome_colour("EPERM") == F.REFUSED_COLOUR                # the memory-attributes matrix's errnos
    rows = json.loads(json.dumps(jsonable(matrix)))
    f = F.guest_outcome_figure(rows)
    data = f.renderers[0].data_source.data
    assert data["colour"] == [F.outcome_colour(r["outcome"]) for r in matrix]
    assert list(f.x_range.factors) == [("userspace", "exit"), ("userspace", "auto-convert"), ("guest", "exit"),
                                       ("guest", "auto-convert")]           # grouped by owner
    assert len(f.y_range.factors) == len(BEHAVIOURS) * len(VMMS)
    (fig,) = F.result_figures({"guest_matrix": rows})
    assert fig.title.text == f.title.text


def test_a_pvalidate_whose_exit_the_vmm_cannot_answer_is_stuck_as_an_access_is():
    """Guest ownership, exit policy: a PVALIDATE of a page KVM still has shared exits; the VMM
    may not set the attribute (EPERM), so the vCPU exits again until the guest is stuck, as a
    touch of such a page is."""
    g = build_guest(Revalidating, owner="guest", max_exits=3, **FAST)
    with pytest.raises(GuestStuck, match="still exits after 3 answers"):
        g.pvalidate(RAM_GPA, PAGE_4K, True)
    assert [s.name for s in g.log].count("vmm_error") == 4 and g.terminated is None
    assert not g.vm.memory_attributes(RAM_GPA >> PAGE_SHIFT)
