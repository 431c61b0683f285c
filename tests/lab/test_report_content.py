"""What a report says: the notebook's prose, a conclusion of the run's own numbers, figures
titled by their scenario with units on their axes, tables with units and CSV downloads, unsafe
policies marked, provenance, sweep tables and the side-by-side view of two results."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from html import unescape
from urllib.parse import unquote

import nbformat
import pytest

from kit.cli import main
from kit.lab import record
from kit.lab.execute import BOKEHJS_LOAD, JS, finish, slim
from kit.lab.report import build, collect, diff_html, report, reproduce_command
from kit.sim import experiments as X
from kit.viz import bokehjs_components
from kit.viz import figures as F
from kit.viz.html import NOT_MEASURED, csv_text, report_table
from kit.viz.narrative import conclusion, headline_numbers, unsafe_policies

POLICIES = ["none", "invalidate-4k", "split-on-demand"]
SMALL = dict(guests=1, vcpus=4, guest_mem="2GiB", host_cores=8, host_mem="32GiB")


@pytest.fixture(scope="module")
def results():
    rows = X.policy_table(["invalidate-4k", "split-on-demand"], configs=[0])
    return {"policy_table": rows, "headline": X.headline(POLICIES, **SMALL),
            "timeline": X.timeline(POLICIES, **SMALL), "safety": X.safety(POLICIES, guest_mem="1GiB", vcpus=2),
            "summary": {"measured_rows": 1, "within_spread": 1}}


def _doc(tmp_path, results, name="directmap-policies", **params):
    return record(name, results, params={"policies": POLICIES, "outdir": str(tmp_path), **params},
                  outdir=tmp_path, display=False)


def _text(html: str) -> str:
    """The page's text: no scripts, styles or tags."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_conclusion_is_written_from_the_recorded_numbers(tmp_path, results):
    doc = _doc(tmp_path, results)
    res = doc["results"]
    lines = conclusion(res)
    best = max((p for p in res["headline"] if p != "none"), key=lambda p: res["headline"][p]["fault_in_gbps"])
    rate = res["headline"][best]["fault_in_gbps"]
    assert any(f"fastest safe policy is {best}: {rate:.2f} GB/s" in t for t in lines)
    assert any("none is UNSAFE" in t for t in lines) and "1 of 1 measured rows" in lines[0]
    faults = {r["policy"]: r["host_rmp_faults"] for r in res["safety"]}
    assert any(f"none {faults['none']}" in t for t in lines)
    html = build([doc])
    block = html[html.index("id='conclusion-0'"):]
    block = block[:block.index("</div>")]
    shown = unescape(_text(block))
    for t in lines:
        assert t in shown


def test_report_carries_the_notebooks_prose_engine_and_data_source(tmp_path, results):
    html = build([_doc(tmp_path, results)])
    text = _text(html)
    assert "When a host page becomes private to an SNP guest" in text           # the notebook's intro
    assert "data/measurements.csv" in text and "[PATCH v1 11/26] x86/sev: Invalidate pages" in text
    assert "analytic (mean value analysis" in text and "discrete-event" in text
    assert "split the enclosing large mapping with set_memory_4k" in text       # what each policy is
    assert "<h3>" not in html                                                   # headings below the report's


def test_figures_are_titled_by_scenario_with_units_and_unsafe_marked(results):
    from kit.lab.record import jsonable
    res = jsonable(results)
    figs = F.policy_result_figures(res)
    titles = [f.title.text for f in figs]
    assert any(t.startswith("Where the time goes: one vCPU's µs per 4 MiB chunk, 1 guest x 4 vCPUs x 2GiB") for t in titles)
    assert any("DirectMap4k after the run" in t for t in titles)
    assert any(t.startswith("Fragmentation as the guests fault in") for t in titles)
    for f in figs:
        for ax in (*f.xaxis, *f.yaxis):
            assert ax.axis_label, (f.title.text, ax)
        labels = [ax.axis_label for ax in (*f.xaxis, *f.yaxis)]
        assert any(u in " ".join(labels) for u in ("µs", "%", "GB/s", "MiB", "(s)", "mean")), labels
    bars = F.time_breakdown_data(res["headline"], unsafe_policies(res))
    assert "none (UNSAFE)" in bars["policy"]
    assert bars["total"] == pytest.approx([sum(r["time_per_chunk"].values()) for r in res["headline"].values()])
    # the rate axis of a timeline starts at 0: a wobble of a few percent looks like one
    rate = next(f for f in figs if f.title.text.startswith("Fault-in rate as the guests"))
    assert rate.y_range.start == 0


