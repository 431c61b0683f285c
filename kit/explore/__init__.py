"""The race explorer: threads as generators of steps, and the search over their interleavings.

A thread is a generator that yields a :class:`Step` wherever another thread could observe it;
a :class:`Scenario` builds fresh shared state and its named threads; :func:`explore` runs the
schedules (``exhaustive``, ``bounded``, ``random`` or ``replay``) and checks the invariants on
every state. The primitives :class:`Lock`, :class:`Srcu` and :class:`Counter` give steps with the
kernel's semantics. docs/explore.md describes the engine, its reduction and its costs.

The domain on the kit's model: the thread library (:mod:`kit.explore.threads`), the schemes
(:mod:`kit.explore.schemes`), the invariants (:mod:`kit.explore.invariants`), the scenarios
(:mod:`kit.explore.scenarios`) and their catalog (:mod:`kit.explore.catalog`:
:data:`SCENARIOS`, :data:`SCHEMES`, :func:`schemes_for`, :func:`explore_named`).
"""
from ..units import deferred_attributes

#: public names loaded on first use (PEP 562), and the submodule each comes from: the CLI's
#: parser reads :mod:`.params` without loading the engine (docs/architecture.md, "Deferred
#: loading")
DEFERRED = {name: module for module, names in {
    "engine": ("Execution", "freeze"),
    "params": ("EXPLORE_PARAMS", "MODES", "SCENARIO_PARAMS"),
    "primitives": ("Counter", "Lock", "LockUsageError", "Srcu"),
    "result": ("Counterexample", "ExploreResult", "InvariantResult", "LockGraph", "Progress", "TraceStep",
               "context_switches"),
    "scenario": ("BUILTIN_INVARIANTS", "DEADLOCK", "EXCEPTION", "STEP_BOUND", "Invariant", "Scenario",
                 "as_invariant", "invariant"),
    "search": ("explore", "lock_graph"),
    "step": ("Step",),
    "schemes": ("ConversionScheme", "FlipBackSplit", "FlipBackUnmap", "HostWriteTrack", "HostWriteTrackLocked",
                "Mirror2021", "MirrorMerged", "MirrorScheme", "Scheme", "Upstream"),
    "invariants": ("CONVERSION_INVARIANTS", "MIRROR_INVARIANTS"),
    "scenarios": ("HostWriteVsConversion", "MirrorSetup"),
    "catalog": ("SCENARIOS", "SCHEMES", "ScenarioSpec", "build", "explore_named", "schemes_for", "state_views"),
}.items() for name in names}
_RENAMED = {"SrcuScheme": ("schemes", "Srcu")}


__getattr__, __dir__ = deferred_attributes(globals(), DEFERRED, renamed=_RENAMED)


__all__ = ["explore", "Scenario", "Step", "Invariant", "invariant", "as_invariant", "Lock", "Srcu", "Counter",
           "LockUsageError", "ExploreResult", "InvariantResult", "Counterexample", "TraceStep", "LockGraph",
           "Progress", "context_switches", "lock_graph", "Execution", "freeze", "EXPLORE_PARAMS", "MODES",
           "BUILTIN_INVARIANTS", "DEADLOCK", "STEP_BOUND", "EXCEPTION",
           "SCENARIOS", "SCHEMES", "SCENARIO_PARAMS", "ScenarioSpec", "build", "explore_named", "schemes_for",
           "state_views",
           "Scheme", "ConversionScheme", "MirrorScheme", "SrcuScheme", "HostWriteTrack", "HostWriteTrackLocked",
           "FlipBackUnmap", "FlipBackSplit", "Upstream", "Mirror2021", "MirrorMerged",
           "HostWriteVsConversion", "MirrorSetup", "CONVERSION_INVARIANTS", "MIRROR_INVARIANTS"]
