"""Notebook parameters: one rule per parameter name, shared by every notebook and by the CLI.

A notebook's validation cell (right after its ``parameters`` cell) is one call,
``P = kit.lab.check("NOTEBOOK", name=value, ...)``: each value is checked by its rule in
:data:`RULES` (a ``ValueError`` naming the parameter and what is allowed), then the notebook's
own rules that span several parameters (:data:`NOTEBOOKS`), before any work. The rules are
plain objects, so they also run outside a kernel (``kit run`` checks values before a kernel
starts).

The rules of scenario parameters (``guests``, ``vcpus``, ``guest_mem``, ``host_cores``,
``host_mem``, ``policy``, ``seed``, ``steps``, ...) and of the sweeps over them are the scenario
table's (:data:`kit.sim.scenario.SCENARIO_PARAMS`); a notebook that builds a bare
:class:`~kit.host.Host` checks its ``host_mem``/``host_cores`` with the host's own bounds
(:mod:`kit.host.limits`). Only the notebook-only parameters are defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..guest.outcomes import OUTCOME_PARAMS
from ..explore import catalog
from ..explore.params import EXPLORE_PARAMS
from ..host.limits import HOST_CORES, HOST_MEM
from ..sim.calibrate import load_measurements
from ..sim.scenario import SCENARIO_PARAMS as SP
from ..sim.scenario import scenario
from ..units import PAGE_2M, PAGE_4K, PAGES_PER_2M, Param

#: The vCPUs of each guest in lazy-acceptance-scaling's guest and core sweeps.
SCALING_VCPUS = 128


def _configs(name, v):
    """Measured configurations: "all" or indices into data/measurements.csv's groups."""
    n = len(load_measurements())
    if v == "all":
        return list(range(n))
    return Param(name, "int", 0, n - 1).list_of(name).check(v)


def _start(name, v):
    """A cost-parameter set to start from: "base" or an existing JSON file."""
    if v != "base" and not (isinstance(v, str) and Path(v).is_file()):
        raise ValueError(f"{name}: expected \"base\" or a parameter file that exists, got {v!r}")
    return v


def _text(name):
    return Param(name, "text")


def _bool(name):
    return Param(name, "bool")


#: One rule per parameter name: a :class:`~kit.units.Param` (most), or a function
#: ``rule(name, value)`` for the two rules that read files.
RULES: dict = {
    # the scenario table, and sweeps over it
    **{n: SP[n] for n in ("policy", "engine", "workload", "guests", "vcpus", "host_cores",
                          "guest_mem", "host_mem", "touched", "seed", "steps", "p4k", "vmm")},
    "policies": SP["policy"].list_of("policies", help="direct-map policies to compare"),
    "des_policies": SP["policy"].list_of("des_policies", min=0,
                                         help="policies also timed by the discrete-event engine"),
    "vcpu_sweep": SP["vcpus"].list_of("vcpu_sweep"),
    "guest_sweep": SP["guests"].list_of("guest_sweep"),
    "core_sweep": SP["host_cores"].list_of("core_sweep"),
    "fragmentation_guest_mem": SP["guest_mem"].derive(name="fragmentation_guest_mem"),
    # notebook-only parameters
    "min_sev_asid": Param("min_sev_asid", "int", 1, 1007),
    "max_sev_asid": Param("max_sev_asid", "int", 1, 1006),
    "vms": Param("vms", "int", 1, 4096),
    "pages": Param("pages", "int", 1, 1 << 20),
    "runs": Param("runs", "int", 1, 1000),
    "configs": _configs, "start": _start, "des": _bool("des"), "outdir": _text("outdir"), "title": _text("title"),
    # KVM model notebooks (tour, memory-attributes, asid-mirroring)
    "vm_type": Param("vm_type", "choice", choices=("sw-protected", "snp")),
    "owners": Param("owner", "choice", choices=("userspace", "guest")).list_of("owners"),
    "npf_policies": Param("npf_policy", "choice", choices=("exit", "auto-convert")).list_of("npf_policies"),
    "max_exits": Param("max_exits", "int", 1, 1000),
    "gmem_hugepages": _bool("gmem_hugepages"),
}


# ---------------------------------------------------------------- rules of one notebook
@dataclass(frozen=True)
class NotebookRules:
    """A notebook's own rules: ``rules`` replace the shared ones for its parameters;
    ``cross(given, values)`` checks rules that span several parameters (``given``: the
    checked values as given, ``values``: the same with sizes in bytes), when all of ``needs``
    are given."""

    rules: dict = field(default_factory=dict)
    cross: Callable | None = None
    needs: tuple = ()


def _tour(given: dict, v: dict) -> None:
    if v["guest_mem"] > v["host_mem"] // 2:
        raise ValueError(f"guest_mem: at most half of host_mem ({given['host_mem']}), got {given['guest_mem']!r}")
    if v["pages"] >= v["guest_mem"] // PAGE_4K:
        raise ValueError(f"pages: must leave at least one page of guest_mem ({given['guest_mem']}) shared, "
                         f"got {v['pages']}")


def _asid_mirroring(given: dict, v: dict) -> None:
    if not 2 <= v["min_sev_asid"] <= v["max_sev_asid"]:
        raise ValueError(f"min_sev_asid: must be 2..max_sev_asid ({v['max_sev_asid']}) so that both SEV and "
                         f"SEV-ES/SNP have ASIDs, got {v['min_sev_asid']} (section 1 shows what an empty range does)")


