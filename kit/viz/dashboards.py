"""Widget dashboards: ipywidgets controls + Bokeh figures in ``jupyter_bokeh.widgets.BokehModel``.

Each dashboard builds its figures once and keeps their ``ColumnDataSource``s; every update
replaces ``source.data`` (and, for categorical axes, the range's ``factors``): figures are never
rebuilt, so the browser keeps its zoom and the widget state stays small. Each is a
``%kit dashboard NAME`` (:data:`DASHBOARDS`):

- ``host-map`` (:class:`HostMap`): RMP state and direct-map level of all host memory, one cell
  per 2M region; zoom into one region's 512 4K entries; follows a running simulation.
- ``policy-explorer`` (:class:`PolicyExplorer`): configuration controls and policies -> rate,
  where the time goes, fragmentation; measured points where the configuration was measured.
- ``guest-inspector`` (:class:`GuestInspector`): a VM's memslots, attributes, guest_memfd
  bindings, ASID and mirrors.
- ``simulation-runner`` (:class:`SimulationRunner`): the DES engine with a progress bar, live
  time series and a stop button.
- ``race-explorer`` (:class:`RaceExplorer`): a race scenario under a scheme, explored; step
  forward and back through a counterexample's sequence diagram and see the shared state (RMP
  entry, mappings, counters, locks) after each step.
"""
from __future__ import annotations

import csv
import io
import logging
import threading
import urllib.parse
import time
from html import escape
from pathlib import Path

import ipywidgets as W
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource
from jupyter_bokeh.widgets import BokehModel

from ..explore import catalog
from ..explore.params import EXPLORE_PARAMS
from ..explore.result import jsonable
from ..sim.api import simulate
from ..sim.scenario import HOST_RESERVED
from ..sim.scenario import SCENARIO_PARAMS as SP
from ..sim.scenario import is_builtin, policy_label, scenario
from ..units import BAND_MEANING, PAGES_PER_2M, GiB, Param, band_fields, format_size, parse_size, rate_text
from . import figures as F
from . import html as H
from . import state as S
from . import traces as T


_BOKEHJS = {"loaded": False}


def load_bokehjs(force: bool = False) -> None:
    """Load BokehJS into the notebook page (INLINE: no network), once per kernel."""
    if _BOKEHJS["loaded"] and not force:
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE
    output_notebook(resources=INLINE, hide_banner=True)
    _BOKEHJS["loaded"] = True


#: Widget bounds and options, all from the scenario table (:data:`kit.sim.scenario.SCENARIO_PARAMS`).
GUEST_MEM_GIB = SP["guest_mem"].in_units(GiB, "guest_mem_gib", "GiB")
HOST_MEM_GIB = SP["host_mem"].in_units(GiB, "host_mem_gib", "GiB")
POLICIES = SP["policy"].list_of("policies")


def _int_box(param: Param, value, description: str, name: str | None = None) -> W.BoundedIntText:
    """An integer box bounded by ``param`` (the constructor's value is checked, not clamped)."""
    return W.BoundedIntText(value=param.check(value, name), min=param.min, max=param.max, description=description,
                            tooltip=param.describe())


def _policy_options(extra=()) -> list:
    """(label, value) pairs: the built-ins by name, then the user's policies (objects) given."""
    names = list(SP["policy"].choices)
    return [(n, n) for n in names] + [(policy_label(p), p) for p in extra if p not in names]


def _policy_value(p):
    """A built-in policy (name, class or plain instance) as its name; a user's policy as is."""
    return p.name if not isinstance(p, str) and is_builtin(p) else p


