"""The policy-explorer dashboard in a real JupyterLab: run the notebook from the menu, wait for
the widgets and the Bokeh canvas, change controls in the browser, and check that the plot's data
in the browser follows the kernel."""
from __future__ import annotations

import json
import re

import nbformat
import pytest
from playwright.sync_api import expect

NOTEBOOK = "dashboard.ipynb"
MAGIC = ("d = %kit dashboard policy-explorer guests=1 vcpus=128 guest_mem_gib=512 "
         "host_cores=512 host_mem_gib=1536\nd")
# the kernel's view of the dashboard, one line of JSON (read back from the cell's output)
STATE = """import html, json, re
print("STATE " + json.dumps({
    "src": d.src_rate.id,
    "x": [list(x) for x in d.src_rate.data["x"]],
    "model": list(d.src_rate.data["model"]),
    "answers": d.answers,
    "status": html.unescape(re.sub("<[^>]+>", "", d.status.value)),
}))"""

CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"
PROMPT = ".jp-InputArea-prompt"
ERROR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"

# a column of the rate source in the page's Bokeh documents, by model id (null: not there)
SOURCE_COLUMN = """([id, col]) => {
    for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
        const m = doc.get_model_by_id(id);
        if (m == null) continue;
        const d = m.data;
        const v = d instanceof Map ? d.get(col) : d[col];
        return v == null ? null : Array.from(v, e => Array.isArray(e) ? Array.from(e) : e);
    }
    return null;
}"""


def _write_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext kit"), nbformat.v4.new_code_cell(MAGIC),
                nbformat.v4.new_code_cell(STATE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, str(path))


def _state(cell) -> dict:
    text = cell.locator(".jp-OutputArea-output").all_inner_texts()
    lines = [ln for t in text for ln in t.splitlines() if ln.startswith("STATE ")]
    assert len(lines) == 1, f"expected one STATE line in the cell's output, got {text!r}"
    return json.loads(lines[0][len("STATE "):])


def _prompts(page) -> list[str]:
    return page.locator(f"{CELLS} {PROMPT}").all_inner_texts()


def _presplit(state: dict) -> float:
    (v,) = [m for x, m in zip(state["x"], state["model"]) if x[1] == "presplit-4k"]
    return v


def _set(output, description: str, value: int, key: str) -> None:
    """Type ``value`` into the BoundedIntText labelled ``description``; ``key`` commits it."""
    box = output.locator(".widget-text").filter(
        has=output.page.locator("label", has_text=re.compile(rf"^{re.escape(description)}$")))
    assert box.count() == 1, f"no single text control {description!r}"
    inp = box.locator("input")
    inp.fill(str(value))
    inp.press(key)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_policy_explorer_in_jupyterlab(chromium, lab_server, artifacts):
    _write_notebook(lab_server.root / NOTEBOOK)
    page = chromium.new_page(viewport={"width": 1400, "height": 1600})
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    shot = artifacts / "dashboard.png"
    try:
        page.goto(lab_server.lab_url(NOTEBOOK), timeout=120_000)
        page.locator(CELLS).nth(2).wait_for(timeout=120_000)
        page.wait_for_function(
            "() => (document.querySelector('#jp-main-statusbar') || {}).innerText?.includes('Idle')",
            timeout=120_000)

        # Run > Run All Cells
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("li[data-command='runmenu:run-all']").click()
        # until every cell has run, or one failed (Run All stops there)
        page.wait_for_function(
            f"() => {{ const p = [...document.querySelectorAll({json.dumps(CELLS + ' ' + PROMPT)})];"
            r" return (p.length === 3 && p.every(e => /^\[\d+\]:$/.test(e.innerText.trim())))"
            f" || document.querySelector({json.dumps(CELLS + ' ' + ERROR)}) !== null; }}",
            timeout=180_000)
        cells = page.locator(CELLS)
        errors = cells.locator(ERROR)
        assert errors.count() == 0, "a cell failed:\n" + "\n".join(errors.all_inner_texts())
        prompts = _prompts(page)
        output = cells.nth(1).locator(".jp-OutputArea")

        # the widget view: the Bokeh canvas (in Bokeh's shadow DOM) or a widget error
        output.locator("canvas, .jupyter-widgets-error-widget").first.wait_for(timeout=90_000)
        failed = output.locator(".jupyter-widgets-error-widget")
        if failed.count():
            failed.first.click()           # shows the JavaScript error
            page.wait_for_timeout(500)
            pytest.fail("a dashboard widget failed to render in JupyterLab:\n"
                        + "\n".join(failed.all_inner_texts()) + f"\nconsole errors: {console_errors}")
        canvas = output.locator("canvas").first
        canvas.wait_for(state="visible", timeout=60_000)
        box = canvas.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, f"canvas box {box}"
        guests = output.locator(".widget-text").filter(has=page.locator("label", has_text=re.compile("^guests$")))
        guests.locator("input").wait_for(state="visible", timeout=30_000)
        expect(guests.locator("input")).to_have_value("1")
        status = output.locator(".widget-html").filter(has_text="answered in")
        status.wait_for(timeout=30_000)

        # first rendering: the kernel's data, and the same data in the browser's plot
        before = _state(cells.nth(2))
        assert before["answers"] >= 1
        assert 5 < _presplit(before) < 25, before
        expect(status).to_have_text(before["status"].strip(), timeout=10_000)
        shown = page.evaluate(SOURCE_COLUMN, [before["src"], "model"])
        assert shown is not None, "the rate source is not in the page's Bokeh document"
        assert shown == pytest.approx(before["model"]), \
            f"the first rendering does not show the kernel's data: browser {shown}, kernel {before['model']}"

        # change two controls in the browser: 1 guest of 512 GiB -> 4 guests of 256 GiB
        _set(output, "guest GiB", 256, "Enter")
        _set(output, "guests", 4, "Tab")
        page.wait_for_function(
            f"(a) => {{ const x = ({SOURCE_COLUMN})(a); return x !== null && x.some(r => r[0].startsWith('4x')); }}",
            arg=[before["src"], "x"], timeout=60_000)

        # re-run the third cell from the UI and read the kernel's state again
        cells.nth(2).locator(PROMPT).click()
        page.keyboard.press("Control+Enter")
        page.wait_for_function(
            f"(old) => {{ const p = document.querySelectorAll({json.dumps(CELLS + ' ' + PROMPT)})[2];"
            r" const t = p ? p.innerText.trim() : ''; return /^\[\d+\]:$/.test(t) && t !== old; }",
            arg=prompts[2].strip(), timeout=60_000)
        after = _state(cells.nth(2))
        assert after["src"] == before["src"]               # the same figure, new data
        assert after["answers"] >= before["answers"] + 2, (before, after)
        assert all(x[0].startswith("4x128x256") for x in after["x"]), after["x"]
        assert 20 < _presplit(after) < 60, after
        assert _presplit(after) > 1.5 * _presplit(before), (before, after)
        assert after["model"] != pytest.approx(before["model"])
        shown = page.evaluate(SOURCE_COLUMN, [after["src"], "model"])
        assert shown == pytest.approx(after["model"]), \
            f"the browser's plot does not follow the kernel: browser {shown}, kernel {after['model']}"
        expect(status).to_have_text(after["status"].strip(), timeout=10_000)
        expect(guests.locator("input")).to_have_value("4")

        output.screenshot(path=str(shot))
        assert page_errors == [], f"errors in the page: {page_errors}"
    except BaseException:
        try:                                # what the page looked like when it went wrong
            page.screenshot(path=str(shot))
        except Exception:
            pass
        raise
    finally:
        page.close()
