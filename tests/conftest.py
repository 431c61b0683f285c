import os

import pytest
from hypothesis import HealthCheck, settings

from kit.host import Host
from kit.kvm import Kvm

# Default profile: >= 300 examples for the state machine in CI; `long` for 10,000.
settings.register_profile("default", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def make_kvm():
    """Factory for a ``Kvm`` on a fresh ``Host``: ``make_kvm(mem="2GiB", cores=4,
    directmap_policy=None, **kvm_kwargs)`` (``directmap_policy`` and ``seed`` go to the Host,
    everything else to the Kvm). Session-scoped: it holds no state, so module fixtures may use it."""
    def make(mem="2GiB", cores=4, *, directmap_policy=None, seed=None, **kvm_kwargs):
        host_kw = {k: v for k, v in (("directmap_policy", directmap_policy), ("seed", seed)) if v is not None}
        return Kvm(Host(mem=mem, cores=cores, **host_kw), **kvm_kwargs)
    return make


@pytest.fixture
def kvm(make_kvm):
    """A ``Kvm`` on a 2 GiB, 4-core host (modules may override with their own ``kvm``)."""
    return make_kvm()
