"""What a guest kernel does with its memory: lazy acceptance, PVALIDATE, page-state changes,
#VC and termination, as a scriptable :class:`Guest` with behaviours a user can subclass
(docs/guest-model.md). It drives KVM through vCPUs, hypercalls and its VMM, as a real guest
does; ``kit.kvm`` never imports it. :mod:`kit.guest.outcomes` runs every behaviour against every
#NPF policy, attribute owner and VMM (the outcome matrix)."""
from .behaviours import BEHAVIOURS, Linux, Malicious, Revalidating, Unenlightened
from .guest import (EFI_UNACCEPTED_UNIT_SIZE, PROTOCOLS, VMGEXIT_PSC_MAX_ENTRY, Guest, GuestStuck,
                    GuestTerminated, PscLivelock, Step, Termination, psc_entries)
from .outcomes import OUTCOMES, VMMS, DeniesFirst, outcome_matrix, ownership_decides, run_outcome, view_agrees

__all__ = ["Guest", "Termination", "GuestTerminated", "GuestStuck", "PscLivelock", "Step",
           "Linux", "Unenlightened", "Revalidating", "Malicious", "BEHAVIOURS",
           "EFI_UNACCEPTED_UNIT_SIZE", "VMGEXIT_PSC_MAX_ENTRY", "PROTOCOLS", "psc_entries",
           "OUTCOMES", "VMMS", "DeniesFirst", "outcome_matrix", "ownership_decides", "run_outcome", "view_agrees"]
