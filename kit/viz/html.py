"""Rich display of the model's objects in a notebook: small, self-contained, script-free HTML
tables with every piece of text escaped. The model classes' ``_repr_html_`` call these."""
from __future__ import annotations

from html import escape

import numpy as np

from ..host.views import summary
from ..kvm import uapi as U
from ..units import BAND_MEANING, NO_BAND, NO_BAND_CELL, PAGE_SHIFT, band_keys, format_size
from .narrative import BAND_KEYS, with_band_columns

#: the endings of band columns' names (:func:`kit.units.band_keys`)
BAND_SUFFIX_ENDS = ("_low", "_high", " band low", " band high")
from .state import gpa_layout

STYLE = ("<style>.kit-t{border-collapse:collapse;font:12px monospace}"
         ".kit-t th,.kit-t td{padding:1px 6px;border-bottom:1px solid #ddd;text-align:left}"
         ".kit-t caption{font-weight:bold;text-align:left}</style>")


def table(rows: list[dict], cols: list[str] | None = None, caption: str = "") -> str:
    """An escaped HTML table of ``rows`` (dicts)."""
    cols = cols or (list(rows[0]) if rows else [])
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table class='kit-t'>{cap}<tr>{head}</tr>{body}</table>"


def rate_columns(cols) -> list[str]:
    """``cols`` with each rate column (:data:`kit.viz.narrative.BAND_KEYS`) followed by its
    band's low and high columns (:func:`kit.units.band_keys`)."""
    out = []
    for c in cols:
        out.append(c)
        if c in BAND_KEYS:
            out += list(band_keys(c))
    return out


def band_caption(caption: str = "") -> str:
    """A caption that says once what the table's bands are."""
    what = f"band: {BAND_MEANING}; {NO_BAND_CELL}: {NO_BAND.split(': ', 1)[1]}"
    return f"{caption} ({what})" if caption else what


def band_column(name: str, cols) -> bool:
    """Whether column ``name`` is the band's low or high of another column of ``cols``."""
    return any(name.endswith(e) and name[:-len(e)] in cols for e in BAND_SUFFIX_ENDS)


def rate_table(rows: list[dict], cols: list[str], caption: str = "") -> str:
    """:func:`table` of recorded rows whose modelled rates (``model_gbps``, ``fault_in_gbps``)
    each carry their band's low and high in the next two columns (``no band`` where the run had
    none), the caption saying what a band is."""
    data = [{k: (NO_BAND_CELL if v is None and k.endswith(BAND_SUFFIX_ENDS) else v)
             for k, v in with_band_columns(r).items()} for r in rows]
    return table(data, rate_columns(cols), caption=band_caption(caption))


def kv(pairs: dict, caption: str = "") -> str:
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_fmt(v))}</td></tr>" for k, v in pairs.items())
    return f"<table class='kit-t'>{cap}{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def host_html(host) -> str:
    s = summary(host)
    info = {"memory": format_size(host.mem), "cores": host.cores,
            "direct-map policy": host.directmap_policy.name,
            "host fault policy": host.host_fault_policy.name,
            "SNP": host.snp, "seed": host.seed,
            **{k: f"{v} kB" for k, v in host.directmap.counts().items()},
            "host RMP faults": len(host.faults), "leaked pages": host.snp_nr_leaked_pages,
            "model state": format_size(host.nbytes)}
    regions = [{"state": k, "2M regions": v} for k, v in s["regions"].items() if v]
    return STYLE + kv(info, "Host") + table(regions, caption="2M regions by RMP state")


def memslot_html(slot) -> str:
    return STYLE + table([_slot_row(slot)], caption="memslot")


def _slot_row(s) -> dict:
    return {"id": s.id, "as_id": s.as_id, "flags": f"{s.flags:#x}",
            "GPA": f"{s.base_gfn << PAGE_SHIFT:#x}-{(s.base_gfn + s.npages) << PAGE_SHIFT:#x}",
            "size": format_size(s.npages << PAGE_SHIFT),
            "guest_memfd": f"ino {s.gmem.ino} @ page {s.gmem_pgoff}" if s.gmem is not None else "",
            "gmem only": s.gmem_only, "hva": f"{s.userspace_addr:#x}"}


