"""The dashboards' rough edges, headless: defaults that fit, invalid values that say why and
disable run, safety in the policy explorer, legends that match their marks, toolbars beside
(not over) titles, distinct resource colours, a region legend in the map's colours, value axes
from zero, "no memslots" for an empty VM, and every view exported as an HTML section and CSV."""
from __future__ import annotations

import csv
import io
import itertools
from html import escape as html_escape

import pytest
from bokeh.models import Legend
from bokeh.plotting import figure as Figure

from kit import Host
from kit.kvm import Kvm
from kit.kvm import uapi as U
from kit.sim.scenario import HOST_RESERVED
from kit.units import GiB
from kit.viz import dashboards as D
from kit.viz import figures as F
from kit.viz import state as S

from . import toy_catalog


def _rgb(c: str) -> tuple:
    return tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))


def figures_of(d) -> list:
    return list(d.plot._model.select({"type": Figure}))


# ------------------------------------------------------------------ defaults, invalid values
def test_policy_explorer_guests_4_opens_with_plots_and_guest_memory_that_fits():
    pe = D.PolicyExplorer(guests=4)
    assert pe.problem is None and pe.answers == 1 and len(pe.src_rate.data["model"]) == 4
    assert 4 * pe.guest_mem.value * GiB + HOST_RESERVED <= pe.host_mem.value * GiB
    pe.guests.value = 8                                      # the default follows, said in the status
    assert pe.problem is None and pe.guest_mem.value == (1536 * GiB - HOST_RESERVED) // 8 // GiB
    assert "guest GiB set to" in pe.status_text
    pe.guests.value = 1                                      # back to the table's default
    assert pe.guest_mem.value == D.GUEST_MEM_GIB.default


def test_an_invalid_value_says_why_outlines_the_control_and_the_next_value_answers():
    pe = D.PolicyExplorer(guests=1, guest_mem_gib=400)       # given: not adjusted
    pe.guests.value = 4
    assert "do not fit" in pe.problem and "last valid configuration" in pe.problem
    assert pe.guests.layout.border and not pe.vcpus.layout.border
    pe.guest_mem.value = 256                                 # fixed: answered, outline gone
    assert pe.problem is None and pe.answers == 2 and not pe.guests.layout.border
    with pytest.raises(ValueError, match="guests: 4 guests of 1600GiB in all do not fit"):
        D.PolicyExplorer(guests=4, guest_mem_gib=400)        # a given configuration that cannot run


def test_simulation_runner_disables_run_until_the_values_are_fixed():
    sr = D.SimulationRunner(guest_mem="32GiB", host_mem="128GiB")
    assert not sr.start_button.disabled
    sr.host_mem.value = "lots"
    assert sr.start_button.disabled and sr.problem.startswith("host_mem")
    assert sr.host_mem.layout.border
    assert sr.start() is None                                # nothing runs
    sr.host_mem.value = "128GiB"
    assert not sr.start_button.disabled and sr.problem is None and not sr.host_mem.layout.border
    sr.guests.value = 8                                      # 8 x 32 GiB do not fit: guest memory made to fit
    assert sr.problem is None and sr.guest_mem.value == f"{(128 * GiB - HOST_RESERVED) // 8 // GiB}GiB"


def test_race_explorer_disables_run_for_a_bad_bound(monkeypatch):
    toy_catalog.install(monkeypatch)
    d = D.RaceExplorer("lost-update", "lockless", run=False)
    d.mode.value = "random"
    d.bound.value = 0                                        # no run at all
    assert d.run_button.disabled and d.problem.startswith("bound") and d.bound.layout.border
    d.bound.value = 1
    assert not d.run_button.disabled and d.problem is None


# ------------------------------------------------------------------ safety and legends
def test_policy_explorer_marks_the_unsafe_policy():
    pe = D.PolicyExplorer(policies=["none", "split-on-demand"])
    data = pe.src_rate.data
    by = dict(zip([x[1] for x in data["x"]], zip(data["mark"], data["hatch"], data["legend"], data["safety"])))
    assert by["none"] == ("UNSAFE", F.UNSAFE_HATCH, "none (UNSAFE)", "UNSAFE: host RMP faults")
    assert by["split-on-demand"] == ("", " ", "split-on-demand", "safe")
    assert "UNSAFE: none" in pe.status_text
    rows = {r["policy"]: r for r in pe.view_rows()}
    assert rows["none"]["safe"] is False and rows["none"]["host_rmp_faults"] > 0


def test_the_rate_legend_names_each_bar_in_its_own_colour():
    pe = D.PolicyExplorer(policies=["none", "presplit-4k", "split-on-demand"])
    (legend,) = pe.fig_rate.select({"type": Legend})
    labels = [it.label for it in legend.items]
    assert "legend" in [getattr(lab, "field", None) for lab in labels]       # one entry per policy, by field
    assert "modelled" not in [getattr(lab, "value", None) for lab in labels]
    data = pe.src_rate.data
    colour_of = {}
    for name, colour in zip(data["legend"], data["colour"]):
        assert colour_of.setdefault(name, colour) == colour             # one colour per legend entry
    assert len(set(colour_of.values())) == len(colour_of)


