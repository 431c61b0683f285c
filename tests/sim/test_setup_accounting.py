"""Every split that shows in the DirectMap lines shows in the counts: the work before the run
(the direct-map policy's boot step, the guests' launch with their VMSA pages) is reported as
``setup`` beside the run's own events, and the two together account for the DirectMap lines
(arch/x86/mm/pat/set_memory.c ``split_page_count``: each 2M -> 4K split moves 2 MiB to
DirectMap4k, each 1G -> 2M split 1 GiB from DirectMap1G to DirectMap2M)."""
import pytest

from kit.host import DIRECTMAP_POLICIES
from kit.host.directmap import DirectMap
from kit.host.ledger import Ledger
from kit.sim import api
from kit.units import GiB, KiB, PAGE_1G, PAGE_2M, PAGE_4K

SMALL = dict(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB")


def implied(directmap: dict, host_mem: int) -> tuple[int, int]:
    """(net 1G->2M splits, net 2M->4K splits) the DirectMap lines imply, from the lines at
    power-on (before any policy's boot step)."""
    power_on = DirectMap(host_mem // PAGE_4K, ledger=Ledger()).counts()
    net_2m = (directmap["DirectMap4k"] - power_on["DirectMap4k"]) * KiB // PAGE_2M
    net_1g = (power_on["DirectMap1G"] - directmap["DirectMap1G"]) * KiB // PAGE_1G
    return net_1g, net_2m


def counted(r) -> tuple[int, int]:
    ev = {k: r.splits[k] for k in r.splits}
    for part in ("boot", "launch"):
        for k in ev:
            ev[k] += r.setup[part].get(k, 0)
    return ev["split_1g"] - ev["collapse_1g"], ev["split_2m"] - ev["collapse_2m"]


@pytest.mark.parametrize("policy", sorted(DIRECTMAP_POLICIES))
@pytest.mark.parametrize("workload", ["lazy-accept", "conversions"])
def test_splits_counted_match_the_directmap_lines(workload, policy):
    r = api.simulate(workload, policy=policy, engine="des", steps=300, **SMALL)
    assert counted(r) == implied(r.directmap, 64 * GiB), (r.splits, r.setup, r.directmap)


def test_launch_splits_are_reported_before_the_run():
    # the report of the issue: split-on-demand showed "splits 0/0" beside DirectMap4k 2048 kB
    r = api.simulate(policy="split-on-demand", **SMALL)
    assert r.directmap["DirectMap4k"] == 2048 and r.splits["split_2m"] == 0
    assert r.setup["launch"]["split_2m"] == 1 and r.setup["launch"]["split_1g"] == 1
    assert r.setup["boot"] == {}
    s = r.summary()
    assert s["splits 1G/2M before the run"] == "boot 0/0, launch 1/1"
    assert s["cpa_lock before the run"].startswith("boot 0, launch ")
    assert "setup" in r.to_json()


def test_presplit_boot_work_is_the_boot_part():
    r = api.simulate(policy="presplit-4k", **SMALL)
    regions = 64 * GiB // PAGE_2M
    assert r.setup["boot"]["split_2m"] == regions and r.setup["launch"].get("split_2m", 0) == 0
    assert counted(r) == implied(r.directmap, 64 * GiB)


@pytest.mark.parametrize("policy", sorted(DIRECTMAP_POLICIES))
def test_analytic_lines_and_counts_agree_within_the_scaling(policy):
    """The analytic engine scales the sample's run (events and DirectMap change alike); the
    setup is not scaled. Rounding may leave one split between the two."""
    r = api.simulate(policy=policy, **dict(SMALL, guest_mem="16GiB", vcpus=4))
    (c1, c2), (i1, i2) = counted(r), implied(r.directmap, 64 * GiB)
    assert abs(c1 - i1) <= 1 and abs(c2 - i2) <= 1, (r.splits, r.setup, r.directmap)


@pytest.mark.parametrize("policy", ["split-on-demand", "presplit-4k", "invalidate-4k"])
@pytest.mark.parametrize("specs", [None, ((8, 2 * GiB), (16, GiB), (8, 2 * GiB), (16, GiB), (16, GiB))])
def test_analytic_set_up_is_every_guests(policy, specs):
    """The analytic engine times one guest of each kind, but its set-up events and the
    DirectMap lines its run starts from are every guest's (``api.setup_trace``): the same as a
    trace of all the guests, which the discrete-event engine runs here."""
    kw = dict(guests=6, vcpus=16, guest_mem="1GiB", host_cores=16, host_mem="64GiB", policy=policy)
    if specs:
        kw = dict(kw, guests=len(specs), guest_specs=list(specs))
    a = api.simulate(engine="analytic", **kw)
    d = api.simulate(engine="des", **kw)
    assert a.setup == d.setup and a.setup["launch"]
    s = api.scenario(**kw)
    full = api.run_trace(s)
    assert a.setup == {"boot": full.boot, "launch": full.launch}
    assert api.setup_trace(s)["directmap"] == full.directmap_boot
    assert "every guest's set-up traced" in a.trace
    # the lines add up: set-up (exact) plus the run's scaled change, within the scaling's rounding
    (c1, c2), (i1, i2) = counted(a), implied(a.directmap, 64 * GiB)
    assert abs(c1 - i1) <= 1 and abs(c2 - i2) <= 1, (a.splits, a.setup, a.directmap)


def test_one_guest_of_each_kind_needs_no_second_set_up(monkeypatch):
    """A scenario whose guests are all of different kinds is its own sample: no second trace."""
    monkeypatch.setattr(api, "setup_trace", lambda s: pytest.fail("traced twice"))
    r = api.simulate(policy="split-on-demand", **SMALL)
    assert r.setup["launch"] and "set-up traced" not in r.trace
