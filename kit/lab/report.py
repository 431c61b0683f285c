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
import re
import shlex
from html import escape
from pathlib import Path

import mistune

from .. import __version__
from ..sim.scope import NOT_MODELLED
from ..units import BAND_MEANING, NO_BAND, band_fields
from ..viz.html import BAND_SUFFIX_ENDS, STYLE, cell_text, csv_link, kv, report_table, table
from ..viz.narrative import (conclusion, dm4k_share, headline_numbers, policy_description, policy_rows, rate_of,
                             scenario_text, unsafe_policies, with_band_columns)
from ..viz.traces import counterexamples, exploration_rows, invariant_table, step_rows
from .notebook import NOTEBOOKS, canonical
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
            head = "; ".join(f"{s['policy']}: {rate_of(s)}" for s in res["simulations"][:4])
        elif "residuals" in res:
            head = f"{sum(r['within'] for r in res['residuals'])}/{len(res['residuals'])} rows within spread"
        elif "explorations" in res:
            head = "; ".join(f"{r['scheme']}: " + (f"{r['broken']} invariant(s) broken" if r["broken"] else "all hold")
                             + ("" if r["complete"] else " (incomplete)")
                             for r in exploration_rows(res["explorations"]))
    params = _params(doc)
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


#: the page's own style: readable tables, numbers right-aligned, unsafe rows and differences marked
PAGE_STYLE = ("<style>body{font-family:sans-serif;margin:1em 2em;max-width:1300px}"
              "h2{border-top:1px solid #ccc;padding-top:.5em}"
              ".kit-r td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
              ".kit-r th{background:#f4f4f4;vertical-align:bottom}"
              ".kit-r tr.unsafe td{background:#fde8e8}.kit-r tr.diff td{background:#fff3bf}"
              ".kit-table{margin:.6em 0 1em 0;overflow-x:auto}.kit-dl{font-size:12px;margin:2px 0}"
              ".kit-conclusion{background:#f1f7f5;border-left:4px solid #2a9d8f;padding:.4em 1em}"
              ".kit-unsafe{color:#b00020;font-weight:bold}.kit-prose{max-width:60em}"
              ".kit-side{display:flex;gap:2em}.kit-side>div{flex:1}</style>")

#: what each engine is, as the report names it
ENGINE_NAMES = {"analytic": "analytic (mean value analysis of the cost events)",
                "des": "discrete-event (every vCPU and chunk over simulated time)"}
#: the data the cost model is fitted to, and where it comes from (data/README.md, docs/sources.md)
DATA_SOURCE = ("data/measurements.csv: SNP guest fault-in (lazy acceptance) rates measured by M. Roth and posted "
               "to the public linux-mm / x86 review thread of \"[PATCH v1 11/26] x86/sev: Invalidate pages from the "
               "direct map when adding them to the RMP table\" (messages of 2024-01-16 and 2024-01-26; thread "
               "20231230161954.569267-12-michael.roth@amd.com, see docs/sources.md)")
#: provenance parameters that say where output went, not what was run
OUTPUT_PARAMS = ("outdir",)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "table"


def _params(doc: dict) -> dict:
    return {k: v for k, v in (doc.get("provenance", {}).get("parameters") or {}).items() if k not in OUTPUT_PARAMS}


def _label(doc: dict, swept: list[str]) -> str:
    """A run named by its name and the parameters that differ between the runs shown."""
    p = _params(doc)
    bits = ", ".join(f"{k}={json.dumps(p[k]) if isinstance(p.get(k), (list, dict)) else p.get(k)}" for k in swept)
    return f"{doc.get('name', '?')}" + (f" ({bits})" if bits else "")


def _swept(docs: list[dict]) -> list[str]:
    """Parameters whose values differ between ``docs``, in first-seen order."""
    keys = list(dict.fromkeys(k for d in docs for k in _params(d)))
    return [k for k in keys if len({canonical(_params(d).get(k)) for d in docs}) > 1]


