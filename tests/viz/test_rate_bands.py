"""Every modelled rate carries its band from the fit (issue 17, "Honest error bars"), written
one way (kit.units.rate_text, band_fields), its meaning said once; a rate without a band says
so. The tests walk the class of surfaces: every figure a recorded result draws, every report
table, every conclusion sentence, the sweep scalars, the diff view, ``kit simulate --json``
and the dashboards."""
from __future__ import annotations

import json
import math
import re
from html import unescape

import pytest
from bokeh.layouts import LayoutDOM
from bokeh.models import Plot, VArea, Whisker

from kit.cli import main
from kit.lab import record
from kit.lab.batch import _scalars, csv_safe
from kit.lab.report import BANDS_TEXT, build, diff_html
from kit.sim import experiments as X
from kit.sim.params import BAND_SIGMAS, CostParams
from kit.units import (BAND_MEANING, NO_BAND, NO_BAND_CELL, band_fields, band_keys, band_text, has_band,
                       rate_text)
from kit.viz import figures as F
from kit.viz.html import rate_table, report_table
from kit.viz.narrative import band_note, conclusion, headline_numbers, with_band_columns

SMALL = dict(guests=1, vcpus=4, guest_mem="2GiB", host_cores=8, host_mem="32GiB")
POLICIES = ["presplit-4k", "split-on-demand"]


# ------------------------------------------------------------------ the one way to write a band
def test_a_rate_and_its_band_are_written_one_way():
    assert rate_text(15.2618, [14.1867, 16.416]) == "15.26 GB/s (band 14.19 - 16.42)"
    assert band_text([14.1867, 16.416]) == "14.19 - 16.42"
    assert rate_text(15.2618, None) == f"15.26 GB/s ({NO_BAND})"
    assert band_text(None) == NO_BAND and band_text([1.0, float("nan")]) == NO_BAND
    assert not has_band([1.0]) and not has_band("1-2") and has_band((1, 2))
    assert band_fields("model_gbps", [1.23456, 2.5]) == {"model_gbps_low": 1.235, "model_gbps_high": 2.5}
    assert band_fields("x: fault-in GB/s", None) == {"x: fault-in GB/s band low": None, "x: fault-in GB/s band high": None}
    assert band_keys("fault_in_gbps") == ("fault_in_gbps_low", "fault_in_gbps_high")


def test_the_meaning_matches_the_width_the_model_draws():
    assert BAND_MEANING == f"fit and model error, {BAND_SIGMAS:g} sd"


# ------------------------------------------------------------------ recorded results
@pytest.fixture(scope="module")
def banded():
    """A recorded result with every section that shows a modelled rate, cost parameters with
    the fit's covariance (the shipped set)."""
    held = {p: X.simulate(**SMALL, policy=p) for p in POLICIES}
    return {"policy_table": X.policy_table(POLICIES, configs=[0]),
            "headline": X.headline(POLICIES, **SMALL), "timeline": X.timeline(POLICIES, **SMALL),
            "fragmentation": X.fragmentation(POLICIES[:1], guest_mem="2GiB", vcpus=2, steps=40, host_cores=8,
                                             host_mem="32GiB"),
            "safety": X.safety(POLICIES, guest_mem="1GiB", vcpus=2),
            "sweep": X.sweep("vcpus", [2, 4], policies=POLICIES, guests=1, host_cores=8, guest_mem="2GiB",
                             host_mem="32GiB"),
            "held_back": [{"policy": p, "fault_in_gbps": round(r.fault_in_gbps, 3), "rate_band_gbps": r.rate_band_gbps,
                           "scenario": r.scenario.to_json(), "bottleneck": r.bottleneck["resource"], **r.utilisation}
                          for p, r in held.items()],
            "simulations": [X.simulate(**SMALL, policy="presplit-4k", engine="des")],
            "bands": [{"config": "B: 1x4", "policy": "presplit-4k", "model_gbps": 3.0, "model_band_gbps": [2.8, 3.2],
                       "measured_gbps": 3.1, "spread": 0.3, "within": True}]}


@pytest.fixture(scope="module")
def bare():
    """The same kinds of result from cost parameters without a covariance: no band anywhere."""
    p = CostParams.load().without_covariance()
    return {"headline": X.headline(POLICIES, params=p, **SMALL),
            "policy_table": X.policy_table(POLICIES, configs=[0], params=p)}


