"""Bokeh figure builders: data in, figure out (no widgets, no kernel).

The builders here are shared by the dashboards, the notebooks and the reports: a figure drawn in
two places is built by one function. Each builder takes a ``ColumnDataSource`` (or data to make one) and
returns the figure; the ``*_data`` functions compute what goes into the sources from the model
or from results, so a dashboard can keep its figures and only replace ``source.data``.

The builders of recorded results (sweeps, held-back utilisation, discrete-event runs,
fragmentation, the outcome matrix, ASIDs, the race explorer's counterexamples) take the JSON a
notebook records with ``kit.lab.record``: a notebook plots ``doc["results"]`` and a report
rebuilds the same figures from the result file (:func:`result_figures`).
"""
from __future__ import annotations

import numpy as np
from bokeh.layouts import row
from bokeh.models import (ColumnDataSource, FactorRange, FixedTicker, HoverTool, Label, Legend, LegendItem,
                          LinearColorMapper, Range1d, Whisker)
from bokeh.plotting import figure

from ..host.memory import OWNER_NAMES
from ..units import BAND_MEANING, GiB, KiB, PAGE_1G, PAGE_2M, PAGE_SHIFT, PAGES_PER_1G, PAGES_PER_2M, band_keys, has_band
from . import state as S
from .narrative import UNSAFE, dm4k_share, policy_label, scenario_text, unsafe_policies
from .traces import (changed_text, counterexamples, exploration_label, invariant_names, thread_order,
                     trace_steps)

POLICY_COLOURS = {"none": "#6c757d", "invalidate-4k": "#e76f51", "invalidate-4k-flush": "#f4a261",
                  "presplit-4k": "#2a9d8f", "split-on-demand": "#264653",
                  "split-on-demand-collapse": "#8ab17d"}
#: The one palette of resources (utilisation bars, lock-wait lines): a colour-blind-safe
#: qualitative set (Okabe and Ito), one hue per resource, so that no two look alike.
RESOURCE_COLOURS = {"cores": "#0072b2", "membw": "#56b4e9", "cpa_lock": "#d55e00", "pgd_lock": "#cc79a7",
                    "vm_lock": "#e69f00", "guest_lock": "#009e73"}
#: Where every figure's toolbar goes: beside the plot, never over its title.
TOOLBAR = "right"
#: What marks an unsafe policy (host RMP faults or oopses in the run) in a chart.
UNSAFE_HATCH, UNSAFE_TEXT = "x", "UNSAFE"
MAP_WIDTH = PAGE_1G // PAGE_2M      # 2M regions per row of the host map (one row = 1 GiB)
REGION_COLUMNS = 32                 # 4K entries per row of the one-region view (16 rows of 32)


def _colour(policy: str) -> str:
    return POLICY_COLOURS.get(policy, "#888888")


# ------------------------------------------------------------------ host memory map
def host_map_data(host, width: int = MAP_WIDTH) -> dict:
    """Image data for the host map: RMP state and direct-map level, one cell per 2M region."""
    st = S.grid(S.region_states(host), width)
    lv = S.grid(host.directmap.lvl, width)
    rows = st.shape[0]
    return {"rmp": {"image": [st], "x": [0], "y": [0], "dw": [width], "dh": [rows]},
            "dm": {"image": [lv], "x": [0], "y": [0], "dw": [width], "dh": [rows]},
            "rows": rows, "width": width}


def host_map_figures(data: dict, *, height: int = 320):
    """Two image panels (RMP state, direct-map level) sharing their ranges.
    Returns (rmp figure, direct-map figure, rmp source, dm source)."""
    rows, width = data["rows"], data["width"]
    src_rmp, src_dm = ColumnDataSource(data["rmp"]), ColumnDataSource(data["dm"])
    figs = []
    for title, src, palette, names in (("RMP state per 2M region (row = 1 GiB)", src_rmp, S.STATE_COLOURS, S.STATES),
                                       ("Direct-map level per 2M region", src_dm, S.DM_COLOURS, S.DM_LEVELS)):
        mapper = LinearColorMapper(palette=list(palette), low=-0.5, high=len(palette) - 0.5, high_color="#ffffff")
        f = figure(title=title, height=height, width=560, x_range=(0, width), y_range=(rows, 0) if rows else (1, 0),
                   tools="pan,wheel_zoom,box_zoom,reset,tap,save", toolbar_location=TOOLBAR,
                   x_axis_label="2M region in row", y_axis_label="GiB")
        f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=mapper)
        # legend: one invisible square per state so colours are named
        items = []
        for i, (n, c) in enumerate(zip(names, palette)):
            r = f.scatter([float("nan")], [float("nan")], marker="square", color=c, size=10)
            items.append(LegendItem(label=n, renderers=[r]))
        f.add_layout(Legend(items=items, location="top_left", label_text_font_size="8pt",
                            glyph_width=10, glyph_height=10, spacing=0), "right")
        figs.append(f)
    figs[1].x_range, figs[1].y_range = figs[0].x_range, figs[0].y_range
    return figs[0], figs[1], src_rmp, src_dm


#: The one-region view's states and colours, in the map's colours (:data:`kit.viz.state.STATE_COLOURS`):
#: a shared page as "shared guest", a validated private 4K page as "private 4K" and every entry of
#: a 2M RMP entry as "private 2M"; a private page not yet validated in a lighter orange.
REGION_STATES = {"shared guest": S.STATE_COLOURS[S.S_SHARED_GUEST], "private, not validated": "#fcbf49",
                 "private 4K": S.STATE_COLOURS[S.S_PRIV_4K], "firmware": S.STATE_COLOURS[S.S_FIRMWARE],
                 "private 2M": S.STATE_COLOURS[S.S_PRIV_2M]}
_PAGE_STATE_NAMES = ("shared guest", "private, not validated", "private 4K", "firmware")