def _engines(results) -> dict:
    """engine -> the result keys timed by it."""
    out: dict = {}

    def note(engine, key):
        if isinstance(engine, str):
            out.setdefault(engine, [])
            if key not in out[engine]:
                out[engine].append(key)
    if not isinstance(results, dict):
        return out
    for key, val in results.items():
        if isinstance(val, list):
            for r in val:
                if isinstance(r, dict):
                    note(r.get("engine"), key)
        elif isinstance(val, dict):
            for r in val.values():
                if isinstance(r, dict):
                    note(r.get("engine"), key)
    return out


def _markdown(text: str) -> str:
    """Escaped HTML of a notebook's markdown, its headings three levels down (h4-h6: below the
    report's own)."""
    html = mistune.create_markdown(escape=True)(text)
    return re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m.group(1)}h{min(int(m.group(2)) + 3, 6)}>", html)


def prose(name: str) -> tuple[str, list[str]]:
    """The prose of the notebook that recorded ``name`` (notebooks/NAME.ipynb): its first
    markdown cell and the others, as escaped HTML; empty when there is no such notebook."""
    path = NOTEBOOKS / f"{name}.ipynb"
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return "", []
    cells = ["".join(c["source"]) if isinstance(c.get("source"), list) else c.get("source", "")
             for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]
    if not cells:
        return "", []
    return _markdown(cells[0]), [_markdown(c) for c in cells[1:]]


def _about(doc: dict) -> str:
    """What is compared: the notebook's prose, the policies and what each is, the engines, the data."""
    res = doc.get("results", {})
    intro, method = prose(str(doc.get("name", "")))
    unsafe = unsafe_policies(res)
    out = []
    if intro:
        out.append(f"<div class='kit-prose'>{intro}</div>")
    pols = list(dict.fromkeys(p for p, _ in policy_rows(res)))
    if pols:
        rows = [{"policy": p, "what it does": policy_description(p) or "a policy written by the user",
                 "safe": p not in unsafe} for p in pols]
        out.append(report_table(rows, ["policy", "what it does", "safe"], caption="the policies compared",
                                unsafe=unsafe, headers={"safe": "safe (no host RMP fault)"}))
    eng = _engines(res)
    if eng:
        out.append("<p>Engines: " + "; ".join(f"{escape(ENGINE_NAMES.get(e, e))}: {escape(', '.join(keys))}"
                                              for e, keys in eng.items()) + ".</p>")
    if any(k in res for k in ("policy_table", "headline", "residuals", "held_back")) if isinstance(res, dict) else False:
        out.append(f"<p>Data: {escape(DATA_SOURCE)}.</p>")
    if method:
        out.append("<details><summary>the notebook's sections</summary>" + "".join(method) + "</details>")
    return "".join(out)


def _conclusion(doc: dict, i: int) -> str:
    lines = conclusion(doc.get("results", {}))
    if not lines:
        return ""
    items = "".join(f"<li>{escape(t)}</li>" for t in lines)
    return (f"<div class='kit-conclusion' id='conclusion-{i}'><h4>Conclusion of this run</h4>"
            f"<ul>{items}</ul></div>")


def _sim_rows(runs: dict) -> list[dict]:
    """One row per policy of {policy: SimResult JSON}: rate, safety, fragmentation, time per chunk."""
    out = []
    for p, r in runs.items():
        tp = r.get("time_per_chunk") or {}
        top = max(tp, key=tp.get) if tp else None
        out.append({"policy": p, "fault_in_gbps": r.get("fault_in_gbps"),
                    **band_fields("fault_in_gbps", r.get("rate_band_gbps")), "safe": r.get("safe"),
                    "host_rmp_faults": r.get("host_rmp_faults"),
                    "dm4k_pct": dm4k_share(r.get("directmap") or {}) if r.get("directmap") else None,
                    "DirectMap4k": (r.get("directmap") or {}).get("DirectMap4k"),
                    "chunk_us": sum(tp.values()) if tp else None, "largest": top,
                    "largest_us": tp.get(top) if top else None,
                    "cpa_lock_wait_us": tp.get("cpa_lock_wait") if tp else None,
                    "cpa_lock": (r.get("cpa_lock") or {}).get("acquisitions"),
                    "splits": sum((r.get("splits") or {}).get(k, 0) for k in ("split_1g", "split_2m")),
                    "sim_seconds": r.get("sim_seconds")})
    return out