def _doc(tmp_path, results, name="directmap-policies", **params):
    return json.loads(json.dumps(record(name, results, params={"outdir": str(tmp_path), **params},
                                        outdir=tmp_path, display=False), default=str))


def _plots(obj):
    """Every Bokeh plot in a figure or layout (rows and columns walked)."""
    if isinstance(obj, Plot):
        yield obj
    elif isinstance(obj, LayoutDOM):
        for child in getattr(obj, "children", []) or []:
            yield from _plots(child[0] if isinstance(child, tuple) else child)


def _shows_a_rate(f) -> bool:
    labels = [a.axis_label or "" for a in (*f.xaxis, *f.yaxis)]
    return any("GB/s" in str(label) for label in labels)


def _has_band(f) -> bool:
    """A band drawn on the plot: whiskers or a shaded area between ``band_lo`` and ``band_hi``."""
    whiskers = [w for w in f.center if isinstance(w, Whisker) and str(w.lower) == "band_lo"]
    areas = [r for r in f.renderers if isinstance(getattr(r, "glyph", None), VArea) and str(r.glyph.y1) == "band_lo"]
    return bool(whiskers or areas)


#: figures that show a rate without the fit's band, and why
NOT_THE_FITS = {"Leave-one-out": "a left-out fit's prediction: its spread is the point of the figure"}


def test_every_recorded_figure_that_shows_a_rate_draws_its_band(banded):
    from kit.lab.record import jsonable
    results = jsonable(banded)
    figs = [f for fig in F.result_figures(results) for f in _plots(fig)]
    rated = [f for f in figs if _shows_a_rate(f) and not any(f.title.text.startswith(k) for k in NOT_THE_FITS)]
    assert len(rated) >= 5, [f.title.text for f in rated]
    missing = [f.title.text for f in rated if not _has_band(f)]
    assert not missing
    # and the band holds the numbers: every drawn band is finite around its rate somewhere
    for f in rated:
        srcs = [w.source for w in f.center if isinstance(w, Whisker) and str(w.lower) == "band_lo"]
        srcs += [r.data_source for r in f.renderers if isinstance(getattr(r, "glyph", None), VArea)]
        assert any(any(v == v for v in s.data["band_lo"]) for s in srcs), f.title.text


def test_rate_builders_outside_result_figures_draw_bands(banded):
    rows = X.assumption_sweep("ctx_switch_us", [1, 5], configs=(SMALL,))
    assert all(has_band(r["rate_band_gbps"]) for r in rows)
    assert _has_band(F.assumption_figure(rows))
    sweep_rows = [{"run": f"v{v}", "vcpus": v, "a: fault-in GB/s": 2.0 * v,
                   **band_fields("a: fault-in GB/s", [1.9 * v, 2.1 * v])} for v in (1, 2)]
    f = F.headline_vs_parameter_figure(sweep_rows, "vcpus", "a: fault-in GB/s")
    assert _has_band(f) and BAND_MEANING in f.yaxis[0].axis_label
    assert not _has_band(F.headline_vs_parameter_figure(sweep_rows, "vcpus", "vcpus"))


def test_a_rate_series_without_a_band_draws_none():
    sim = X.simulate(**SMALL, policy="presplit-4k", engine="des",
                     params=CostParams.load().without_covariance())
    data = F.series_data(sim.series, rate=sim.fault_in_gbps, band=sim.rate_band_gbps)
    assert data["band_lo"] and all(math.isnan(v) for v in data["band_lo"] + data["band_hi"])
    banded = X.simulate(**SMALL, policy="presplit-4k", engine="des")
    d = F.series_data(banded.series, rate=banded.fault_in_gbps, band=banded.rate_band_gbps)
    assert all(lo <= v <= hi for lo, v, hi in zip(d["band_lo"], d["fault_in_gbps"], d["band_hi"]))


# ------------------------------------------------------------------ words
GBPS = re.compile(r"(\d+\.\d\d) GB/s")


def _every_rate_has_its_band(lines):
    """Every "x GB/s" of modelled text is followed by its band or by the words saying it has none."""
    text = " ".join(lines)
    for m in GBPS.finditer(text):
        after = text[m.end():m.end() + 80]
        assert after.startswith(" (band ") or after.startswith(f" ({NO_BAND})"), text[m.start():m.end() + 80]


