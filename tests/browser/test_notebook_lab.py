"""A notebook the kit executed opens in JupyterLab with its plot drawn, without running it: the
kit signs what it executes (nbformat's notary), and a notebook changed afterwards is not trusted
(its plot stays hidden, as JupyterLab does for any untrusted JavaScript output)."""
from __future__ import annotations

import json

import nbformat
import pytest

from kit.lab.execute import BOKEHJS_LOAD, execute
from kit.lab.notebook import inspect

TITLE = "kit-executed notebook: DirectMap4k after the run"
SOURCE = f"""from kit.lab.record import jsonable
from kit.sim import experiments as X
from kit.viz import figures as F, show

head = jsonable(X.headline(["presplit-4k", "split-on-demand"], guests=1, vcpus=4, guest_mem="2GiB",
                           host_cores=8, host_mem="32GiB"))
show(F.directmap_share_figure(head, title={TITLE!r}))"""
OUTPUT = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-OutputArea"


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("seed: int = 0  # unused")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("A plot the kit executes."), params, nbformat.v4.new_code_cell(SOURCE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(path))


def _bokeh_titles(page) -> list:
    return page.evaluate("""() => window.Bokeh === undefined ? [] :
        Object.values(Bokeh.index).map(v => v.model).filter(m => m.type === 'Figure').map(m => m.title.text)""")


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_executed_notebook_shows_its_plot_in_jupyterlab(chromium, lab_server, artifacts, monkeypatch, tmp_path):
    # the kit signs with the notary of the user who runs it: here, the lab server's user folders
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(lab_server.log_path.parent / "data"))
    src = tmp_path / "plot.ipynb"
    _notebook(src)
    out = execute(inspect(src), {}, lab_server.root / "run")
    stored = nbformat.read(str(out), as_version=4)
    loads = [o for c in stored.cells for o in c.get("outputs", []) if BOKEHJS_LOAD in o.get("data", {})]
    assert len(loads) == 1 and list(loads[0]["data"]) == [BOKEHJS_LOAD]         # BokehJS once
    assert out.stat().st_size < 2_000_000
    # the control: the same notebook edited after the run (no longer the kit's signature)
    changed = nbformat.read(str(out), as_version=4)
    changed.metadata["edited"] = True
    nbformat.write(changed, str(lab_server.root / "run" / "edited.ipynb"))

    page = chromium.new_page(viewport={"width": 1400, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(lab_server.lab_url("run/plot.ipynb"), timeout=120_000)
        output = page.locator(OUTPUT)
        output.locator("canvas").first.wait_for(state="visible", timeout=120_000)
        box = output.locator("canvas").first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, box
        assert TITLE in _bokeh_titles(page)
        page.screenshot(path=str(artifacts / "notebook-lab.png"))
        assert errors == [], errors
    finally:
        page.close()

    page = chromium.new_page(viewport={"width": 1400, "height": 1200})
    try:
        page.goto(lab_server.lab_url("run/edited.ipynb"), timeout=120_000)
        page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").nth(1).wait_for(timeout=120_000)
        page.wait_for_timeout(5000)
        assert page.locator(f"{OUTPUT} canvas").count() == 0     # the edited copy: its plot hidden
    finally:
        page.close()
    assert json.loads(out.read_text())["metadata"].get("edited") is None