SIM_HEADERS = {"dm4k_pct": "DirectMap4k (% of host memory)", "chunk_us": "time per unit of work, one vCPU (µs)",
               "largest": "largest part", "largest_us": "largest part (µs)",
               "cpa_lock_wait_us": "cpa_lock wait per unit of work (µs)"}
SIM_FORMATS = {"dm4k_pct": "{:,.3f}", "chunk_us": "{:,.1f}", "largest_us": "{:,.1f}", "cpa_lock_wait_us": "{:,.1f}"}


def _is_sim_map(val) -> bool:
    return isinstance(val, dict) and val and all(isinstance(r, dict) and "fault_in_gbps" in r and "scenario" in r
                                                 for r in val.values())


def _tables(doc: dict, i: int = 0) -> str:
    res = doc.get("results", {})
    unsafe = unsafe_policies(res)
    base = _slug(str(doc.get("name", "run"))) + (f"-{i}" if i else "")
    out = []
    if _explorations(doc):
        out.append(table(invariant_table(res["explorations"]), caption="invariants by scheme"))
        out.append(table(exploration_rows(res["explorations"]), caption="searches"))
    items = res.items() if isinstance(res, dict) else [("results", res)]
    for key, val in items:
        if key == "explorations":
            continue
        name = f"{base}-{_slug(str(key))}.csv"
        if _is_sim_map(val):
            sc = next(iter(val.values())).get("scenario", {})
            unit = "4 MiB chunk" if sc.get("workload", "lazy-accept") == "lazy-accept" else "conversion"
            heads = {**SIM_HEADERS, "chunk_us": f"time per {unit}, one vCPU (µs)",
                     "cpa_lock_wait_us": f"cpa_lock wait per {unit} (µs)"}
            rows = _sim_rows(val)
            out.append(report_table(rows, list(rows[0]), caption=f"{key}: {scenario_text(sc)}, {sc.get('workload', '')}, "
                                    f"{next(iter(val.values())).get('engine', '')} engine", csv_name=name,
                                    unsafe=unsafe, headers=heads, formats=SIM_FORMATS))
        elif isinstance(val, list) and val and all(isinstance(r, dict) for r in val):
            # a rate's band ([low, high]) as two columns beside it; other lists and dicts left out
            flat = [{k: v for k, v in with_band_columns(r).items() if not isinstance(v, (dict, list))} for r in val]
            out.append(report_table(flat[:200], caption=str(key), csv_name=name, unsafe=unsafe))
        elif isinstance(val, dict) and val and all(not isinstance(v, (dict, list)) for v in val.values()):
            out.append(report_table([val], caption=str(key), csv_name=name, unsafe=unsafe))
    return "".join(out)


