"""Figure builders of recorded results: one builder per figure, the same for a notebook and for
its report (``result_figures``), from the JSON a notebook records."""
import json

import pytest
from bokeh.embed import json_item
from bokeh.models import Plot

from kit.lab.record import jsonable
from kit.sim.experiments import sweep
from kit.viz import figures as F

FIXED = dict(guest_mem="8GiB", host_mem="64GiB", seed=0)


@pytest.fixture(scope="module")
def sweep_rows():
    """Rows of three sweeps concatenated, as lazy-acceptance-scaling records them."""
    pols = ["presplit-4k", "split-on-demand"]
    return (sweep("vcpus", [4, 8], policies=pols, guests=1, host_cores=16, **FIXED)
            + sweep("guests", [1, 2], policies=pols, vcpus=4, host_cores=16, **FIXED)
            + sweep("host_cores", [8, 16], policies=pols, guests=2, vcpus=4, **FIXED))


def plots(layout) -> list:
    return list(layout.select({"type": Plot}))


def test_sweep_figures_split_rows_by_the_variable_they_vary(sweep_rows):
    figs = F.sweep_figures(sweep_rows)
    assert [f.xaxis[0].axis_label for f in figs] == ["vcpus", "guests", "host_cores"]
    for f, x in zip(figs, ("vcpus", "guests", "host_cores")):
        lines = [r for r in f.renderers if r.glyph.__class__.__name__ == "Line"]
        assert len(lines) == 2                                # one per policy
        want = [r["fault_in_gbps"] for r in sweep_rows if x in r and r["policy"] == "presplit-4k"]
        assert list(lines[0].data_source.data["y"]) == want
    assert F.sweep_figure(sweep_rows, "guests").title.text == "fault-in rate vs guests"
    with pytest.raises(ValueError, match="sweep: a row holds none"):
        F.swept_variable({"policy": "none"})


def test_utilisation_folds_per_guest_resources_by_the_busiest():
    rows = [{"policy": "a", "fault_in_gbps": 1.0, "bottleneck": "membw", "vm_lock[0]": 0.2, "vm_lock[1]": 0.7,
             "membw": 0.9, "cores": 0.1}]
    assert F.utilisation_by(rows) == {"a": {"vm_lock": 0.7, "membw": 0.9, "cores": 0.1}}
    data = F.utilisation_data(F.utilisation_by(rows))
    assert dict(zip(map(tuple, data["y"]), data["utilisation"]))[("a", "vm_lock")] == 0.7


def test_outcome_matrix_asid_map_and_churn_from_recorded_json():
    matrix = [{"owner": o, "npf_policy": "exit", "backing": "guest_memfd", "guest": "asks first",
               "outcome": out, "exits": 1, "ioctls": 1, "kvm_conversions": 0}
              for o, out in (("userspace", "completed"), ("guest", "stuck (EFAULT)"))]
    f = F.outcome_matrix_figure(matrix)
    assert f.renderers[0].data_source.data["colour"] == [F.OUTCOME_COLOURS["completed"], F.STUCK_COLOUR]
    state = json.loads(json.dumps({1: "leaked", 2: "in use", 3: "free", 4: "to reclaim"}))   # keys as JSON has them
    amap = F.asid_map_figure(state, min_sev_asid=3)
    ranges = {a: r for g in amap.renderers for a, r in zip(g.data_source.data["asid"], g.data_source.data["range"])}
    assert ranges == {1: "SEV-ES / SNP", 2: "SEV-ES / SNP", 3: "SEV", 4: "SEV"}
    assert amap.x_range.end == 4.5
    churn = {"SEV": {"ASIDs": 3, "recycles": 2, "wbinvd": 32, "series": [0, 0, 16, 16, 16, 32]},
             "SNP": {"ASIDs": 2, "recycles": 3, "wbinvd": 48, "series": [0, 16, 16, 32, 32, 48]}}
    cf = F.churn_figure(churn)
    assert "(16 CPUs per flush)" in cf.title.text
    assert [list(r.data_source.data["x"]) for r in cf.renderers] == [list(range(1, 7))] * 2


def test_result_figures_draw_every_section_a_notebook_records(sweep_rows):
    from kit.sim import simulate
    des = simulate(guests=1, vcpus=4, guest_mem="2GiB", host_cores=8, host_mem="64GiB", engine="des")
    results = jsonable({
        "sweep": sweep_rows,
        "held_back": [{"policy": "presplit-4k", "fault_in_gbps": 1.0, "bottleneck": "membw", "membw": 0.9}],
        "simulations": [des], "fragmentation": {"split-on-demand": des},
        "residuals": [{"config": "A", "residual": 0.1, "measured": 1, "model": 1.1, "error_pct": 10, "within": True}]})
    figs = F.result_figures(results)
    titles = {p.title.text for f in figs for p in plots(f)}
    assert {"fault-in rate vs vcpus", "fault-in rate vs guests", "fault-in rate vs host_cores"} <= titles
    assert any("Where the time goes" in t for t in titles)
    assert "split-on-demand, 1x4: fault-in rate" in titles and "split-on-demand: direct map over time" in titles
    assert any("Calibration residuals" in t for t in titles)
    for f in figs:
        json_item(f)                                       # every figure serialises (what reports embed)
    assert F.result_figures({"summary": {"x": 1}}) == [] and F.result_figures([1, 2]) == []