def test_resources_have_distinct_colours_from_one_palette():
    cols = list(F.RESOURCE_COLOURS.values())
    worst = min(sum((a - b) ** 2 for a, b in zip(_rgb(x), _rgb(y))) ** 0.5 for x, y in itertools.combinations(cols, 2))
    assert worst > 60, worst            # pgd_lock and vm_lock were 37 apart (two oranges)
    f = F.lockwait_series_figure(F.ColumnDataSource(F.series_data({})))
    lines = {r.glyph.y: r.glyph.line_color for r in f.renderers}
    assert lines == {f"wait_{k}": F.RESOURCE_COLOURS[k] for k in ("cpa_lock", "pgd_lock", "vm_lock", "guest_lock")}


def test_the_region_grid_has_a_legend_in_the_maps_colours():
    hm = D.HostMap()
    hm.run(guests=1, vcpus=2, guest_mem="2GiB")
    region = int(next(i for i, s in enumerate(S.region_states(hm.host)) if s == S.S_PRIV_2M))
    hm.zoom(region)
    assert hm.fig_region.legend and hm.fig_region.legend[0].items
    assert set(hm.src_region.data["legend"]) == {"private 2M"}
    assert set(hm.src_region.data["colour"]) == {S.STATE_COLOURS[S.S_PRIV_2M]}     # as the map shows it
    for name, code in (("shared guest", S.S_SHARED_GUEST), ("private 4K", S.S_PRIV_4K), ("firmware", S.S_FIRMWARE)):
        assert F.REGION_STATES[name] == S.STATE_COLOURS[code]


def test_toolbars_are_beside_the_plots_never_over_their_titles(monkeypatch):
    toy_catalog.install(monkeypatch)
    vm = Kvm(Host(mem="8GiB", cores=4)).create_vm(U.KVM_X86_SNP_VM)
    for d in (D.PolicyExplorer(), D.HostMap(), D.GuestInspector(vm), D.SimulationRunner(),
              D.RaceExplorer("lost-update", "lockless")):
        for f in figures_of(d):
            assert f.toolbar_location != "above", (d.name, f.title.text)


def test_value_axes_start_at_zero():
    src = F.ColumnDataSource(F.series_data({}))
    for build in (F.rate_series_figure, F.directmap_series_figure, F.lockwait_series_figure):
        assert build(src).y_range.start == 0
    rows = [{"policy": "none", "vcpus": v, "fault_in_gbps": 10 + v / 100} for v in (8, 16)]
    assert F.sweep_figure(rows).y_range.start == 0


def test_an_empty_vm_says_no_memslots():
    vm = Kvm(Host(mem="8GiB", cores=4)).create_vm(U.KVM_X86_SNP_VM)
    gi = D.GuestInspector(vm)
    label = gi.fig.select_one({"name": "empty"})
    assert label.visible and label.text == "no memslots" and "no memslots" in gi.fig.title.text
    gi2 = D.GuestInspector()                       # the demo VM has memslots
    assert not gi2.fig.select_one({"name": "empty"}).visible


# ------------------------------------------------------------------ export
@pytest.mark.parametrize("make", [
    lambda: D.PolicyExplorer(policies=["none", "split-on-demand"]),
    lambda: D.HostMap(),
    lambda: D.GuestInspector(),
    lambda: D.SimulationRunner(guest_mem="4GiB", vcpus=4),
    lambda: D.RaceExplorer("lost-update", "lockless"),
], ids=["policy-explorer", "host-map", "guest-inspector", "simulation-runner", "race-explorer"])
def test_every_dashboard_exports_its_view_as_an_html_section_and_csv(make, tmp_path, monkeypatch):
    toy_catalog.install(monkeypatch)
    d = make()
    if isinstance(d, D.SimulationRunner):
        d.start(wait=True)
    paths = d.export(tmp_path, "view")
    html = paths["html"].read_text()
    assert html.startswith("<!doctype html>") and "<section class='kit-dashboard'" in html
    assert "Bokeh" in html and "cdn.bokeh.org" not in html and "data-root-id" in html
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert rows and rows == list(csv.DictReader(io.StringIO(d.to_csv())))
    assert html_escape(d.view_title()) in html
    section = d.section_html()
    assert section.startswith("<section") and "data:text/csv" in section
    assert d.export_button.description == "export view"


def test_the_policy_explorer_csv_holds_what_the_plots_show(tmp_path):
    pe = D.PolicyExplorer(policies=["none", "split-on-demand"])
    rows = list(csv.DictReader(io.StringIO(pe.to_csv())))
    assert [r["policy"] for r in rows] == ["none", "split-on-demand"]
    assert [float(r["model_gbps"]) for r in rows] == pytest.approx(list(pe.src_rate.data["model"]), abs=1e-3)
    assert rows[0]["safe"] == "False" and "utilisation membw" in rows[0]
