"""A Jupyter research kit for confidential-VM memory on Linux/KVM.

Models the SEV-SNP RMP, the host direct map and (to come) KVM memslots, memory attributes and
guest_memfd; every rule cites its kernel or hardware source. Start with ``kit.host.Host``.
"""
from .errors import HostOops, KernelError, KvmError, NestedPageFault, RmpUpdateLivelock
from .host import Host
from .kvm import Kvm
from .units import GiB, KiB, MiB, PAGE_1G, PAGE_2M, PAGE_4K, TiB, parse_size

__version__ = "0.1.0"

__all__ = ["Host", "Kvm", "HostOops", "KernelError", "KvmError", "NestedPageFault", "RmpUpdateLivelock",
           "KiB", "MiB", "GiB", "TiB", "PAGE_4K", "PAGE_2M", "PAGE_1G", "parse_size", "__version__"]