def vm_html(vm) -> str:
    lay = gpa_layout(vm)
    info = {"type": U.VM_TYPE_NAMES.get(vm.type, vm.type), "ASID": vm.asid or "",
            "mirror of": lay["mirror_of"] or "", "mirrors": lay["mirrors"],
            "vCPUs": len(vm.vcpus), "attribute owner": vm.attribute_owner, "#NPF policy": vm.npf_policy,
            "dead": vm.dead}
    slots = [_slot_row(s) for s in sorted(vm.memslots.values(), key=lambda s: (s.as_id, s.base_gfn))]
    attrs = [{"GPA": f"{a['start'] << PAGE_SHIFT:#x}-{a['end'] << PAGE_SHIFT:#x}",
              "size": format_size((a['end'] - a['start']) << PAGE_SHIFT),
              "attributes": "PRIVATE" if a["value"] & U.KVM_MEMORY_ATTRIBUTE_PRIVATE else f"{a['value']:#x}"}
             for a in lay["attributes"][:100]]
    gm = [{"ino": g["ino"], "size": format_size(g["size"]), "flags": f"{g['flags']:#x}",
           "bindings": ", ".join(f"pages {b['pgoff']}-{b['end']} -> slot {b['slot']}" for b in g["bindings"]),
           "allocated": format_size(g["allocated_pages"] << PAGE_SHIFT)} for g in lay["gmem"]]
    out = STYLE + kv(info, "VM")
    out += table(slots, caption="memslots") if slots else "<p>no memslots</p>"
    out += table(attrs, caption="memory attributes (non-zero ranges)") if attrs else "<p>all memory shared</p>"
    if gm:
        out += table(gm, caption="guest_memfd files")
    return out


def rmp_ranges_html(rr) -> str:
    rows = [{"pfn": f"{r['start']:#x}", "pages": r["npages"], "assigned": r["assigned"],
             "page size": r["pagesize"], "validated": r["validated"], "ASID": r["asid"],
             "GPA": f"{r['gpa']:#x}" if r["assigned"] else ""} for r in rr.runs]
    return STYLE + table(rows, caption=f"RMP entries, pfn {rr.pfn:#x} + {rr.npages} pages: {len(rows)} runs")


def result_html(res) -> str:
    out = STYLE + kv(res.summary(), "Simulation result")
    util = [{"resource": k, "utilisation": f"{v:.1%}"} for k, v in sorted(res.utilisation.items(), key=lambda kv: -kv[1])]
    total = sum(res.time_per_chunk.values()) or 1.0
    parts = [{"part": k, f"µs per {res.unit}": f"{v:,.1f}", "share": f"{v / total:.1%}"}
             for k, v in sorted(res.time_per_chunk.items(), key=lambda kv: -kv[1]) if v > 0]
    return (out + table(util, caption="utilisation of each resource (busy share of simulated time)")
            + table(parts, caption=f"where the time goes: one vCPU's time per {res.unit}"))


# ------------------------------------------------------------------ tables for people (reports)
#: first characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: what a cell with no value says
NOT_MEASURED = "not measured"
KB_PER_GIB = 1 << 20            # the DirectMap lines of /proc/meminfo are in kB

#: known result keys: (header with its unit, how a value is written)
COLUMNS = {
    "config": ("configuration", None), "policy": ("policy", None),
    "model_gbps": ("model (GB/s)", "{:,.2f}"),
    "model_gbps_low": (f"model band low (GB/s, {BAND_MEANING})", "band"),
    "model_gbps_high": (f"model band high (GB/s, {BAND_MEANING})", "band"),
    "measured_gbps": ("measured (GB/s)", "{:,.2f}"),
    "spread": ("spread ± (GB/s)", "{:,.2f}"), "error_pct": ("error (%)", "{:+.1f}"),
    "within": ("within spread", None), "bottleneck": ("bottleneck (utilisation)", None),
    "splits": ("direct-map splits (whole run)", "{:,}"), "cpa_lock": ("cpa_lock acquisitions (whole run)", "{:,}"),
    "host_rmp_faults": ("host RMP faults", "{:,}"), "sim_seconds": ("simulated time (s)", "{:,.3f}"),
    "fault_in_gbps": ("fault-in (GB/s)", "{:,.2f}"),
    "fault_in_gbps_low": (f"fault-in band low (GB/s, {BAND_MEANING})", "band"),
    "fault_in_gbps_high": (f"fault-in band high (GB/s, {BAND_MEANING})", "band"),
    "safe": ("safe", None),
    "DirectMap4k": ("DirectMap4k (GiB)", "gib"), "DirectMap2M": ("DirectMap2M (GiB)", "gib"),
    "DirectMap1G": ("DirectMap1G (GiB)", "gib"), "vcpus": ("vCPUs per guest", "{:,}"),
    "guests": ("guests", "{:,}"), "host_cores": ("host cores", "{:,}"),
}


