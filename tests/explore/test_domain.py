"""What the seeds' scenarios must show, one test per line of the issue, on the kit's model; and the
reviewers' schedules replayed as lists of thread names.

Sources: "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and unmap" (the
SRCU and host_write_track reviews, S. Christopherson; CASE1 and CASE2, M. Roth; October 2021) and
"[RFC] KVM: x86: Support KVM VMs sharing SEV context" (the TOCTOU, S. Christopherson, 2021).
"""
from __future__ import annotations

import functools

import pytest

from kit.explore import explore_named
from kit.explore.scenarios import HostWriteVsConversion

HWC = "host-write-vs-conversion"
NO_UPDATE_WHILE_MAPPED = "no RMPUPDATE to private while mapped"
NO_FAULT_ON_MAP = "no RMP #PF on a mapped page"
COUNTER = "tracking counter equals live maps"
NO_OOPS = "no oops unless the kernel bug ran"
MIRROR_OF_MIRROR = "no mirror of a mirror"
MIRROR_WITH_VCPUS = "no mirror of a VM with vCPUs"

FLIP_BACK_SPLIT_SCHEDULES = 250
"""Schedules the exhaustive search runs for flip_back_split on the default scenario (writer,
conversion, writer2), with the reduction; docs/explore.md quotes it."""


@functools.lru_cache(maxsize=None)
def exhaustive(scenario, scheme, **params):
    return explore_named(scenario, scheme, **params)


def labels(example):
    return [(s.thread, s.label) for s in example.trace]


def position(example, thread, text):
    return next(i for i, s in enumerate(example.trace) if s.thread == thread and text in s.label)


# ===================================================================== srcu
def test_srcu_a_map_taken_after_the_synchronize_and_before_the_rmpupdate_breaks_no_update_while_mapped():
    result = exhaustive(HWC, "srcu")
    assert result.complete
    assert NO_UPDATE_WHILE_MAPPED in result.violated
    ex = result.example(NO_UPDATE_WHILE_MAPPED)
    kmap = position(ex, "writer", "kmap")
    assert position(ex, "conversion", "synchronize_srcu_expedited kvm->psc_srcu: start") < kmap
    assert kmap < position(ex, "conversion", "RMPUPDATE") == len(ex.trace) - 1
    # the reviewer's schedule, replayed: the synchronize has finished when the writer maps
    replay = explore_named(HWC, "srcu", "replay",
                           schedule=["conversion"] * 3 + ["writer"] * 3 + ["conversion"] * 2)
    assert [s.label for s in replay.trace][:3] == [
        "set attributes gfn 0x10 private", "synchronize_srcu_expedited kvm->psc_srcu: start",
        "synchronize_srcu_expedited kvm->psc_srcu: wait"]
    assert replay.violated == [NO_UPDATE_WHILE_MAPPED]
    assert replay.trace[-1].changes["rmp"][1].startswith("private")


# ===================================================================== host_write_track
def test_host_write_track_lockless_two_writers_lose_an_update():
    result = exhaustive(HWC, "host_write_track")
    assert COUNTER in result.violated
    ex = result.example(COUNTER)
    writes = [(s.thread, s.label.split(" ")[0]) for s in ex.trace if "host_write_track" in s.label]
    assert sorted(writes[:2]) == [("writer", "load"), ("writer2", "load")]          # both load first
    assert {t for t, op in writes[2:]} == {"writer", "writer2"} and {op for _, op in writes[2:]} == {"store"}
    replay = explore_named(HWC, "host_write_track", "replay",
                           schedule=["writer", "writer", "writer2", "writer2", "writer", "writer2"])
    assert replay.violated == [COUNTER]
    last = replay.trace[-1]
    assert last.label == "store host_write_track[gfn] = 1 (kmap)" and last.changes == {"host maps": (1, 2)}


def test_host_write_track_lockless_a_conversion_proceeds_under_a_live_map():
    result = exhaustive(HWC, "host_write_track")
    assert NO_UPDATE_WHILE_MAPPED in result.violated and NO_FAULT_ON_MAP in result.violated
    ex = result.example(NO_UPDATE_WHILE_MAPPED)
    assert position(ex, "conversion", "load host_write_track") < position(ex, "writer", "store host_write_track")
    assert position(ex, "writer", "store host_write_track") < position(ex, "conversion", "RMPUPDATE")
    # "nothing blocks writers on in-progress readers": the PSC read 0, then a writer mapped
    replay = explore_named(HWC, "host_write_track", "replay",
                           schedule=["conversion"] * 2 + ["writer"] * 3 + ["conversion"] * 2)
    assert replay.violated == [NO_UPDATE_WHILE_MAPPED]


def test_host_write_track_locked_passes_every_interleaving():
    result = exhaustive(HWC, "host_write_track_locked")
    assert result.complete and result.ok


# ===================================================================== flip_back_unmap
CASE1 = ["conversion"] * 4 + ["writer"] * 2 + ["writer2"] * 2 + ["writer", "writer2"]


def test_flip_back_unmap_two_threads_fault_on_the_same_page():
    replay = explore_named(HWC, "flip_back_unmap", "replay", schedule=CASE1)
    writes = [s for s in replay.trace if s.label.startswith("host write")]
    assert [s.thread for s in writes] == ["writer", "writer2"]
    assert [s.changes["host faults"] for s in writes] == [(0, 1), (1, 2)]     # both fault before a handler ran
    scn = HostWriteVsConversion("flip_back_unmap")
    explore_named(scn, mode="replay", schedule=CASE1[:8])
    f1, f2 = scn.w.host.faults
    assert f1.pfn == f2.pfn and f1.kind == f2.kind == "not-present" and f1.entry.assigned