class Dashboard:
    """Base: ``widget`` is the ipywidgets tree; displaying the dashboard displays it."""

    name = ""
    widget: W.Widget

    def _repr_mimebundle_(self, **kw):
        # jupyter_bokeh renders into a page that already has BokehJS: load it (INLINE, once
        # per kernel), and send the document as it is now, not as it was when the widget was
        # built (data pushed before the first display would otherwise be missing)
        load_bokehjs()
        self.plot.update_from_model(self.plot._model)
        return self.widget._repr_mimebundle_(**kw)

    def _status(self, text: str, error: bool = False) -> None:
        colour = "#d62828" if error else "#444"
        self.status_text, self.status_error = text, error
        self.status.value = f"<span style='color:{colour}'>{escape(text)}</span>"

    # ------------------------------------------------------------------ invalid values
    #: the controls by the parameter name an error message starts with ("guests: ...")
    def _controls(self) -> dict:
        return {}

    def _flag(self, message: str | None) -> None:
        """Outline the control an error ``message`` names (none when ``message`` is None)."""
        named = (message or "").split(":", 1)[0].strip()
        for name, w in self._controls().items():
            w.layout.border = "2px solid #d62828" if message and name == named else ""

    @property
    def problem(self) -> str | None:
        """Why the current controls cannot be run (None: they can)."""
        return self.status_text if getattr(self, "status_error", False) else None

    # ------------------------------------------------------------------ export
    def view_title(self) -> str:
        """What the current view shows, in one line (the exported section's heading)."""
        return self.name

    def view_rows(self) -> list[dict]:
        """The current view's data, one dict per row (the CSV export)."""
        return []

    def to_csv(self) -> str:
        """The current view as CSV text (a header line, then :meth:`view_rows`)."""
        rows = self.view_rows()
        cols = list(dict.fromkeys(k for r in rows for k in r))
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue()

    def section_html(self) -> str:
        """The current view as one report section: heading, status, the figures (Bokeh div and
        script; the page must load BokehJS, as a kit report does) and the table of
        :meth:`view_rows`."""
        from bokeh.embed import components
        quiet = logging.getLogger("bokeh.embed.util")     # a dashboard's Python callbacks stay behind
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            script, div = components(self.plot._model)
        finally:
            quiet.setLevel(level)
        rows = self.view_rows()
        shown = [{k: ("not measured" if v is None else v) for k, v in r.items()} for r in rows[:EXPORT_ROWS]]
        more = f", the first {EXPORT_ROWS} of {len(rows)} rows" if len(rows) > EXPORT_ROWS else ""
        link = (f"<a download='{escape(self.name)}.csv' href='data:text/csv;charset=utf-8,"
                f"{urllib.parse.quote(self.to_csv())}'>CSV</a>")
        status = getattr(self, "status_text", "")
        return (f"<section class='kit-dashboard' data-dashboard='{escape(self.name)}'>"
                f"<h2>{escape(self.view_title())}</h2>" + (f"<p>{escape(status)}</p>" if status else "")
                + div + script + (H.table(shown, caption=f"data{more}") + f"<p>{link}</p>" if rows else "")
                + "</section>")

    def page_html(self) -> str:
        """:meth:`section_html` as a self-contained page (BokehJS inline: no network)."""
        from bokeh.embed.bundle import bundle_for_objs_and_resources
        from bokeh.resources import INLINE
        res = bundle_for_objs_and_resources([self.plot._model], INLINE).scripts()
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(self.view_title())}"
                f"</title>{res}</head><body style='font-family:sans-serif'>{self.section_html()}</body></html>")

    def export(self, folder="exports", stem: str | None = None) -> dict:
        """Write the current view as an HTML report section (a page of its own) and as CSV into
        ``folder``; returns {"html": path, "csv": path}."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = stem or f"{self.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        paths = {"html": folder / f"{stem}.html", "csv": folder / f"{stem}.csv"}
        paths["html"].write_text(self.page_html(), encoding="utf-8")
        paths["csv"].write_text(self.to_csv(), encoding="utf-8")
        return paths

    def _export_button(self) -> W.Button:
        b = W.Button(description="export view", tooltip="save this view as an HTML section and CSV in exports/")

        def clicked(_):
            try:
                paths = self.export()
            except (OSError, ValueError) as e:
                self._status(f"export: {e}", error=True)
                return
            self._status(f"exported: {paths['html']} and {paths['csv']}")
        b.on_click(clicked)
        return b


#: rows of a view's table in an exported section (the CSV holds them all)
EXPORT_ROWS = 50


def fit_guest_mem_gib(guests: int, host_mem_gib: int, want: int) -> int:
    """Guest memory in GiB that ``guests`` guests fit in on a host of ``host_mem_gib`` GiB
    (:data:`kit.sim.scenario.HOST_RESERVED` kept for the host): ``want`` if they fit, else the
    largest whole GiB that does (at least the smallest allowed)."""
    room = (host_mem_gib * GiB - HOST_RESERVED) // max(guests, 1) // GiB
    return max(int(GUEST_MEM_GIB.min), min(want, room))


# ================================================================== host map
class HostMap(Dashboard):
    """RMP state and direct-map level of all host memory, one cell per 2M region.

    ``host``: a :class:`kit.Host` to show (default: a small demo host). :meth:`refresh`
    re-reads the model; :meth:`zoom` shows one region's 4K entries; :meth:`run` drives a
    workload on a fresh host and follows it live (the map is refreshed as the trace advances).
    """

    name = "host-map"

    def __init__(self, host=None, *, width: int = F.MAP_WIDTH):
        if host is None:
            from ..host import Host
            host = Host(mem="64GiB", cores=16)
        self.host = host
        self.width = width
        data = F.host_map_data(host, width)
        self.fig_rmp, self.fig_dm, self.src_rmp, self.src_dm = F.host_map_figures(data)
        self.src_region = ColumnDataSource(F.region_data(host, 0))
        self.fig_region = F.region_figure(self.src_region)
        self.region = W.BoundedIntText(value=0, min=0, max=host.rmp.nr_regions - 1, description="2M region")
        self.region.observe(lambda ch: self.zoom(ch["new"]), names="value")
        self.policy = W.Dropdown(options=_policy_options(), value=SP["policy"].default, description="policy")
        self.run_button = W.Button(description="run lazy-accept", button_style="primary")
        self.run_button.on_click(lambda _: self.run(policy=self.policy.value, background=True))
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="trace")
        self.summary = W.HTML()
        self.status = W.HTML()
        from bokeh.events import Tap
        for fig in (self.fig_rmp, self.fig_dm):       # a click on a cell zooms into its region
            fig.on_event(Tap, self._tapped)
        self.plot = BokehModel(column(row(self.fig_rmp, self.fig_dm), self.fig_region))
        self.status_text, self.status_error = "", False
        self.export_button = self._export_button()
        self.widget = W.VBox([W.HBox([self.region, self.policy, self.run_button, self.progress, self.export_button]),
                              self.plot, self.summary, self.status])
        self.refreshes = 0
        self._thread = None
        self._update_summary()

    def refresh(self, host=None) -> None:
        """Re-read the host model into the sources (the same figures)."""
        if host is not None and host is not self.host:
            self.host = host
            self.region.max = host.rmp.nr_regions - 1
        data = F.host_map_data(self.host, self.width)
        self.src_rmp.data = data["rmp"]
        self.src_dm.data = data["dm"]
        self.fig_rmp.y_range.start = self.fig_dm.y_range.start = data["rows"]
        self.zoom(self.region.value if self.region.value <= self.region.max else 0)
        self._update_summary()
        self.refreshes += 1

    def zoom(self, region: int) -> None:
        """Show the 512 4K entries of 2M region ``region``."""
        try:
            self.src_region.data = F.region_data(self.host, region)
        except ValueError as e:
            self._status(str(e), error=True)
            return
        d = S.region_detail(self.host, region)
        self.fig_region.title.text = (f"2M region {region} (pfn {d['pfn']:#x}): RMP "
                                      f"{'one 2M entry' if d['rmp_2m'] else f'{PAGES_PER_2M} 4K entries'}, direct map {d['dm_level']}")
        if self.region.value != region:
            self.region.value = region

    def _tapped(self, event) -> None:
        if event.x is None or event.y is None:
            return
        r = int(event.y) * self.width + int(event.x)
        if 0 <= int(event.x) < self.width and 0 <= r < self.host.rmp.nr_regions:
            self.zoom(r)

    def view_title(self) -> str:
        return (f"Host map: {format_size(parse_size(self.host.mem))}, {self.host.cores} cores; "
                f"2M region {self.region.value} zoomed")

    def view_rows(self) -> list[dict]:
        """Per state: 2M regions in it; then the direct map's /proc/meminfo lines (kB)."""
        s = S.summary(self.host)
        rows = [{"what": f"2M regions {k}", "value": v} for k, v in s["regions"].items()]
        return rows + [{"what": k + " kB", "value": v} for k, v in self.host.directmap.counts().items()]

    def _update_summary(self) -> None:
        s = S.summary(self.host)
        rows = [{"state": k, "2M regions": v} for k, v in s["regions"].items() if v]
        dm = {k: f"{v} kB" for k, v in self.host.directmap.counts().items()}
        self.summary.value = H.table(rows) + H.kv(dm)

    def run(self, *, policy="split-on-demand", guests: int = 2, vcpus: int = 4, guest_mem="4GiB",
            host_mem=None, host_cores=None, seed: int = 0, background: bool = False, every: float = 0.1):
        """Drive lazy acceptance of ``guests`` guests on a fresh host and follow it live:
        the map is refreshed every ``every`` of the trace. ``background``: in a thread (the
        notebook stays responsive); returns the result (or the thread)."""
        host_mem = host_mem or format_size(parse_size(self.host.mem))
        host_cores = host_cores or self.host.cores
        last = [-1.0]

        def monitor(phase, f, data):
            if phase == "trace" and (f - last[0] >= every or f >= 1.0):
                last[0] = f
                self.progress.value = f
                self.refresh(data)

        def go():
            try:
                r = simulate("lazy-accept", guests, vcpus, guest_mem, host_cores, host_mem, policy, "des",
                             seed, touched=guest_mem, monitor=monitor)
                self._status(f"{policy_label(policy)}: {rate_text(r.fault_in_gbps, r.rate_band_gbps)} "
                             f"(band: {BAND_MEANING}), host RMP faults {r.host_rmp_faults}")
                return r
            except ValueError as e:
                self._status(str(e), error=True)
            finally:
                self.run_button.disabled = False
        self.run_button.disabled = True
        if background:
            self._thread = threading.Thread(target=go, daemon=True)
            self._thread.start()
            return self._thread
        return go()