def test_every_rate_in_a_conclusion_carries_its_band(banded, bare):
    from kit.lab.record import jsonable
    lines = conclusion(jsonable(banded))
    assert any("At the held-back configuration" in t for t in lines)
    assert any("Modelled rates of the measured configurations" in t for t in lines)
    assert sum(t.count("(band ") for t in lines) >= 5
    _every_rate_has_its_band(lines)
    assert lines[-1] == band_note(lines) and BAND_MEANING in lines[-1]
    none = conclusion(jsonable(bare))
    _every_rate_has_its_band(none)
    assert NO_BAND in " ".join(none) and "(band " not in " ".join(none)


def test_the_fit_may_not_tell_the_fastest_apart():
    held = [{"policy": "a", "fault_in_gbps": 10.0, "rate_band_gbps": [9.0, 11.0]},
            {"policy": "b", "fault_in_gbps": 9.5, "rate_band_gbps": [8.8, 10.2]},
            {"policy": "c", "fault_in_gbps": 5.0, "rate_band_gbps": [4.5, 5.5]}]
    (line,) = [t for t in conclusion({"held_back": held}) if t.startswith("At the held-back")]
    assert "Fastest: a; within its band: b (the model does not tell them apart)" in line


# ------------------------------------------------------------------ tables, sweeps, the diff view
def test_rows_get_band_columns_beside_their_rate():
    r = {"policy": "p", "model_gbps": 3.0, "model_band_gbps": [2.5, 3.5], "measured_gbps": 3.1}
    assert list(with_band_columns(r)) == ["policy", "model_gbps", "model_gbps_low", "model_gbps_high", "measured_gbps"]
    none = with_band_columns({"fault_in_gbps": 3.0, "rate_band_gbps": None})
    assert none == {"fault_in_gbps": 3.0, "fault_in_gbps_low": None, "fault_in_gbps_high": None}
    html = rate_table([r, {**r, "model_band_gbps": None}], ["policy", "model_gbps"])
    assert "model_gbps_low" in html and "2.5" in html and NO_BAND_CELL in html and BAND_MEANING in html
    t = report_table([with_band_columns({**r, "model_band_gbps": None})])
    assert f"model band low (GB/s, {BAND_MEANING})" in t and NO_BAND_CELL in t and "not measured" not in t


def _tables(html: str) -> list[list[str]]:
    """The headers of every report table."""
    return [[unescape(h) for h in re.findall(r"<th>([^<]*)</th>", m)]
            for m in re.findall(r"<table class='kit-t kit-r'[^>]*>(.*?)</table>", html, flags=re.S)]


RATE_HEADERS = ("model (GB/s)", "fault-in (GB/s)")


def test_every_report_table_with_a_modelled_rate_has_its_band_columns(tmp_path, banded, bare):
    html = build([_doc(tmp_path / "a", banded)])
    rated = [h for h in _tables(html) if any(r in h for r in RATE_HEADERS)]
    assert len(rated) >= 5
    for heads in rated:
        for r in RATE_HEADERS:
            if r in heads:
                i = heads.index(r)
                stem = r.split(" (")[0]
                assert heads[i + 1:i + 3] == [f"{stem} band low (GB/s, {BAND_MEANING})",
                                              f"{stem} band high (GB/s, {BAND_MEANING})"], heads
    assert html.count("id='bands'") == 1 and BANDS_TEXT.split(":")[0] in unescape(html)
    conclusion_block = unescape(html[html.index("id='conclusion-0'"):html.index("</div>", html.index("id='conclusion-0'"))])
    _every_rate_has_its_band(re.sub(r"<[^>]+>", " ", conclusion_block).split("\n"))
    # a run without the fit's covariance says so in its band cells, never "not measured"
    plain = build([_doc(tmp_path / "b", bare)])
    assert NO_BAND_CELL in plain and NO_BAND in unescape(plain)


