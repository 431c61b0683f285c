"""`kit report` of a race explorer's run: the table of invariants by scheme, the searches, and each
counterexample as its sequence diagram and its step table."""
from __future__ import annotations

import re

from kit.cli import main
from kit.lab.record import record
from kit.lab.report import build, collect
from kit.viz.traces import exploration
from tests.viz.toy_catalog import explore_named

INV = "counter equals live maps"


def _races_doc(tmp_path, schemes=("lockless", "locked")):
    docs = [exploration(explore_named("lost-update", s), scheme=s) for s in schemes]
    return record("races", {"explorations": docs}, params={"scenario": "lost-update", "scheme": "all"},
                  outdir=tmp_path, display=False)


def test_report_shows_invariants_by_scheme_and_each_counterexample(tmp_path, capsys):
    _races_doc(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "races.json"), "-o", str(out)]) == 0
    html = out.read_text()
    assert "invariants by scheme" in html and "BROKEN in 2 schedules" in html
    assert "lockless: 1 invariant(s) broken; locked: all hold" in html          # the summary's headline
    head = f"lockless: &#x27;{INV}&#x27; broken after 6 steps"
    assert f"<h3>{head}</h3>" in html
    after = html[html.index(f"<h3>{head}</h3>"):]
    # the diagram (a Bokeh root div) comes first, then its step table
    assert after.index("data-root-id") < after.index("<caption>lockless: steps</caption>")
    assert "maps: 0 -&gt; 1" in after                                             # what changed, escaped
    assert html.count("<h3>") == 1                                               # locked: no counterexample
    assert f"lost-update / lockless: &#x27;{INV}&#x27; broken after 6 steps" in html.split("</h3>")[0]  # title
    assert not re.search(r"<script[^>]+src=", html)                              # self-contained


def test_counterexample_text_is_escaped(tmp_path):
    doc = _races_doc(tmp_path, schemes=("lockless",))
    ex = doc["results"]["explorations"][0]["invariants"][INV]["example"]
    ex[0]["thread"] = "<img src=x onerror=alert(1)>"
    html = build([doc])
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_races_notebook_result_is_collected_like_any_other(tmp_path):
    _races_doc(tmp_path)
    (doc,) = collect([tmp_path])
    assert doc["name"] == "races" and len(doc["results"]["explorations"]) == 2
