"""A race explorer's results as data for displays: step rows, the state at each step, the table
of invariants by scheme. No Bokeh here: the command line prints these rows, the figure builders
(:func:`kit.viz.figures.sequence_figure`), the ``race-explorer`` dashboard and ``kit report``
draw them.

A trace is what :class:`kit.explore.Counterexample` holds (its ``trace`` of
:class:`~kit.explore.TraceStep`) or what ``ExploreResult.to_json()`` gives for it (docs/explore.md,
"The result"): one step per entry, ``{"thread", "step", "changed": {name: [before, after]}}``
and ``"raised"`` for a step that raised. Every function here takes either form.
"""
from __future__ import annotations

import json

#: the columns of a counterexample's step table (the CLI's and the report's)
STEP_COLUMNS = ["#", "thread", "step", "changed"]


def trace_steps(example) -> list[dict]:
    """The steps of a counterexample as JSON data: ``example`` is a
    :class:`~kit.explore.Counterexample`, a sequence of :class:`~kit.explore.TraceStep`, or the
    JSON list ``to_json()`` gives (None: no steps)."""
    if example is None:
        return []
    trace = getattr(example, "trace", example)
    out = []
    for i, s in enumerate(trace):
        step = s.to_json() if hasattr(s, "to_json") else s
        if not isinstance(step, dict) or "thread" not in step or "step" not in step:
            raise ValueError(f"trace[{i}]: expected a step with 'thread' and 'step', got {s!r}")
        out.append({"thread": str(step["thread"]), "step": str(step["step"]),
                    "changed": {str(k): list(v) for k, v in (step.get("changed") or {}).items()},
                    **({"raised": str(step["raised"])} if step.get("raised") is not None else {})})
    return out


