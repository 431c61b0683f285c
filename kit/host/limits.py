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
"""
from __future__ import annotations

from ..units import PAGE_2M, TiB, Param

HOST_MEM = Param(
    "mem", "size", min=PAGE_2M, max=64 * TiB, multiple=PAGE_2M, unit="bytes", default="1.5TiB",
    help="host memory",
    why="the 4-level-paging direct map (Documentation/arch/x86/x86_64/mm.rst)")

HOST_CORES = Param(
    "cores", "int", min=1, max=8192, unit="CPUs", default=512,
    help="online host CPUs (each global TLB flush interrupts all of them)",
    why="NR_CPUS_RANGE_END, the most CPUs an x86-64 kernel supports (arch/x86/Kconfig)")
