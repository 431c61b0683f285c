"""The options of :func:`~kit.explore.explore` and the parameters of the named scenarios, one
:class:`~kit.units.Param` each: the single place their values are checked (the CLI, the
notebook and the dashboard derive their help and bounds from it).

:data:`EXPLORE_PARAMS` holds both: the search options (``mode``, ``preemptions``, ...), the
names a surface picks (``scenario``, ``scheme``, ``bound``) and the scenarios' own parameters,
which :data:`SCENARIO_PARAMS` lists per scenario (:mod:`kit.explore.catalog`).
"""
from __future__ import annotations

from ..units import PAGE_2M, GiB, MiB, Param

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

SCENARIO_NAMES = ("host-write-vs-conversion", "mirror-setup")
"""The fixed names of the built-in scenarios (:data:`kit.explore.catalog.SCENARIOS`)."""
SCHEME_NAMES = ("srcu", "host_write_track", "host_write_track_locked", "flip_back_unmap",
                "flip_back_split", "upstream", "mirror-2021", "mirror-merged")
"""The fixed names of the built-in schemes (:data:`kit.explore.catalog.SCHEMES`)."""
OPS = ("copy", "move")
INITIALISED = ("both", "first")

SCENARIO_PARAM_LIST = (
    Param("scenario", "choice", choices=SCENARIO_NAMES, default="host-write-vs-conversion",
          help="the race to explore: a KVM host write against the guest's conversion, or the "
               "mirror ioctls of two VMs"),
    Param("scheme", "choice", choices=SCHEME_NAMES, default="srcu",
          help="how the kernel protects the race (a Scheme subclass written in a cell is passed as an object)"),
    Param("bound", "int", 0, None,
          help="bounded: the preemption bound; random: the number of runs"),
    # host-write-vs-conversion
    Param("host_mem", "size", 4 * MiB, 1 * GiB, default="64MiB", multiple=PAGE_2M,
          help="memory of the host the scenario runs on: small, so that a snapshot of its state stays cheap"),
    Param("writes", "int", 1, 3, default=1,
          help="how many times the KVM host writer maps, writes and unmaps the page"),
    Param("second_writer", "bool", default=True,
          help="a second host thread writes the same page (CASE1: two faults on one page)"),
    Param("kernel_bug", "bool", default=False,
          help="a kernel bug unmaps the page from the direct map (CASE2)"),
    Param("punch_hole", "bool", default=False,
          help="the VMM punches the page out of guest_memfd while the guest converts it "
               "(schemes with private memory in guest_memfd)"),
    Param("psc_retries", "int", 0, 3, default=1,
          help="how many times the guest retries a page-state change the scheme refused"),
    Param("max_faults", "int", 1, 10, default=3,
          help="a host access that faults this many times without completing breaks "
               "'bounded faults per access' (Host.write oopses at the third fault in a row)"),
    # mirror-setup
    Param("op", "choice", choices=OPS, default="copy",
          help="the crossing ioctls: KVM_CAP_VM_COPY_ENC_CONTEXT_FROM or KVM_CAP_VM_MOVE_ENC_CONTEXT_FROM"),
    Param("vcpu", "bool", default=True,
          help="KVM_CREATE_VCPU on the first ioctl's destination races the setup"),
    Param("initialised", "choice", choices=INITIALISED, default="both",
          help="which VMs have their own SEV context (KVM_SEV_INIT2) before the ioctls: both, "
               "or only the first ioctl's source"),
)
EXPLORE_PARAMS.update({p.name: p for p in SCENARIO_PARAM_LIST})

SCENARIO_PARAMS: dict[str, tuple[str, ...]] = {
    "host-write-vs-conversion": ("host_mem", "writes", "second_writer", "kernel_bug", "punch_hole",
                                 "psc_retries", "max_faults"),
    "mirror-setup": ("op", "vcpu", "initialised"),
}
"""The parameters each built-in scenario takes (names in :data:`EXPLORE_PARAMS`)."""


def check_scenario_params(scenario: str, given: dict) -> dict:
    """The checked parameters of the built-in scenario ``scenario``, defaults filled in; a
    ``ValueError`` naming the parameter for a bad value or one the scenario does not take."""
    names = SCENARIO_PARAMS.get(scenario, ())
    out = {}
    for name, value in given.items():
        if name not in names:
            takes = [s for s, ns in SCENARIO_PARAMS.items() if name in ns]
            where = f"applies to scenario {', '.join(takes)}" if takes else "unknown parameter"
            raise ValueError(f"{name}: {where}, not {scenario}")
        if value is not None:
            out[name] = EXPLORE_PARAMS[name].check(value)
    for name in names:
        out.setdefault(name, EXPLORE_PARAMS[name].check(EXPLORE_PARAMS[name].default))
    return out


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