# ================================================================== policy explorer
class PolicyExplorer(Dashboard):
    """Controls for the configuration and a multi-select of policies; each change is answered
    by the analytic engine (rate, utilisation per resource, the DirectMap lines at the end),
    with the measured points of ``data/measurements.csv`` where the configuration matches.
    ``policies`` may hold a user's :class:`~kit.host.policies.DirectMapPolicy` objects beside
    the built-ins' names: they join the options and are compared like the built-ins."""

    name = "policy-explorer"

    def __init__(self, *, guests: int = SP["guests"].default, vcpus: int = SP["vcpus"].default,
                 guest_mem_gib: int | None = None, host_cores: int = SP["host_cores"].default,
                 host_mem_gib: int = HOST_MEM_GIB.default,
                 policies=("none", "presplit-4k", "invalidate-4k", "split-on-demand")):
        from ..sim.calibrate import load_measurements
        policies = [_policy_value(p) for p in POLICIES.check(policies)]
        # the default guest memory follows the guests and the host to fit (until it is set)
        self._auto_mem = guest_mem_gib is None
        if guest_mem_gib is None:
            guest_mem_gib = fit_guest_mem_gib(SP["guests"].check(guests), HOST_MEM_GIB.check(host_mem_gib),
                                              GUEST_MEM_GIB.default)
        self.measured = load_measurements()
        self.guests = _int_box(SP["guests"], guests, "guests")
        self.vcpus = _int_box(SP["vcpus"], vcpus, "vCPUs")
        self.guest_mem = _int_box(GUEST_MEM_GIB, guest_mem_gib, "guest GiB")
        self.host_cores = _int_box(SP["host_cores"], host_cores, "host cores")
        self.host_mem = _int_box(HOST_MEM_GIB, host_mem_gib, "host GiB")
        self.policies = W.SelectMultiple(options=_policy_options(policies), value=tuple(policies),
                                         description="policies", rows=6)
        self.status = W.HTML()
        self.status_text, self.status_error = "", False
        self._adjusting = False
        # a configuration given here that cannot run is refused (ValueError naming why)
        scenario(**self.config(), policy=policies[0])
        self.src_rate = ColumnDataSource(F.rate_data([]))
        self.fig_rate = F.rate_figure(self.src_rate, title="Fault-in rate (bars: model, grey: its band, "
                                                           f"{BAND_MEANING}; points: measured +- spread; hatched: UNSAFE)")
        self.fig_rate.width, self.fig_rate.height = 620, 300
        self.src_util = ColumnDataSource(F.utilisation_data({}))
        self.fig_util = F.utilisation_figure(self.src_util)
        self.fig_util.width = 620
        self.src_dm = ColumnDataSource({"label": [], "DirectMap4k": [], "DirectMap2M": [], "DirectMap1G": []})
        from bokeh.models import FactorRange
        from bokeh.plotting import figure
        self.fig_dm = figure(title="Direct map at the end (GiB)", y_range=FactorRange("-"), height=220, width=620,
                             tools="hover,save", toolbar_location=F.TOOLBAR, x_axis_label="GiB")
        self.fig_dm.hbar_stack(["DirectMap4k", "DirectMap2M", "DirectMap1G"], y="label", height=0.7,
                               source=self.src_dm, color=list(S.DM_COLOURS),
                               legend_label=["DirectMap4k", "DirectMap2M", "DirectMap1G"])
        F.legend_outside(self.fig_dm)
        self.answers = 0
        self.last_ms = 0.0
        self.results = {}
        self.rows: list[dict] = []
        self.update()                   # the first answer is in the sources before the widget exists
        self.plot = BokehModel(column(self.fig_rate, self.fig_util, self.fig_dm))
        for w in (self.guests, self.vcpus, self.guest_mem, self.host_cores, self.host_mem, self.policies):
            w.observe(self._changed, names="value")
        self.export_button = self._export_button()
        self.widget = W.VBox([W.HBox([W.VBox([self.guests, self.vcpus, self.guest_mem]),
                                      W.VBox([self.host_cores, self.host_mem, self.export_button]), self.policies]),
                              self.status, self.plot])

    def _controls(self) -> dict:
        return {"guests": self.guests, "vcpus": self.vcpus, "guest_mem": self.guest_mem,
                "host_cores": self.host_cores, "host_mem": self.host_mem, "policies": self.policies}

    def _changed(self, change) -> None:
        if self._adjusting:
            return
        note = ""
        if change.get("owner") is self.guest_mem:
            self._auto_mem = False                  # the user's value from now on
        elif change.get("owner") in (self.guests, self.host_mem) and self._auto_mem:
            fit = fit_guest_mem_gib(self.guests.value, self.host_mem.value, GUEST_MEM_GIB.default)
            if fit != self.guest_mem.value:
                self._adjusting = True
                try:
                    self.guest_mem.value = fit
                finally:
                    self._adjusting = False
                note = f"guest GiB set to {fit} so that {self.guests.value} guests fit in {self.host_mem.value} GiB; "
        self.update(note=note)

    def view_title(self) -> str:
        c = self.config()
        return (f"Policy explorer: {c['guests']} x {c['vcpus']} vCPUs x {c['guest_mem']} on "
                f"{c['host_cores']} cores / {c['host_mem']}")

    def view_rows(self) -> list[dict]:
        out = []
        for p, r in self.results.items():
            row = next((x for x in self.rows if x["policy"] == p), {})
            out.append({"policy": p, "safe": r.safe, "host_rmp_faults": r.host_rmp_faults,
                        "model_gbps": round(r.fault_in_gbps, 3), **band_fields("model_gbps", r.rate_band_gbps),
                        "measured_gbps": row.get("measured_gbps"),
                        "spread_gbps": row.get("spread"), "bottleneck": row.get("bottleneck"),
                        **{f"utilisation {k}": round(v, 4) for k, v in _grouped_util(r.utilisation).items()},
                        **{f"{k} GiB": round(r.directmap.get(k, 0) / 2**20, 3)
                           for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G")}})
        return out

    def config(self) -> dict:
        return dict(guests=self.guests.value, vcpus=self.vcpus.value, guest_mem=f"{self.guest_mem.value}GiB",
                    host_cores=self.host_cores.value, host_mem=f"{self.host_mem.value}GiB")

    def _measured_for(self, cfg: dict) -> dict:
        out = {}
        for t in self.measured:
            c = t.config
            if (c.pinning == "unpinned" and c.guests == cfg["guests"] and c.vcpus == cfg["vcpus"]
                    and c.guest_mem_gib == self.guest_mem.value and c.host_cores == cfg["host_cores"]
                    and c.host_mem_gib == self.host_mem.value):
                out[c.policy] = t
        return out

    def update(self, note: str = "") -> None:
        """Answer the current controls (analytic engine). A bad configuration changes nothing
        but the status line, which says why and that the plots show the last good one, and the
        outline of the control it names; the next good value answers again."""
        t0 = time.perf_counter()
        cfg = self.config()
        pols = list(self.policies.value)
        stale = "; the plots show the last valid configuration" if self.answers else ""
        if not pols:
            self._flag("policies: none")
            self._status("policies: select at least one" + stale, error=True)
            return
        try:
            scenario(**cfg, policy=pols[0])
        except ValueError as e:
            self._flag(str(e))
            self._status(str(e) + stale, error=True)
            return
        self._flag(None)
        results = {policy_label(p): simulate(**cfg, policy=p) for p in pols}
        meas = self._measured_for(cfg)
        label = f"{cfg['guests']}x{cfg['vcpus']}x{cfg['guest_mem']}"
        rows = [{"config": label, "policy": p, "model_gbps": r.fault_in_gbps, "model_band_gbps": r.rate_band_gbps,
                 "measured_gbps": meas[p].mean if p in meas else None,
                 "spread": meas[p].spread if p in meas else None,
                 "bottleneck": f"{r.bottleneck['resource']} ({r.bottleneck['utilisation']:.0%})",
                 "safe": r.safe}
                for p, r in results.items()]
        self.rows = rows
        data = F.rate_data(rows)
        self.fig_rate.x_range.factors = [tuple(x) for x in data["x"]]
        self.fig_rate.y_range.end = F.rate_top(data)
        self.src_rate.data = data
        util = {p: _grouped_util(r.utilisation) for p, r in results.items()}
        udata = F.utilisation_data(util)
        self.fig_util.y_range.factors = [tuple(y) for y in udata["y"]]
        self.fig_util.height = F.utilisation_height(len(udata["y"]))
        self.src_util.data = udata
        self.fig_dm.y_range.factors = list(results)
        self.src_dm.data = {"label": list(results), **{k: [r.directmap.get(k, 0) / 2**20 for r in results.values()]
                                              for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G")}}
        self.results = results
        self.answers += 1
        self.last_ms = (time.perf_counter() - t0) * 1e3
        m = f"; measured: {', '.join(meas)}" if meas else "; not a measured configuration"
        unsafe = [p for p, r in results.items() if not r.safe]
        u = (f"; UNSAFE: {', '.join(unsafe)} (host RMP faults: a host write hits a private page)" if unsafe
             else "; every policy shown is safe")
        rates = "; ".join(f"{p} {rate_text(r.fault_in_gbps, r.rate_band_gbps)}" for p, r in results.items())
        self._status(f"{note}answered in {self.last_ms:.0f} ms (analytic engine){m}{u}; "
                     f"{rates} (band: {BAND_MEANING})")


def _grouped_util(util: dict) -> dict:
    """Per-resource utilisation with the per-guest locks summed up to their kind (max)."""
    out: dict = {}
    for k, v in util.items():
        base = k.split("[")[0]
        out[base] = max(out.get(base, 0.0), v)
    return out


# ================================================================== guest inspector
class GuestInspector(Dashboard):
    """A VM's memslots and attribute ranges along the GPA axis, its guest_memfd bindings, ASID
    and mirrors. ``vms``: a VM or a list of VMs (default: a small demo SNP guest with part of
    its memory accepted). :meth:`refresh` re-reads the selected VM."""

    name = "guest-inspector"

    def __init__(self, vms=None):
        if vms is None:
            vms = _demo_vms()
        self.vms = list(vms) if isinstance(vms, (list, tuple)) else [vms]
        if not self.vms:
            raise ValueError("vms: expected at least one VM")
        self.select = W.Dropdown(options=[(f"{i}: {vm!r}", i) for i, vm in enumerate(self.vms)], value=0,
                                 description="VM")
        self.select.observe(lambda ch: self.refresh(), names="value")
        self.refresh_button = W.Button(description="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.src = ColumnDataSource(F.gpa_data(S.gpa_layout(self.vms[0])))
        self.fig = F.gpa_figure(self.src)
        self.info = W.HTML()
        self.status = W.HTML()
        self.status_text, self.status_error = "", False
        self.plot = BokehModel(self.fig)
        self.export_button = self._export_button()
        self.widget = W.VBox([W.HBox([self.select, self.refresh_button, self.export_button]), self.plot, self.info,
                              self.status])
        self.refresh()

    @property
    def vm(self):
        return self.vms[self.select.value]

    def refresh(self) -> None:
        lay = S.gpa_layout(self.vm)
        self.src.data = F.gpa_data(lay)
        F.gpa_frame(self.fig, self.src.data)
        self.fig.title.text = f"Guest physical address space of VM {self.select.value}" + (
            ": no memslots" if not lay["slots"] else f": {len(lay['slots'])} memslots")
        self.info.value = H.vm_html(self.vm)

    def view_title(self) -> str:
        return self.fig.title.text

    def view_rows(self) -> list[dict]:
        """The memslots and private ranges along the GPA axis (GiB)."""
        d = self.src.data
        return [{"row": r, "label": lab, "start_gib": a, "end_gib": b}
                for r, lab, a, b in zip(d["row"], d["label"], d["left"], d["right"])]


def _demo_vms():
    """A small host with one SNP guest that has accepted its first 1 GiB (lazy acceptance on
    the model), and an SEV guest with an encryption-context mirror (``KVM_CAP_VM_COPY_ENC_CONTEXT_FROM``;
    SNP sources are refused since the 2026 patch)."""
    from ..kvm import uapi as U
    from ..sim import trace as T
    host, kvm, gs = T.build(16 * GiB, 16, "split-on-demand", [(4, 4 * GiB)], 0)
    T.lazy_accept(host, gs, touched=[1 * GiB // T.ACCEPT_CHUNK])
    sev = kvm.create_vm(U.KVM_X86_SEV_VM)
    sev.sev_init()
    mirror = kvm.create_vm(U.KVM_X86_SEV_VM)
    mirror.enable_cap(U.KVM_CAP_VM_COPY_ENC_CONTEXT_FROM, sev)
    return [gs[0].vm, sev, mirror]


# ================================================================== simulation runner
class SimulationRunner(Dashboard):
    """The discrete-event engine with a progress bar, live time series (fault-in rate,
    DirectMap4k/2M/1G, lock waits) and a stop button. Runs in a thread so the stop button is
    heard; :meth:`start` (``wait=True`` blocks until done). ``policy`` may be a user's
    :class:`~kit.host.policies.DirectMapPolicy`: it joins the options."""

    name = "simulation-runner"

    def __init__(self, *, workload=SP["workload"].default, guests: int = SP["guests"].default, vcpus: int = 16,
                 guest_mem="32GiB", host_cores: int = 64, host_mem="128GiB", policy=SP["policy"].default,
                 seed: int = SP["seed"].default, vmm=SP["vmm"].default):
        scenario(workload, guests, vcpus, guest_mem, host_cores, host_mem, policy, "des", seed, vmm=vmm)
        policy = _policy_value(policy)
        self.workload = W.Dropdown(options=list(SP["workload"].choices), value=workload, description="workload")
        self.guests = _int_box(SP["guests"], guests, "guests")
        self.vcpus = _int_box(SP["vcpus"], vcpus, "vCPUs")
        self.guest_mem = W.Text(value=str(guest_mem), description="guest mem", tooltip=SP["guest_mem"].describe())
        self.host_cores = _int_box(SP["host_cores"], host_cores, "host cores")
        self.host_mem = W.Text(value=str(host_mem), description="host mem", tooltip=SP["host_mem"].describe())
        self.policy = W.Dropdown(options=_policy_options([policy]), value=policy, description="policy")
        self.seed = _int_box(SP["seed"], seed, "seed")
        self.vmm = W.Dropdown(options=list(SP["vmm"].choices), value=vmm, description="VMM",
                              tooltip=SP["vmm"].describe())
        self.start_button = W.Button(description="run", button_style="primary")
        self.stop_button = W.Button(description="stop", button_style="danger", disabled=True)
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="progress")
        self.status = W.HTML()
        self.src = ColumnDataSource(F.series_data({}))
        self.figs = [F.rate_series_figure(self.src), F.directmap_series_figure(self.src),
                     F.lockwait_series_figure(self.src)]
        self.plot = BokehModel(column(row(self.figs[0], self.figs[1]), self.figs[2]))
        self.status_text, self.status_error = "", False
        self.export_button = self._export_button()
        self.widget = W.VBox([W.HBox([W.VBox([self.workload, self.guests, self.vcpus, self.guest_mem]),
                                      W.VBox([self.host_cores, self.host_mem, self.policy, self.seed]),
                                      W.VBox([self.vmm])]),
                              W.HBox([self.start_button, self.stop_button, self.progress, self.export_button]),
                              self.status, self.plot])
        for w in self._controls().values():
            w.observe(self._changed, names="value")
        self._stop = threading.Event()
        self._thread = None
        self.result = None
        self.updates = 0

    def kwargs(self) -> dict:
        return dict(workload=self.workload.value, guests=self.guests.value, vcpus=self.vcpus.value,
                    guest_mem=self.guest_mem.value, host_cores=self.host_cores.value,
                    host_mem=self.host_mem.value, policy=self.policy.value, engine="des", seed=self.seed.value,
                    vmm=self.vmm.value)

    def _controls(self) -> dict:
        return {"workload": self.workload, "guests": self.guests, "vcpus": self.vcpus, "guest_mem": self.guest_mem,
                "host_cores": self.host_cores, "host_mem": self.host_mem, "policy": self.policy, "seed": self.seed,
                "vmm": self.vmm}

    def check(self) -> str | None:
        """Check the controls as a run would: an invalid one is outlined, the status says why and
        run is disabled until it is fixed. Returns the reason (None: runnable)."""
        try:
            scenario(**self.kwargs())
        except ValueError as e:
            self._flag(str(e))
            self._status(str(e), error=True)
            self.start_button.disabled = True
            return str(e)
        self._flag(None)
        if self.status_error:
            self._status("ready")
        running = self._thread is not None and self._thread.is_alive()
        self.start_button.disabled = running
        return None

    def _changed(self, change) -> None:
        if change.get("owner") in (self.guests, self.host_mem):
            self._fit_guest_mem()
        self.check()

    def _fit_guest_mem(self) -> None:
        """Guest memory made to fit when more guests or a smaller host would not (said in the
        status); a guest memory or host memory that does not parse is left for check() to name."""
        try:
            host = parse_size(self.host_mem.value, name="host_mem") // GiB
            want = parse_size(self.guest_mem.value, name="guest_mem") // GiB
        except (ValueError, TypeError):
            return
        fit = fit_guest_mem_gib(self.guests.value, host, want)
        if fit < want and fit * GiB >= SP["guest_mem"].min:
            self.guest_mem.value = f"{fit}GiB"

    def view_title(self) -> str:
        k = self.kwargs()
        return (f"Simulation runner (des): {k['workload']}, {k['guests']} x {k['vcpus']} vCPUs x {k['guest_mem']} "
                f"on {k['host_cores']} cores / {k['host_mem']}, {policy_label(k['policy'])}")

    def view_rows(self) -> list[dict]:
        """The time series shown, one row per time bin."""
        d = self.src.data
        cols = list(d)
        return [dict(zip(cols, vals)) for vals in zip(*(d[c] for c in cols))]

    def _monitor(self, phase, f, data) -> None:
        if phase == "trace":
            dm = data.directmap.counts()
            self._status(f"tracing on the semantic model: {f:.0%}; DirectMap4k {dm['DirectMap4k']} kB")
        else:
            self.src.data = F.series_data(data["series"])
            self.updates += 1
            self._status(f"timing: {f:.0%} of chunks, {data['fault_in_gbps']:.2f} GB/s so far (its band when the run ends)")

    def _progress(self, f: float) -> None:
        self.progress.value = f

    def start(self, wait: bool = False):
        """Validate the controls, then run (in a thread). A bad value changes nothing."""
        if self._thread is not None and self._thread.is_alive():
            self._status("already running", error=True)
            return None
        kw = self.kwargs()
        if self.check() is not None:
            return None
        self._stop.clear()
        self.progress.value = 0

        def go():
            try:
                r = simulate(**kw, progress=self._progress, should_stop=self._stop.is_set, monitor=self._monitor)
                self.result = r
                self.src.data = F.series_data(r.series, rate=r.fault_in_gbps, band=r.rate_band_gbps)
                self.updates += 1
                self.progress.value = 1.0
                self._status(f"{'stopped' if r.stopped else 'done'}: {rate_text(r.fault_in_gbps, r.rate_band_gbps)} "
                             f"(band: {BAND_MEANING}) over "
                             f"{r.sim_seconds:.2f} simulated s in {r.wall_seconds:.1f} s wall; "
                             f"bottleneck {r.bottleneck['resource']} ({r.bottleneck['utilisation']:.0%})")
            except Exception as e:      # shown, not lost in a thread
                self._status(f"{type(e).__name__}: {e}", error=True)
            finally:
                self.start_button.disabled = False
                self.stop_button.disabled = True
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def stop(self) -> None:
        self._stop.set()


# ================================================================== race explorer
#: the modes the dashboard runs (a replay takes a schedule: ``kit explore --mode replay``), and
#: what the bound means in each (None: no bound)
RACE_MODES = ("exhaustive", "bounded", "random")
RACE_BOUNDS = {"exhaustive": None, "bounded": EXPLORE_PARAMS["preemptions"], "random": EXPLORE_PARAMS["runs"]}


def _scheme_options(scenario: str, extra=()) -> list:
    """(label, value) pairs: the catalog's schemes for ``scenario`` by name, then the user's
    scheme classes (or instances) given."""
    names = list(catalog.schemes_for(scenario))
    return [(n, n) for n in names] + [(getattr(s, "__name__", type(s).__name__), s) for s in extra if s not in names]


class RaceExplorer(Dashboard):
    """A race scenario of :mod:`kit.explore.catalog` under a scheme: :meth:`run` explores it and
    shows the invariants; each broken one has its shortest counterexample as a sequence diagram
    (:func:`kit.viz.figures.sequence_figure`) to step through (:meth:`goto`, the back and
    forward buttons, the slider). At each step the shared state: every name of the scenario's
    ``state_view()`` (the RMP entry, the mappings, the counters, the locks) with its value
    after that step (:func:`kit.explore.catalog.state_views`) and which step last changed it.

    ``scheme`` may be a scheme class a user wrote in a cell (a subclass of a catalog scheme): it
    joins the options. ``bound``: the preemptions (bounded) or the runs (random)."""

    name = "race-explorer"

    def __init__(self, scenario: str | None = None, scheme=None, *, mode: str = "exhaustive", bound: int | None = None,
                 seed: int = 0, run: bool = True):
        scenario = scenario if scenario is not None else next(iter(catalog.SCENARIOS))
        if scenario not in catalog.SCENARIOS:
            raise ValueError(f"scenario: unknown {scenario!r}; allowed: {', '.join(catalog.SCENARIOS)}")
        options = _scheme_options(scenario, [] if scheme is None or isinstance(scheme, str) else [scheme])
        values = [v for _, v in options]
        scheme = values[0] if scheme is None else scheme
        if scheme not in values:
            what = f"{scheme!r} is not a scheme of" if scheme in catalog.SCHEMES else f"unknown {scheme!r} for"
            raise ValueError(f"scheme: {what} {scenario}; allowed: {', '.join(catalog.schemes_for(scenario))}")
        if mode not in RACE_MODES:
            raise ValueError(f"mode: unknown {mode!r}; allowed: {', '.join(RACE_MODES)}")
        bound = self._bound_of(mode, bound)
        self.scenario = W.Dropdown(options=list(catalog.SCENARIOS), value=scenario, description="scenario")
        self.scheme = W.Dropdown(options=options, value=scheme, description="scheme")
        self.mode = W.Dropdown(options=list(RACE_MODES), value=mode, description="mode")
        self.bound = W.BoundedIntText(value=bound or 0, min=0, max=10**6, description="bound",
                                      disabled=RACE_BOUNDS[mode] is None,
                                      tooltip="bounded: preemptions; random: runs")
        self.seed = _int_box(EXPLORE_PARAMS["seed"], seed, "seed")
        self.run_button = W.Button(description="run", button_style="primary")
        self.run_button.on_click(lambda _: self.run())
        self.invariant = W.Dropdown(options=[], description="broken")
        self.back_button = W.Button(description="< back")
        self.forward_button = W.Button(description="forward >")
        self.step = W.IntSlider(value=0, min=0, max=0, description="step")
        self.back_button.on_click(lambda _: self.goto(self.step.value - 1))
        self.forward_button.on_click(lambda _: self.goto(self.step.value + 1))
        self.step.observe(lambda ch: self.goto(ch["new"]), names="value")
        self.invariant.observe(lambda ch: self.show(ch["new"]) if ch["new"] and ch["new"] != self._shown else None,
                               names="value")
        self.scenario.observe(self._scenario_changed, names="value")
        self.mode.observe(self._mode_changed, names="value")
        for w in (self.scheme, self.bound, self.seed):
            w.observe(lambda _: self.check(), names="value")
        self.summary = W.HTML()
        self.state = W.HTML()
        self.status = W.HTML()
        self.status_text, self.status_error = "", False
        self.src = ColumnDataSource(F.sequence_data([]))
        self.fig = F.sequence_figure(self.src, threads=["-"], title="run the explorer to see a counterexample")
        self.plot = BokehModel(self.fig)
        self.export_button = self._export_button()
        self.widget = W.VBox([W.HBox([self.scenario, self.scheme, self.mode]),
                              W.HBox([self.bound, self.seed, self.run_button, self.export_button]), self.status,
                              self.summary,
                              W.HBox([self.invariant, self.back_button, self.forward_button, self.step]),
                              W.HBox([self.plot, self.state])])
        self.result = None
        self.example = None
        self.runs = 0
        self._steps, self._invariant, self._shown, self._states = [], "", None, None
        if run:
            self.run()

    @staticmethod
    def _bound_of(mode: str, bound):
        param = RACE_BOUNDS[mode]
        if param is None:
            if bound is not None:
                raise ValueError(f"bound: applies to modes bounded, random, not {mode}")
            return None
        return param.check(param.default if bound is None else bound, "bound")

    def _scenario_changed(self, change) -> None:
        self.scheme.options = _scheme_options(change["new"])
        self.scheme.value = self.scheme.options[0][1]

    def _mode_changed(self, change) -> None:
        param = RACE_BOUNDS[change["new"]]
        self.bound.disabled = param is None
        if param is not None:
            self.bound.value = param.default
        self.check()

    def _controls(self) -> dict:
        return {"scenario": self.scenario, "scheme": self.scheme, "mode": self.mode, "bound": self.bound,
                "seed": self.seed}

    def check(self) -> str | None:
        """Check the controls as a run would: an invalid one is outlined, the status says why and
        run is disabled until it is fixed. Returns the reason (None: runnable)."""
        try:
            self.kwargs()
        except ValueError as e:
            self._flag(str(e))
            self._status(str(e), error=True)
            self.run_button.disabled = True
            return str(e)
        self._flag(None)
        if self.status_error:
            self._status("ready: run to explore")
        self.run_button.disabled = False
        return None

    def view_title(self) -> str:
        return self.fig.title.text

    def view_rows(self) -> list[dict]:
        """The invariants of the last exploration, then the steps of the counterexample shown."""
        rows = []
        if self.result is not None:
            rows += [{"invariant": n, "schedules": v.schedules, "violations": v.violations}
                     for n, v in self.result.invariants.items()]
        rows += [{"step": i + 1, "thread": s["thread"], "what": s["step"]} for i, s in enumerate(self._steps)]
        return rows

    def kwargs(self) -> dict:
        """The controls as :func:`kit.explore.catalog.explore_named`'s arguments, checked."""
        mode = self.mode.value
        kw = dict(scenario=self.scenario.value, scheme=self.scheme.value, mode=mode)
        if RACE_BOUNDS[mode] is not None:
            kw["bound"] = self._bound_of(mode, self.bound.value)
        if mode == "random":
            kw["seed"] = self.seed.value
        return kw

    def run(self):
        """Explore with the controls' scenario, scheme, mode and bound; show the invariants and
        the first broken one's counterexample. A bad control changes nothing but the status."""
        try:
            kw = self.kwargs()
            t0 = time.perf_counter()
            label = f"exploring {kw['scenario']} under {self._scheme_label()} ({kw['mode']})"
            self._status(label + " ...")
            self.result = catalog.explore_named(**kw, progress=lambda p: self._status(
                f"{label}: {p.schedules} schedules, {p.steps} steps, {p.elapsed:.1f} s"))
        except ValueError as e:
            self._status(str(e), error=True)
            return None
        r = self.result
        self.runs += 1
        spec = catalog.SCENARIOS[kw["scenario"]]
        about = {"scenario": f"{spec.name}: {getattr(spec, 'description', '')}", "source": getattr(spec, "source", ""),
                 **{f"thread {t}": what for t, what in getattr(spec, "threads", {}).items()}}
        self.summary.value = H.kv(about) + H.table(
            [{"invariant": n, "schedules": v.schedules, "violations": v.violations,
              "shortest counterexample": f"{v.example.steps} steps" if v.example is not None else ""}
             for n, v in r.invariants.items()],
            caption=f"{r.schedules} schedules, {r.steps} steps"
                    + (f", {r.states} states" if r.states is not None else "")
                    + (", complete" if r.complete else f", incomplete ({r.stopped_by})"))
        broken = [n for n in r.violated if r.invariants[n].example is not None]
        verdict = f"{len(broken)} invariant(s) broken" if broken else "every invariant holds"
        self._status(f"{self._scheme_label()}: {verdict} ({time.perf_counter() - t0:.2f} s)")
        self._shown = None
        self.invariant.options = broken              # may select (and show) the first one
        if broken:
            if self._shown != broken[0]:
                self.show(broken[0])
            self.invariant.value = broken[0]
        else:
            self.example, self._states = None, None
            self._draw([], "", f"{kw['scenario']} / {self._scheme_label()}: every invariant holds")
        return r

    def _scheme_label(self) -> str:
        return next(label for label, v in self.scheme.options if v is self.scheme.value or v == self.scheme.value)

    def show(self, invariant: str) -> None:
        """Show the shortest counterexample of ``invariant`` from its first step."""
        if self.result is None or invariant not in self.result.invariants:
            self._status(f"invariant: no result for {invariant!r}", error=True)
            return
        self.example = self.result.example(invariant)
        self._shown = invariant
        # the whole state at each step, from the model (a trace holds only what changed)
        self._states = jsonable(catalog.state_views(self.scenario.value, self.scheme.value, self.example.schedule))
        steps = T.trace_steps(self.example)
        self._draw(steps, invariant, F.sequence_title(self.scenario.value, self._scheme_label(), invariant, len(steps)))

    def _draw(self, steps, invariant: str, title: str) -> None:
        F.sequence_frame(self.fig, T.thread_order(steps), F.sequence_data(steps, invariant=invariant))
        self.fig.title.text = title
        self._steps, self._invariant = steps, invariant
        self.step.max = len(steps)
        if self.step.value != 0:
            self.step.value = 0          # observed: goto(0)
        else:
            self.goto(0)

    def goto(self, index: int) -> None:
        """Show the state after step ``index`` (0: before the first step), clamped to the trace."""
        steps = getattr(self, "_steps", [])
        index = max(0, min(int(index), len(steps)))
        if self.step.value != index:
            self.step.value = index      # observed: comes back here
            return
        self.src.data = F.sequence_data(steps, invariant=self._invariant, current=index)
        self.back_button.disabled = index == 0
        self.forward_button.disabled = index == len(steps)
        if not steps:
            self.state.value = ""
            return
        what = "before the first step" if index == 0 else \
            f"after step {index}: {steps[index - 1]['thread']}: {steps[index - 1]['step']}"
        self.state.value = H.table(T.state_rows(steps, index, states=self._states), ["name", "value", "changed"],
                                   caption=what)


DASHBOARDS = {c.name: c for c in (HostMap, PolicyExplorer, GuestInspector, SimulationRunner, RaceExplorer)}


def dashboard(name: str, **kw) -> Dashboard:
    """The dashboard called ``name`` (see :data:`DASHBOARDS`)."""
    if name not in DASHBOARDS:
        raise ValueError(f"name: unknown dashboard {name!r}; allowed: {', '.join(DASHBOARDS)}")
    return DASHBOARDS[name](**kw)
