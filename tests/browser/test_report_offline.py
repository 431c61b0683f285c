"""A report opened from ``file://`` in Chromium with the network blocked: it must be
self-contained (BokehJS inline), render its plot, and show user text as text."""
from __future__ import annotations

import pytest

from kit.lab import record, report
from kit.sim.experiments import policy_table

TITLE = "<script>alert(1)</script> report"
PARAM_TITLE = "<b>x</b>"

# self-contained schemes: never sent to a network
LOCAL = ("file://", "data:", "blob:", "about:")

# drawn canvases (nonzero backing size) inside shadow roots, searched through nested roots
SHADOW_CANVASES = """(() => {
    let n = 0;
    const walk = (root, inShadow) => {
        for (const e of root.querySelectorAll('*')) {
            if (inShadow && e.tagName === 'CANVAS' && e.width > 0 && e.height > 0) n++;
            if (e.shadowRoot) walk(e.shadowRoot, true);
        }
    };
    walk(document, false);
    return n;
})()"""


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_report_renders_offline(chromium, artifacts, tmp_path):
    rows = policy_table(["presplit-4k", "split-on-demand"], configs=[0, 4])
    record("t", {"policy_table": rows}, params={"title": PARAM_TITLE}, outdir=tmp_path, display=False)
    out = report([tmp_path], tmp_path / "report.html", title=TITLE)
    assert out.exists()

    context = chromium.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block")
    attempted: list[str] = []         # every non-local request, blocked or not
    requested: list[str] = []
    page_errors: list[str] = []
    dialogs: list[str] = []
    console_errors: list[str] = []

    def block(route):
        url = route.request.url
        if url.startswith(LOCAL):
            route.continue_()
        else:
            attempted.append(url)
            route.abort("internetdisconnected")

    def block_ws(ws):
        attempted.append(ws.url)
        ws.close()

    try:
        context.route("**/*", block)
        context.route_web_socket("**/*", block_ws)
        page = context.new_page()
        page.on("request", lambda r: requested.append(r.url))
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

        def on_dialog(d):
            dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()
        page.on("dialog", on_dialog)

        page.goto(out.resolve().as_uri(), wait_until="load")

        # the Bokeh plot: a canvas inside Bokeh's (open) shadow roots, with a size
        canvas = page.locator("canvas").first
        canvas.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(SHADOW_CANVASES + " > 0", timeout=30_000)
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 50 and box["height"] > 50, f"canvas box {box}"
        assert page.evaluate("() => window.Bokeh !== undefined && Bokeh.documents.length >= 1"), \
            "BokehJS did not load from the page itself"
        # the figure's data reached the browser: the rate bars' source holds the table's model rates
        model = page.evaluate("""() => {
            for (const doc of Bokeh.documents)
                for (const m of doc.all_models) {
                    const d = m.data;
                    const v = d instanceof Map ? d.get('model') : (d && typeof d === 'object' ? d.model : undefined);
                    if (v !== undefined && v !== null) return Array.from(v);
                }
            return null; }""")
        assert model is not None, "no rate source in the page's Bokeh document"
        assert model == pytest.approx([r["model_gbps"] for r in rows], rel=1e-9)

        # the summary table (one row per run)
        runs = page.locator("table.kit-t", has=page.locator("caption", has_text="runs"))
        assert runs.count() == 1
        assert runs.locator("tr").count() == 2          # header + one run
        assert "title=<b>x</b>" in runs.inner_text()       # the parameter is text, not markup
        assert runs.locator("b").count() == 0

        # the title: escaped, shown literally, no script element made of it, no dialog
        h1 = page.locator("h1")
        assert h1.count() == 1
        assert h1.inner_text() == TITLE
        assert h1.locator("script").count() == 0
        assert page.title() == TITLE
        page.wait_for_timeout(500)                          # give an injected script its chance

        page.screenshot(path=str(artifacts / "report.png"), full_page=True)

        assert dialogs == [], f"a dialog fired: {dialogs}"
        assert page_errors == [], f"errors in the page: {page_errors}"
        assert attempted == [], f"the report is not self-contained: it asked for {attempted}"
        remote = [u for u in requested if not u.startswith(LOCAL)]
        assert remote == [], f"the report is not self-contained: it asked for {remote}"
        assert console_errors == [], f"console errors: {console_errors}"
    finally:
        context.close()