def reproduce_command(doc: dict) -> str:
    """The command that runs ``doc``'s notebook again with its parameters."""
    parts = ["kit", "run", str(doc.get("name", "?"))]
    for k, v in _params(doc).items():
        parts += ["-p", k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _scope() -> str:
    """What the timing model leaves out (:data:`kit.sim.scope.NOT_MODELLED`), once per report
    with a timed result."""
    rows = [{"left out": t, "what": w, "why": y} for t, w, y in NOT_MODELLED]
    return ("<section id='scope'><h2>What the timing model leaves out</h2>"
            + report_table(rows, ["left out", "what", "why"], caption="mechanisms not in the model (docs/sim-model.md)")
            + "</section>")


def _provenance(doc: dict, command: str | None) -> str:
    prov = doc.get("provenance", {})
    commit = prov.get("git_commit")
    about = {"kit version": prov.get("kit_version"),
             "git commit": commit if commit and commit != "unknown" else "not recorded (the kit did not run from a git checkout)",
             "engines": ", ".join(_engines(doc.get("results", {}))) or "not recorded",
             "parameters": json.dumps(_params(doc), sort_keys=True), "seed": prov.get("seed"),
             "cost-parameter set": prov.get("cost_params"), "started": prov.get("started"),
             "finished": prov.get("finished"), "reproduce": command or reproduce_command(doc)}
    for k, v in (prov.get("versions") or {}).items():
        about[f"{k} version"] = v
    out = [kv({k: ("not recorded" if v is None else v) for k, v in about.items()}, caption="where this result comes from")]
    cp = prov.get("cost_parameters")
    if cp:
        rows = [{"parameter": n, "value": d.get("value"), "unit": d.get("unit"), "kind": d.get("kind")} for n, d in cp.items()]
        out.append(report_table(rows, ["parameter", "value", "unit", "kind"],
                                caption="cost parameters (kind: source / assumed / fitted)",
                                csv_name=f"{_slug(str(doc.get('name', 'run')))}-cost-parameters.csv",
                                formats={"value": "{:,.6g}"}))
    else:
        out.append("<p>Cost parameters: not recorded with this result (recorded by an earlier kit).</p>")
    data = prov.get("data_files")
    if data:
        out.append(report_table([{"file": f"data/{n}", "SHA-256": d} for n, d in data.items()], ["file", "SHA-256"],
                                caption="data files"))
    return "<details><summary>provenance</summary>" + "".join(out) + "</details>"


def _sweep(docs: list[dict], swept: list[str]) -> tuple[list[dict], list[str]]:
    """The sweep table: a row per run (labelled by its swept parameters) with its swept
    parameters and headline results (:func:`kit.viz.narrative.headline_numbers`); and the
    headline results' names."""
    rows, heads = [], []
    for d in docs:
        nums = headline_numbers(d.get("results", {}))
        heads += [k for k in nums if k not in heads]
        rows.append({"run": _label(d, swept), **{k: _params(d).get(k) for k in swept}, **nums})
    for r in rows:
        for k in swept:
            if isinstance(r.get(k), (list, dict)):
                r[k] = json.dumps(r[k])
    return rows, heads


#: what the report's bands are, said once at the top of a report that shows any
BANDS_TEXT = (f"Bands ({BAND_MEANING}): each modelled rate is given with the lowest and highest rate over "
              "the fitted cost parameters' uncertainty (their covariance from kit calibrate, one standard "
              "deviation along each principal axis; docs/sim-model.md, \"Error bars and validation\"), each "
              "side widened in quadrature by the model error the fit recorded from its leave-one-out (the "
              "error the left-out predictions show beyond the measurements' noise and the fit's own "
              "uncertainty; 0 where the parameter set records none), the "
              f"assumed parameters held as they are. Where a run's cost parameters had no such covariance "
              f"the page says \"no band\" ({NO_BAND}) instead of showing one.")


def _has_bands(results) -> bool:
    """Whether recorded results hold a modelled rate's band (or its absence)."""
    text = json.dumps(results, default=str)
    return '"rate_band_gbps"' in text or '"model_band_gbps"' in text


def build(docs: list[dict], *, title: str = "cvm-memkit report", command: str | None = None) -> str:
    """The report page for result documents (HTML text, self-contained): what is compared and
    the conclusion of each run, its figures and tables (each downloadable as CSV), its
    provenance; with several runs of one notebook, the sweep table and plots; with two, the
    two side by side (:func:`diff_html`). ``command``: the command that reproduces the report
    (default: ``kit run`` of each run's notebook and parameters)."""
    from bokeh.embed import components              # lazily, as in _figures
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.resources import INLINE

    from ..viz.figures import headline_vs_parameter_figure
    if not docs:
        raise ValueError("results: nothing to report")
    swept = _swept(docs) if len(docs) > 1 else []
    figs, sections = [], []
    sweep_rows, sweep_heads, sweep_figs = [], [], []
    if len(docs) > 1:
        sweep_rows, sweep_heads = _sweep(docs, swept)
        for x in swept:
            for y in [h for h in sweep_heads if not h.endswith(BAND_SUFFIX_ENDS)][:8]:    # bands: whiskers
                if sum(isinstance(r.get(y), (int, float)) for r in sweep_rows) >= 2:
                    sweep_figs.append(headline_vs_parameter_figure(sweep_rows, x, y))
        figs += sweep_figs
    # several results of one notebook (more than two): a sweep, shown by its table and plots;
    # each result keeps its conclusion, tables and provenance, not figures repeated N times
    sweep_only = len(docs) > 2 and len({d.get("name") for d in docs}) == 1
    for i, doc in enumerate(docs):
        fs = [] if sweep_only else _figures(doc)
        figs += fs
        sections.append((doc, len(fs)))
    script, divs = components(figs) if figs else ("", [])
    # only the BokehJS bundles these figures need, inline (no CDN), once for the whole page
    resources = bundle_for_objs_and_resources(figs, INLINE).scripts() if figs else ""
    divs = list(divs) if isinstance(divs, (list, tuple)) else [divs]
    body, k = [], len(sweep_figs)
    if len(docs) == 2:
        body.append(diff_html(docs[0], docs[1], swept))
    if sweep_rows:
        cols = ["run", *swept, *sweep_heads]
        body.append("<section id='sweep'><h2>All results side by side</h2>"
                    + report_table(sweep_rows, cols, caption=f"one row per result, {len(swept)} swept parameter(s)",
                                   csv_name="sweep.csv")
                    + "".join(f"<div style='display:inline-block'>{d}</div>" for d in divs[:len(sweep_figs)])
                    + "</section>")
    seen_names = set()
    for i, (doc, nf) in enumerate(sections):
        name = str(doc.get("name", "?"))
        body.append(f"<section id='run-{i}'><h2>{escape(_label(doc, swept))}</h2>")
        if name not in seen_names:
            seen_names.add(name)
            body.append(_about(doc))
        body.append(_conclusion(doc, i))
        nc = len(counterexamples(_explorations(doc)))
        body.append("".join(divs[k:k + nf - nc]))
        rest = _tables(doc, i) + _counterexamples(doc, divs[k + nf - nc:k + nf])
        k += nf
        # a sweep's results: their tables folded away (the table above has them side by side)
        body.append(f"<details><summary>tables of {escape(_label(doc, swept))}</summary>{rest}</details>"
                    if sweep_only else rest)
        body.append(_provenance(doc, command if len(docs) == 1 else None) + "</section>")
    if any(_engines(d.get("results", {})) for d in docs):
        body.append(_scope())
    rows = [{k: ("not recorded" if v is None else v) for k, v in _summary_row(d).items()} for d in docs]
    summary = report_table(rows, caption="runs",
                           headers={"headline": "headline result", "cost params": "cost-parameter set"})
    made = timestamp()
    bands = f"<p id='bands'>{escape(BANDS_TEXT)}</p>" if any(_has_bands(d.get("results")) for d in docs) else ""
    again = (f"<p>Reproduce: <code>{escape(command)}</code></p>" if command else "")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title>{resources}{STYLE}{PAGE_STYLE}"
            f"{script}</head><body><h1>{escape(title)}</h1>"
            f"<p>Built by kit {escape(__version__)} at {made} from {len(docs)} recorded run(s). "
            "Self-contained: no network needed. Tables download as CSV from the link under each.</p>"
            f"{again}{bands}{summary}{''.join(body)}</body></html>")


