"""The named scenarios and schemes, and :func:`explore_named`: what the notebook, the dashboard,
the CLI and the report call.

- :data:`SCENARIOS`: ``{name: ScenarioSpec}`` with the fixed names ``host-write-vs-conversion``
  and ``mirror-setup`` (:mod:`kit.explore.scenarios`);
- :data:`SCHEMES`: ``{name: Scheme subclass}`` with the fixed names ``srcu``,
  ``host_write_track``, ``host_write_track_locked``, ``flip_back_unmap``, ``flip_back_split``,
  ``upstream``, ``mirror-2021``, ``mirror-merged`` (:mod:`kit.explore.schemes`); subclass one in
  a cell and pass the class or an instance where a name is taken;
- :func:`schemes_for`: the scheme names a scenario takes;
- :func:`explore_named`: build a scenario under a scheme and explore it.

Both tables are read when a function is called, so a test or a cell may add to them.
Parameters of the scenarios are :class:`~kit.units.Param` objects in
:data:`kit.explore.params.EXPLORE_PARAMS`, listed per scenario in
:data:`~kit.explore.params.SCENARIO_PARAMS`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from . import engine
from .params import EXPLORE_PARAMS, MODE_OPTIONS, SCENARIO_NAMES, SCENARIO_PARAMS, SCHEME_NAMES
from .result import ExploreResult
from .scenario import Scenario
from .scenarios import HostWriteVsConversion, MirrorSetup
from .schemes import BUILTIN_SCHEMES, Scheme
from .search import explore


@dataclass(frozen=True)
class ScenarioSpec:
    """A named scenario: ``build(scheme, **params)`` returns a fresh
    :class:`~kit.explore.Scenario`; ``params`` names its parameters in
    :data:`~kit.explore.params.EXPLORE_PARAMS`; ``threads`` describes its threads by name (the
    optional ones say which parameter adds them); ``source`` is the review thread or code it
    follows."""

    name: str
    build: Callable[..., Scenario]
    description: str = ""
    params: tuple = ()
    threads: dict = field(default_factory=dict)
    source: str = ""

    def param_specs(self) -> list:
        """The :class:`~kit.units.Param` of each parameter, in order."""
        return [EXPLORE_PARAMS[n] for n in self.params]

    def schemes(self) -> list[str]:
        return schemes_for(self.name)


SCENARIOS: dict[str, ScenarioSpec] = {
    "host-write-vs-conversion": ScenarioSpec(
        "host-write-vs-conversion", HostWriteVsConversion,
        "KVM writes a guest page while the guest converts it to private; the host #PF handler reads "
        "the RMP when it runs; a second thread faults on the same page (CASE1)",
        SCENARIO_PARAMS["host-write-vs-conversion"],
        {"writer": "KVM host writer: kvm_vcpu_map, write, kvm_vcpu_unmap (the #PF handler runs in its context)",
         "conversion": "the guest's page-state change to private and KVM's path: attributes, the scheme's "
                       "synchronisation, direct-map step, RMPUPDATE, after step, PVALIDATE",
         "writer2": "a second host writer of the same page (second_writer)",
         "kernel-bug": "a kernel bug unmaps the page from the direct map, CASE2 (kernel_bug)",
         "punch-hole": "the VMM punches the page out of guest_memfd (punch_hole; upstream)"},
        "[PATCH Part2 v5 39/45] KVM: SVM: Introduce ops for the post gfn map and unmap (October 2021)"),
    "mirror-setup": ScenarioSpec(
        "mirror-setup", MirrorSetup,
        "two VMs' crossing KVM_CAP_VM_COPY_ENC_CONTEXT_FROM (or MOVE) ioctls and a vCPU creation",
        SCENARIO_PARAMS["mirror-setup"],
        {"copy1": "B becomes a mirror of A (op=copy; move1 with op=move)",
         "copy2": "A becomes a mirror of B (op=copy; move2 with op=move)",
         "vcpu": "KVM_CREATE_VCPU on B (vcpu)"},
        "[RFC] KVM: x86: Support KVM VMs sharing SEV context (2021); arch/x86/kvm/svm/sev.c "
        "sev_vm_copy_enc_context_from"),
}

SCHEMES: dict[str, type] = {cls.name: cls for cls in BUILTIN_SCHEMES}

assert tuple(SCENARIOS) == SCENARIO_NAMES and tuple(SCHEMES) == SCHEME_NAMES


def schemes_for(scenario_name: str) -> list[str]:
    """The names of the schemes in :data:`SCHEMES` that apply to scenario ``scenario_name`` (a
    scheme lists its scenarios in ``scenarios``), in table order. An unknown scenario is a
    ``ValueError``."""
    if scenario_name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {scenario_name!r}; known: {', '.join(SCENARIOS)}")
    return [name for name, cls in SCHEMES.items() if scenario_name in getattr(cls, "scenarios", ())]


def _scheme(scheme, spec: ScenarioSpec | None):
    if scheme is None:
        if spec is None:
            return None
        names = schemes_for(spec.name)
        if not names:
            raise ValueError(f"scheme: scenario {spec.name} has no scheme")
        scheme = names[0]
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme: unknown {scheme!r}; known: {', '.join(SCHEMES)}")
        scheme = SCHEMES[scheme]
    if isinstance(scheme, type):
        scheme = scheme()
    if spec is not None and spec.name not in getattr(scheme, "scenarios", (spec.name,)):
        raise ValueError(f"scheme: {getattr(scheme, 'name', scheme)!r} does not apply to scenario {spec.name}; "
                         f"its schemes: {', '.join(schemes_for(spec.name))}")
    return scheme


_EXPLORE_OPTIONS = frozenset({"max_thread_steps", *(n for names in MODE_OPTIONS.values() for n in names)}) - {"schedule"}


def build(scenario, scheme=None, **params) -> Scenario:
    """A scenario object from a name in :data:`SCENARIOS` (or a :class:`ScenarioSpec`) and a
    scheme (a name in :data:`SCHEMES`, a :class:`~kit.explore.schemes.Scheme` subclass or
    instance; None: the scenario's first scheme), with its parameters. A
    :class:`~kit.explore.Scenario` instance is returned as it is (``scheme`` and ``params``
    must then be empty); a Scenario subclass is called with the scheme (when given) and the
    parameters."""
    if isinstance(scenario, Scenario):
        if scheme is not None or params:
            raise ValueError("scenario: a Scenario object is explored as it is; give its name to pass a scheme "
                             "or parameters")
        return scenario
    if isinstance(scenario, type) and issubclass(scenario, Scenario):
        return scenario(scheme, **params) if scheme is not None else scenario(**params)
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario: unknown {scenario!r}; known: {', '.join(SCENARIOS)}")
        scenario = SCENARIOS[scenario]
    if not isinstance(scenario, ScenarioSpec):
        raise ValueError(f"scenario: expected a name, a ScenarioSpec or a Scenario, got {scenario!r}")
    bad = [n for n in params if n not in scenario.params]
    if bad:
        raise ValueError(f"{bad[0]}: not a parameter of scenario {scenario.name} "
                         f"(its parameters: {', '.join(scenario.params) or 'none'})")
    return scenario.build(_scheme(scheme, scenario), **params)


def explore_named(scenario, scheme=None, mode: str = "exhaustive", *, bound: int | None = None,
                  seed: int | None = None, schedule=None, invariants=(), progress=None, **limits) -> ExploreResult:
    """Explore a named scenario under a scheme.

    ``scenario``: a name in :data:`SCENARIOS`, a :class:`ScenarioSpec`, or a
    :class:`~kit.explore.Scenario` (explored as it is). ``scheme``: a name in :data:`SCHEMES`,
    a :class:`~kit.explore.schemes.Scheme` subclass or instance (a cell's own), or None (the
    scenario's first). ``mode``: ``exhaustive``, ``bounded``, ``random`` or ``replay``.
    ``bound``: the preemption bound (bounded) or the number of runs (random). ``seed``: random
    mode. ``schedule``: replay mode, a list of thread names. ``invariants``: more invariants
    (a cell's own). ``progress``: called a few times a second with a
    :class:`~kit.explore.Progress`; returning False stops the search.

    ``limits``: the search's limits and options (``max_schedules``, ``max_steps``,
    ``time_budget``, ``max_thread_steps``, ``reduction``, ``hashing``, ``rebuild``,
    ``strategy``, ``depth``) and the scenario's parameters (:data:`SCENARIO_PARAMS`, e.g.
    ``kernel_bug=True``). Anything else, or a bad value, is a ``ValueError`` naming it before
    any work. The result's ``options`` also name the scheme and the scenario's parameters.
    """
    mode = EXPLORE_PARAMS["mode"].check(mode)
    spec = SCENARIOS.get(scenario) if isinstance(scenario, str) else (
        scenario if isinstance(scenario, ScenarioSpec) else None)
    if isinstance(scenario, str) and spec is None:
        raise ValueError(f"scenario: unknown {scenario!r}; known: {', '.join(SCENARIOS)}")
    params, opts = {}, {}
    for name, value in limits.items():
        if spec is not None and name in spec.params:
            params[name] = value
        elif name in _EXPLORE_OPTIONS:
            opts[name] = value
        else:
            where = f"scenario {spec.name}" if spec is not None else "a Scenario object"
            raise ValueError(f"{name}: neither an option of explore() nor a parameter of {where}")
    if bound is not None:
        bound = EXPLORE_PARAMS["bound"].check(bound)
        if mode == "bounded":
            opts["preemptions"] = bound
        elif mode == "random":
            opts["runs"] = EXPLORE_PARAMS["runs"].check(bound)
        else:
            raise ValueError(f"bound: applies to modes bounded (preemptions) and random (runs), not {mode}")
    if seed is not None:
        opts["seed"] = seed
    if schedule is not None:
        opts["schedule"] = schedule
    scheme_obj = _scheme(scheme, spec)
    scn = build(spec if spec is not None else scenario, scheme_obj if spec is not None else scheme, **params)
    result = explore(scn, mode, invariants=invariants, progress=progress, **opts)
    used = getattr(scn, "params", params)
    label = getattr(scheme_obj, "name", None) or getattr(getattr(scn, "scheme", None), "name", None)
    return dataclasses.replace(result, options={**result.options, "scheme": label, **used})


def state_views(scenario, scheme=None, schedule=(), **params) -> list[dict]:
    """The scenario's whole ``state_view()`` before the first step and after each step of
    ``schedule`` (thread names): what a display shows when it steps forward and back through a
    counterexample (a trace holds only what each step changed). A thread that is unknown,
    finished or blocked at its position is a ``ValueError`` naming the position."""
    scn = build(scenario, scheme, **params)
    ex = engine.Execution(scn, {})
    index = {n: i for i, n in enumerate(ex.names)}
    views = [dict(scn.state_view())]
    for pos, name in enumerate(schedule):
        i = index.get(name)
        if i is None:
            raise ValueError(f"schedule[{pos}]: unknown thread {name!r}; threads: {', '.join(ex.names)}")
        if ex.pending[i] is None:
            raise ValueError(f"schedule[{pos}]: thread {name!r} has finished")
        if not ex.enabled(i):
            raise ValueError(f"schedule[{pos}]: thread {name!r} is blocked in '{ex.pending[i].label}'")
        ex.run(i)
        views.append(dict(scn.state_view()))
    return views


__all__ = ["ScenarioSpec", "SCENARIOS", "SCHEMES", "schemes_for", "build", "explore_named", "state_views"]
