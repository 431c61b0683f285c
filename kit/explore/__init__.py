"""The race explorer: threads as generators of steps, and the search over their interleavings.

A thread is a generator that yields a :class:`Step` wherever another thread could observe it;
a :class:`Scenario` builds fresh shared state and its named threads; :func:`explore` runs the
schedules (``exhaustive``, ``bounded``, ``random`` or ``replay``) and checks the invariants on
every state. The primitives :class:`Lock`, :class:`Srcu` and :class:`Counter` give steps with the
kernel's semantics. docs/explore.md describes the engine, its reduction and its costs.
"""
from .engine import Execution, freeze
from .params import EXPLORE_PARAMS, MODES
from .primitives import Counter, Lock, LockUsageError, Srcu
from .result import (Counterexample, ExploreResult, InvariantResult, LockGraph, Progress, TraceStep,
                     context_switches)
from .scenario import (BUILTIN_INVARIANTS, DEADLOCK, EXCEPTION, STEP_BOUND, Invariant, Scenario, as_invariant,
                       invariant)
from .search import explore, lock_graph
from .step import Step

__all__ = ["explore", "Scenario", "Step", "Invariant", "invariant", "as_invariant", "Lock", "Srcu", "Counter",
           "LockUsageError", "ExploreResult", "InvariantResult", "Counterexample", "TraceStep", "LockGraph",
           "Progress", "context_switches", "lock_graph", "Execution", "freeze", "EXPLORE_PARAMS", "MODES",
           "BUILTIN_INVARIANTS", "DEADLOCK", "STEP_BOUND", "EXCEPTION"]
