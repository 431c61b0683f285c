"""The host's sizes and counts, each one :class:`~kit.units.Param` with its documented bound.

:class:`~kit.host.host.Host` checks ``mem`` and ``cores`` through these objects; the scenario
table (:data:`kit.sim.scenario.SCENARIO_PARAMS`) derives ``host_mem`` and ``host_cores`` from
them, so the host, the simulator, the notebooks, the dashboards and the CLI share one bound.

- ``mem`` up to 64 TiB: the x86-64 direct map with 4-level paging spans 64 TB
  (Documentation/arch/x86/x86_64/mm.rst, "direct mapping of all physical memory";
  ``MAX_PHYSMEM_BITS`` 46, arch/x86/include/asm/sparsemem.h). That is more than five times the
  largest two-socket SEV-SNP host (2 x 6 TB), and the model's state for it is about 320 MiB
  (a few bytes per 2M region), so a 24 GiB machine holds it comfortably. Larger hosts need
  5-level paging and a coarser model; they are refused.
- ``cores`` up to 8192: the most CPUs an x86-64 kernel can be built for
  (``NR_CPUS_RANGE_END``, arch/x86/Kconfig). The model keeps cores as a count, so any count
  costs the same.
- ``seed``, ``tlb_single_page_flush_ceiling``, ``overlap_retries``: the width of the value
  where it comes from (a 64-bit seed word, the kernel tunable's unsigned long, a retry
  counter); none of them sizes anything in the model.
- ``count`` of a 4K allocation (:meth:`~kit.host.memory.PhysicalMemory.alloc`): what one
  call's result and its 4K detail cost.
- ``limit`` of :meth:`~kit.host.host.Host.rmp_ranges`: the rows of a display.

:func:`bounds_table` lists them (docs/host-model.md, "Bounds", is generated from it; a test
keeps the two equal).
"""
from __future__ import annotations

from ..units import PAGE_2M, TiB, Param, format_size

HOST_MEM = Param(
    "mem", "size", min=PAGE_2M, max=64 * TiB, multiple=PAGE_2M, unit="bytes", default="1.5TiB",
    help="host memory",
    why="the 4-level-paging direct map (Documentation/arch/x86/x86_64/mm.rst)")

HOST_CORES = Param(
    "cores", "int", min=1, max=8192, unit="CPUs", default=512,
    help="online host CPUs (each global TLB flush interrupts all of them)",
    why="NR_CPUS_RANGE_END, the most CPUs an x86-64 kernel supports (arch/x86/Kconfig)")

HOST_SEED = Param(
    "seed", "int", min=0, max=2**64 - 1, default=0,
    help="seed of the host's random choices (frame placement)",
    why="one unsigned 64-bit word (numpy's SeedSequence takes it whole)")

TLB_FLUSH_CEILING = Param(
    "tlb_single_page_flush_ceiling", "int", min=0, max=2**64 - 1, unit="pages", default=33,
    help="cpa_flush flushes everything above this many pages, else page by page",
    why="an unsigned long in the kernel (arch/x86/mm/tlb.c), set through debugfs")

OVERLAP_RETRIES = Param(
    "overlap_retries", "int", min=0, max=2**31 - 1, unit="retries",
    help="give up a FAIL_OVERLAP RMPUPDATE after this many retries (None: the kernel's unbounded retry)",
    why="a retry counter (an int in the bounded retry of older trees); the model does not run "
        "the retries one by one, so any count costs the same")

ALLOC_4K_PAGES = Param(
    "count", "int", min=1, max=1 << 24, unit="pages",
    help="4K pages one PhysicalMemory.alloc call hands out",
    why="the call returns their pfns (8 bytes each) and gives each 2M region it breaks 512 bytes "
        "of 4K owners: 16 Mi pages (64 GiB) is about 150 MiB")

RMP_RANGES_LIMIT = Param(
    "limit", "int", min=1, max=1 << 16, unit="runs", default=200,
    help="runs of RMP entries listed by Host.rmp_ranges",
    why="a list for a display: more rows are not read, and each run is a dict of about 0.5 KiB")


#: The host's bounded parameters, in the order docs/host-model.md lists them.
HOST_PARAMS = (HOST_MEM, HOST_CORES, HOST_SEED, TLB_FLUSH_CEILING, OVERLAP_RETRIES, ALLOC_4K_PAGES,
               RMP_RANGES_LIMIT)


def bounds_table(params=HOST_PARAMS) -> list[dict]:
    """One row per bounded parameter (name, what it is, min, max, unit, why) for docs and
    reports."""
    rows = []
    for p in params:
        fmt = format_size if p.kind == "size" else str
        rows.append({"name": p.name, "help": p.help, "min": fmt(p.min), "max": fmt(p.max), "unit": p.unit,
                     "why": p.why})
    return rows


def bounds_markdown(params=HOST_PARAMS) -> list[str]:
    """:func:`bounds_table` as the lines of a markdown table (docs/host-model.md, "Bounds")."""
    return ["| parameter | what | min | max | unit | why the maximum |", "|---|---|---|---|---|---|",
            *(f"| `{r['name']}` | {r['help']} | {r['min']} | {r['max']} | {r['unit']} | {r['why']} |"
              for r in bounds_table(params))]
