"""A Jupyter research kit for confidential-VM memory on Linux/KVM.

Models the SEV-SNP RMP, the host direct map, KVM memslots, memory attributes and guest_memfd;
every rule cites its kernel or hardware source. Start with ``kit.host.Host``; in a notebook,
``%load_ext kit`` gives the ``%kit`` magic and dashboards (``kit.viz``).
"""
from .errors import HostOops, KernelError, KvmError, NestedPageFault, RmpUpdateLivelock
from .host import Host
from .kvm import Kvm
from .units import GiB, KiB, MiB, PAGE_1G, PAGE_2M, PAGE_4K, TiB, deferred_attributes, parse_size

__version__ = "0.1.0"

#: ``kit.lab``, ``kit.viz`` and ``kit.sim`` load on first use (keeps ``import kit`` light)
__getattr__ = deferred_attributes(globals(), {}, submodules=("lab", "viz", "sim"))[0]


def load_ipython_extension(ipython) -> None:
    """``%load_ext kit``: the ``%kit`` magic (:mod:`kit.lab.magics`)."""
    from .lab.magics import load_ipython_extension as _load
    _load(ipython)


__all__ = ["Host", "Kvm", "HostOops", "KernelError", "KvmError", "NestedPageFault", "RmpUpdateLivelock",
           "KiB", "MiB", "GiB", "TiB", "PAGE_4K", "PAGE_2M", "PAGE_1G", "parse_size", "__version__"]