def test_flip_back_unmap_the_second_finds_the_page_shared_and_cannot_tell_it_from_case2():
    case1 = HostWriteVsConversion("flip_back_unmap")
    explore_named(case1, mode="replay", schedule=CASE1)
    first, second = case1.w.host.faults
    handler1 = explore_named(HWC, "flip_back_unmap", "replay", schedule=CASE1).trace[-2]
    assert handler1.thread == "writer" and handler1.changes["rmp"] == ("private asid 1 gpa 0x10000", "shared")
    seen1 = (second.kind, second.error_code, case1.w.host.rmp.rmpread(second.pfn))
    assert not seen1[2].assigned                        # the page is shared when handler 2 reads the RMP
    # CASE2: a kernel bug broke the direct map; no conversion at all
    case2 = HostWriteVsConversion("flip_back_unmap", kernel_bug=True)
    explore_named(case2, mode="replay", schedule=["kernel-bug", "writer", "writer"])
    (bug_fault,) = case2.w.host.faults
    seen2 = (bug_fault.kind, bug_fault.error_code, case2.w.host.rmp.rmpread(bug_fault.pfn))
    assert seen1 == seen2                                # the same fault, the same RMP entry


def test_flip_back_unmap_the_only_safe_answer_is_to_oops_so_a_guest_crashes_the_host():
    replay = explore_named(HWC, "flip_back_unmap", "replay", schedule=CASE1)
    assert replay.trace[-1].thread == "writer2" and replay.trace[-1].changes["oops"] == ("-", "writer2")
    assert replay.violated == [NO_OOPS]
    result = exhaustive(HWC, "flip_back_unmap")
    assert result.complete and NO_OOPS in result.violated
    # with the bug thread, the same oops is CASE2's answer and is excused
    case2 = explore_named(HWC, "flip_back_unmap", "replay", schedule=["kernel-bug", "writer", "writer", "writer"],
                          kernel_bug=True)
    assert case2.trace[-1].changes["oops"] == ("-", "writer") and case2.ok


# ===================================================================== flip_back_split, upstream
def test_flip_back_split_every_interleaving_passes():
    result = exhaustive(HWC, "flip_back_split")
    assert result.complete and result.stopped_by is None and result.ok
    assert result.schedules == FLIP_BACK_SPLIT_SCHEDULES
    # the CASE1 schedule: the second handler sees X86_PF_RMP on a shared page and retries
    replay = explore_named(HWC, "flip_back_split", "replay", schedule=CASE1 + ["writer2"])
    assert replay.ok and [s.changes.get("oops") for s in replay.trace] == [None] * len(replay.trace)
    assert replay.trace[-1].label.startswith("host write") and "host faults" not in replay.trace[-1].changes


def test_flip_back_split_passes_with_the_kernel_bug():
    result = exhaustive(HWC, "flip_back_split", kernel_bug=True)
    assert result.complete and result.ok


@pytest.mark.parametrize("params", [{}, {"punch_hole": True}, {"kernel_bug": True}],
                         ids=["default", "punch-hole", "kernel-bug"])
def test_upstream_every_interleaving_passes(params):
    result = exhaustive(HWC, "upstream", **params)
    assert result.complete and result.ok, result


# ===================================================================== mirrors
def test_mirror_2021_toctou_makes_two_vms_mirrors_of_each_other():
    result = exhaustive("mirror-setup", "mirror-2021")
    assert result.complete and MIRROR_OF_MIRROR in result.violated
    ex = result.example(MIRROR_OF_MIRROR)
    sets = [s for s in ex.trace if "enc_context_owner" in s.label]
    assert {s.changes[s.label[0]][1].split(",")[0] for s in sets} == {"mirror of A", "mirror of B"}
    # the reviewer's TOCTOU: both check the other VM unlocked before either sets it up
    toctou = ["copy1"] * 5 + ["copy2"] * 5 + ["copy1"] * 3 + ["copy2"] * 3
    replay = explore_named("mirror-setup", "mirror-2021", "replay", schedule=toctou)
    assert replay.violated == [MIRROR_OF_MIRROR]
    assert "(B not locked)" in replay.trace[3].label and "(A not locked)" in replay.trace[8].label


def test_mirror_2021_makes_a_mirror_of_a_vm_with_vcpus():
    result = exhaustive("mirror-setup", "mirror-2021")
    assert MIRROR_WITH_VCPUS in result.violated
    ex = result.example(MIRROR_WITH_VCPUS)
    assert position(ex, "vcpu", "created_vcpus++") < position(ex, "copy1", "B <- A")


@pytest.mark.parametrize("params", [{}, {"initialised": "first"}, {"op": "move"}, {"op": "move", "initialised": "first"}],
                         ids=["copy", "copy-first", "move", "move-first"])
def test_mirror_merged_passes_exhaustively(params):
    result = exhaustive("mirror-setup", "mirror-merged", **params)
    assert result.complete and result.ok, result


def test_mirror_merged_sets_up_a_mirror_when_the_destination_is_free():
    replay = explore_named("mirror-setup", "mirror-merged", "replay", schedule=["copy1"] * 10, initialised="first")
    assert replay.trace[5].changes["B"] == ("not SEV", "mirror of A, asid 100")
    assert replay.ok
