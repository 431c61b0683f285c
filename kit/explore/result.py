"""What a search returns: :class:`ExploreResult`, per-invariant :class:`InvariantResult`, and
for each violated invariant a :class:`Counterexample` (schedule, step trace, lock graph).

``ExploreResult.to_json()`` is a fixed external interface (the CLI prints it)::

    {"complete": bool, "schedules": int,
     "invariants": {name: {"violations": int, "example": [step, ...] or null}}}

where each step is ``{"thread": str, "step": str, "changed": {name: [before, after]}}``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def jsonable(value):
    """``value`` as JSON data: numbers, strings, booleans and None as they are, sequences as
    lists, mappings with string keys, anything else as its ``str()``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


@dataclass(frozen=True)
class TraceStep:
    """One step of a trace: which thread ran, the step's label, what it changed in the scenario's
    ``state_view()`` (``{name: (before, after)}``), and the exception it raised, if any."""

    index: int
    thread: str
    label: str
    changes: dict = field(default_factory=dict)
    raised: str | None = None

    def to_json(self) -> dict:
        out = {"thread": self.thread, "step": self.label,
               "changed": {str(k): [jsonable(a), jsonable(b)] for k, (a, b) in self.changes.items()}}
        if self.raised is not None:
            out["raised"] = self.raised
        return out

    def __str__(self) -> str:
        text = f"{self.index + 1:3d}. {self.thread}: {self.label}"
        if self.changes:
            text += "  [" + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in self.changes.items()) + "]"
        if self.raised:
            text += f"  raised {self.raised}"
        return text


@dataclass(frozen=True)
class LockGraph:
    """Who holds what and who waits for what when every live thread is blocked.

    ``holds``: thread -> names of the primitives it holds; ``waits``: blocked thread -> (the name
    of what it waits for, the step it is blocked in); ``held_by``: primitive -> holder threads;
    ``cycle``: a wait-for cycle as alternating thread and primitive names ending where it
    started (``["A", "L2", "B", "L1", "A"]``), or empty when there is none."""

    holds: dict
    waits: dict
    held_by: dict
    cycle: tuple = ()

    def __str__(self) -> str:
        lines = []
        for t, (res, label) in self.waits.items():
            held = ", ".join(self.holds.get(t, ())) or "nothing"
            owners = ", ".join(self.held_by.get(res, ())) or "no thread"
            lines.append(f"{t} holds {held}; waits for {res} (held by {owners}) in '{label}'")
        if self.cycle:
            lines.append("cycle: " + " -> ".join(self.cycle))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"holds": jsonable(self.holds), "waits": {t: r for t, (r, _) in self.waits.items()},
                "held_by": jsonable(self.held_by), "cycle": list(self.cycle)}


@dataclass(frozen=True)
class Counterexample:
    """The shortest schedule found that breaks ``invariant`` (fewest steps, then fewest context
    switches), with its step trace; ``lock_graph`` for a deadlock."""

    invariant: str
    schedule: tuple
    trace: tuple
    lock_graph: LockGraph | None = None

    @property
    def steps(self) -> int:
        return len(self.schedule)

    @property
    def switches(self) -> int:
        return context_switches(self.schedule)

    def to_json(self) -> list:
        return [s.to_json() for s in self.trace]

    def __str__(self) -> str:
        head = (f"{self.invariant}: broken after {self.steps} steps, {self.switches} context switches "
                f"(schedule {' '.join(self.schedule) or '(initial state)'})")
        body = [str(s) for s in self.trace]
        if self.lock_graph is not None:
            body.append(str(self.lock_graph))
        return "\n".join([head, *body])


def context_switches(schedule) -> int:
    """How many times the running thread changes along ``schedule``."""
    return sum(1 for a, b in zip(schedule, schedule[1:]) if a != b)


@dataclass(frozen=True)
class InvariantResult:
    """One invariant's verdict: schedules explored, how many of them violated it, and the
    counterexample (None when no explored schedule violated it)."""

    name: str
    schedules: int
    violations: int
    example: Counterexample | None = None
    final: bool = False

    @property
    def holds(self) -> bool:
        return self.violations == 0


@dataclass(frozen=True)
class Progress:
    """Handed to the ``progress`` callback during a search (throttled to a few calls a second)."""

    mode: str
    schedules: int
    steps: int
    states: int | None
    elapsed: float
    max_schedules: int | None = None


@dataclass(frozen=True)
class ExploreResult:
    """The outcome of :func:`~kit.explore.explore`.

    ``complete`` is True when every schedule of the scenario was covered (exhaustive mode not
    cut by a limit; bounded mode only if the preemption bound cut nothing); ``stopped_by`` says
    what cut it otherwise (``"max_schedules"``, ``"max_steps"``, ``"time_budget"``,
    ``"preemptions"``, ``"progress"``, or ``"sampled"`` for random and replay modes).
    ``schedules`` counts the schedules explored (root-to-leaf paths of the search, including
    those cut short because they reached a state already explored); ``steps`` every step run,
    replays included; ``states`` the distinct states seen (None without ``state_key()``).
    ``trace`` is the step trace of a replay (None in the other modes); ``minimize_steps`` the
    steps run afterwards to shorten the counterexamples.
    """

    scenario: str
    mode: str
    complete: bool
    schedules: int
    steps: int
    states: int | None
    elapsed: float
    invariants: dict
    stopped_by: str | None = None
    trace: tuple | None = None
    options: dict = field(default_factory=dict)
    minimize_steps: int = 0

    @property
    def violated(self) -> list[str]:
        """Names of the invariants some explored schedule broke."""
        return [name for name, r in self.invariants.items() if r.violations]

    @property
    def ok(self) -> bool:
        return not self.violated

    def example(self, name: str) -> Counterexample | None:
        return self.invariants[name].example

    def to_json(self) -> dict:
        """The fixed external shape (see the module docstring), as JSON-ready data."""
        return {"complete": self.complete, "schedules": self.schedules,
                "invariants": {name: {"violations": r.violations,
                                      "example": r.example.to_json() if r.example else None}
                               for name, r in self.invariants.items()}}

    def __str__(self) -> str:
        head = (f"{self.scenario} [{self.mode}]: {self.schedules} schedules, {self.steps} steps"
                + (f", {self.states} states" if self.states is not None else "")
                + f", {self.elapsed:.3f} s, " + ("complete" if self.complete else f"incomplete ({self.stopped_by})"))
        width = max((len(n) for n in self.invariants), default=0)
        rows = [f"  {n:<{width}}  {'ok' if r.holds else f'violated in {r.violations}'}"
                for n, r in self.invariants.items()]
        examples = [str(r.example) for r in self.invariants.values() if r.example is not None]
        return "\n".join([head, *rows, *examples])
