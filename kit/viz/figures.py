"""Bokeh figure builders: data in, figure out (no widgets, no kernel).

Each builder takes a ``ColumnDataSource`` (or data to make one) and returns the figure; the
``*_data`` functions compute what goes into the sources from the model or from results, so a
dashboard can keep its figures and only replace ``source.data``. Reports use the same builders
with their final data.
"""
from __future__ import annotations

import numpy as np
from bokeh.models import (ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem,
                          LinearColorMapper, Range1d, Whisker)
from bokeh.plotting import figure

from . import state as S

POLICY_COLOURS = {"none": "#6c757d", "invalidate-4k": "#e76f51", "invalidate-4k-flush": "#f4a261",
                  "presplit-4k": "#2a9d8f", "split-on-demand": "#264653",
                  "split-on-demand-collapse": "#8ab17d"}
RESOURCE_COLOURS = {"cores": "#264653", "membw": "#2a9d8f", "cpa_lock": "#e76f51", "pgd_lock": "#f4a261",
                    "vm_lock": "#e9c46a", "guest_lock": "#8ab17d"}
MAP_WIDTH = 512          # 2M regions per row of the host map (one row = 1 GiB)


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
                   tools="pan,wheel_zoom,box_zoom,reset,tap,save", toolbar_location="above",
                   x_axis_label="2M region in row", y_axis_label="GiB")
        f.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=mapper)
        # legend: one invisible square per state so colours are named
        items = []
        for i, (n, c) in enumerate(zip(names, palette)):
            r = f.scatter([0], [0], marker="square", color=c, size=0, visible=True)
            items.append(LegendItem(label=n, renderers=[r]))
        f.add_layout(Legend(items=items, location="top_left", label_text_font_size="8pt",
                            glyph_width=10, glyph_height=10, spacing=0), "right")
        figs.append(f)
    figs[1].x_range, figs[1].y_range = figs[0].x_range, figs[0].y_range
    return figs[0], figs[1], src_rmp, src_dm


def region_data(host, region: int) -> dict:
    """The 512 4K entries of one 2M region as 16 rows of 32 cells."""
    d = S.region_detail(host, region)
    idx = np.arange(512)
    from ..host.memory import OWNER_NAMES
    return {"x": (idx % 32).tolist(), "y": (idx // 32).tolist(),
            "colour": [S.PAGE_COLOURS[s] for s in d["state"]],
            "state": [S.PAGE_STATES[s] for s in d["state"]],
            "alpha": np.where(d["present"], 1.0, 0.35).tolist(),
            "present": ["present" if p else "not present" for p in d["present"]],
            "owner": [OWNER_NAMES.get(int(o), "?") for o in d["owner"]],
            "pfn": [f"{d['pfn'] + i:#x}" for i in idx],
            "asid": d["asid"].astype(int).tolist(), "gpa": [f"{int(g):#x}" for g in d["gpa"]]}


def region_figure(source: ColumnDataSource, title: str = "one 2M region: 512 4K entries"):
    f = figure(title=title, height=260, width=560, x_range=(-0.5, 31.5), y_range=(15.5, -0.5),
               tools="hover,save", toolbar_location="above")
    f.rect(x="x", y="y", width=0.92, height=0.92, source=source, fill_color="colour",
           fill_alpha="alpha", line_color=None)
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
            "bottleneck": [str(r.get("bottleneck", "")) for r in rows]}


def rate_figure(source: ColumnDataSource, title: str = "Guest memory fault-in rate: modelled (bars), measured (points, +-spread)"):
    factors = list(dict.fromkeys(tuple(x) for x in source.data["x"]))
    f = figure(title=title, x_range=FactorRange(*factors), y_range=Range1d(0, rate_top(source.data)),
               height=360, width=900, y_axis_label="GB/s", tools="hover,save,reset,xpan", toolbar_location="above")
    f.vbar(x="x", top="model", width=0.8, source=source, fill_color="colour", line_color=None, legend_label="modelled")
    f.scatter(x="x", y="measured", source=source, size=8, color="black", legend_label="measured")
    f.add_layout(Whisker(source=source, base="x", upper="upper", lower="lower", line_color="black"))
    f.select_one(HoverTool).tooltips = [("", "@x"), ("model GB/s", "@model{0.00}"),
                                        ("measured GB/s", "@measured{0.00}"), ("bottleneck", "@bottleneck")]
    f.xaxis.major_label_orientation = 1.0
    legend_outside(f)
    return f