def test_tables_have_units_formatted_numbers_and_csv_downloads(tmp_path, results):
    html = build([_doc(tmp_path, results)])
    assert "model (GB/s)" in html and "measured (GB/s)" in html and "DirectMap4k (GiB)" in html
    assert "None" not in _text(html).replace("no host RMP fault", "")
    assert NOT_MEASURED in html
    links = re.findall(r"download='([^']+)' href='data:text/csv;charset=utf-8,([^']*)'", html)
    names = [n for n, _ in links]
    assert "directmap-policies-policy-table.csv" in names and "directmap-policies-headline.csv" in names
    got = dict(links)
    rows = list(csv.reader(io.StringIO(unquote(got["directmap-policies-policy-table.csv"]))))
    assert "model (GB/s)" in rows[0] and len(rows) == 3
    assert "none (UNSAFE)" in html and "class=unsafe" in html


def test_report_table_and_csv_cells():
    t = report_table([{"policy": "none", "model_gbps": 12.3456, "measured_gbps": None, "cpa_lock": 1234567}],
                     csv_name="t.csv", unsafe={"none"})
    assert "12.35" in t and NOT_MEASURED in t and "1,234,567" in t and "none (UNSAFE)" in t
    assert "class='num'" in t and "download='t.csv'" in t
    assert csv_text([{"a": "=1+2", "b": None}], ["a", "b"]) == "a,b\r\n'=1+2,\r\n"


def test_provenance_names_versions_parameters_data_and_the_command(tmp_path, results):
    doc = _doc(tmp_path, results)
    prov = doc["provenance"]
    assert prov["versions"]["python"] and prov["versions"]["bokeh"]
    assert prov["cost_parameters"]["convert_us"]["kind"] == "fitted"
    assert set(prov["data_files"]) == {"cost_params.json", "measurements.csv"}
    html = build([doc], command="kit demo --steps 2000 --seed 0 --out reports/index.html")
    text = _text(html)
    assert "kit demo --steps 2000 --seed 0 --out reports/index.html" in text
    assert prov["data_files"]["measurements.csv"] in html and "assumed" in html and "source" in html
    assert "bokeh version" in text and "python version" in text
    assert str(tmp_path) not in html                             # where the result went is not a parameter
    assert reproduce_command(doc).startswith("kit run directmap-policies -p policies ")


def test_two_results_side_by_side_with_differences_highlighted(tmp_path, results):
    a = _doc(tmp_path / "a", results, seed=0)
    changed = json.loads(json.dumps(a["results"]))
    changed["headline"]["split-on-demand"]["fault_in_gbps"] *= 2
    b = _doc(tmp_path / "b", changed, seed=1)
    html = diff_html(a, b)
    assert "directmap-policies (seed=0) vs directmap-policies (seed=1)" in html
    rows = re.findall(r"<tr class=diff><td class='txt'>([^<]+)</td>", html)
    assert "parameter seed" in rows and "split-on-demand: fault-in GB/s" in rows
    assert "(+100.0%)" in html and "none (UNSAFE): fault-in GB/s" not in rows and "none (UNSAFE): fault-in GB/s" in html
    out = tmp_path / "diff.html"
    assert main(["report", str(tmp_path / "a" / "directmap-policies.json"), str(tmp_path / "b" / "directmap-policies.json"),
                 "-o", str(out)]) == 0
    assert "id='diff'" in out.read_text()


def test_sweep_report_has_one_table_and_a_plot_per_result_and_parameter(tmp_path):
    docs = []
    for v in (8, 16, 32):
        rows = X.sweep("vcpus", [v], policies=["presplit-4k"], guests=1, host_cores=16, guest_mem="8GiB", host_mem="64GiB")
        docs.append(record("scaling", {"held_back": [{"policy": "presplit-4k", "fault_in_gbps": rows[0]["fault_in_gbps"]}]},
                           params={"vcpus": v, "seed": 0}, outdir=tmp_path / str(v), display=False))
    html = build(docs)
    assert html.count("id='sweep'") == 1 and "scaling (vcpus=8)" in html and "scaling (vcpus=32)" in html
    assert "presplit-4k: fault-in GB/s (held-back configuration) vs vcpus" in html
    assert "Where the time goes: utilisation" not in html        # not each result's figures again
    assert html.count("<summary>tables of scaling (vcpus=") == 3
    sweep = html[html.index("id='sweep'"):]
    assert "download='sweep.csv'" in sweep
    assert headline_numbers(docs[0]["results"]) == {
        "presplit-4k: fault-in GB/s (held-back configuration)": docs[0]["results"]["held_back"][0]["fault_in_gbps"]}