def value_text(value) -> str:
    """A state value as short text: strings as they are, None (nothing: a free lock, no value
    yet) as ``-``, other values as compact JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def changed_text(step: dict) -> str:
    """``name: before -> after`` for each name a step changed, and the exception it raised."""
    parts = [f"{k}: {value_text(a)} -> {value_text(b)}" for k, (a, b) in step["changed"].items()]
    if step.get("raised"):
        parts.append(f"raised {step['raised']}")
    return "; ".join(parts)


def step_rows(example) -> list[dict]:
    """One row per step (:data:`STEP_COLUMNS`): its number from 1, the thread, the step and what
    it changed."""
    return [{"#": i + 1, "thread": s["thread"], "step": s["step"], "changed": changed_text(s)}
            for i, s in enumerate(trace_steps(example))]


def thread_order(example, threads=None) -> list[str]:
    """The lanes of a sequence diagram: ``threads`` when given (the scenario's order), then any
    other thread in the order it first runs."""
    return list(dict.fromkeys([*(threads or ()), *(s["thread"] for s in trace_steps(example))]))


def trace_states(example, initial: dict | None = None) -> list[dict]:
    """The shared state before the first step (index 0) and after each step (index i), as
    ``{name: value}`` of the scenario's ``state_view()``.

    A trace holds only what changed, so a name is known from its first change on (its value
    before that change is its value from the start); ``initial`` (a ``state_view()`` of the
    scenario as set up, JSON data) adds the names no step changed."""
    steps = trace_steps(example)
    state = {str(k): v for k, v in (initial or {}).items()}
    for s in steps:
        for k, (before, _after) in s["changed"].items():
            state.setdefault(k, before)
    out = [dict(state)]
    for s in steps:
        for k, (_before, after) in s["changed"].items():
            state[k] = after
        out.append(dict(state))
    return out


def state_rows(example, index: int, initial: dict | None = None, states: list | None = None) -> list[dict]:
    """The state after step ``index`` (0: before the first step) as rows ``{name, value,
    changed}``, ``changed`` naming the step that last changed it up to there. ``states``: the
    whole state at each step when the model gave it (:func:`kit.explore.catalog.state_views`);
    otherwise it is rebuilt from the trace (:func:`trace_states`, with ``initial``)."""
    steps = trace_steps(example)
    if not 0 <= index <= len(steps):
        raise ValueError(f"index: expected 0..{len(steps)}, got {index!r}")
    if states is not None and len(states) != len(steps) + 1:
        raise ValueError(f"states: expected {len(steps) + 1} states (one before each step and one after the "
                         f"last), got {len(states)}")
    state = (states if states is not None else trace_states(steps, initial))[index]
    last = {}
    for i, s in enumerate(steps[:index]):
        for k in s["changed"]:
            last[k] = i + 1
    return [{"name": k, "value": value_text(v),
             "changed": ("by this step" if last.get(k) == index else f"at step {last[k]}") if k in last else ""}
            for k, v in state.items()]


# ------------------------------------------------------------------ results of several schemes
def exploration(result, *, scheme: str | None = None, scenario: str | None = None) -> dict:
    """An :class:`~kit.explore.ExploreResult` as the JSON a notebook records and a report draws:
    ``to_json()`` (``complete``, ``schedules``, ``invariants`` with their counterexamples) with
    the names it was run under and the search's figures."""
    out = {"scenario": scenario or result.scenario, "scheme": scheme, "mode": result.mode,
           "states": result.states, "steps": result.steps, "elapsed": round(float(result.elapsed), 6),
           "stopped_by": result.stopped_by, "invariant_names": list(result.invariants)}
    out.update(result.to_json())
    return out


def invariant_names(doc: dict) -> list[str]:
    """A recorded exploration's invariants in the order they were checked (a result file's
    objects have their keys sorted; ``invariant_names`` keeps the order)."""
    names = [n for n in doc.get("invariant_names") or () if n in doc["invariants"]]
    return names + [n for n in doc["invariants"] if n not in names]


def exploration_label(doc: dict) -> str:
    """``scheme`` (or the scenario's name when no scheme is named) of a recorded exploration."""
    return str(doc.get("scheme") or doc.get("scenario") or "?")


def exploration_rows(docs) -> list[dict]:
    """One row per recorded exploration: the search's figures and how many invariants broke."""
    return [{"scenario": d.get("scenario"), "scheme": exploration_label(d), "mode": d.get("mode"),
             "schedules": d["schedules"], "states": d.get("states"), "complete": d["complete"],
             "broken": sum(1 for r in d["invariants"].values() if r["violations"]),
             "seconds": d.get("elapsed")} for d in docs]


def verdict(inv: dict) -> str:
    """One invariant's cell in the table by scheme: ``ok`` or the schedules that broke it."""
    v = inv["violations"]
    return "ok" if not v else f"BROKEN in {v} schedule{'s' if v != 1 else ''}"


def invariant_table(docs) -> list[dict]:
    """The table of invariants by scheme: one row per invariant (in the order they were
    checked: :func:`invariant_names`), one column per scheme, after a row of schedules explored and one saying whether
    each search was complete."""
    docs = list(docs)
    labels = [exploration_label(d) for d in docs]
    names = list(dict.fromkeys(n for d in docs for n in invariant_names(d)))
    rows = [{"invariant": "(schedules explored)", **{lb: d["schedules"] for lb, d in zip(labels, docs)}},
            {"invariant": "(search complete)", **{lb: "yes" if d["complete"] else f"no ({d.get('stopped_by')})"
                                                  for lb, d in zip(labels, docs)}}]
    for n in names:
        rows.append({"invariant": n, **{lb: verdict(d["invariants"][n]) if n in d["invariants"] else "-"
                                        for lb, d in zip(labels, docs)}})
    return rows


def counterexamples(docs) -> list[dict]:
    """Every counterexample of recorded explorations: ``{scenario, scheme, invariant, steps}``,
    in the order of the explorations and of their invariants."""
    return [{"scenario": d.get("scenario"), "scheme": exploration_label(d), "invariant": name,
             "steps": d["invariants"][name]["example"]}
            for d in docs for name in invariant_names(d) if d["invariants"][name].get("example") is not None]
