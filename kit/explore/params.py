"""The options of :func:`~kit.explore.explore`, one :class:`~kit.units.Param` each: the single
place their values are checked (the CLI and the notebook derive their help and bounds from it).
"""
from __future__ import annotations

from ..units import Param

MODES = ("exhaustive", "bounded", "random", "replay")
STRATEGIES = ("pct", "uniform")
REBUILDS = ("auto", "replay", "snapshot")

EXPLORE_PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("mode", "choice", choices=MODES, default="exhaustive",
          help="exhaustive: every interleaving; bounded: at most PREEMPTIONS preemptions; "
               "random: RUNS seeded schedules; replay: one explicit schedule"),
    Param("preemptions", "int", 0, None, default=2,
          help="bounded: at most this many switches away from a thread that could go on"),
    Param("runs", "int", 1, None, default=100, help="random: how many schedules to run"),
    Param("seed", "int", 0, 2**32 - 1, default=0, help="random: the seed of the schedule choices"),
    Param("strategy", "choice", choices=STRATEGIES, default="pct",
          help="random: pct (priorities with DEPTH-1 change points) or uniform (any enabled thread)"),
    Param("depth", "int", 1, None, default=3,
          help="random, pct: the bug depth d (d-1 priority change points per run)"),
    Param("reduction", "bool", default=True,
          help="exhaustive: sleep-set partial-order reduction (False: plain enumeration)"),
    Param("hashing", "bool", default=True,
          help="exhaustive, bounded: skip a state already explored (needs the scenario's state_key())"),
    Param("rebuild", "choice", choices=REBUILDS, default="auto",
          help="how to get back to an earlier state: replay its schedule, or restore a snapshot "
               "(auto: snapshot when the scenario has snapshot() and restore())"),
    Param("max_schedules", "int", 1, None, help="stop after this many schedules (the result is incomplete)"),
    Param("max_steps", "int", 1, None, help="cut a schedule after this many steps (the result is incomplete)"),
    Param("time_budget", "float", 0.001, None, unit="s", help="stop after this many seconds (the result is incomplete)"),
    Param("max_thread_steps", "int", 1, None, default=100,
          help="a thread not finished after this many of its own steps breaks 'bounded-steps' (livelock)"),
)}

LIMITS = ("max_schedules", "max_steps", "time_budget")
MODE_OPTIONS = {
    "exhaustive": ("reduction", "hashing", "rebuild", *LIMITS),
    "bounded": ("preemptions", "hashing", "rebuild", *LIMITS),
    "random": ("runs", "seed", "strategy", "depth", *LIMITS),
    "replay": ("schedule",),
}
"""The options each mode takes besides ``max_thread_steps`` (every mode): a replay runs its
schedule as given, so the search limits do not apply to it."""


def check_options(mode, given: dict) -> dict:
    """The checked options of ``mode``, defaults filled in; a ``ValueError`` naming the option
    for a bad value or an option that ``mode`` does not take."""
    mode = EXPLORE_PARAMS["mode"].check(mode)
    allowed = {"max_thread_steps", *MODE_OPTIONS[mode]}
    out = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in allowed:
            modes = [m for m, names in MODE_OPTIONS.items() if name in names]
            raise ValueError(f"{name}: applies to mode{'s' if len(modes) > 1 else ''} {', '.join(modes)}, not {mode}")
        if name == "schedule":
            out[name] = check_schedule(value)
        else:
            out[name] = EXPLORE_PARAMS[name].check(value)
    for name in allowed:
        if name not in out and name in EXPLORE_PARAMS:
            out[name] = EXPLORE_PARAMS[name].default
    if mode == "replay" and "schedule" not in out:
        raise ValueError("schedule: mode replay needs a schedule (a list of thread names)")
    return out


def check_schedule(value) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"schedule: expected a list of thread names, got {value!r}")
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise ValueError(f"schedule[{i}]: expected a thread name, got {name!r}")
    return tuple(value)
