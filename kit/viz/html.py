"""Rich display of the model's objects in a notebook: small, self-contained, script-free HTML
tables with every piece of text escaped. The model classes' ``_repr_html_`` call these."""
from __future__ import annotations

from html import escape

import numpy as np

from ..host.views import summary
from ..kvm import uapi as U
from ..units import PAGE_SHIFT, format_size
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
