"""notebooks/races.ipynb: its cells run in a shell against the toy catalog (the surfaces' calls,
apart from the domain's scenarios), and under papermill on the kit's own scenarios."""
from __future__ import annotations

import nbformat
import papermill
import pytest

from kit.lab.notebook import NOTEBOOKS
from kit.lab.record import load_result
from tests.lab.conftest import ip  # noqa: F401  (the shell fixture)
from tests.notebooks.test_kvm_notebooks import ends_with_inline_bokeh, side_file_matches
from tests.viz import toy_catalog

INV = "counter equals live maps"


def run_cells(shell, **params):
    """Every code cell of races.ipynb in ``shell``, the parameters cell replaced by ``params``:
    the shell's namespace and each cell's value."""
    nb = nbformat.read(NOTEBOOKS / "races.ipynb", as_version=4)
    values = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        src = "\n".join(f"{k} = {v!r}" for k, v in params.items()) if "parameters" in c.metadata.get("tags", []) \
            else c.source
        r = shell.run_cell(src)
        r.raise_error()
        values.append(r.result)
    return shell.user_ns, values


@pytest.mark.parametrize("mode,bound", [("exhaustive", 2), ("bounded", 0), ("random", 20)])
def test_races_cells_on_the_toy_catalog(ip, tmp_path, monkeypatch, capsys, mode, bound):  # noqa: F811
    toy_catalog.install(monkeypatch)
    ns, values = run_cells(ip, scenario="lost-update", scheme="all", mode=mode, bound=bound, seed=3,
                           outdir=str(tmp_path))
    capsys.readouterr()
    doc = ns["doc"]
    assert load_result(tmp_path / "races.json") == doc
    res = doc["results"]
    assert [d["scheme"] for d in res["explorations"]] == ["lockless", "locked"]
    assert all(d["scenario"] == "lost-update" and d["mode"] == mode for d in res["explorations"])
    if mode == "bounded":                                   # no preemption: no lost update
        assert res["summary"]["broken"] == {"lockless": [], "locked": []}
    else:
        assert res["summary"]["broken"] == {"lockless": [INV], "locked": []}
    assert res["summary"]["complete"] is (mode == "exhaustive")     # a bound of 0 cuts the bounded search
    assert doc["provenance"]["parameters"] == {"scenario": "lost-update", "scheme": "all", "mode": mode,
                                               "bound": bound, "seed": 3, "outdir": str(tmp_path)}
    conclusion = values[-2].data                                  # this run's numbers
    assert conclusion.startswith(f"**This run** (`lost-update`, {mode}")
    assert f"`locked` held every invariant in {res['explorations'][1]['schedules']} schedules" in conclusion
    if mode != "bounded":
        assert f"`lockless` '{INV}' in 6 steps" in conclusion


def test_one_scheme(ip, tmp_path, monkeypatch, capsys):  # noqa: F811
    toy_catalog.install(monkeypatch)
    ns, values = run_cells(ip, scenario="lost-update", scheme="locked", mode="exhaustive", bound=2, seed=0,
                           outdir=str(tmp_path))
    capsys.readouterr()
    assert [d["scheme"] for d in ns["explorations"]] == ["locked"] and ns["summary"]["broken"] == {"locked": []}
    assert "none: every scheme held every invariant" in values[-2].data


@pytest.mark.parametrize("params,msg", [
    ({"scenario": "nope"}, "scenario: unknown 'nope'; allowed: lost-update"),
    ({"scheme": "srcu"}, "scheme: unknown 'srcu'; allowed: all, lockless, locked"),
    ({"mode": "replay"}, "mode: unknown 'replay'; allowed: exhaustive, bounded, random"),
    ({"bound": -1}, "bound: expected an integer >= 0"),
    ({"mode": "random", "bound": 0}, "bound: expected an integer >= 1")])
def test_bad_parameters_fail_in_the_validation_cell(ip, tmp_path, monkeypatch, params, msg):  # noqa: F811
    toy_catalog.install(monkeypatch)
    given = {"scenario": "lost-update", "scheme": "all", "mode": "exhaustive", "bound": 2, "seed": 0,
             "outdir": str(tmp_path), **params}
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        run_cells(ip, **given)
    assert not (tmp_path / "races.json").exists()


# ------------------------------------------------------------------ under papermill, the kit's scenarios
def test_races_mirrors(run_nb):
    """The TOCTOU of the 2021 mirror proposal breaks both mirror invariants; the merged ordering
    holds every invariant in every interleaving."""
    path, (doc,) = run_nb("races", scenario="mirror-setup", scheme="all", mode="exhaustive")
    side_file_matches(path, doc, "races")
    ends_with_inline_bokeh(path)
    res = doc["results"]
    assert res["summary"]["broken"] == {"mirror-2021": ["no mirror of a mirror", "no mirror of a VM with vCPUs"],
                                        "mirror-merged": []}
    assert res["summary"]["complete"] is True
    (d2021, merged) = res["explorations"]
    steps = d2021["invariants"]["no mirror of a mirror"]["example"]
    assert {s["thread"] for s in steps} == {"copy1", "copy2"}
    assert all(v["violations"] == 0 for v in merged["invariants"].values())
    nb = nbformat.read(path, as_version=4)
    conclusion = next(o for c in nb.cells for o in c.get("outputs", []) if "This run" in str(o.get("data", {})))
    assert "`mirror-merged` held every invariant" in str(conclusion["data"])


def test_races_one_scheme_bounded(run_nb):
    _, (doc,) = run_nb("races", scenario="host-write-vs-conversion", scheme="srcu", mode="bounded", bound=1)
    (d,) = doc["results"]["explorations"]
    assert d["scheme"] == "srcu" and d["mode"] == "bounded"
    assert d["invariants"]["no RMPUPDATE to private while mapped"]["violations"] > 0
    assert doc["provenance"]["parameters"]["bound"] == 1


@pytest.mark.parametrize("params,msg", [
    ({"scenario": "mirror-setup", "scheme": "srcu"}, "scheme: 'srcu' is not a scheme of mirror-setup"),
    ({"scheme": "bogus"}, "scheme: unknown 'bogus'")])
def test_races_bad_parameters_fail_in_the_validation_cell(run_nb, tmp_path, params, msg):
    with pytest.raises(papermill.PapermillExecutionError) as e:
        run_nb("races", **params)
    assert msg in str(e.value) and "kit.lab.check(" in e.value.source
    assert not (tmp_path / "races" / "races.json").exists()
