"""What the timing model leaves out, in one place: docs/sim-model.md section 4 ("Not
modelled") and every HTML report's "What the model leaves out" list are drawn from
:data:`NOT_MODELLED`, and a test keeps the document equal to it.

Each entry: (topic, what is left out and what the model does instead, why). An entry names a
mechanism a kernel engineer would look for; leaving it out is a choice made for want of a
source for its cost, not an oversight.
"""
from __future__ import annotations

NOT_MODELLED: tuple[tuple[str, str, str], ...] = (
    ("NUMA",
     "a numa-node-N row runs its vCPU threads on one socket's CPUs and uses one socket's DRAM "
     "bandwidth; remote memory latency and the cost of a lock's cache line crossing sockets "
     "are left out",
     "no public figure for either on this path; table A's pinned and unpinned rows differ by "
     "less than their spread"),
    ("memory encryption",
     "the SNP memory-encryption engine's cost on writes (clearing folios, the guest's writes) "
     "is left out: both run at the unencrypted rate",
     "no source"),
    ("guest paging",
     "the guest's own page-table walks and TLB misses are left out",
     "the workload touches each page once; no source for their share"),
    ("mmu_lock",
     "contention on kvm->mmu_lock in the fault path is left out (the TDP MMU takes it for "
     "read)",
     "readers do not serialise; no source for the writers' share on this path"),
    ("pause-loop exiting",
     "pause-loop exiting and directed yield to a preempted lock holder are left out: a "
     "spinning vCPU keeps its CPU until its slice ends",
     "PLE window and yield behaviour under SNP were not measured in any source found"),
)
