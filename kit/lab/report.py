"""``kit report``: one self-contained HTML file from recorded results.

Inputs are result files written by :func:`kit.lab.record.record` (``*.json``), executed
notebooks (their custom MIME outputs), or folders holding either. The page has a summary
table (one row per run), the plots (Bokeh, INLINE resources: no CDN, works from ``file://``
with the network blocked), the tables, and the provenance of every run. All text that comes
from results or from the user is escaped.

The plots are the notebook's own: :func:`kit.viz.figures.result_figures` builds them from the
recorded ``results`` with the builders the notebook plots with (``policy_table``,
``fragmentation``, ``simulations``, ``residuals``, ``sweep``, ``held_back``, ``matrix``,
``asid_state``, ``churn``, ``explorations``). Any list of flat dicts is also shown as a table.

A race explorer's run (``explorations``: :func:`kit.viz.traces.exploration` per scheme) shows
the table of invariants by scheme, the searches' figures, and every counterexample as its
sequence diagram followed by its step table (thread, step, what changed).
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from .. import __version__
from ..viz.html import STYLE, kv, table
from ..viz.traces import counterexamples, exploration_rows, invariant_table, step_rows
from .record import MIME, load_result, read_notebook_results, timestamp, write_atomic


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
        elif "explorations" in res:
            head = "; ".join(f"{r['scheme']}: " + (f"{r['broken']} invariant(s) broken" if r["broken"] else "all hold")
                             + ("" if r["complete"] else " (incomplete)")
                             for r in exploration_rows(res["explorations"]))
    params = prov.get("parameters", {})
    return {"run": doc.get("name", "?"), "parameters": ", ".join(f"{k}={v}" for k, v in params.items()),
            "headline": head, "seed": prov.get("seed"), "kit": prov.get("kit_version"),
            "commit": prov.get("git_commit"), "cost params": prov.get("cost_params"),
            "finished": prov.get("finished")}


def _explorations(doc: dict) -> list[dict]:
    res = doc.get("results", {})
    return (res.get("explorations") or []) if isinstance(res, dict) else []


def _figures(doc: dict) -> list:
    """The figures of one result: the builders its notebook plots with
    (:func:`kit.viz.figures.result_figures`), in one column, then each counterexample's
    sequence diagram on its own (placed beside its step table)."""
    # Bokeh (and the builders on it) load only when a report is built: importing them costs
    # most of a second, which every other `kit` command would pay
    from bokeh.layouts import column

    from ..viz.figures import result_figures
    figs = result_figures(doc.get("results", {}))
    k = len(figs) - len(counterexamples(_explorations(doc)))
    return ([column(*figs[:k])] if k else []) + figs[k:]


def _counterexamples(doc: dict, divs: list) -> str:
    """Each counterexample: its sequence diagram (``divs``, in the same order) and step table."""
    out = []
    for c, div in zip(counterexamples(_explorations(doc)), divs):
        head = f"{c['scheme']}: '{c['invariant']}' broken after {len(c['steps'])} steps"
        out.append(f"<h3>{escape(head)}</h3>{div}" + table(step_rows(c["steps"]), caption=f"{c['scheme']}: steps"))
    return "".join(out)


def _tables(doc: dict) -> str:
    res = doc.get("results", {})
    out = []
    if _explorations(doc):
        out.append(table(invariant_table(res["explorations"]), caption="invariants by scheme"))
        out.append(table(exploration_rows(res["explorations"]), caption="searches"))
    items = res.items() if isinstance(res, dict) else [("results", res)]
    for key, val in items:
        if key == "explorations":
            continue
        if isinstance(val, list) and val and all(isinstance(r, dict) for r in val):
            flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in val]
            out.append(table(flat[:200], caption=str(key)))
        elif isinstance(val, dict) and val and all(not isinstance(v, (dict, list)) for v in val.values()):
            out.append(table([val], caption=str(key)))
    return "".join(out)


def build(docs: list[dict], *, title: str = "cvm-memkit report") -> str:
    """The report page for result documents (HTML text, self-contained)."""
    from bokeh.embed import components              # lazily, as in _figures
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE
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
        nc = len(counterexamples(_explorations(doc)))
        body.append("".join(divs[k:k + nf - nc]))
        body.append(_tables(doc))
        body.append(_counterexamples(doc, divs[k + nf - nc:k + nf]))
        k += nf
        flat = {kk: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for kk, v in prov.items()}
        body.append("<details><summary>provenance</summary>" + kv(flat) + "</details></section>")
    summary = table([_summary_row(d) for d in docs], caption="runs")
    made = timestamp()
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
