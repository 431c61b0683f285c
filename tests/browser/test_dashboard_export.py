"""Exported dashboard views opened from ``file://`` in Chromium with the network blocked: every
figure renders, no toolbar covers a title, and no legend sits on a plot's data or under a toolbar
(boxes read from BokehJS's own layout)."""
from __future__ import annotations

import pytest

from kit.viz import dashboards as D

LOCAL = ("file://", "data:", "blob:", "about:")

# per figure: its title, the boxes [left, top, right, bottom] of its title, toolbar, frame and legends
BOXES = """(() => {
    const out = [];
    const box = (v) => v && v.bbox ? [v.bbox.left, v.bbox.top, v.bbox.right, v.bbox.bottom] : null;
    const walk = (v) => {
        if (v.model && v.model.title !== undefined && v.renderer_views) {
            const view = (m) => v.renderer_views.get(m) || (v.views && v.views.find_one ? v.views.find_one(m) : null);
            const legends = [];
            for (const [m, rv] of v.renderer_views) {
                if (m.type === "Legend" || (m.constructor && m.constructor.__name__ === "Legend")) legends.push(box(rv));
            }
            // the title's text as drawn (it may run past its box): its font measured on a canvas
            const t = v._title, tb = box(view(t));
            let text = tb;
            if (t && tb) {
                const ctx = document.createElement("canvas").getContext("2d");
                ctx.font = `${t.text_font_style} ${t.text_font_size} ${t.text_font}`;
                text = [tb[0], tb[1], tb[0] + ctx.measureText(t.text).width, tb[3]];
            }
            out.push({title: t ? t.text : "", title_box: text,
                      toolbar: box(view(v._toolbar)), frame: box(v.frame), legends: legends});
        }
        for (const c of (v.child_views || [])) walk(c);
    };
    for (const root of Object.values(window.Bokeh ? Bokeh.index : {})) walk(root);
    return out;
})()"""


def _overlap(a, b) -> bool:
    return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.browser
@pytest.mark.timeout(300)
@pytest.mark.parametrize("make", [lambda: D.PolicyExplorer(guests=4), lambda: D.HostMap(),
                                  lambda: D.SimulationRunner(guest_mem="4GiB", vcpus=4)],
                         ids=["policy-explorer", "host-map", "simulation-runner"])
def test_exported_dashboard_views_render_offline_with_titles_and_legends_clear(chromium, artifacts, tmp_path, make):
    d = make()
    if isinstance(d, D.SimulationRunner):
        d.start(wait=True)
    page_file = d.export(tmp_path, d.name)["html"]
    context = chromium.new_context(viewport={"width": 1400, "height": 1400}, service_workers="block")
    attempted: list[str] = []

    def block(route):
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort("internetdisconnected")
    try:
        context.route("**/*", block)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_function("window.Bokeh && Object.keys(Bokeh.index).length > 0", timeout=60_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / f"dashboard-export-{d.name}.png"), full_page=True)
        figs = page.evaluate(BOXES)
    finally:
        context.close()
    assert not errors and not attempted, (errors, attempted)
    assert any(f["legends"] for f in figs)
    assert len(figs) >= 2 if not isinstance(d, D.PolicyExplorer) else len(figs) == 3
    for f in figs:
        assert f["title"] and f["title_box"] and f["toolbar"], f
        assert not _overlap(f["title_box"], f["toolbar"]), f
        for leg in f["legends"]:
            assert not _overlap(leg, f["frame"]) and not _overlap(leg, f["toolbar"]), f
