"""What the dashboards and reports show: the colours of each state, and a VM's GPA layout.

The host views (region states, region detail, summary, RMP runs) are computed in
:mod:`kit.host.views` and re-exported here under their old names:

- :func:`region_states`: one state code per 2M region of host memory (RMP form and owner);
- :func:`region_detail`: the 512 4K entries of one region (RMP state, owner, direct-map present);
- :func:`rmp_ranges`: runs of identical RMP entries over a pfn range (:class:`RmpRanges`);
- :func:`gpa_layout`: a VM's memslots and attribute ranges along the GPA axis.
"""
from __future__ import annotations

from ..host.directmap import LVL_1G, LVL_2M, LVL_4K  # noqa: F401  (old names)
from ..host.memory import FIRMWARE, FREE, GUEST, KERNEL, LEAKED, MIXED  # noqa: F401
from ..host.rmp import F_2M, F_ASSIGNED, F_DETAIL, F_LINEAR, F_VALIDATED  # noqa: F401
from ..host.views import (DM_LEVELS, PAGE_STATES, STATES, S_FIRMWARE, S_FREE, S_KERNEL,  # noqa: F401
                          S_LEAKED, S_MIXED, S_PRIV_2M, S_PRIV_4K, S_SHARED_GUEST, RmpRanges, grid,
                          region_detail, region_states, rmp_ranges, summary)
from ..units import PAGES_PER_2M  # noqa: F401

# colours in the order of the codes of kit.host.views
STATE_COLOURS = ("#f0f0f0", "#9e9e9e", "#8ecae6", "#d62828", "#f77f00", "#7b2cbf", "#2a9d8f", "#000000")
DM_COLOURS = ("#e76f51", "#e9c46a", "#264653")
PAGE_COLOURS = ("#8ecae6", "#f77f00", "#d62828", "#2a9d8f")


def gpa_layout(vm) -> dict:
    """A VM's memslots and memory-attribute ranges along the GPA axis (in GFNs)."""
    slots = [{"id": s.id, "as_id": s.as_id, "base_gfn": s.base_gfn, "npages": s.npages,
              "flags": s.flags, "gmem_ino": s.gmem.ino if s.gmem is not None else None,
              "gmem_pgoff": s.gmem_pgoff, "gmem_only": s.gmem_only,
              "userspace_addr": s.userspace_addr}
             for s in sorted(vm.memslots.values(), key=lambda s: (s.as_id, s.base_gfn))]
    a = vm.attributes
    attrs = [{"start": int(s), "end": int(e), "value": int(v)}
             for s, e, v in zip(a.starts, a.ends, a.values) if v]
    files = sorted({id(s.gmem): s.gmem for s in vm.memslots.values() if s.gmem is not None}.values(),
                   key=lambda f: f.ino)
    gmem = [{"ino": f.ino, "size": f.size, "flags": f.flags,
             "bindings": [{"pgoff": b0, "end": b1, "slot": sl.id} for b0, b1, sl in f.bindings],
             "allocated_pages": int(sum(int(e) - int(s) for s, e, v in
                                        zip(f.allocated.starts, f.allocated.ends, f.allocated.values) if v))}
            for f in files]
    return {"slots": slots, "attributes": attrs, "gmem": gmem, "asid": vm.asid,
            "mirror_of": repr(vm.mirror_of) if vm.mirror_of is not None else None,
            "mirrors": len(vm.mirrors)}