def diff_html(a: dict, b: dict, swept: list[str] | None = None) -> str:
    """Two results side by side ("policy A vs B", "before vs after my change"): their
    parameters, provenance and headline results in one table, rows that differ highlighted,
    with the change of each number; then each one's conclusion."""
    swept = _swept([a, b]) if swept is None else swept
    la, lb = _label(a, swept), _label(b, swept)
    if la == lb:
        la, lb = f"A: {la}, {a.get('provenance', {}).get('finished')}", f"B: {lb}, {b.get('provenance', {}).get('finished')}"
    pa, pb = a.get("provenance", {}), b.get("provenance", {})
    rows = []

    def add(what, va, vb):
        same = canonical(va) == canonical(vb)
        row = {"what": what, "A": va if not isinstance(va, (list, dict)) else json.dumps(va),
               "B": vb if not isinstance(vb, (list, dict)) else json.dumps(vb), "change": ""}
        num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        if num and not same:
            row["change"] = f"{vb - va:+,.4g}" + (f" ({100 * (vb - va) / abs(va):+.1f}%)" if va else "")
        rows.append((row, same))
    add("result", a.get("name"), b.get("name"))
    for key in dict.fromkeys([*_params(a), *_params(b)]):
        add(f"parameter {key}", _params(a).get(key), _params(b).get(key))
    for key, what in (("kit_version", "kit version"), ("git_commit", "git commit"), ("cost_params", "cost-parameter set")):
        add(what, pa.get(key), pb.get(key))
    for n in dict.fromkeys([*(pa.get("cost_parameters") or {}), *(pb.get("cost_parameters") or {})]):
        add(f"cost parameter {n}", ((pa.get("cost_parameters") or {}).get(n) or {}).get("value"),
            ((pb.get("cost_parameters") or {}).get(n) or {}).get("value"))
    for n in dict.fromkeys([*(pa.get("data_files") or {}), *(pb.get("data_files") or {})]):
        add(f"data/{n} SHA-256", (pa.get("data_files") or {}).get(n), (pb.get("data_files") or {}).get(n))
    na, nb = headline_numbers(a.get("results", {})), headline_numbers(b.get("results", {}))
    for key in dict.fromkeys([*na, *nb]):
        add(key, na.get(key), nb.get(key))
    differ = sum(1 for _, same in rows if not same)
    head = "".join(f"<th>{escape(h)}</th>" for h in ("", la, lb, "change (B - A)"))
    def fmt(what) -> str | None:            # a rate's band low/high: "no band" for none
        return "band" if str(what).endswith(BAND_SUFFIX_ENDS[2:]) else None
    body = "".join(f"<tr{'' if same else ' class=diff'}><td class='txt'>{escape(str(r['what']))}</td>"
                   f"<td class='{'num' if isinstance(r['A'], (int, float)) else 'txt'}'>{escape(cell_text(r['A'], fmt(r['what'])))}</td>"
                   f"<td class='{'num' if isinstance(r['B'], (int, float)) else 'txt'}'>{escape(cell_text(r['B'], fmt(r['what'])))}</td>"
                   f"<td class='num'>{escape(r['change'])}</td></tr>" for r, same in rows)
    link = csv_link([r for r, _ in rows], ["what", "A", "B", "change"], "diff.csv", ["what", la, lb, "change (B - A)"])
    concl = "".join(f"<div><h4>{escape(lab)}</h4><ul>" + "".join(f"<li>{escape(t)}</li>" for t in conclusion(d.get("results", {})))
                    + "</ul></div>" for lab, d in ((la, a), (lb, b)))
    return ("<section id='diff'><h2>" + escape(f"{la} vs {lb}") + "</h2>"
            f"<p>{differ} of {len(rows)} rows differ (highlighted).</p>"
            f"<div class='kit-table'><table class='kit-t kit-r' id='diff-table'><caption>side by side</caption>"
            f"<tr>{head}</tr>{body}</table><div class='kit-dl'>{link}</div></div>"
            f"<div class='kit-side'>{concl}</div></section>")


def report(paths, out, *, title: str = "cvm-memkit report", command: str | None = None) -> Path:
    """Collect results from ``paths`` and write the report to ``out`` (atomically).
    ``command``: the command that reproduces it, shown in the report."""
    docs = collect(paths)
    return write_atomic(out, build(docs, title=title, command=command))
