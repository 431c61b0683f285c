"""What the dashboards show, checked without a browser: model views against the model's own
accessors, and the dashboards' traits, observers and data sources."""
import numpy as np
import pytest

from kit import PAGE_2M, PAGE_4K, Host, Kvm
from kit.host.rmp import F_2M
from kit.kvm import uapi as U
from kit.viz import dashboards as D
from kit.viz import figures as F
from kit.viz import state as S


@pytest.fixture
def host():
    h = Host(mem="4GiB", cores=8, directmap_policy="split-on-demand")
    h.memory.alloc(0, "kernel", 3)                                          # region 0: kernel pages
    assert h.rmp_make_private(512, 0x200000, PAGE_2M, 5, False) == 0        # region 1: private 2M
    assert h.rmp_make_private(1024, 0x1000, PAGE_4K, 5, False, npages=512) == 0   # region 2: 512 x 4K
    assert h.rmp_make_private(1536 + 9, 0x9000, PAGE_4K, 6, False) == 0     # region 3: one 4K page
    return h


def test_region_states_follow_the_rmp(host):
    st = S.region_states(host)
    assert st[0] == S.S_KERNEL and st[1] == S.S_PRIV_2M and st[2] == S.S_PRIV_4K and st[3] == S.S_MIXED
    assert np.all(st[4:] == S.S_FREE)
    assert S.summary(host)["regions"]["private 2M"] == 1


def test_region_detail_matches_rmpread(host):
    for region in (1, 2, 3, 7):
        d = S.region_detail(host, region)
        for off in (0, 8, 9, 10, 511):
            e = host.rmp.rmpread(region * 512 + off)
            assert bool(d["state"][off]) == e.assigned
            assert int(d["asid"][off]) == (e.asid if e.assigned else d["asid"][off])
            if e.assigned:
                want = e.gpa + (off * 4096 if e.pagesize == PAGE_2M else 0)
                assert int(d["gpa"][off]) == want
        assert bool(d["present"].all()) == all(host.directmap.present(region * 512 + o) for o in range(0, 512, 37))
    with pytest.raises(ValueError, match="region"):
        S.region_detail(host, host.rmp.nr_regions)


def test_rmp_ranges_cover_the_range_and_agree_with_rmpread(host):
    rr = host.rmp_ranges()
    starts = [r["start"] for r in rr.runs]
    assert starts[0] == 0 and sum(r["npages"] for r in rr.runs) == host.nr_pages
    assert all(a["start"] + a["npages"] == b["start"] for a, b in zip(rr.runs, rr.runs[1:]))
    for r in rr.runs:
        for pfn in {r["start"], r["start"] + r["npages"] - 1}:
            e = host.rmp.rmpread(pfn)
            assert e.assigned == r["assigned"] and (not e.assigned or e.asid == r["asid"])
    # the single 4K private page is its own run
    one = [r for r in rr.runs if r["start"] == 1545]
    assert one and one[0]["npages"] == 1 and one[0]["asid"] == 6 and one[0]["gpa"] == 0x9000
    part = host.rmp_ranges(1540, 10)
    assert sum(r["npages"] for r in part.runs) == 10 and "<script" not in part._repr_html_()


