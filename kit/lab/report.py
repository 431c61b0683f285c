"""``kit report``: one self-contained HTML file from recorded results.

Inputs are result files written by :func:`kit.lab.record.record` (``*.json``), executed
notebooks (their custom MIME outputs), or folders holding either. The page has a summary
table (one row per run), the plots (Bokeh, INLINE resources: no CDN, works from ``file://``
with the network blocked), the tables, and the provenance of every run. All text that comes
from results or from the user is escaped.

Result sections the report knows how to plot (keys of a recorded ``results`` dict):
``policy_table`` (rows of :func:`kit.sim.experiments.policy_table`), ``fragmentation``
({policy: result with series}), ``simulations`` (list of ``SimResult.to_json()``),
``residuals`` (calibration rows), ``sweep`` (rows of :func:`kit.sim.experiments.sweep`),
``safety`` (rows). Any other list of flat dicts is shown as a table.
"""
from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path

from .. import __version__
from .record import MIME, load_result, read_notebook_results, write_atomic


def collect(paths) -> list[dict]:
    """Result documents from files, notebooks and folders, in the order given. A file that is
    not a kit result raises ``ValueError`` naming it."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    docs: list[dict] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            # a folder: its result files (other JSON, e.g. a run's status, is skipped); its
            # executed notebooks only when it has no result file (they hold the same results)
            found = []
            for f in sorted(p.glob("*.json")):
                try:
                    found.append(load_result(f))
                except ValueError:
                    continue
            if not found:
                for f in sorted(p.glob("*.ipynb")):
                    found += read_notebook_results(f)
            if not found:
                raise ValueError(f"results: no kit result in folder {p}")
            docs += found
        elif p.suffix == ".ipynb":
            found = read_notebook_results(p)
            if not found:
                raise ValueError(f"results: notebook {p} has no recorded result ({MIME})")
            docs += found
        elif p.exists():
            docs.append(load_result(p))
        else:
            raise ValueError(f"results: no such file {p}")
    return docs


def _summary_row(doc: dict) -> dict:
    prov = doc.get("provenance", {})
    res = doc.get("results", {})
    head = ""
    if isinstance(res, dict):
        if "policy_table" in res:
            rows = [r for r in res["policy_table"] if r.get("measured_gbps") is not None]
            within = sum(1 for r in rows if r.get("within"))
            head = f"{within}/{len(rows)} measured rows within spread"
        elif "simulations" in res:
            head = "; ".join(f"{s['policy']}: {s['fault_in_gbps']:.2f} GB/s" for s in res["simulations"][:4])
        elif "residuals" in res:
            head = f"{sum(r['within'] for r in res['residuals'])}/{len(res['residuals'])} rows within spread"
    params = prov.get("parameters", {})
    return {"run": doc.get("name", "?"), "parameters": ", ".join(f"{k}={v}" for k, v in params.items()),
            "headline": head, "seed": prov.get("seed"), "kit": prov.get("kit_version"),
            "commit": prov.get("git_commit"), "cost params": prov.get("cost_params"),
            "finished": prov.get("finished")}


def _figures(doc: dict) -> list:
    """Bokeh figures for the result sections the report knows."""
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource

    from ..viz import figures as F
    res = doc.get("results", {})
    if not isinstance(res, dict):
        return []
    out = []
    if res.get("policy_table"):
        out.append(F.rate_figure(ColumnDataSource(F.rate_data(res["policy_table"]))))
    for name, sim in (res.get("fragmentation") or {}).items():
        src = ColumnDataSource(F.series_data(sim.get("series", {})))
        out.append(row(F.directmap_series_figure(src, title=f"{name}: direct map over time"),
                       F.lockwait_series_figure(src, title=f"{name}: lock waits")))
    for sim in res.get("simulations") or []:
        if sim.get("series"):
            src = ColumnDataSource(F.series_data(sim["series"]))
            label = f"{sim['policy']}, {sim['scenario']['guests']}x{sim['scenario']['vcpus']}"
            out.append(row(F.rate_series_figure(src, title=f"{label}: fault-in rate"),
                           F.directmap_series_figure(src, title=f"{label}: direct map")))
    if res.get("residuals"):
        out.append(F.residual_figure(ColumnDataSource(F.residual_data(res["residuals"]))))
    if res.get("sweep"):
        out.append(_sweep_figure(res["sweep"]))
    return [column(*out)] if out else []


def _sweep_figure(rows: list[dict]):
    from bokeh.plotting import figure

    from ..viz.figures import POLICY_COLOURS
    xname = next(k for k in ("guests", "vcpus", "host_cores") if k in rows[0])
    f = figure(title=f"fault-in rate vs {xname}", height=300, width=600, x_axis_label=xname,
               y_axis_label="GB/s", tools="hover,save,pan,wheel_zoom,reset")
    for p in dict.fromkeys(r["policy"] for r in rows):
        pts = [r for r in rows if r["policy"] == p]
        f.line([r[xname] for r in pts], [r["fault_in_gbps"] for r in pts], legend_label=p,
               color=POLICY_COLOURS.get(p, "#888"), line_width=2)
        f.scatter([r[xname] for r in pts], [r["fault_in_gbps"] for r in pts], color=POLICY_COLOURS.get(p, "#888"))
    from ..viz.figures import legend_outside
    legend_outside(f)
    return f


def _tables(doc: dict) -> str:
    from ..viz.html import table
    res = doc.get("results", {})
    out = []
    items = res.items() if isinstance(res, dict) else [("results", res)]
    for key, val in items:
        if isinstance(val, list) and val and all(isinstance(r, dict) for r in val):
            flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in val]
            out.append(table(flat[:200], caption=str(key)))
        elif isinstance(val, dict) and val and all(not isinstance(v, (dict, list)) for v in val.values()):
            out.append(table([val], caption=str(key)))
    return "".join(out)


def build(docs: list[dict], *, title: str = "cvm-memkit report") -> str:
    """The report page for result documents (HTML text, self-contained)."""
    from bokeh.embed import components
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    from ..viz.html import STYLE, kv, table
    if not docs:
        raise ValueError("results: nothing to report")
    figs, sections = [], []
    for i, doc in enumerate(docs):
        fs = _figures(doc)
        figs += fs
        sections.append((doc, len(fs)))
    script, divs = components(figs) if figs else ("", [])
    # only the BokehJS bundles these figures need, inline (no CDN)
    resources = bundle_for_objs_and_resources(figs, INLINE).scripts() if figs else ""
    divs = list(divs) if isinstance(divs, (list, tuple)) else [divs]
    body, k = [], 0
    for i, (doc, nf) in enumerate(sections):
        prov = doc.get("provenance", {})
        body.append(f"<section id='run-{i}'><h2>{escape(str(doc.get('name', '?')))}</h2>")
        body.append("".join(divs[k:k + nf]))
        k += nf
        body.append(_tables(doc))
        flat = {kk: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for kk, v in prov.items()}
        body.append("<details><summary>provenance</summary>" + kv(flat) + "</details></section>")
    summary = table([_summary_row(d) for d in docs], caption="runs")
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title>{resources}{STYLE}"
            "<style>body{font-family:sans-serif;margin:1em 2em}h2{border-top:1px solid #ccc;padding-top:.5em}</style>"
            f"{script}</head><body><h1>{escape(title)}</h1>"
            f"<p>Built by kit {escape(__version__)} at {made} from {len(docs)} recorded run(s). "
            "Self-contained: no network needed.</p>"
            f"{summary}{''.join(body)}</body></html>")


def report(paths, out, *, title: str = "cvm-memkit report") -> Path:
    """Collect results from ``paths`` and write the report to ``out`` (atomically)."""
    docs = collect(paths)
    return write_atomic(out, build(docs, title=title))