def test_stored_notebooks_keep_bokehjs_once_or_not_at_all(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show(p)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={JS: "x" * 1000, BOKEHJS_LOAD: "x" * 1000}),
                    nbformat.v4.new_output("display_data", data={JS: "embed", "application/vnd.bokehjs_exec.v0+json": ""})]
    nb.cells = [cell]
    once = slim(nbformat.from_dict(json.loads(json.dumps(nb))))
    assert list(once.cells[0].outputs[0].data) == [BOKEHJS_LOAD]
    assert once.cells[0].outputs[1].data[JS] == "embed"                 # the plot itself stays
    none = slim(nbformat.from_dict(json.loads(json.dumps(nb))), "none")
    assert list(none.cells[0].outputs[0].data) == ["text/plain"]
    with pytest.raises(ValueError, match="bokehjs"):
        slim(nb, "cdn")
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    finish(path)
    from nbformat.sign import NotebookNotary
    assert NotebookNotary().check_signature(nbformat.read(str(path), as_version=4))


def test_show_loads_only_the_bundles_a_layout_needs(results):
    from kit.lab.record import jsonable
    figs = F.policy_result_figures(jsonable(results))
    assert bokehjs_components(figs[0]) == ["bokeh"]


def test_collect_then_report_of_a_folder(tmp_path, results):
    _doc(tmp_path, results)
    out = report([tmp_path], tmp_path / "r.html", command="kit report x -o r.html")
    assert len(collect([tmp_path])) == 1 and "kit report x -o r.html" in out.read_text()


PROBE = __import__("pathlib").Path(__file__).resolve().parents[1] / "notebooks" / "data" / "probe.ipynb"


def test_sweep_table_has_a_rate_column_for_lazy_acceptance_results():
    from kit.lab.batch import _scalars
    doc = {"name": "lazy-acceptance-scaling",
           "results": {"held_back": [{"policy": "presplit-4k", "fault_in_gbps": 30.0, "bottleneck": "membw"},
                                     {"policy": "none", "fault_in_gbps": 31.0, "bottleneck": "membw"}]}}
    got = _scalars(doc)
    assert got["presplit-4k: fault-in GB/s (held-back configuration)"] == 30.0
    assert got["none (UNSAFE): fault-in GB/s (held-back configuration)"] == 31.0


def test_kit_run_report_names_no_temporary_folder(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(PROBE), "-p", "x", "3", "-o", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert ".tmp-" not in html and ".old-" not in html
    assert "kit run probe -p label a -p seed 0 -p x 3" in _text(html)
    nb = nbformat.read(str(out / "probe.ipynb"), as_version=4)
    from nbformat.sign import NotebookNotary
    assert NotebookNotary().check_signature(nb)                 # signed where it was finally written


def test_kit_sweep_report_is_one_table_and_plots(tmp_path):
    import kit.lab
    df = kit.lab.sweep(PROBE, {"x": [2, 3, 4]}, outdir=tmp_path, workers=1, progress=False)
    assert set(df["state"]) == {"complete"}
    assert "probe.y" in df.columns
    html = (tmp_path / "report.html").read_text()
    assert html.count("id='sweep'") == 1 and "y vs x" in html
    for v in (2, 3, 4):
        assert f"probe (x={v})" in html
    stored = sorted((tmp_path / "runs").glob("*/probe.ipynb"))
    assert len(stored) == 3 and all(p.stat().st_size < 200_000 for p in stored)


def test_a_timed_result_says_what_the_model_leaves_out(tmp_path, results):
    """NUMA, encryption and the rest of :data:`kit.sim.scope.NOT_MODELLED`: in every report of
    a timed result, and word for word in docs/sim-model.md."""
    from kit.sim.scope import NOT_MODELLED
    text = unescape(_text(build([_doc(tmp_path, results)])))
    assert "What the timing model leaves out" in text
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sim-model.md").read_text()
    for topic, what, why in NOT_MODELLED:
        assert what in text and why in text
        assert f"**{topic}**: {what} ({why})." in doc
    untimed = record("notes", {"summary": {"rows": 1}}, params={}, outdir=tmp_path / "u", display=False)
    assert "What the timing model leaves out" not in build([untimed])