def _lazy_acceptance_scaling(given: dict, v: dict) -> None:
    """Every configuration of the sweeps fits the host: the vCPU sweep's one guest, the guest
    sweep's guests of SCALING_VCPUS, the core sweep at the largest guest count."""
    fixed = dict(guest_mem=v["guest_mem"], host_cores=v["host_cores"], host_mem=v["host_mem"])
    for n in v["guest_sweep"]:
        scenario(guests=n, vcpus=SCALING_VCPUS, **fixed)
    for n in v["vcpu_sweep"]:
        scenario(guests=1, vcpus=n, **fixed)
    for n in v["core_sweep"]:
        scenario(guests=max(v["guest_sweep"]), vcpus=SCALING_VCPUS, **{**fixed, "host_cores": n})


def _race_scenario(name, v):
    """A scenario of the race explorer's catalog: ``EXPLORE_PARAMS["scenario"]`` over the names
    :data:`kit.explore.catalog.SCENARIOS` holds when the notebook runs (a cell may add one)."""
    return EXPLORE_PARAMS["scenario"].derive(choices=tuple(catalog.SCENARIOS)).check(v, name)


def _race_scheme(name, v):
    """"all", or a scheme of the catalog (``EXPLORE_PARAMS["scheme"]`` over
    :data:`kit.explore.catalog.SCHEMES`)."""
    return EXPLORE_PARAMS["scheme"].derive(choices=("all", *catalog.SCHEMES)).check(v, name)


#: The modes the races notebook runs (a replay takes a schedule: ``kit explore --mode replay``)
RACE_MODES = ("exhaustive", "bounded", "random")


def _races(given: dict, v: dict) -> None:
    """The scheme belongs to the scenario; in random mode the bound is a number of runs."""
    schemes = catalog.schemes_for(v["scenario"])
    if v["scheme"] != "all" and v["scheme"] not in schemes:
        raise ValueError(f"scheme: {v['scheme']!r} is not a scheme of {v['scenario']}; "
                         f"allowed: all, {', '.join(schemes)}")
    if v["mode"] == "random":
        EXPLORE_PARAMS["runs"].check(v["bound"], "bound")


#: The rules of each of the kit's notebooks (by name, as ``check``'s first argument).
NOTEBOOKS: dict[str, NotebookRules] = {
    "tour": NotebookRules(
        {"host_mem": HOST_MEM.derive(name="host_mem", default="4GiB"),
         "guest_mem": Param("guest_mem", "size", PAGE_2M, HOST_MEM.max // 2, multiple=PAGE_2M,
                            help="guest_memfd size, bound whole by one memslot", why="half of the largest host")},
        _tour, ("host_mem", "guest_mem", "pages")),
    "memory-attributes": NotebookRules(
        {"pages": Param("pages", "int", 1, PAGES_PER_2M, why="one 2MiB guest_memfd range")}),
    "asid-mirroring": NotebookRules({}, _asid_mirroring, ("min_sev_asid", "max_sev_asid")),
    "lazy-acceptance-scaling": NotebookRules(
        {}, _lazy_acceptance_scaling, ("guest_sweep", "vcpu_sweep", "core_sweep", "guest_mem", "host_cores",
                                       "host_mem")),
    "guests": NotebookRules({n: OUTCOME_PARAMS[n] for n in ("behaviours", "npf_policies", "owners", "vmms",
                                                             "protocol", "guest_mem", "max_exits", "gmem_hugepages")}),
    "directmap-policies": NotebookRules(),
    "calibration": NotebookRules(),
    # the race explorer's options are kit.explore.params.EXPLORE_PARAMS'
    "races": NotebookRules(
        {"scenario": _race_scenario, "scheme": _race_scheme,
         "mode": EXPLORE_PARAMS["mode"].derive(choices=RACE_MODES),
         "bound": EXPLORE_PARAMS["bound"].derive(default=2,
                                                 help=EXPLORE_PARAMS["bound"].help + "; exhaustive: not used"),
         "seed": EXPLORE_PARAMS["seed"]},
        _races, ("scenario", "scheme", "mode", "bound")),
}


def rule(name: str, notebook: str | None = None):
    """The rule for parameter ``name`` (of ``notebook``, when it has its own)."""
    own = NOTEBOOKS[notebook].rules if notebook is not None else {}
    return own.get(name) or RULES.get(name)


def check(notebook: str | None = None, /, **values) -> dict:
    """Validate notebook parameters by name; returns them (lists de-duplicated, in order;
    sizes as given). ``notebook``: the notebook's name, for its own rules (:data:`NOTEBOOKS`)."""
    if notebook is not None and notebook not in NOTEBOOKS:
        raise ValueError(f"notebook: unknown {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    given, normal = {}, {}
    for name, v in values.items():
        r = rule(name, notebook)
        if r is None:
            known = sorted({*RULES, *(NOTEBOOKS[notebook].rules if notebook else {})})
            raise ValueError(f"{name}: no validation rule for this parameter; known: {', '.join(known)}")
        if isinstance(r, Param):
            normal[name] = r.check(v, name)
            given[name] = v if r.kind == "size" else normal[name]     # sizes keep their text ("160GiB")
        else:
            given[name] = normal[name] = r(name, v)
    nb = NOTEBOOKS.get(notebook)
    if nb is not None and nb.cross is not None and all(n in values for n in nb.needs):
        nb.cross(given, normal)
    return given
