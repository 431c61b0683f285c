"""The machine: physical frames, the SEV-SNP RMP, the kernel direct map, and their policies."""
from .host import Host, HostFault
from .ledger import Ledger
from .policies import (DIRECTMAP_POLICIES, HOST_FAULT_POLICIES, AutoConvert, DirectMapPolicy,
                       HostFaultPolicy)
from .rmp import RmpEntry, RmpRules

__all__ = ["Host", "HostFault", "Ledger", "DirectMapPolicy", "HostFaultPolicy", "AutoConvert",
           "DIRECTMAP_POLICIES", "HOST_FAULT_POLICIES", "RmpEntry", "RmpRules"]