def cell_text(v, fmt=None) -> str:
    """A value as a person reads it: ``not measured`` for none, yes/no, grouped digits,
    kB -> GiB where ``fmt`` says ``gib``; a band's low or high (``fmt`` ``band``) with two
    decimals, ``no band`` for none (:data:`kit.units.NO_BAND`)."""
    if fmt == "band":
        if v is None or (isinstance(v, float) and v != v):
            return NO_BAND_CELL
        fmt = "{:,.2f}"
    if v is None or (isinstance(v, float) and v != v):
        return NOT_MEASURED
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if fmt == "gib" and isinstance(v, (int, float, np.integer, np.floating)):
        return f"{v / KB_PER_GIB:,.3f}"
    if fmt and isinstance(v, (int, float, np.integer, np.floating)):
        try:
            return fmt.format(v)
        except (ValueError, TypeError):
            return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{v:,.4g}"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return str(v)


def csv_cell(v) -> str:
    """A CSV cell a spreadsheet shows as it is (a leading ``'`` before a formula start)."""
    s = "" if v is None else str(v)
    return "'" + s if s.startswith(FORMULA_START) else s


def csv_text(rows: list[dict], cols: list[str], headers: list[str] | None = None) -> str:
    """``rows`` as RFC 4180 CSV (CRLF), raw values (empty for none), headers guarded too."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([csv_cell(h) for h in (headers or cols)])
    for r in rows:
        w.writerow([csv_cell(r.get(c)) for c in cols])
    return buf.getvalue()


def csv_link(rows: list[dict], cols: list[str], name: str, headers: list[str] | None = None) -> str:
    """A link that downloads ``rows`` as ``name`` (a ``data:`` URI: no server, no network)."""
    from urllib.parse import quote
    uri = "data:text/csv;charset=utf-8," + quote(csv_text(rows, cols, headers))
    return f"<a class='kit-csv' download='{escape(name)}' href='{uri}'>download {escape(name)}</a>"


def report_table(rows: list[dict], cols: list[str] | None = None, *, caption: str = "", csv_name: str = "",
                 unsafe=frozenset(), headers: dict | None = None, formats: dict | None = None) -> str:
    """A table for a report: headers with units (:data:`COLUMNS`, or ``headers``), values
    written by :func:`cell_text`, numbers right-aligned, rows of ``unsafe`` policies marked,
    and (``csv_name``) a CSV download of the raw values beside it."""
    if not cols:
        seen = list(dict.fromkeys(k for r in rows for k in r))
        order = list(COLUMNS)                   # known columns in a reading order, the rest after
        cols = sorted(seen, key=lambda c: (order.index(c) if c in order else len(order), seen.index(c)))
    heads = [(headers or {}).get(c) or COLUMNS.get(c, (c, None))[0] for c in cols]
    fmts = {c: (formats or {}).get(c, COLUMNS.get(c, (None, None))[1] or ("band" if band_column(c, cols) else None))
            for c in cols}
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    body = []
    for r in rows:
        bad = r.get("policy") in unsafe
        tds = []
        for c in cols:
            v = r.get(c)
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            text = cell_text(v, fmts[c])
            if c == "policy" and bad:
                text += " (UNSAFE)"
            tds.append(f"<td class='{'num' if num else 'txt'}'>{escape(text)}</td>")
        body.append(f"<tr{' class=unsafe' if bad else ''}>" + "".join(tds) + "</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    link = f"<div class='kit-dl'>{csv_link(rows, cols, csv_name, heads)}</div>" if csv_name else ""
    return f"<div class='kit-table'><table class='kit-t kit-r'>{cap}<tr>{head}</tr>{''.join(body)}</table>{link}</div>"