def test_html_displays_escape_text(make_kvm):
    k = make_kvm("8GiB", 8)
    vm = k.create_vm(U.KVM_X86_SNP_VM)
    vm.sev_init()
    f = vm.create_guest_memfd(4 << 20)
    vm.set_user_memory_region2(1, U.KVM_MEM_GUEST_MEMFD, 1 << 32, 4 << 20, 0, 0, f)
    vm.set_memory_attributes(1 << 32, 2 << 20, U.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    html = vm._repr_html_()
    assert "&lt;VM" not in html or "<VM" not in html
    assert "0x100000000-0x100200000" in html and "PRIVATE" in html and "slot 1" in html
    assert "<script" not in html and "<script" not in k.host._repr_html_()
    assert "0x100000000" in next(iter(vm.memslots.values()))._repr_html_()


def test_host_map_data_is_one_cell_per_region(host):
    d = F.host_map_data(host, width=64)
    img = d["rmp"]["image"][0]
    assert img.shape == (host.rmp.nr_regions // 64, 64)
    assert img.ravel()[1] == S.S_PRIV_2M
    assert np.array_equal(d["dm"]["image"][0].ravel()[:host.rmp.nr_regions], host.directmap.lvl)


# ------------------------------------------------------------------ dashboards
def test_policy_explorer_answers_changes_by_replacing_source_data():
    pe = D.PolicyExplorer(guests=1, vcpus=128, guest_mem_gib=512, host_cores=512, host_mem_gib=1536,
                          policies=("presplit-4k", "split-on-demand"))
    fig, src = pe.fig_rate, pe.src_rate
    first = list(src.data["model"])
    assert not np.isnan(src.data["measured"]).any()      # B: 1x128x512G measured both policies
    pe.guests.value = 4                                  # 4 x 512 GiB do not fit: no answer
    assert "do not fit" in pe.status.value and pe.answers == 1 and src.data["model"] == first
    pe.guest_mem.value = 256
    assert pe.fig_rate is fig and pe.src_rate is src     # same figure and source, new data
    assert pe.answers == 2 and src.data["model"] != first
    assert src.data["model"][0] > 2 * first[0]           # four guests: more than twice the rate
    assert "answered in" in pe.status.value
    pe.policies.value = ("invalidate-4k",)
    assert list(fig.x_range.factors) == [("4x128x256GiB", "invalidate-4k")]
    assert np.isnan(src.data["measured"][0])             # never measured
    before = dict(src.data)
    pe.guests.value = 60                                 # does not fit the host
    assert "do not fit" in pe.status.value and src.data["model"] == before["model"]
    pe.policies.value = ()
    assert "at least one" in pe.status.value and src.data["model"] == before["model"]


@pytest.mark.parametrize("kw,name", [({"guests": 0}, "guests"), ({"policies": ["bogus"]}, "policies"),
                                     ({"vcpus": 2.5}, "vcpus")])
def test_policy_explorer_rejects_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        D.PolicyExplorer(**kw)


def test_host_map_follows_a_run_and_zooms():
    hm = D.HostMap()
    src = hm.src_rmp
    empty = src.data["image"][0].copy()
    r = hm.run(policy="none", guests=1, vcpus=2, guest_mem="2GiB", every=0.25)
    assert hm.refreshes >= 4 and hm.src_rmp is src and hm.progress.value == 1.0
    img = src.data["image"][0]
    assert (img == S.S_PRIV_2M).sum() > (empty == S.S_PRIV_2M).sum()
    assert r.host_rmp_faults > 0 and "host RMP faults" in hm.status.value     # `none` is unsafe
    region = int(np.flatnonzero(img.ravel() == S.S_PRIV_2M)[0])
    hm.zoom(region)
    assert hm.region.value == region and set(hm.src_region.data["state"]) == {"private validated"}
    assert "one 2M entry" in hm.fig_region.title.text
    hm.zoom(10**9)
    assert "region" in hm.status.value


def test_host_map_tap_selects_a_region():
    from bokeh.events import Tap
    hm = D.HostMap()
    hm._tapped(Tap(hm.fig_rmp, x=5.5, y=2.2))
    assert hm.region.value == 2 * hm.width + 5


def test_guest_inspector_shows_slots_attributes_and_mirrors():
    gi = D.GuestInspector()
    d = gi.src.data
    assert d["row"].count("memslots") == 1 and d["row"].count("private") == 1
    i = d["row"].index("private")
    # 1 GiB accepted, and the 2 MiB guard unit past its aligned end (accept_memory)
    assert d["right"][i] - d["left"][i] == pytest.approx(1.0 + 2 / 1024)
    gi.select.value = 2                                           # the SEV mirror
    assert gi.vm.mirror_of is gi.vms[1] and "mirror of" in gi.info.value and gi.src.data["row"] == []


def test_simulation_runner_streams_series_and_stops():
    sr = D.SimulationRunner(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB")
    src = sr.src
    sr.start(wait=True)
    assert sr.result is not None and not sr.result.stopped and sr.progress.value == 1.0
    assert sr.src is src and len(src.data["t_s"]) == 100 and max(src.data["fault_in_gbps"]) > 0
    assert "done" in sr.status.value
    # a stop request ends the run early and says so
    sr.guest_mem.value = "64GiB"
    sr.host_mem.value = "128GiB"
    calls = []
    sr._progress = lambda f: (calls.append(f), sr.stop() if f > 0.1 else None)
    sr.start(wait=True)
    assert sr.result.stopped and "stopped" in sr.status.value
    assert sr.result.events and sum(sr.result.series["fault_in_gbps"]) > 0


def test_simulation_runner_rejects_bad_controls_without_running():
    sr = D.SimulationRunner(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB")
    sr.guest_mem.value = "lots"
    assert sr.start() is None and "guest_mem" in sr.status.value and sr.result is None
    with pytest.raises(ValueError, match="policy"):
        D.SimulationRunner(policy="bogus")


def test_dashboard_names():
    assert set(D.DASHBOARDS) == {"host-map", "policy-explorer", "guest-inspector", "simulation-runner",
                                 "race-explorer"}
    with pytest.raises(ValueError, match="allowed: host-map"):
        D.dashboard("nope")


def test_rmp_2m_flag_constant_is_what_the_state_view_uses(host):
    assert host.rmp.flags[1] & F_2M