def region_data(host, region: int) -> dict:
    """The 512 4K entries of one 2M region as 16 rows of 32 cells, coloured as the map
    (:data:`REGION_STATES`)."""
    d = S.region_detail(host, region)
    idx = np.arange(PAGES_PER_2M)
    names = [_PAGE_STATE_NAMES[s] for s in d["state"]]
    if d["rmp_2m"]:
        names = ["private 2M" if n == "private 4K" else n for n in names]
    return {"x": (idx % REGION_COLUMNS).tolist(), "y": (idx // REGION_COLUMNS).tolist(),
            "colour": [REGION_STATES[n] for n in names], "legend": names,
            "state": [S.PAGE_STATES[s] for s in d["state"]],
            "alpha": np.where(d["present"], 1.0, 0.35).tolist(),
            "present": ["present" if p else "not present" for p in d["present"]],
            "owner": [OWNER_NAMES.get(int(o), "?") for o in d["owner"]],
            "pfn": [f"{d['pfn'] + i:#x}" for i in idx],
            "asid": d["asid"].astype(int).tolist(), "gpa": [f"{int(g):#x}" for g in d["gpa"]]}


def region_figure(source: ColumnDataSource, title: str = "one 2M region: 512 4K entries"):
    """The one-region view; its legend names each state present in the map's colours (faded:
    not present in the direct map)."""
    f = figure(title=title, height=260, width=700, x_range=(-0.5, 31.5), y_range=(15.5, -0.5),
               tools="hover,save", toolbar_location=TOOLBAR)
    f.rect(x="x", y="y", width=0.92, height=0.92, source=source, fill_color="colour",
           fill_alpha="alpha", line_color=None, legend_field="legend")
    legend_outside(f)
    f.legend[0].title = "RMP entry (faded: not in the direct map)"
    f.select_one(HoverTool).tooltips = [("pfn", "@pfn"), ("RMP", "@state"), ("ASID", "@asid"),
                                        ("GPA", "@gpa"), ("owner", "@owner"), ("direct map", "@present")]
    f.axis.visible = False
    f.grid.visible = False
    return f


# ------------------------------------------------------------------ policies
def rate_data(rows: list[dict]) -> dict:
    """Bars: one per (configuration, policy) with the modelled rate; measured mean and spread
    where there is one (NaN elsewhere)."""
    nan = float("nan")
    return {"x": [(r["config"], r["policy"]) for r in rows],
            "model": [float(r["model_gbps"]) for r in rows],
            "measured": [float(r["measured_gbps"]) if r.get("measured_gbps") is not None else nan for r in rows],
            "lower": [float(r["measured_gbps"] - r["spread"]) if r.get("measured_gbps") is not None else nan for r in rows],
            "upper": [float(r["measured_gbps"] + r["spread"]) if r.get("measured_gbps") is not None else nan for r in rows],
            "colour": [_colour(r["policy"]) for r in rows],
            "bottleneck": [str(r.get("bottleneck", "")) for r in rows],
            "legend": [r["policy"] + (f" ({UNSAFE_TEXT})" if r.get("safe") is False else "") for r in rows],
            "safety": [{True: "safe", False: "UNSAFE: host RMP faults"}.get(r.get("safe"), "not known") for r in rows],
            "hatch": [UNSAFE_HATCH if r.get("safe") is False else " " for r in rows],
            "mark": [UNSAFE_TEXT if r.get("safe") is False else "" for r in rows],
            **band_data(rows, "model_band_gbps")}


def band_data(rows: list[dict], key: str = "model_band_gbps") -> dict:
    """``band_lo``/``band_hi``: a modelled rate's band from the fit (``[lo, hi]`` under ``key``;
    NaN where a row has none)."""
    nan = float("nan")
    bands = [r.get(key) if has_band(r.get(key)) else (nan, nan) for r in rows]
    return {"band_lo": [float(b[0]) for b in bands], "band_hi": [float(b[1]) for b in bands]}


def scaled_band(values, rate: float, band) -> dict:
    """``band_lo``/``band_hi`` of a series of rates (``values``) from one run's band: the run's
    relative band (``band / rate``) applied to every point, as :func:`kit.sim.api._rate_band`
    applies the analytic engine's relative band to the discrete-event rate; NaN without a band."""
    n = len(values)
    if not has_band(band) or not rate or rate != rate:
        return {"band_lo": [float("nan")] * n, "band_hi": [float("nan")] * n}
    lo, hi = band[0] / rate, band[1] / rate
    return {"band_lo": [v * lo for v in values], "band_hi": [v * hi for v in values]}


def draw_band(f, source, x: str, *, colour: str = "#264653", alpha: float = 0.18, **kw):
    """The fit's band of a rate line as a shaded area between ``band_lo`` and ``band_hi`` of
    ``source`` (NaN: no area there)."""
    return f.varea(x=x, y1="band_lo", y2="band_hi", source=source, fill_color=colour, fill_alpha=alpha, **kw)


def rate_figure(source: ColumnDataSource, title: str = ("Guest memory fault-in rate: modelled (bars; grey: its band, "
                                                         f"{BAND_MEANING}), measured (points, +-spread)")):
    factors = list(dict.fromkeys(tuple(x) for x in source.data["x"]))
    f = figure(title=title, x_range=FactorRange(*factors), y_range=Range1d(0, rate_top(source.data)),
               height=360, width=900, y_axis_label="GB/s", tools="hover,save,reset,xpan", toolbar_location=TOOLBAR)
    # one legend entry per policy in its bar's colour (the bars are the model); an unsafe
    # policy's bar is hatched and marked above, and named so in the legend
    f.vbar(x="x", top="model", width=0.8, source=source, fill_color="colour", line_color=None,
           hatch_pattern="hatch", hatch_color="white", hatch_alpha=0.8, legend_field="legend")
    f.text(x="x", y="model", text="mark", source=source, text_align="center", text_baseline="bottom",
           y_offset=-2, text_font_size="8pt", text_font_style="bold", text_color="#d62828")
    f.scatter(x="x", y="measured", source=source, size=8, color="black", legend_label="measured (+- spread)")
    f.add_layout(Whisker(source=source, base="x", upper="upper", lower="lower", line_color="black"))
    if "band_lo" in source.data:       # the model's band from the fit (grey, on the bar)
        f.add_layout(Whisker(source=source, base="x", upper="band_hi", lower="band_lo", line_color="#8d99ae",
                             line_width=3, upper_head=None, lower_head=None))
    f.select_one(HoverTool).tooltips = [("", "@x"), ("model GB/s", "@model{0.00}"),
                                        (f"model band ({BAND_MEANING})", "@band_lo{0.00} - @band_hi{0.00}"),
                                        ("measured GB/s", "@measured{0.00}"), ("bottleneck", "@bottleneck"),
                                        ("safety", "@safety")]
    f.xaxis.major_label_orientation = 1.0
    f.xaxis.axis_label = "measured configuration (data/measurements.csv) and policy (hatched: unsafe)"
    legend_outside(f)
    return f


def rate_top(data: dict) -> float:
    """The rate axis' top: above every bar, every error bar and band (and room for a mark)."""
    vals = [v for v in list(data.get("model", [])) + list(data.get("upper", []))
            + list(data.get("band_hi", [])) if v == v]
    return 1.15 * max(vals) if vals else 1.0


def from_zero(f, pad: float = 0.05) -> None:
    """The value axis from zero (a few per cent of wobble stays a few per cent of the height),
    padded above the data."""
    f.y_range.start = 0
    if hasattr(f.y_range, "range_padding"):
        f.y_range.range_padding = pad


def legend_outside(f) -> None:
    """Legends to the right of the plot, never on the data."""
    if f.legend:
        leg = f.legend[0]
        f.center = [r for r in f.center if r is not leg]
        leg.location = "top_left"
        f.add_layout(leg, "right")


def utilisation_data(results: dict) -> dict:
    """Grouped-bar data: per label (e.g. policy), one bar per resource with its utilisation
    (each resource on its own bar: utilisations do not add up)."""
    y, util, colour, res = [], [], [], []
    for label, u in results.items():
        for r in RESOURCE_COLOURS:
            y.append((label, r))
            util.append(float(u.get(r, 0.0)))
            colour.append(RESOURCE_COLOURS[r])
            res.append(r)
    return {"y": y, "utilisation": util, "colour": colour, "resource": res}


def utilisation_height(bars: int) -> int:
    return 60 + 14 * max(bars, 6)


def utilisation_figure(source: ColumnDataSource, title: str = "Where the time goes: utilisation of each resource"):
    factors = [tuple(y) for y in source.data["y"]] or [("-", "-")]
    f = figure(title=title, y_range=FactorRange(*factors), height=utilisation_height(len(factors)),
               width=900, x_range=(0, 1.05), x_axis_label="utilisation (1 = saturated)",
               tools="hover,save", toolbar_location=TOOLBAR)
    f.hbar(y="y", right="utilisation", height=0.8, source=source, fill_color="colour", line_color=None)
    f.select_one(HoverTool).tooltips = [("", "@y"), ("utilisation", "@utilisation{0.000}")]
    f.ygrid.grid_line_color = None
    return f


# ------------------------------------------------------------------ time series
KIB_PER_GIB = GiB // KiB            # the DirectMap lines of /proc/meminfo are in kB
SERIES_COLS = ("t_s", "fault_in_gbps", "band_lo", "band_hi", "DirectMap4k", "DirectMap2M", "DirectMap1G",
               "wait_cpa_lock", "wait_pgd_lock", "wait_vm_lock", "wait_guest_lock")


def series_data(series: dict, *, rate: float | None = None, band=None) -> dict:
    """Flatten a result's ``series`` (DES engine) into equal-length columns (GiB for DirectMap);
    ``band_lo``/``band_hi``: the run's band (``band`` of its whole-run ``rate``) applied to the
    rate of every bin (:func:`scaled_band`; NaN when the run has none, or is still running)."""
    if not series:
        return {c: [] for c in SERIES_COLS}
    n = len(series["t_s"])
    out = {"t_s": list(series["t_s"]), "fault_in_gbps": list(series["fault_in_gbps"]),
           **scaled_band(list(series["fault_in_gbps"]), rate, band)}
    for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G"):
        out[k] = [v / KIB_PER_GIB for v in series.get(k, [0] * n)]
    for k in ("cpa_lock", "pgd_lock", "vm_lock", "guest_lock"):
        out[f"wait_{k}"] = list(series.get("lock_wait_share", {}).get(k, [0.0] * n))
    return out


def rate_series_figure(source: ColumnDataSource, title: str = "Fault-in rate over simulated time"):
    """The fault-in rate over simulated time, its axis from 0 (a wobble of a few percent looks
    like one)."""
    top = max([v for v in source.data.get("fault_in_gbps", []) if v == v] or [1.0])
    top = max([top] + [v for v in source.data.get("band_hi", []) if v == v])
    f = figure(title=title, height=240, width=440, x_axis_label="simulated time (s)", y_axis_label="fault-in rate (GB/s)",
               y_range=Range1d(0, 1.15 * top), tools="pan,wheel_zoom,reset,save,hover", toolbar_location=TOOLBAR)
    if "band_lo" in source.data:        # the run's band from the fit, shaded (none while it runs)
        draw_band(f, source, "t_s", legend_label=f"band ({BAND_MEANING})")
    f.line("t_s", "fault_in_gbps", source=source, line_width=2, color="#264653")
    legend_outside(f)
    from_zero(f)
    return f


def directmap_series_figure(source: ColumnDataSource, title: str = "Direct map (/proc/meminfo) over time"):
    f = figure(title=title, height=240, width=440, x_axis_label="simulated time (s)", y_axis_label="GiB",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location=TOOLBAR)
    for k, c in zip(("DirectMap4k", "DirectMap2M", "DirectMap1G"), S.DM_COLOURS):
        f.line("t_s", k, source=source, line_width=2, color=c, legend_label=k)
    from_zero(f)
    legend_outside(f)
    return f


def lockwait_series_figure(source: ColumnDataSource, title: str = "Lock waits (waiting threads, mean per bin)"):
    f = figure(title=title, height=240, width=440, x_axis_label="simulated time (s)",
               y_axis_label="threads waiting (mean)",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location=TOOLBAR)
    for k in ("cpa_lock", "pgd_lock", "vm_lock", "guest_lock"):
        f.line("t_s", f"wait_{k}", source=source, line_width=2, color=RESOURCE_COLOURS[k], legend_label=k)
    from_zero(f)
    legend_outside(f)
    return f


# ------------------------------------------------------------------ guest
def gpa_data(layout: dict) -> dict:
    """Quads along the GPA axis (GiB): memslots (row 'memslots') and private ranges (row 'private')."""
    left, right, lane, colour, label = [], [], [], [], []
    for s in layout["slots"]:
        left.append(s["base_gfn"] / PAGES_PER_1G)
        right.append((s["base_gfn"] + s["npages"]) / PAGES_PER_1G)
        lane.append("memslots")
        colour.append("#2a9d8f" if s["gmem_ino"] is not None else "#8ecae6")
        label.append(f"slot {s['id']}" + (f" gmem ino {s['gmem_ino']}" if s["gmem_ino"] is not None else ""))
    for a in layout["attributes"]:
        left.append(a["start"] / PAGES_PER_1G)
        right.append(a["end"] / PAGES_PER_1G)
        lane.append("private")
        colour.append("#d62828")
        label.append(f"PRIVATE {a['start'] << PAGE_SHIFT:#x}-{a['end'] << PAGE_SHIFT:#x}")
    return {"left": left, "right": right, "row": lane, "colour": colour, "label": label}


def gpa_figure(source: ColumnDataSource, title: str = "Guest physical address space"):
    f = figure(title=title, height=200, width=900, y_range=FactorRange("private", "memslots"), x_range=Range1d(0, 1),
               x_axis_label="GPA (GiB)", tools="pan,xwheel_zoom,reset,hover,save", toolbar_location=TOOLBAR)
    f.hbar(y="row", left="left", right="right", height=0.7, source=source, fill_color="colour", line_color="black")
    f.select_one(HoverTool).tooltips = [("", "@label")]
    f.add_layout(Label(x=0.5, y=1.0, x_units="data", y_units="data", text=NO_MEMSLOTS, name="empty",
                       text_font_size="14pt", text_color="#666666", text_align="center", text_baseline="middle",
                       visible=not source.data["left"]))
    gpa_frame(f, source.data)
    return f


NO_MEMSLOTS = "no memslots"


def gpa_frame(f, data: dict) -> None:
    """Fit a GPA figure to its data: "no memslots" written across an empty VM's plot (not a
    blank frame)."""
    empty = not data["left"]
    label = f.select_one({"name": "empty"})
    label.visible = empty
    lo, hi = (min(data["left"]), max(data["right"])) if not empty else (0.0, 1.0)
    pad = 0.02 * (hi - lo or 1.0)
    f.x_range.start, f.x_range.end = lo - pad, hi + pad
    label.x, label.y = (lo + hi) / 2, 1.0          # the middle of the two categorical rows


def residual_figure(source: ColumnDataSource, title: str = "Calibration residuals ((model - measured) / spread)"):
    labels = list(source.data["config"])
    f = figure(title=title, y_range=FactorRange(*labels) if labels else FactorRange("-"),
               height=60 + 28 * max(len(labels), 3), width=900, x_range=(-1.6, 1.6),
               x_axis_label="residual (|r| <= 1 is within the measured spread)", tools="hover,save")
    f.hbar(y="config", right="residual", height=0.6, source=source, fill_color="colour", line_color=None)
    f.select_one(HoverTool).tooltips = [("", "@config"), ("measured", "@measured"), ("model", "@model"),
                                        ("error %", "@error_pct")]
    return f


def residual_data(rows: list[dict]) -> dict:
    return {"config": [r["config"] for r in rows], "residual": [r["residual"] for r in rows],
            "measured": [r["measured"] for r in rows], "model": [r["model"] for r in rows],
            "error_pct": [r["error_pct"] for r in rows],
            "colour": ["#2a9d8f" if r["within"] else "#d62828" for r in rows]}


def loo_figure(rows: list[dict], title: str = "Leave-one-out: each row predicted by a fit of the others"):
    """Measured (points, +-spread) against the leave-one-out prediction (diamonds; red where
    outside the spread) with the prediction's band (a coloured whisker: the left-out fit's
    covariance), one line per measured configuration (rows of
    :func:`kit.sim.calibrate.leave_one_out`)."""
    labels = [r["config"] for r in rows]
    bands = [r.get("band") if has_band(r.get("band")) else [r["predicted"], r["predicted"]] for r in rows]
    src = ColumnDataSource({"config": labels, "measured": [r["measured"] for r in rows],
                            "lower": [r["measured"] - r["spread"] for r in rows],
                            "upper": [r["measured"] + r["spread"] for r in rows],
                            "predicted": [r["predicted"] for r in rows],
                            "band_lo": [b[0] for b in bands], "band_hi": [b[1] for b in bands],
                            "colour": ["#2a9d8f" if r["within"] else "#d62828" for r in rows]})
    f = figure(title=title, y_range=FactorRange(*labels) if labels else FactorRange("-"),
               height=60 + 28 * max(len(labels), 3), width=900, x_axis_label="GB/s", tools="hover,save")
    f.add_layout(Whisker(source=src, base="config", upper="upper", lower="lower", dimension="width",
                         line_color="black"))
    f.scatter(x="measured", y="config", source=src, size=8, color="black", legend_label="measured +-spread")
    f.add_layout(Whisker(source=src, base="config", upper="band_hi", lower="band_lo", dimension="width",
                         line_color="#d62828", line_dash="dashed"))
    f.scatter(x="predicted", y="config", source=src, size=11, marker="diamond", color="colour",
              legend_label=f"left-out prediction (dashed: its band, {BAND_MEANING})")
    f.select_one(HoverTool).tooltips = [("", "@config"), ("measured", "@measured"), ("predicted", "@predicted"),
                                        ("band", "@band_lo - @band_hi")]
    legend_outside(f)
    return f


# ------------------------------------------------------------------ recorded results
#: the variables :func:`kit.sim.experiments.sweep` varies; each of its rows holds exactly one
SWEEP_VARIABLES = ("vcpus", "guests", "host_cores")


def swept_variable(r: dict) -> str:
    """Which of :data:`SWEEP_VARIABLES` a sweep row varies (``ValueError`` if none)."""
    for x in SWEEP_VARIABLES:
        if x in r:
            return x
    raise ValueError(f"sweep: a row holds none of {', '.join(SWEEP_VARIABLES)}: {sorted(r)}")


def sweep_figure(rows: list[dict], x: str | None = None, *, title: str | None = None):
    """Fault-in rate against ``x`` (log axis), one line per policy, from rows of
    :func:`kit.sim.experiments.sweep` (rows that vary another variable are left out)."""
    x = x or swept_variable(rows[0])
    pts = [r for r in rows if x in r]
    banded = any(has_band(r.get("rate_band_gbps")) for r in pts)
    f = figure(title=title or f"fault-in rate vs {x}", width=440, height=280, x_axis_label=x,
               y_axis_label=f"GB/s (whiskers: band, {BAND_MEANING})" if banded else "GB/s", x_axis_type="log", tools="hover,save,pan,wheel_zoom,reset")
    for p in dict.fromkeys(r["policy"] for r in pts):
        mine = [r for r in pts if r["policy"] == p]
        xs, ys = [r[x] for r in mine], [r["fault_in_gbps"] for r in mine]
        f.line(xs, ys, legend_label=p, color=_colour(p), line_width=2)
        f.scatter(xs, ys, color=_colour(p))
        if any(r.get("rate_band_gbps") for r in mine):      # the fit's band around the line
            f.add_layout(Whisker(source=ColumnDataSource({"x": xs, **band_data(mine, "rate_band_gbps")}),
                                 base="x", upper="band_hi", lower="band_lo", line_color=_colour(p)))
    from_zero(f)
    legend_outside(f)
    return f


def sweep_figures(rows: list[dict]) -> list:
    """One :func:`sweep_figure` per variable the rows vary, in the order the rows give them
    (rows of several sweeps concatenated, as a notebook records them)."""
    return [sweep_figure(rows, x) for x in dict.fromkeys(swept_variable(r) for r in rows)]


def resource_kinds(util: dict) -> dict:
    """Utilisation per kind of resource: per-guest resources (``vm_lock[0]``, ``vm_lock[1]``,
    ...) folded into their kind by the busiest one; keys that name no resource left out."""
    out: dict = {}
    for k, v in util.items():
        kind = k.split("[")[0]
        if kind in RESOURCE_COLOURS:
            out[kind] = max(out.get(kind, 0.0), float(v))
    return out


def utilisation_by(rows: list[dict], label: str = "policy") -> dict:
    """:func:`utilisation_data`'s input from recorded rows (one per ``label``, each holding
    its resources' utilisation, e.g. a notebook's ``held_back`` rows)."""
    return {r[label]: resource_kinds(r) for r in rows}


def simulation_title(sim: dict) -> str:
    """``policy, GUESTSxVCPUS`` of a recorded :class:`kit.sim.SimResult` (``to_json()``)."""
    sc = sim.get("scenario", {})
    return f"{sim.get('policy', sc.get('policy', '?'))}, {sc.get('guests', '?')}x{sc.get('vcpus', '?')}"


def simulation_figure(sim: dict):
    """A discrete-event run's time series side by side: fault-in rate, the direct map and
    lock waits, from a recorded :class:`kit.sim.SimResult` (``to_json()``)."""
    src = ColumnDataSource(series_data(sim.get("series") or {}, rate=sim.get("fault_in_gbps"),
                                       band=sim.get("rate_band_gbps")))
    label = simulation_title(sim)
    return row(rate_series_figure(src, title=f"{label}: fault-in rate"),
               directmap_series_figure(src, title=f"{label}: direct map"),
               lockwait_series_figure(src, title=f"{label}: lock waits"))


def fragmentation_figure(policy: str, sim: dict):
    """One policy's conversions workload over time: the direct map and lock waits."""
    src = ColumnDataSource(series_data(sim.get("series") or {}))
    return row(directmap_series_figure(src, title=f"{policy}: direct map over time"),
               lockwait_series_figure(src, title=f"{policy}: lock waits"))


OUTCOME_COLOURS = {"completed": "#2a9d8f", "completed (shared)": "#8ecae6",
                   "converted": "#2a9d8f", "exited": "#e9c46a"}
STUCK_COLOUR, REFUSED_COLOUR = "#d62828", "#f4a261"
VC_COLOUR, TERMINATED_COLOUR = "#7b2cbf", "#343a40"
LIGHT_COLOURS = {"#8ecae6", "#e9c46a", "#f4a261"}     # cells whose text is drawn dark


def outcome_colour(outcome: str) -> str:
    """Completed or converted (green; blue when completed shared), exited to userspace on the
    way (yellow), stuck (red), #VC (purple), terminated (near black), refused with an errno
    (orange)."""
    if outcome in OUTCOME_COLOURS:
        return OUTCOME_COLOURS[outcome]
    for prefix, colour in (("stuck", STUCK_COLOUR), ("#VC", VC_COLOUR), ("terminated", TERMINATED_COLOUR)):
        if outcome.startswith(prefix):
            return colour
    return REFUSED_COLOUR


def outcome_matrix_figure(matrix: list[dict]):
    """The outcome of one private access for every owner x #NPF policy (columns) and backing x
    guest behaviour (rows), from :func:`kit.kvm.probe.outcome_matrix` rows."""
    cells = ColumnDataSource({
        "x": [(r["owner"], r["npf_policy"]) for r in matrix], "y": [(r["backing"], r["guest"]) for r in matrix],
        "colour": [outcome_colour(r["outcome"]) for r in matrix],
        "text": [f'{r["outcome"]}\n{r["exits"]} exits, {r["ioctls"]} ioctls' for r in matrix],
        "outcome": [r["outcome"] for r in matrix], "exits": [r["exits"] for r in matrix],
        "ioctls": [r["ioctls"] for r in matrix], "kvm": [r["kvm_conversions"] for r in matrix]})
    f = figure(title="Outcome of one private access: owner x #NPF policy (columns), backing x guest (rows)",
               x_range=FactorRange(*dict.fromkeys(cells.data["x"]), group_padding=0.4),
               y_range=FactorRange(*dict.fromkeys(cells.data["y"]), group_padding=0.4),
               height=380, width=900, tools="hover,save", toolbar_location=TOOLBAR)
    f.rect(x="x", y="y", width=0.95, height=0.9, source=cells, fill_color="colour", line_color=None)
    f.text(x="x", y="y", text="text", source=cells, text_align="center", text_baseline="middle",
           text_font_size="8pt")
    f.hover.tooltips = [("outcome", "@outcome"), ("exits to userspace", "@exits"), ("ioctls", "@ioctls"),
                        ("conversions by KVM", "@kvm")]
    return f


def guest_outcome_figure(matrix: list[dict]):
    """The outcome of each guest behaviour's script for every owner x #NPF policy (columns) and
    behaviour x VMM (rows), from :func:`kit.guest.outcomes.outcome_matrix` rows (converted,
    exited, stuck, #VC, terminated), each cell with the exits to userspace and the step it
    ended on."""
    cells = ColumnDataSource({
        "x": [(r["owner"], r["npf_policy"]) for r in matrix], "y": [(r["behaviour"], r["vmm"]) for r in matrix],
        "colour": [outcome_colour(r["outcome"]) for r in matrix],
        "ink": ["#000000" if outcome_colour(r["outcome"]) in LIGHT_COLOURS else "#ffffff" for r in matrix],
        "text": [f'{r["outcome"]}\n{r["user_exits"]} exits' + (f', {r["refusals"]} refused' if r["refusals"] else "")
                 for r in matrix],
        "outcome": [r["outcome"] for r in matrix], "reason": [r["reason"] for r in matrix],
        "step": [r["step"] for r in matrix], "exits": [r["user_exits"] for r in matrix],
        "faults": [r["memory_faults"] for r in matrix], "kvm": [r["kvm_conversions"] for r in matrix]})
    rows = len(dict.fromkeys(cells.data["y"]))
    present = set(cells.data["x"])
    columns = [(o, n) for o in dict.fromkeys(o for o, _ in cells.data["x"])
               for n in dict.fromkeys(n for _, n in cells.data["x"]) if (o, n) in present]   # owners grouped
    f = figure(title="Outcome of each guest's script: owner x #NPF policy (columns), behaviour x VMM (rows)",
               x_range=FactorRange(*columns, group_padding=0.4),
               y_range=FactorRange(*reversed(list(dict.fromkeys(cells.data["y"]))), group_padding=0.4),
               height=max(240, 36 * rows + 120), width=900, tools="hover,save", toolbar_location=TOOLBAR)
    f.rect(x="x", y="y", width=0.95, height=0.9, source=cells, fill_color="colour", line_color=None)
    f.text(x="x", y="y", text="text", source=cells, text_align="center", text_baseline="middle",
           text_font_size="8pt", text_color="ink")
    f.hover.tooltips = [("outcome", "@outcome"), ("why", "@reason"), ("ended at", "@step"),
                        ("exits to userspace", "@exits"), ("KVM_EXIT_MEMORY_FAULT", "@faults"),
                        ("conversions by KVM", "@kvm")]
    return f


#: ASID states of :func:`kit.kvm.probe.asid_states`, in legend order
ASID_STATE_COLOURS = {"in use": "#264653", "to reclaim": "#e9c46a", "leaked": "#000000", "free": "#f0f0f0"}
ASID_RANGES = ("SEV-ES / SNP", "SEV")


def asid_map_figure(asid_state: dict, min_sev_asid: int):
    """Every ASID's state (:func:`kit.kvm.probe.asid_states`; keys may be the JSON's strings),
    SEV-ES/SNP ASIDs (below ``min_sev_asid``) and plain-SEV ones on their own rows."""
    asids = sorted(int(a) for a in asid_state)
    state = {int(a): s for a, s in asid_state.items()}
    f = figure(title="ASIDs at the end of sections 2-3 (ASID 0 is the host)", y_range=FactorRange(*ASID_RANGES),
               x_range=(0.5, (max(asids) if asids else 1) + 0.5), height=180, width=900, x_axis_label="ASID",
               tools="hover,save", toolbar_location=TOOLBAR)
    for s, colour in ASID_STATE_COLOURS.items():
        mine = [a for a in asids if state[a] == s]
        if mine:
            f.rect(x="asid", y="range", width=0.9, height=0.8, fill_color="colour", line_color="#999999",
                   legend_label=s, source=ColumnDataSource({
                       "asid": mine, "range": [ASID_RANGES[0] if a < min_sev_asid else ASID_RANGES[1] for a in mine],
                       "state": [s] * len(mine), "colour": [colour] * len(mine)}))
    f.hover.tooltips = [("ASID", "@asid"), ("range", "@range"), ("state", "@state")]
    legend_outside(f)
    return f


def churn_figure(churn: dict):
    """Cumulative WBINVDs as VMs start one after another, one line per VM type, from the
    ``churn`` a notebook records ({type: {"ASIDs", "recycles", "wbinvd", "series"}})."""
    per_flush = {c["wbinvd"] // c["recycles"] for c in churn.values() if c.get("recycles")}
    cpus = f" ({per_flush.pop()} CPUs per flush)" if len(per_flush) == 1 else ""
    f = figure(title=f"Churn: cumulative WBINVDs{cpus} as VMs start one after another",
               height=300, width=900, x_axis_label="VM starts", y_axis_label="WBINVD executed",
               tools="pan,wheel_zoom,reset,hover,save", toolbar_location=TOOLBAR)
    for (name, c), colour in zip(churn.items(), ("#264653", "#e76f51")):
        f.step(list(range(1, len(c["series"]) + 1)), c["series"], line_width=2, color=colour, mode="after",
               legend_label=f"{name}: {c['ASIDs']} ASIDs, {c['recycles']} recycles")
    legend_outside(f)
    return f


# ------------------------------------------------------------------ race explorer
#: lane colours of a sequence diagram, thread by thread
LANE_COLOURS = ("#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#8ab17d", "#6d597a", "#457b9d", "#b5838d")
BREAK_COLOUR = "#d62828"            # the step after which the invariant is broken
SEQUENCE_LANE_WIDTH, SEQUENCE_STEP_HEIGHT = 200, 26     # pixels between two lanes, two steps
SEQUENCE_CHAR_WIDTH = 5.5                               # pixels of one character of a step's label (8pt)


def sequence_data(example, *, invariant: str = "", threads=None, current: int | None = None) -> dict:
    """The steps of a counterexample (:func:`kit.viz.traces.trace_steps`: a
    :class:`~kit.explore.Counterexample` or its JSON) as a sequence diagram's source: one point
    per step in its thread's lane (``x``: the lane's index in :func:`kit.viz.traces.thread_order`),
    in order; the last step, after which ``invariant`` is broken, marked. ``current`` (a
    dashboard stepping through the trace): the steps after it faded, the step itself outlined."""
    steps = trace_steps(example)
    lanes = {t: i for i, t in enumerate(thread_order(steps, threads))}
    last = len(steps) - 1
    data = {"x": [], "thread": [], "y": [], "n": [], "label": [], "text": [], "changed": [], "raised": [],
            "colour": [], "marker": [], "size": [], "alpha": [], "outline": [], "line_width": [], "text_colour": []}
    for i, s in enumerate(steps):
        breaks = i == last
        lane = LANE_COLOURS[lanes[s["thread"]] % len(LANE_COLOURS)]
        now = current is not None and i + 1 == current
        data["x"].append(lanes[s["thread"]])
        data["thread"].append(s["thread"])
        data["y"].append(i + 1)
        data["n"].append(i + 1)
        data["label"].append(s["step"])
        data["text"].append(s["step"] + (f"  <- breaks {invariant}" if breaks and invariant else ""))
        data["changed"].append(changed_text({**s, "raised": None}) or "nothing")
        data["raised"].append(s.get("raised") or "")
        data["colour"].append(BREAK_COLOUR if breaks else lane)
        data["marker"].append("star" if breaks else "circle")
        data["size"].append(20 if breaks else 12)
        data["alpha"].append(1.0 if current is None or i < current else 0.25)
        data["outline"].append("black" if now else lane)
        data["line_width"].append(3 if now else 1)
        data["text_colour"].append(BREAK_COLOUR if breaks else "#222222")
    return data


def sequence_title(scenario: str, scheme: str, invariant: str, steps: int) -> str:
    """Names the scenario, the scheme and the invariant, and the length of the counterexample."""
    where = f"after {steps} step{'s' if steps != 1 else ''}" if steps else "in the initial state"
    return f"{scenario} / {scheme}: '{invariant}' broken {where}"


def sequence_size(lanes: int, steps: int, label: int = 0) -> tuple[int, int]:
    """(frame width, frame height) in pixels of a sequence diagram of ``lanes`` threads and
    ``steps`` steps whose longest label has ``label`` characters (room for it right of the last
    lane, at most four lanes' worth)."""
    return (int(SEQUENCE_LANE_WIDTH * (max(lanes, 1) - 0.5 + _label_room(label))),
            SEQUENCE_STEP_HEIGHT * max(steps, 1) + SEQUENCE_STEP_HEIGHT)


def _label_room(label: int) -> float:
    """Lanes' worth of room a label of ``label`` characters takes right of its lane."""
    return min(4.0, max(0.5, (20 + SEQUENCE_CHAR_WIDTH * label) / SEQUENCE_LANE_WIDTH))


def sequence_frame(f, threads, data: dict) -> None:
    """Fit a sequence diagram to ``threads`` (its lanes, in order) and its source's ``data``:
    the lane ticks and their names, the ranges and the size. A dashboard calls it when the
    counterexample changes; the figure stays the same."""
    lanes = list(threads) or ["-"]
    n = len(data["y"])
    label = max((len(t) for t in data["text"]), default=0)
    f.xaxis.ticker.ticks = list(range(len(lanes)))
    f.xaxis.major_label_overrides = dict(enumerate(lanes))
    f.x_range.start, f.x_range.end = -0.5, len(lanes) - 1 + _label_room(label)
    f.y_range.start, f.y_range.end = max(n, 1) + 0.5, 0.5
    f.yaxis.ticker.desired_num_ticks = max(n, 1)
    f.frame_width, f.frame_height = sequence_size(len(lanes), n, label)


def sequence_figure(source: ColumnDataSource, *, threads, title: str = "counterexample"):
    """A sequence diagram: one lane per thread (columns, in ``threads`` order), the steps top to
    bottom, a grey line following the schedule from lane to lane, the breaking step a red star;
    hover shows what each step changed. ``source`` holds :func:`sequence_data`."""
    f = figure(title=title, x_range=Range1d(-0.5, 0.5), y_range=Range1d(1.5, 0.5), x_axis_location="above",
               y_axis_label="step", tools="hover,save,reset,ypan,ywheel_zoom", toolbar_location="right")
    f.line(x="x", y="y", source=source, color="#bbbbbb", line_width=1.5)
    dots = f.scatter(x="x", y="y", source=source, marker="marker", size="size", fill_color="colour",
                     line_color="outline", line_width="line_width", alpha="alpha")
    f.text(x="x", y="y", text="text", source=source, x_offset=14, text_baseline="middle",
           text_font_size="8pt", text_color="text_colour", text_alpha="alpha")
    f.hover.renderers = [dots]
    f.hover.tooltips = [("step", "@n. @thread: @label"), ("changed", "@changed"), ("raised", "@raised")]
    ticker = FixedTicker(ticks=[0])
    f.xaxis.ticker = ticker
    f.xgrid.ticker = ticker                       # the grid lines run down each lane
    f.xgrid.grid_line_color = "#999999"
    f.xgrid.grid_line_dash = "dashed"
    f.ygrid.grid_line_color = None
    f.yaxis.minor_tick_line_color = None
    f.xaxis.major_label_text_font_style = "bold"
    f.xaxis.major_label_text_font_size = "10pt"
    sequence_frame(f, threads, source.data)
    return f


def counterexample_figure(example, *, scenario: str = "", scheme: str = "", invariant: str = "", threads=None):
    """The sequence diagram of one counterexample (a :class:`~kit.explore.Counterexample` or its
    recorded JSON), titled with its scenario, scheme and invariant."""
    invariant = invariant or getattr(example, "invariant", "")
    data = sequence_data(example, invariant=invariant, threads=threads)
    return sequence_figure(ColumnDataSource(data), threads=thread_order(example, threads),
                           title=sequence_title(scenario, scheme, invariant, len(data["y"])))


HOLDS_COLOUR = "#2a9d8f"


def invariant_matrix_figure(explorations: list[dict]):
    """The invariants by scheme (:func:`kit.viz.traces.invariant_table` as a figure): one column
    per recorded exploration, one row per invariant, a cell green where it held in every
    schedule explored and red with the count of schedules that broke it."""
    labels = [exploration_label(d) for d in explorations]
    names = list(dict.fromkeys(n for d in explorations for n in invariant_names(d)))
    cells = {k: [] for k in ("x", "y", "colour", "text", "violations", "schedules", "complete")}
    for label, d in zip(labels, explorations):
        for n in names:
            inv = d["invariants"].get(n)
            if inv is None:
                continue
            v = inv["violations"]
            cells["x"].append(label)
            cells["y"].append(n)
            cells["colour"].append(BREAK_COLOUR if v else HOLDS_COLOUR)
            cells["text"].append(f"broken in {v}" if v else "ok")
            cells["violations"].append(v)
            cells["schedules"].append(d["schedules"])
            cells["complete"].append("yes" if d["complete"] else f"no ({d.get('stopped_by')})")
    scenario = ", ".join(dict.fromkeys(str(d.get("scenario")) for d in explorations))
    f = figure(title=f"{scenario}: invariants by scheme (red: broken in that many explored schedules)",
               x_range=FactorRange(*(labels or ["-"])), y_range=FactorRange(*(reversed(names or ["-"]))),
               width=max(480, 200 + 130 * len(labels)), height=90 + 32 * max(len(names), 1),
               x_axis_location="above", tools="hover,save", toolbar_location="right")
    src = ColumnDataSource(cells)
    f.rect(x="x", y="y", width=0.95, height=0.85, source=src, fill_color="colour", line_color=None, fill_alpha=0.85)
    f.text(x="x", y="y", text="text", source=src, text_align="center", text_baseline="middle",
           text_font_size="9pt", text_color="white")
    f.hover.tooltips = [("scheme", "@x"), ("invariant", "@y"), ("violations", "@violations"),
                        ("schedules explored", "@schedules"), ("search complete", "@complete")]
    f.grid.grid_line_color = None
    f.xaxis.major_label_text_font_style = "bold"
    return f


def exploration_figures(explorations: list[dict]) -> list:
    """A sequence diagram for every counterexample of recorded explorations
    (:func:`kit.viz.traces.exploration`), scheme by scheme."""
    return [counterexample_figure(c["steps"], scenario=c["scenario"] or "", scheme=c["scheme"],
                                  invariant=c["invariant"])
            for c in counterexamples(explorations)]


def result_figures(results: dict) -> list:
    """The figures of one recorded result, section by section, built by the same builders the
    notebook that recorded it uses: ``policy_table`` (:func:`rate_figure`), ``fragmentation``
    (:func:`fragmentation_figure`), ``simulations`` (:func:`simulation_figure`),
    ``residuals`` (:func:`residual_figure`), ``leave_one_out`` (:func:`loo_figure`), ``bands`` (:func:`rate_figure`), ``sweep`` (:func:`sweep_figures`), ``held_back``
    (:func:`utilisation_figure`), ``matrix`` (:func:`outcome_matrix_figure`), ``guest_matrix``
    (:func:`guest_outcome_figure`), ``asid_state`` with ``ranges`` (:func:`asid_map_figure`),
    ``churn`` (:func:`churn_figure`) and ``explorations`` (a race explorer's results:
    :func:`invariant_matrix_figure`, then :func:`exploration_figures`)."""
    if not isinstance(results, dict):
        return []
    out = []
    if results.get("policy_table"):
        out.append(rate_figure(ColumnDataSource(rate_data(results["policy_table"]))))
    if results.get("headline") or results.get("timeline"):
        out += policy_result_figures(results)       # one figure per quantity, every policy in it
    else:
        for name, sim in (results.get("fragmentation") or {}).items():
            out.append(fragmentation_figure(name, sim))
    if results.get("sweep"):
        figs = sweep_figures(results["sweep"])
        out += [row(*figs[i:i + 2]) for i in range(0, len(figs), 2)]      # two side by side
    if results.get("held_back"):
        out.append(utilisation_figure(ColumnDataSource(utilisation_data(utilisation_by(results["held_back"])))))
    for sim in results.get("simulations") or []:
        if sim.get("series"):
            out.append(simulation_figure(sim))
    if results.get("residuals"):
        out.append(residual_figure(ColumnDataSource(residual_data(results["residuals"]))))
    if results.get("leave_one_out"):
        out.append(loo_figure(results["leave_one_out"]))
    if results.get("bands"):
        out.append(rate_figure(ColumnDataSource(rate_data(results["bands"])),
                               title=f"Measured configurations: modelled (bars; grey: its band, {BAND_MEANING}), "
                                     "measured (points, +-spread)"))
    if results.get("matrix") and all("outcome" in r for r in results["matrix"]):
        out.append(outcome_matrix_figure(results["matrix"]))
    if results.get("guest_matrix"):
        out.append(guest_outcome_figure(results["guest_matrix"]))
    if results.get("asid_state") and "SEV" in (results.get("ranges") or {}):
        out.append(asid_map_figure(results["asid_state"], results["ranges"]["SEV"][0]))
    if results.get("churn"):
        out.append(churn_figure(results["churn"]))
    if results.get("explorations"):
        out.append(invariant_matrix_figure(results["explorations"]))
        out += exploration_figures(results["explorations"])
    return out


ASSUMPTION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def assumption_figure(rows: list[dict], *, title: str | None = None):
    """Fault-in rate against one assumed cost parameter, one line per configuration and policy,
    from rows of :func:`kit.sim.experiments.assumption_sweep` (the sensitivity of the model to
    a named assumption)."""
    name = rows[0]["param"]
    f = figure(title=title or f"fault-in rate vs {name} (assumed)", width=440, height=280,
               x_axis_label=name, y_axis_label="GB/s", tools="hover,save,pan,wheel_zoom,reset")
    keys = list(dict.fromkeys((r["config"], r["policy"]) for r in rows))
    for i, (cfg, pol) in enumerate(keys):
        mine = [r for r in rows if (r["config"], r["policy"]) == (cfg, pol)]
        colour = ASSUMPTION_COLOURS[i % len(ASSUMPTION_COLOURS)]
        f.line([r["value"] for r in mine], [r["fault_in_gbps"] for r in mine], legend_label=f"{cfg}, {pol}",
               color=colour, line_width=2)
        f.scatter([r["value"] for r in mine], [r["fault_in_gbps"] for r in mine], color=colour)
        if any(has_band(r.get("rate_band_gbps")) for r in mine):     # the fit's band at each value
            f.add_layout(Whisker(source=ColumnDataSource({"x": [r["value"] for r in mine],
                                                          **band_data(mine, "rate_band_gbps")}),
                                 base="x", upper="band_hi", lower="band_lo", line_color=colour))
    legend_outside(f)
    return f


# ------------------------------------------------------------------ the report's policy figures
#: colours of the parts of :attr:`kit.sim.SimResult.time_per_chunk` (kit.sim.breakdown.PARTS),
#: distinct hues for neighbouring parts
PART_COLOURS = {"zeroing": "#457b9d", "rmpupdate": "#1d3557", "pvalidate": "#a8dadc", "psmash_rmpadjust": "#6d597a",
                "exits": "#b5838d", "guest_write": "#8ecae6", "dm4k_walks": "#2a9d8f", "guest_lock_hold": "#8ab17d",
                "guest_lock_wait": "#cfe1b9", "vmm_conversion": "#e9c46a", "vmm_conversion_wait": "#f6e3a1",
                "cpa_lock_hold": "#e63946", "cpa_lock_wait": "#f4a3a8", "pgd_lock_hold": "#7b2cbf",
                "pgd_lock_wait": "#c8b6ff", "tlb_flush_wait": "#bc6c25", "tlb_flush_ipis": "#fb8500",
                "lock_handoff": "#6c757d", "core_contention": "#adb5bd", "other_cpu": "#343a40"}
FULL_WIDTH = 900


def _unit_of(runs: dict) -> str:
    sc = next(iter(runs.values())).get("scenario", {}) if runs else {}
    return "4 MiB chunk" if sc.get("workload", "lazy-accept") == "lazy-accept" else "conversion"


def time_breakdown_data(runs: dict, unsafe: set = frozenset()) -> dict:
    """Stacked-bar data: one row per policy (marked where unsafe), one column per part of
    ``time_per_chunk`` that is ever above zero, in microseconds."""
    parts = [k for k in PART_COLOURS if any((r.get("time_per_chunk") or {}).get(k, 0) > 0 for r in runs.values())]
    data = {"policy": [policy_label(p, unsafe) for p in runs]}
    for k in parts:
        data[k] = [float((r.get("time_per_chunk") or {}).get(k, 0.0)) for r in runs.values()]
    data["total"] = [float(sum((r.get("time_per_chunk") or {}).values())) for r in runs.values()]
    return data


def time_breakdown_figure(runs: dict, *, title: str | None = None, unsafe: set = frozenset()):
    """Where the time goes, in time: per policy, a bar of the microseconds one vCPU spends per
    4 MiB accepted chunk, stacked by part (:mod:`kit.sim.breakdown`), from recorded results
    ({policy: SimResult JSON} of one scenario)."""
    data = time_breakdown_data(runs, unsafe)
    parts = [k for k in data if k not in ("policy", "total")]
    sc = next(iter(runs.values())).get("scenario", {}) if runs else {}
    unit = _unit_of(runs)
    f = figure(title=title or f"Where the time goes: one vCPU's µs per {unit}, {scenario_text(sc)}",
               y_range=FactorRange(*reversed(data["policy"] or ["-"])), height=90 + 44 * max(len(data["policy"]), 2),
               width=FULL_WIDTH, x_axis_label=f"µs per {unit} (one vCPU)", y_axis_label="policy",
               x_range=Range1d(0, 1.05 * max(data["total"] or [1.0])), tools="hover,save", toolbar_location="below")
    src = ColumnDataSource(data)
    if parts:
        rs = f.hbar_stack(parts, y="policy", height=0.7, source=src, color=[PART_COLOURS[k] for k in parts],
                          line_color="white", line_width=0.5)
        f.add_layout(Legend(items=[LegendItem(label=k, renderers=[r]) for k, r in zip(parts, rs)],
                            label_text_font_size="8pt", glyph_width=12, glyph_height=10, spacing=0), "right")
    f.select_one(HoverTool).tooltips = [("policy", "@policy"), ("part", "$name"), ("µs", "@$name{0,0.0}"),
                                        ("total µs", "@total{0,0.0}")]
    f.xaxis.formatter.use_scientific = False
    f.ygrid.grid_line_color = None
    return f


def directmap_share_figure(runs: dict, *, title: str | None = None, unsafe: set = frozenset()):
    """DirectMap4k at the end of each policy's run as a percentage of host memory (0-100%,
    each bar labelled with its value), from recorded results ({policy: SimResult JSON})."""
    pols = list(runs)
    shares = [dm4k_share(r.get("directmap", {})) for r in runs.values()]
    labels = [policy_label(p, unsafe) for p in pols]
    sc = next(iter(runs.values())).get("scenario", {}) if runs else {}
    src = ColumnDataSource({"policy": labels, "share": shares, "colour": [_colour(p) for p in pols],
                            "text": [f" {v:.3g}%" for v in shares],
                            "hatch": ["x" if p in unsafe else " " for p in pols]})
    f = figure(title=title or f"Fragmentation: DirectMap4k after the run, {scenario_text(sc)}",
               y_range=FactorRange(*reversed(labels or ["-"])), x_range=Range1d(0, 115),
               height=90 + 36 * max(len(pols), 2), width=FULL_WIDTH, x_axis_label="DirectMap4k, % of host memory",
               y_axis_label="policy", tools="hover,save", toolbar_location="below")
    f.hbar(y="policy", right="share", height=0.7, source=src, fill_color="colour", line_color=None,
           hatch_pattern="hatch", hatch_color="#d62828")
    f.text(x="share", y="policy", text="text", source=src, text_baseline="middle", text_font_size="9pt")
    f.select_one(HoverTool).tooltips = [("policy", "@policy"), ("DirectMap4k % of memory", "@share{0.000}")]
    f.xaxis.ticker = FixedTicker(ticks=[0, 20, 40, 60, 80, 100])
    f.ygrid.grid_line_color = None
    return f


def timeline_data(sim: dict) -> dict:
    """One discrete-event run's series: simulated seconds, fault-in GB/s, DirectMap4k as % of
    host memory, and threads waiting for cpa_lock (mean per bin)."""
    ser = sim.get("series") or {}
    total = sum((sim.get("directmap") or {}).values()) or 1
    n = len(ser.get("t_s", []))
    return {"t_s": list(ser.get("t_s", [])), "gbps": list(ser.get("fault_in_gbps", [])),
            **scaled_band(list(ser.get("fault_in_gbps", [])), sim.get("fault_in_gbps"), sim.get("rate_band_gbps")),
            "dm4k_pct": [100.0 * v / total for v in ser.get("DirectMap4k", [0] * n)],
            "cpa_wait": list((ser.get("lock_wait_share") or {}).get("cpa_lock", [0.0] * n))}


def _series_figure(title: str, y_label: str, y_range, height: int = 260):
    return figure(title=title, height=height, width=FULL_WIDTH, x_axis_label="simulated time (s)",
                  y_axis_label=y_label, y_range=y_range, tools="pan,wheel_zoom,reset,save,hover",
                  toolbar_location="below")


def timeline_figures(runs: dict, *, unsafe: set = frozenset()) -> list:
    """Lazy acceptance over simulated time, one line per policy (recorded discrete-event
    results of one scenario): the fault-in rate (from 0, so a wobble of a few percent looks
    like one), DirectMap4k as % of host memory (0-100%), and threads spinning on cpa_lock."""
    if not runs:
        return []
    sc = scenario_text(next(iter(runs.values())).get("scenario", {}))
    data = {p: timeline_data(r) for p, r in runs.items()}
    top_rate = max([max(d["gbps"] + [v for v in d["band_hi"] if v == v], default=0.0) for d in data.values()] + [1e-9])
    top_wait = max([max(d["cpa_wait"], default=0.0) for d in data.values()])
    rate = _series_figure(f"Fault-in rate as the guests fault in: {sc} (shaded: each run's band, {BAND_MEANING})",
                          "fault-in rate (GB/s, all guests)", Range1d(0, 1.15 * top_rate))
    dm = _series_figure(f"Fragmentation as the guests fault in: DirectMap4k, {sc}", "DirectMap4k (% of host memory)",
                        Range1d(0, 105))
    figs = [rate, dm]
    wait = None
    if top_wait > 0:
        wait = _series_figure(f"cpa_lock contention as the guests fault in: {sc}", "vCPUs spinning on cpa_lock (mean)",
                              Range1d(0, 1.15 * top_wait))
        figs.append(wait)
    dashes = ("solid", "dashed", "dotted", "dotdash", "dashdot", (6, 3))
    for i, (p, d) in enumerate(data.items()):
        src = ColumnDataSource(d)
        label = policy_label(p, unsafe)
        style = dict(color=_colour(p), line_width=2.5 if p not in unsafe else 1.5, line_dash=dashes[i % len(dashes)])
        draw_band(rate, src, "t_s", colour=_colour(p), alpha=0.15)
        rate.line("t_s", "gbps", source=src, legend_label=label, **style)
        dm.line("t_s", "dm4k_pct", source=src, legend_label=label, **style)
        if wait is not None:
            wait.line("t_s", "cpa_wait", source=src, legend_label=label, **style)
    for f in figs:
        legend_outside(f)
    return figs


def conversions_figure(runs: dict, *, unsafe: set = frozenset()):
    """The conversions workload (recorded ``fragmentation``: {policy: SimResult JSON}) as one
    figure: DirectMap4k over simulated time in MiB on a log axis (the policies differ by
    orders of magnitude; a 4K-split region adds 2 MiB), one line per policy."""
    sc = next(iter(runs.values())).get("scenario", {}) if runs else {}
    steps = sc.get("steps")
    f = figure(title=f"Fragmentation over {steps} conversions: DirectMap4k, {scenario_text(sc)}",
               height=300, width=FULL_WIDTH, x_axis_label="simulated time (s)",
               y_axis_label="DirectMap4k (MiB, log scale)", y_axis_type="log",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location="below")
    for p, r in runs.items():
        ser = r.get("series") or {}
        ys = [v / KiB if v > 0 else float("nan") for v in ser.get("DirectMap4k", [])]   # kB -> MiB; none: no line
        if ys:
            f.line(list(ser.get("t_s", [])), ys, legend_label=policy_label(p, unsafe), color=_colour(p), line_width=2)
    legend_outside(f)
    return f


def policy_result_figures(results: dict) -> list:
    """The figures of a direct-map policy comparison that records ``headline`` and
    ``timeline`` (notebooks/directmap-policies.ipynb): where the time goes and the
    fragmentation at the headline configuration, the timelines, the conversions."""
    unsafe = unsafe_policies(results)
    out = []
    if results.get("headline"):
        out.append(time_breakdown_figure(results["headline"], unsafe=unsafe))
        out.append(directmap_share_figure(results["headline"], unsafe=unsafe))
    if results.get("timeline"):
        out.append(time_breakdown_figure(results["timeline"], unsafe=unsafe))
    out += timeline_figures(results.get("timeline") or {}, unsafe=unsafe)
    if results.get("fragmentation"):
        out.append(conversions_figure(results["fragmentation"], unsafe=unsafe))
    return out


# ------------------------------------------------------------------ sweep reports
def headline_vs_parameter_figure(rows: list[dict], x: str, y: str, *, label: str = "run"):
    """One headline result ``y`` against one swept parameter ``x`` over a sweep's runs (rows
    with both; a numeric ``x`` on a linear axis, sorted, anything else as categories), each
    point labelled by its run in the hover."""
    pts = [r for r in rows if r.get(x) is not None and isinstance(r.get(y), (int, float)) and not isinstance(r.get(y), bool)]
    numeric = all(isinstance(r[x], (int, float)) and not isinstance(r[x], bool) for r in pts)
    if numeric:
        pts.sort(key=lambda r: r[x])
        xs = [r[x] for r in pts]
        f = figure(title=f"{y} vs {x}", width=440, height=280, x_axis_label=x, y_axis_label=y,
                   tools="hover,save,reset", toolbar_location="below")
    else:
        xs = [str(r[x]) for r in pts]
        f = figure(title=f"{y} vs {x}", width=440, height=280, x_axis_label=x, y_axis_label=y,
                   x_range=FactorRange(*dict.fromkeys(xs)) if xs else FactorRange("-"),
                   tools="hover,save,reset", toolbar_location="below")
        f.xaxis.major_label_orientation = 0.8
    ys = [float(r[y]) for r in pts]
    k_lo, k_hi = band_keys(y)
    bands = [(r.get(k_lo), r.get(k_hi)) for r in pts]
    banded = any(has_band(b) for b in bands)
    src = ColumnDataSource({"x": xs, "y": ys, "run": [str(r.get(label, "")) for r in pts],
                            **band_data([{"b": list(b)} for b in bands], "b")})
    if numeric:
        f.line("x", "y", source=src, line_width=2, color="#264653")
    if banded:                          # a rate recorded with its band (fit, 1 sd): whiskers
        f.add_layout(Whisker(source=src, base="x", upper="band_hi", lower="band_lo", line_color="#264653"))
        f.yaxis.axis_label = f"{y} (whiskers: band, {BAND_MEANING})"
    f.scatter("x", "y", source=src, size=9, color="#e76f51")
    ys = ys + [v for b in bands if has_band(b) for v in b]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(abs(hi) * 0.05, (hi - lo) * 0.1, 1e-9)
    f.y_range = Range1d(min(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)   # from 0 when positive
    f.select_one(HoverTool).tooltips = [("run", "@run"), (x, "@x"), (y, "@y{0,0.000}")] + (
        [(f"band ({BAND_MEANING})", "@band_lo{0,0.000} - @band_hi{0,0.000}")] if banded else [])
    return f
