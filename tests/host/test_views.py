"""Host views as data (kit/host/views.py), and their old names in kit.viz.state."""
import numpy as np

import kit.host.views as V
from kit.host import Host
from kit.units import PAGE_2M, PAGE_4K, PAGES_PER_2M

R = PAGES_PER_2M


def test_rmp_ranges_is_the_host_view():
    h = Host(mem="2GiB", cores=4)
    h.rmp_make_private(R, 0x200000, PAGE_2M, 1, False)
    h.rmp_make_private(2 * R + 3, 0x3000, PAGE_4K, 2, False, npages=2)
    rr = h.rmp_ranges(0, 3 * R)
    assert isinstance(rr, V.RmpRanges)
    assert [(r["start"], r["npages"], r["assigned"], r["pagesize"], r["asid"]) for r in rr.runs] == [
        (0, R, False, "4K", 0), (R, R, True, "2M", 1), (2 * R, 3, False, "4K", 0),
        (2 * R + 3, 2, True, "4K", 2), (2 * R + 5, R - 5, False, "4K", 0)]
    assert rr.runs[3]["gpa"] == 0x3000


def test_region_states_and_detail():
    h = Host(mem="2GiB", cores=4)
    h.rmp_make_private(R, 0, PAGE_2M, 1, False)
    h.rmp_make_private(2 * R + 1, 0x1000, PAGE_4K, 1, False)
    st = V.region_states(h)
    assert st[1] == V.S_PRIV_2M and st[2] == V.S_MIXED and st[0] == V.S_FREE
    d = V.region_detail(h, 2)
    assert np.flatnonzero(d["state"]).tolist() == [1] and d["gpa"][1] == 0x1000
    assert V.grid(st, 3).shape == (-(-len(st) // 3), 3)


def test_old_names_in_viz_state_are_the_host_views():
    import kit.viz.state as S
    for name in ("region_states", "region_detail", "summary", "grid", "rmp_ranges", "RmpRanges",
                 "STATES", "DM_LEVELS", "PAGE_STATES", "S_FREE", "S_PRIV_2M", "S_MIXED"):
        assert getattr(S, name) is getattr(V, name), name
