"""A toy race-explorer catalog for the surfaces' tests: the shape of ``kit.explore.catalog``
(``SCENARIOS``, ``SCHEMES``, ``schemes_for``, ``build``, ``explore_named``, ``state_views``) on one scenario built from the
engine's own primitives, so the surfaces are tested apart from the domain's scenarios.

``lost-update``: two threads each take a map of one page (``maps``, a tracking counter, +1 with
a separate load and store) and mark the page mapped; ``lockless`` loses an update, ``locked``
takes ``kvm->lock`` around the update and holds every invariant.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

from kit.explore import Counter, Execution, Invariant, Lock, Scenario, Step, explore


class Lockless:
    """Per-gfn tracking counter updated without a lock (the update can be lost)."""

    name = "lockless"

    def update(self, scn):
        yield from scn.maps.increment()


class Locked(Lockless):
    """The same update under ``kvm->lock``."""

    name = "locked"

    def update(self, scn):
        yield scn.lock.acquire()
        yield from super().update(scn)
        yield scn.lock.release()


class LostUpdate(Scenario):
    name = "lost-update"
    invariants = [Invariant("counter equals live maps", lambda s: s.maps.value == s.mapped, final=True)]

    def __init__(self, scheme):
        self.scheme = scheme() if isinstance(scheme, type) else scheme

    def setup(self):
        self.maps = Counter("maps")
        self.lock = Lock("kvm->lock")
        self.mapped = 0
        return {"writer": self.writer(), "fault": self.writer()}

    def writer(self):
        yield Step("kmap page", writes={"mapping"}, action=self.map)
        yield from self.scheme.update(self)

    def map(self, thread):
        self.mapped += 1

    def state_key(self):
        return self.maps.state(), self.lock.state(), self.mapped

    def state_view(self):
        return {"maps": self.maps.value, "kvm->lock": self.lock.view(), "mapping": self.mapped,
                "rmp[0x200]": "shared"}


@dataclass(frozen=True)
class ToySpec:
    """The shape of ``kit.explore.catalog.ScenarioSpec``."""

    name: str
    build: object
    description: str = "two threads map one page and count their maps"
    params: tuple = ()
    threads: dict = field(default_factory=lambda: {"writer": "maps the page, counts the map",
                                                   "fault": "the same, in another thread"})
    source: str = "tests/viz/toy_catalog.py"


SCHEMES = {"lockless": Lockless, "locked": Locked}
SCENARIOS = {"lost-update": ToySpec("lost-update", LostUpdate)}


def schemes_for(scenario_name):
    if scenario_name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {scenario_name!r}; known: {', '.join(SCENARIOS)}")
    return list(SCHEMES)


def build(scenario, scheme=None, **params):
    spec = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
    cls = SCHEMES[scheme] if isinstance(scheme, str) else (scheme or Lockless)
    return spec.build(cls)


def state_views(scenario, scheme=None, schedule=(), **params):
    scn = build(scenario, scheme)
    ex = Execution(scn, {})
    views = [dict(scn.state_view())]
    for name in schedule:
        ex.run(ex.names.index(name))
        views.append(dict(scn.state_view()))
    return views


def explore_named(scenario, scheme, mode="exhaustive", *, bound=None, seed=None, schedule=None, invariants=(),
                  progress=None, **limits):
    kw = dict(limits)
    if mode == "bounded":
        kw["preemptions"] = bound
    elif mode == "random":
        kw.update(runs=bound, seed=seed)
    elif mode == "replay":
        kw["schedule"] = schedule
    return explore(build(scenario, scheme), mode, invariants=invariants, progress=progress, **kw)


def install(monkeypatch) -> types.ModuleType:
    """Make the surfaces see this catalog: its names on the ``kit.explore.catalog`` module
    the surfaces imported (undone by ``monkeypatch`` after the test)."""
    from kit.explore import catalog
    for name in ("SCENARIOS", "SCHEMES", "schemes_for", "build", "explore_named", "state_views"):
        monkeypatch.setattr(catalog, name, getattr(sys.modules[__name__], name))
    return catalog
