"""Recording results, parameter rules, reports, `kit report` / `kit demo` arguments, `%kit`."""
import json
import re

import nbformat
import pytest
from IPython.core.error import UsageError

from kit.cli import main
from kit.lab import check, record
from kit.lab.record import MIME, load_result, read_notebook_results, write_atomic
from kit.lab.report import build, collect, report


def test_record_writes_the_side_file_with_provenance(tmp_path):
    doc = record("run1", {"rows": [{"a": 1}]}, params={"guests": 2}, outdir=tmp_path, seed=7, display=False)
    on_disk = load_result(tmp_path / "run1.json")
    assert on_disk == doc
    prov = doc["provenance"]
    assert prov["parameters"] == {"guests": 2} and prov["seed"] == 7
    assert prov["kit_version"] and prov["git_commit"] and prov["cost_params"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["started"])
    assert [p.name for p in tmp_path.iterdir()] == ["run1.json"]        # no temporary left


def test_record_converts_numpy_and_result_objects(tmp_path):
    import numpy as np

    from kit.sim import simulate
    r = simulate(guests=1, vcpus=4, guest_mem="8GiB", host_cores=8, host_mem="64GiB")
    doc = record("sim", {"r": r, "a": np.arange(3), "x": np.float64(1.5)}, outdir=tmp_path, display=False)
    assert doc["results"]["a"] == [0, 1, 2] and doc["results"]["x"] == 1.5
    assert doc["results"]["r"]["fault_in_gbps"] == pytest.approx(r.fault_in_gbps)


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", 3])
def test_record_rejects_bad_names(name, tmp_path):
    with pytest.raises(ValueError, match="name"):
        record(name, {}, outdir=tmp_path, display=False)
    assert not list(tmp_path.iterdir())


def test_truncated_or_foreign_result_files_are_detected(tmp_path):
    record("ok", {"v": 1}, outdir=tmp_path, display=False)
    text = (tmp_path / "ok.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    (tmp_path / "other.json").write_text(json.dumps({"v": 1}))
    for bad in ("cut.json", "other.json"):
        with pytest.raises(ValueError, match="not a kit result"):
            load_result(tmp_path / bad)


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path):
    p = write_atomic(tmp_path / "f.json", "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")
    with pytest.raises(TypeError):
        write_atomic(p, Boom())
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["f.json"]


def test_mime_output_is_read_back_from_a_notebook(tmp_path):
    doc = record("nb", {"v": [1, 2]}, display=False)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("display_data", data={MIME: doc, "text/plain": "x"})]
    nb.cells = [cell]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert read_notebook_results(path) == [doc]


@pytest.mark.parametrize("kw,name", [
    ({"policies": ["presplit-4k", "bogus"]}, "policies"), ({"policies": []}, "policies"),
    ({"guests": 0}, "guests"), ({"guests": True}, "guests"), ({"vcpus": "8"}, "vcpus"),
    ({"guest_mem": "lots"}, "guest_mem"), ({"engine": "fast"}, "engine"), ({"p4k": 1.5}, "p4k"),
    ({"vcpu_sweep": []}, "vcpu_sweep"), ({"vcpu_sweep": [8, 0]}, "vcpu_sweep[1]"),
    ({"configs": [99]}, "configs[0]"), ({"start": "/no/such.json"}, "start"), ({"nonsense": 1}, "nonsense")])
def test_check_names_the_parameter_and_what_is_allowed(kw, name):
    with pytest.raises(ValueError) as e:
        check(**kw)
    assert str(e.value).startswith(f"{name}:")


def test_check_returns_normalised_values():
    assert check(policies="presplit-4k", guests=2) == {"policies": ["presplit-4k"], "guests": 2}
    assert check(policies=["none", "none", "presplit-4k"])["policies"] == ["none", "presplit-4k"]
    assert check(des_policies=[]) == {"des_policies": []}


def _doc(tmp_path, title="t"):
    from kit.sim.experiments import policy_table
    rows = policy_table(["presplit-4k", "split-on-demand"], configs=[4, 5])
    return record("policies", {"policy_table": rows}, params={"title": title}, outdir=tmp_path, display=False)


def test_report_is_self_contained_and_escapes_text(tmp_path):
    _doc(tmp_path, title="<img src=x onerror=alert(1)>")
    out = report([tmp_path], tmp_path / "r.html", title="<script>alert('t')</script>")
    html = out.read_text()
    assert "&lt;script&gt;alert(&#x27;t&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    # BokehJS inline: no external script or stylesheet
    assert not re.search(r"<script[^>]+src=", html) and not re.search(r"<link[^>]+href=['\"]?https?:", html)
    assert "Bokeh.embed" in html or "embed_items" in html
    assert "within spread" in html and "provenance" in html


def test_report_rejects_what_is_not_a_result(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a kit result"):
        collect([tmp_path / "x.json"])
    with pytest.raises(ValueError, match="no such file"):
        collect([tmp_path / "missing.json"])
    with pytest.raises(ValueError, match="nothing to report"):
        build([])


def test_kit_report_cli(tmp_path, capsys):
    _doc(tmp_path)
    out = tmp_path / "sub" / "r.html"
    assert main(["report", str(tmp_path / "policies.json"), "-o", str(out)]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "n.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kit report: results:") and not (tmp_path / "n.html").exists()


@pytest.mark.parametrize("argv,name", [(["--policies", "presplit-4k,bogus"], "policies"),
                                       (["--steps", "0"], "steps"), (["--out", "x.txt"], "out")])
def test_demo_bad_arguments(argv, name, tmp_path, capsys):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kit demo: {name}")


def test_demo_runs_the_notebook_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "reports" / "index.html"
    assert main(["demo", "--policies", "presplit-4k,split-on-demand", "--steps", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"report: {out}" in text and "6/6 measured rows reproduced within their spread" in text
    assert (tmp_path / "reports" / "directmap-policies" / "directmap-policies.json").exists()
    assert "within spread" in out.read_text()


# ------------------------------------------------------------------ %kit
def test_magic_simulate_returns_the_result(ip):
    r = ip.run_line_magic("kit", "simulate --guests 2 --vcpus 8 --guest-mem 8GiB --host-cores 16 --host-mem 64GiB --policy presplit-4k")
    assert r.scenario.guests == 2 and r.scenario.policy == "presplit-4k" and r.fault_in_gbps > 0
    assert "<script" not in r._repr_html_() and "fault-in GB/s" in r._repr_html_()


@pytest.mark.parametrize("line,msg", [
    ("simulate --policy nope", "policy: unknown 'nope'"), ("simulate --guests", "--guests"),
    ("simulate --guest-mem 1TiB --host-mem 64GiB", "guests:"), ("dashboard", "name required"),
    ("dashboard nope", "unknown dashboard 'nope'"), ("dashboard policy-explorer guests=0", "guests"),
    ("dashboard policy-explorer 3x", "key=value"), ("frobnicate", "unknown subcommand"),
    ("report /no/such.json -o /tmp/x.html", "no such file")])
def test_magic_errors_are_one_line_usage_errors(ip, line, msg):
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("kit", line)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_magic_dashboard_returns_a_widget_view(ip):
    d = ip.run_line_magic("kit", "dashboard policy-explorer guests=2 guest_mem_gib=64 policies=['none']")
    bundle = d._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert d.results and list(d.results) == ["none"]
