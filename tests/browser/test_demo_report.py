"""The demo report (`kit demo`) in Chromium from ``file://`` with the network blocked: every
plot titled, with axis labels and units, its data spanning more than a few pixels; no text on
top of other text; the conclusion's numbers are the recorded result's; the CSV links download."""
from __future__ import annotations

import csv
import io
import json

import pytest

from kit.cli import main
from kit.viz.narrative import gbps

LOCAL = ("file://", "data:", "blob:", "about:")
POLICIES = "none,invalidate-4k,presplit-4k,split-on-demand"

# per Bokeh figure: its title, its axes' labels and the union box of its glyphs on screen
FIGURES = """() => {
    const out = [];
    const seen = new Set();
    const walk = (v) => {
        if (!v || seen.has(v)) return;
        seen.add(v);
        if (v.model && v.model.type === 'Figure') {
            let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
            for (const rv of v.renderer_views.values()) {
                const g = rv.glyph;
                if (!g) continue;
                for (const [keys, axis] of [[['sx', 'sleft', 'sright'], 'x'], [['sy', 'stop', 'sbottom'], 'y']])
                    for (const k of keys) {
                        const a = g[k];
                        if (!a || a.length === undefined) continue;
                        for (const s of a) if (Number.isFinite(s)) {
                            if (axis === 'x') { x0 = Math.min(x0, s); x1 = Math.max(x1, s); }
                            else { y0 = Math.min(y0, s); y1 = Math.max(y1, s); }
                        }
                    }
            }
            const axes = [...v.model.below, ...v.model.left, ...v.model.above, ...v.model.right]
                .filter(m => m.type.endsWith('Axis'))
                .map(m => ({type: m.type, label: m.axis_label == null ? '' : String(m.axis_label)}));
            out.push({title: v.model.title ? v.model.title.text : '', axes, w: x1 - x0, h: y1 - y0});
        }
        for (const c of (v.child_views || [])) walk(c);
        if (v.children) { try { for (const c of v.children()) walk(c); } catch (e) {} }
    };
    for (const r of Object.values(Bokeh.index)) walk(r);
    return out;
}"""

# text blocks (innermost elements with their own text) and plots, as boxes; pairs that overlap
OVERLAPS = """() => {
    const boxes = [];
    const own = e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    for (const e of document.body.querySelectorAll('*')) {
        if (e.closest('details:not([open])') && e.tagName !== 'SUMMARY') continue;
        const isPlot = e.matches('div[data-root-id]');
        if (!isPlot && !own(e)) continue;
        if (!isPlot && e.closest('div[data-root-id]')) continue;
        const r = e.getBoundingClientRect();
        if (r.width < 1 || r.height < 1) continue;
        boxes.push({e, r, name: (isPlot ? 'plot ' : e.tagName + ' ') + (e.textContent || '').trim().slice(0, 40)});
    }
    const bad = [];
    for (let i = 0; i < boxes.length; i++)
        for (let j = i + 1; j < boxes.length; j++) {
            const a = boxes[i], b = boxes[j];
            if (a.e.contains(b.e) || b.e.contains(a.e)) continue;
            const w = Math.min(a.r.right, b.r.right) - Math.max(a.r.left, b.r.left);
            const h = Math.min(a.r.bottom, b.r.bottom) - Math.max(a.r.top, b.r.top);
            if (w > 1 && h > 1) bad.push([a.name, b.name, Math.round(w), Math.round(h)]);
        }
    return bad;
}"""

UNITS = ("(", "%", "GB/s", "µs")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "reports" / "index.html"
    assert main(["demo", "--policies", POLICIES, "--steps", "200", "--out", str(out)]) == 0
    doc = json.loads((out.parent / "directmap-policies" / "directmap-policies.json").read_text())
    return out, doc


def _open(chromium, path):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000}, service_workers="block",
                                   accept_downloads=True)
    attempted: list[str] = []

    def block(route):
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort("internetdisconnected")
    context.route("**/*", block)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => window.Bokeh !== undefined && Object.keys(Bokeh.index).length > 0", timeout=60_000)
    page.wait_for_timeout(1500)
    return context, page, attempted, errors


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_every_plot_has_a_title_units_and_visible_data(chromium, demo, artifacts):
    out, _ = demo
    context, page, attempted, errors = _open(chromium, out)
    try:
        figs = page.evaluate(FIGURES)
        assert len(figs) >= 7, figs
        for f in figs:
            assert f["title"].strip(), f
            assert len(f["axes"]) >= 2, f
            for ax in f["axes"]:
                assert ax["label"].strip(), (f["title"], ax)
                if ax["type"] != "CategoricalAxis":
                    assert any(u in ax["label"] for u in UNITS), (f["title"], ax)
            assert f["w"] > 5 and f["h"] > 5, f"data of {f['title']!r} spans {f['w']:.0f} x {f['h']:.0f} px"
        titles = [f["title"] for f in figs]
        assert any("8 guests x 128 vCPUs x 160GiB on 512 cores" in t for t in titles)
        page.screenshot(path=str(artifacts / "demo-report.png"), full_page=True)
        assert errors == [] and attempted == []
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_no_text_overlaps(chromium, demo):
    out, _ = demo
    context, page, _, _ = _open(chromium, out)
    try:
        for d in page.locator("details").all():          # provenance and the notebook's sections, opened
            d.evaluate("e => e.open = true")
        page.wait_for_timeout(300)
        bad = page.evaluate(OVERLAPS)
        assert bad == [], bad[:10]
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_conclusion_holds_the_recorded_numbers(chromium, demo):
    out, doc = demo
    res = doc["results"]
    context, page, _, _ = _open(chromium, out)
    try:
        text = page.locator("#conclusion-0").inner_text()
        head = res["headline"]
        for p, r in head.items():
            assert f"{p}" in text and gbps(r["fault_in_gbps"]) in text, (p, text)
        best = max((p for p in head if p != "none"), key=lambda p: head[p]["fault_in_gbps"])
        assert f"the fastest safe policy is {best}" in text
        assert "none is UNSAFE" in text
        s = res["summary"]
        assert f"{s['within_spread']} of {s['measured_rows']} measured rows" in text
        for r in res["safety"]:
            assert f"{r['policy']} {r['host_rmp_faults']}" in text
        # the unsafe policy is marked wherever its rate appears in a table
        for row in page.locator("tr.unsafe").all():
            assert "UNSAFE" in row.inner_text()
        assert page.locator("tr.unsafe").count() >= 4
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_csv_links_download(chromium, demo, tmp_path):
    out, doc = demo
    context, page, attempted, _ = _open(chromium, out)
    try:
        links = page.locator("a.kit-csv")
        names = links.evaluate_all("ls => ls.map(a => a.getAttribute('download'))")
        assert "directmap-policies-policy-table.csv" in names and "directmap-policies-headline.csv" in names
        for name in ("directmap-policies-policy-table.csv", "directmap-policies-safety.csv"):
            link = page.locator(f"a.kit-csv[download='{name}']")
            link.scroll_into_view_if_needed()
            with page.expect_download() as dl:
                link.click()
            path = tmp_path / name
            dl.value.save_as(path)
            rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
            key = "policy_table" if "policy-table" in name else "safety"
            assert len(rows) == 1 + len(doc["results"][key]), name
            assert "policy" in rows[0]
        assert attempted == []
    finally:
        context.close()