def test_sweep_scalars_and_table_csv_put_band_columns_next_to_each_rate(banded):
    from kit.lab.record import jsonable
    import pandas as pd
    doc = {"name": "lazy-acceptance-scaling", "results": jsonable(banded)}
    got = _scalars(doc)
    keys = list(got)
    rates = [k for k in keys if "GB/s" in k and not k.endswith((" band low", " band high"))]
    assert len(rates) >= 5
    for k in rates:
        i = keys.index(k)
        assert keys[i + 1:i + 3] == [f"{k} band low", f"{k} band high"], k
        assert got[keys[i + 1]] <= got[k] <= got[keys[i + 2]]
    header = csv_safe(pd.DataFrame([got])).split("\r\n")[0].split(",")
    for k in rates:
        i = header.index(k)
        assert header[i + 1:i + 3] == [f"{k} band low", f"{k} band high"]
    # the merged table of runs with and without bands: the band cells of the bare run are empty
    assert headline_numbers({"held_back": [{"policy": "p", "fault_in_gbps": 1.0, "rate_band_gbps": None}]}) == {
        "p: fault-in GB/s (held-back configuration)": 1.0,
        "p: fault-in GB/s (held-back configuration) band low": None,
        "p: fault-in GB/s (held-back configuration) band high": None}


def test_the_diff_view_shows_each_rate_with_its_band(tmp_path, banded, bare):
    a = _doc(tmp_path / "a", {"headline": banded["headline"]})
    b = _doc(tmp_path / "b", bare, seed=1)
    html = unescape(diff_html(a, b))
    assert "presplit-4k: fault-in GB/s band low" in html and "presplit-4k: fault-in GB/s band high" in html
    row = re.search(r"presplit-4k: fault-in GB/s band low</td>(.*?)</tr>", html, flags=re.S).group(1)
    assert NO_BAND_CELL in row and "not measured" not in row


# ------------------------------------------------------------------ kit simulate
def test_simulate_json_carries_the_band_and_says_when_there_is_none(tmp_path, capsys):
    argv = ["simulate", "--guests", "1", "--vcpus", "4", "--guest-mem", "2GiB", "--host-cores", "8",
            "--host-mem", "32GiB", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rate_band"] == BAND_MEANING
    assert out["fault_in_gbps_low"] <= out["fault_in_gbps"] <= out["fault_in_gbps_high"]
    assert [out["fault_in_gbps_low"], out["fault_in_gbps_high"]] == out["rate_band_gbps"]
    bare = tmp_path / "p.json"
    bare.write_text(json.dumps(CostParams.load().without_covariance().to_json()))
    assert main([*argv, "--params", str(bare)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rate_band"] == NO_BAND and out["fault_in_gbps_low"] is None and out["rate_band_gbps"] is None
    assert main([*argv[:-1], "--params", str(bare)]) == 0
    assert NO_BAND in capsys.readouterr().out


# ------------------------------------------------------------------ dashboards
def _dashboard_plots(d):
    return list(_plots(d.plot._model))


def test_every_dashboard_figure_that_shows_a_rate_draws_its_band():
    from kit.viz.dashboards import HostMap, PolicyExplorer, SimulationRunner
    pe = PolicyExplorer(guests=1, vcpus=4, guest_mem_gib=2, host_cores=8, host_mem_gib=32,
                        policies=("presplit-4k", "split-on-demand"))
    sr = SimulationRunner(guests=1, vcpus=4, guest_mem="2GiB", host_cores=8, host_mem="32GiB")
    hm = HostMap()
    rated = [f for d in (pe, sr, hm) for f in _dashboard_plots(d) if _shows_a_rate(f)]
    assert len(rated) >= 2 and all(_has_band(f) for f in rated), [f.title.text for f in rated]
    # the numbers: the policy explorer's bars, rows and status; the runner's series and status
    assert all(v == v for v in pe.src_rate.data["band_lo"])
    assert all(r["model_gbps_low"] <= r["model_gbps"] <= r["model_gbps_high"] for r in pe.view_rows())
    assert pe.status_text.count("(band ") == 2 and BAND_MEANING in pe.status_text
    sr.start(wait=True)
    assert "(band " in sr.status_text and BAND_MEANING in sr.status_text
    assert all(lo <= v <= hi for lo, v, hi in zip(sr.src.data["band_lo"], sr.src.data["fault_in_gbps"],
                                                  sr.src.data["band_hi"]))
    assert "band_lo" in sr.view_rows()[0]
    hm.run(policy="presplit-4k", guests=1, vcpus=2, guest_mem="1GiB")
    assert "(band " in hm.status_text