def rate_top(data: dict) -> float:
    """The rate axis' top: above every bar and every error bar."""
    vals = [v for v in list(data.get("model", [])) + list(data.get("upper", [])) if v == v]
    return 1.1 * max(vals) if vals else 1.0


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
               tools="hover,save", toolbar_location="above")
    f.hbar(y="y", right="utilisation", height=0.8, source=source, fill_color="colour", line_color=None)
    f.select_one(HoverTool).tooltips = [("", "@y"), ("utilisation", "@utilisation{0.000}")]
    f.ygrid.grid_line_color = None
    return f


# ------------------------------------------------------------------ time series
SERIES_COLS = ("t_s", "fault_in_gbps", "DirectMap4k", "DirectMap2M", "DirectMap1G",
               "wait_cpa_lock", "wait_pgd_lock", "wait_vm_lock", "wait_guest_lock")


def series_data(series: dict) -> dict:
    """Flatten a result's ``series`` (DES engine) into equal-length columns (GiB for DirectMap)."""
    if not series:
        return {c: [] for c in SERIES_COLS}
    n = len(series["t_s"])
    out = {"t_s": list(series["t_s"]), "fault_in_gbps": list(series["fault_in_gbps"])}
    for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G"):
        out[k] = [v / 2**20 for v in series.get(k, [0] * n)]
    for k in ("cpa_lock", "pgd_lock", "vm_lock", "guest_lock"):
        out[f"wait_{k}"] = list(series.get("lock_wait_share", {}).get(k, [0.0] * n))
    return out


def rate_series_figure(source: ColumnDataSource, title: str = "Fault-in rate over simulated time"):
    f = figure(title=title, height=240, width=440, x_axis_label="simulated s", y_axis_label="GB/s",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location="above")
    f.line("t_s", "fault_in_gbps", source=source, line_width=2, color="#264653")
    return f


def directmap_series_figure(source: ColumnDataSource, title: str = "Direct map (/proc/meminfo) over time"):
    f = figure(title=title, height=240, width=440, x_axis_label="simulated s", y_axis_label="GiB",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location="above")
    for k, c in zip(("DirectMap4k", "DirectMap2M", "DirectMap1G"), S.DM_COLOURS):
        f.line("t_s", k, source=source, line_width=2, color=c, legend_label=k)
    legend_outside(f)
    return f


def lockwait_series_figure(source: ColumnDataSource, title: str = "Lock waits (waiting threads, mean per bin)"):
    f = figure(title=title, height=240, width=440, x_axis_label="simulated s", y_axis_label="threads waiting",
               tools="pan,wheel_zoom,reset,save,hover", toolbar_location="above")
    for k, c in zip(("cpa_lock", "pgd_lock", "vm_lock", "guest_lock"),
                    ("#e76f51", "#f4a261", "#e9c46a", "#8ab17d")):
        f.line("t_s", f"wait_{k}", source=source, line_width=2, color=c, legend_label=k)
    legend_outside(f)
    return f


# ------------------------------------------------------------------ guest
def gpa_data(layout: dict) -> dict:
    """Quads along the GPA axis (GiB): memslots (row 'memslots') and private ranges (row 'private')."""
    left, right, row, colour, label = [], [], [], [], []
    for s in layout["slots"]:
        left.append(s["base_gfn"] / 2**18)
        right.append((s["base_gfn"] + s["npages"]) / 2**18)
        row.append("memslots")
        colour.append("#2a9d8f" if s["gmem_ino"] is not None else "#8ecae6")
        label.append(f"slot {s['id']}" + (f" gmem ino {s['gmem_ino']}" if s["gmem_ino"] is not None else ""))
    for a in layout["attributes"]:
        left.append(a["start"] / 2**18)
        right.append(a["end"] / 2**18)
        row.append("private")
        colour.append("#d62828")
        label.append(f"PRIVATE {a['start'] << 12:#x}-{a['end'] << 12:#x}")
    return {"left": left, "right": right, "row": row, "colour": colour, "label": label}


def gpa_figure(source: ColumnDataSource, title: str = "Guest physical address space"):
    f = figure(title=title, height=200, width=900, y_range=FactorRange("private", "memslots"),
               x_axis_label="GPA (GiB)", tools="pan,xwheel_zoom,reset,hover,save", toolbar_location="above")
    f.hbar(y="row", left="left", right="right", height=0.7, source=source, fill_color="colour", line_color="black")
    f.select_one(HoverTool).tooltips = [("", "@label")]
    return f


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
