"""One scenario, validated once: the bounds table (kit.sim.scenario), the Param it is made of
(kit.units), the direct-map policy object a scenario carries, and every surface that derives
from the table (Host, lab.validate, the notebooks' validation cells, the dashboards, the CLI,
docs/sim-model.md)."""
import ast
import inspect
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kit.host import Host
from kit.host.limits import HOST_CORES, HOST_MEM
from kit.host.policies import DIRECTMAP_POLICIES, SplitOnDemand
from kit.lab import validate as V
from kit.sim import api
from kit.sim.scenario import (SCENARIO_PARAMS as SP, TOTAL_VCPUS, Scenario, bounds_table, policy_key,
                              policy_label, scenario)
from kit.units import GiB, KVM_MAX_VCPUS, PAGE_2M, TiB, Param, ParamTypeError, format_size

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB")


# ---------------------------------------------------------------- user policies, as a notebook cell writes them
class KernelRangesOnly(SplitOnDemand):
    """A policy with a name of its own."""

    name = "split-kernel-ranges"


class PresplitInDisguise(SplitOnDemand):
    """Keeps the built-in's name, but splits the whole direct map at boot."""

    def boot(self, host):
        host.directmap.set_memory_4k(0, host.nr_pages)


def test_a_policy_with_its_own_name_is_simulated_and_compared_like_a_builtin():
    mine = KernelRangesOnly()
    r = api.simulate(policy=mine, **SMALL)
    assert r.scenario.directmap_policy is mine and r.scenario.policy == "split-kernel-ranges"
    assert r.to_json()["policy"] == "split-kernel-ranges"
    assert r.to_json()["scenario"]["policy_class"].endswith("KernelRangesOnly")
    builtin = api.simulate(policy="split-on-demand", **SMALL)
    assert r.fault_in_gbps == pytest.approx(builtin.fault_in_gbps)       # same behaviour, own name
    from kit.sim.experiments import policy_table, sweep
    rows = policy_table([mine, "split-on-demand"], configs=[4])
    assert [row["policy"] for row in rows] == ["split-kernel-ranges", "split-on-demand"]
    assert [row["policy"] for row in sweep("guests", [1, 2], policies=[mine], **{**SMALL, "guests": 1})] == \
        ["split-kernel-ranges"] * 2
    assert V.check(policies=[mine, "none", mine])["policies"] == [mine, "none"]


def test_a_subclass_keeping_a_builtin_name_is_not_replaced_by_the_builtin():
    builtin = api.simulate(policy="split-on-demand", **SMALL)            # cached first
    sub = api.simulate(policy=PresplitInDisguise(), **SMALL)
    presplit = api.simulate(policy="presplit-4k", **SMALL)
    # the overridden boot shows: the whole direct map is 4K, as with presplit-4k
    assert builtin.directmap["DirectMap4k"] < builtin.directmap["DirectMap1G"]
    assert sub.directmap == presplit.directmap and sub.directmap["DirectMap1G"] == 0
    assert sub.fault_in_gbps == pytest.approx(presplit.fault_in_gbps)
    assert sub.fault_in_gbps != pytest.approx(builtin.fault_in_gbps)
    assert sub.scenario.policy == "split-on-demand (PresplitInDisguise)"
    des = api.simulate(policy=PresplitInDisguise, engine="des", **SMALL)  # a class works too
    assert des.directmap["DirectMap1G"] == 0


def test_the_trace_cache_and_scenario_equality_tell_policies_apart():
    a, b = scenario(policy="split-on-demand", **SMALL), scenario(policy=SplitOnDemand(), **SMALL)
    assert a == b and hash(a) == hash(b) and policy_key(a.directmap_policy) == "split-on-demand"
    c = scenario(policy=PresplitInDisguise(), **SMALL)
    assert c != a and policy_key(c.directmap_policy) != "split-on-demand"
    assert c == scenario(policy=PresplitInDisguise(), **SMALL)           # same class, same fields
    api.simulate(policy="split-on-demand", **SMALL)
    api.simulate(policy=PresplitInDisguise(), **SMALL)
    keys = [k for k in api._TRACE_CACHE if k.guest_mem == 8 * GiB and k.host_mem == 64 * GiB and k.vcpus == 8]
    policies = {policy_label(k.directmap_policy) for k in keys}
    assert {"split-on-demand", "split-on-demand (PresplitInDisguise)"} <= policies
    assert policy_label("none") == "none" and policy_label(DIRECTMAP_POLICIES["none"]) == "none"


# ---------------------------------------------------------------- Param
def test_param_checks_and_names_the_limit():
    p = Param("vcpus", "int", 1, KVM_MAX_VCPUS, why="KVM_MAX_VCPUS")
    assert p.check(np.int64(8)) == 8 and type(p.check(np.int64(8))) is int
    with pytest.raises(ValueError, match=r"vcpus: expected an integer 1\.\.4096, got 4097 \(the limit: KVM_MAX_VCPUS\)"):
        p.check(4097)
    for bad in ("8", True, 2.5):
        with pytest.raises(ParamTypeError):
            p.check(bad)
    assert issubclass(ParamTypeError, ValueError) and issubclass(ParamTypeError, TypeError)
    s = Param("mem", "size", PAGE_2M, 4 * GiB, multiple=PAGE_2M)
    assert s.check("1GiB") == GiB
    with pytest.raises(ValueError, match="mem: must be a whole number of 2MiB regions"):
        s.check("3MiB")
    with pytest.raises(ValueError, match="mem: at most 4GiB"):
        s.check("6GiB")
    assert s.in_units(GiB, "mem_gib", "GiB").max == 4 and s.in_units(GiB, "mem_gib", "GiB").min == 1
    lst = Param("policy", "choice", choices=("a", "b")).list_of("policies")
    assert lst.check("a") == ["a"] and lst.check(["b", "a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError, match="policies: unknown 'z'"):
        lst.check(["a", "z"])
    with pytest.raises(ValueError, match="fraction 0..1"):
        Param("p", "float", 0, 1, unit="fraction").check(float("nan"))


# ---------------------------------------------------------------- bounds
def test_bounds_are_the_documented_limits():
    assert SP["vcpus"].max == KVM_MAX_VCPUS == 4096
    assert SP["guests"].max == 1023
    # a guest is one memslot (KVM_MEM_MAX_NR_PAGES pages), not the largest host: the issue's
    # `simulate --guest-mem 8TiB --host-mem 9TiB` ended in a KvmError from the memslot
    assert SP["host_mem"].max == HOST_MEM.max == 64 * TiB and SP["guest_mem"].max == 8191 * GiB
    assert SP["host_cores"].max == HOST_CORES.max == 8192
    assert TOTAL_VCPUS.max == 16 * KVM_MAX_VCPUS
    for p in SP.values():
        if p.kind in ("int", "size", "float"):
            assert p.why or p.unit == "fraction", p.name
        if p.default is not None:
            assert p.check(p.default) is not None                       # every default within bounds


@pytest.mark.parametrize("name", [n for n, p in SP.items() if p.kind in ("int", "size")])
def test_scenario_rejects_exactly_past_the_tables_max(name):
    p = SP[name]
    step = p.multiple if p.kind == "size" else 1
    assert p.check(p.max) == p.max
    with pytest.raises(ValueError, match=f"^{name}: "):
        p.check(p.max + step)
    with pytest.raises(ValueError, match=f"^{name}:"):
        scenario(**{name: p.max + step})
    with pytest.raises(ValueError, match=f"^{name}:"):
        V.check(**{name: p.max + step})                                  # lab.validate: the same rule


def test_cross_parameter_limits():
    with pytest.raises(ValueError, match="guests: 17 guests with 69632 vCPUs in all; at most 65536"):
        scenario(guests=17, vcpus=4096, guest_mem="4MiB", host_mem="17GiB")
    with pytest.raises(ValueError, match="guests: .* do not fit"):
        scenario(guests=2, guest_mem="1TiB", host_mem="1536GiB")
    with pytest.raises(ValueError, match="guest_specs: the number of guests"):
        scenario(guest_specs=[(1, "4MiB")] * 1024, host_mem="64GiB")
    s = scenario(guests=1023, vcpus=1, guest_mem="4MiB", host_mem="21GiB")  # the whole ASID space
    assert s.guests == 1023


def test_host_checks_mem_and_cores_through_the_same_params():
    for bad, match in ((dict(mem=HOST_MEM.max + PAGE_2M), "mem: at most 64TiB"),
                       (dict(cores=HOST_CORES.max + 1), "cores: expected an integer 1..8192"),
                       (dict(mem="3MiB"), "mem: must be a whole number of 2MiB regions")):
        with pytest.raises(ValueError, match=match):
            Host(**{"mem": "64MiB", **bad})
    assert Host(mem="64MiB", cores=HOST_CORES.max).cores == 8192


# ---------------------------------------------------------------- surfaces
def test_simulate_and_scenario_defaults_are_the_tables():
    for fn in (api.simulate, scenario):
        sig = inspect.signature(fn)
        for name, p in SP.items():
            assert sig.parameters[name].default == p.default, (fn.__name__, name)
    assert api.Scenario is Scenario and api.scenario is scenario          # old names importable


def test_scenario_check_is_the_tables_one_by_one():
    from kit.sim.scenario import check
    assert check(guests=2, guest_mem="8GiB", p4k=1) == {"guests": 2, "guest_mem": 8 * GiB, "p4k": 1.0}
    with pytest.raises(ValueError, match="outdir: not a scenario parameter"):
        check(outdir="x")


def test_lab_rules_are_the_tables():
    for name in ("guests", "vcpus", "guest_mem", "host_cores", "host_mem", "policy", "engine", "workload",
                 "seed", "steps", "p4k", "touched"):
        assert V.RULES[name] is SP[name]
    assert V.RULES["vcpu_sweep"].item is SP["vcpus"] and V.RULES["guest_sweep"].item is SP["guests"]
    assert V.RULES["core_sweep"].item is SP["host_cores"] and V.RULES["policies"].item is SP["policy"]
    assert V.RULES["fragmentation_guest_mem"].max == SP["guest_mem"].max
    assert V.rule("host_mem", "tour").max == HOST_MEM.max and V.rule("host_mem", "tour").multiple == PAGE_2M
    with pytest.raises(ValueError, match=r"^guest_sweep\[1\]: expected an integer 1..1023"):
        V.check(guest_sweep=[1, 1024])
    with pytest.raises(ValueError, match="notebook: unknown 'tuor'"):
        V.check("tuor", pages=1)


def _validation_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return nb.cells[i + 1].source


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebook_validation_cells_are_one_package_call(name):
    """No hand-written rule in a notebook: import, one kit.lab.check(NAME, ...) call, the timestamp."""
    tree = ast.parse(_validation_cell(name))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.If, ast.Raise, ast.For, ast.While))]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "kit.lab.check"]
    assert len(calls) == 1 and ast.literal_eval(calls[0].args[0]) == name
    assert name in V.NOTEBOOKS
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    ns: dict = {}
    exec(params.source, ns)                                             # the defaults pass their check
    V.check(name, **{k.arg: ns[k.arg] for k in calls[0].keywords})


@pytest.mark.parametrize("name,params,msg", [
    ("tour", {"guest_mem": "3MiB"}, "guest_mem: must be a whole number of 2MiB regions"),
    ("tour", {"guest_mem": "4GiB"}, "guest_mem: at most half of host_mem (4GiB)"),
    ("tour", {"pages": 2048}, "pages: must leave at least one page"),
    ("memory-attributes", {"pages": 513}, "pages: expected an integer 1..512"),
    ("asid-mirroring", {"min_sev_asid": 9, "max_sev_asid": 8}, "min_sev_asid: must be 2..max_sev_asid (8)"),
    ("lazy-acceptance-scaling", {"guest_sweep": [1, 64], "guest_mem": "160GiB", "vcpu_sweep": [8],
                                 "core_sweep": [64], "host_cores": 512, "host_mem": "1536GiB"}, "guests:")])
def test_notebook_rules_live_in_the_package(name, params, msg):
    base = {"tour": dict(host_mem="4GiB", guest_mem="8MiB", pages=16)}.get(name, {})
    with pytest.raises(ValueError) as e:
        V.check(name, **{**base, **params})
    assert msg in str(e.value)


def test_dashboard_widgets_derive_from_the_table():
    from kit.viz import dashboards as D
    pe = D.PolicyExplorer(policies=("presplit-4k", KernelRangesOnly()))
    for w, p in ((pe.guests, SP["guests"]), (pe.vcpus, SP["vcpus"]), (pe.host_cores, SP["host_cores"])):
        assert (w.min, w.max) == (p.min, p.max)
    assert (pe.guest_mem.min, pe.guest_mem.max) == (1, SP["guest_mem"].max // GiB)
    assert (pe.host_mem.min, pe.host_mem.max) == (SP["host_mem"].min // GiB, SP["host_mem"].max // GiB)
    assert (pe.guests.value, pe.vcpus.value, pe.host_cores.value) == (1, 128, 512)
    labels = [label for label, _ in pe.policies.options]
    assert labels[:len(DIRECTMAP_POLICIES)] == list(SP["policy"].choices) and labels[-1] == "split-kernel-ranges"
    assert set(pe.results) == {"presplit-4k", "split-kernel-ranges"}          # compared like a built-in
    with pytest.raises(ValueError, match="guests: expected an integer 1..1023"):
        D.PolicyExplorer(guests=1024)
    sr = D.SimulationRunner(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB",
                            policy=PresplitInDisguise())
    for w, p in ((sr.guests, SP["guests"]), (sr.vcpus, SP["vcpus"]), (sr.host_cores, SP["host_cores"]),
                 (sr.seed, SP["seed"])):
        assert (w.min, w.max) == (p.min, p.max)
    assert list(sr.workload.options) == list(SP["workload"].choices)
    assert [label for label, _ in sr.policy.options][-1] == "split-on-demand (PresplitInDisguise)"
    hm_options = [label for label, _ in D.HostMap().policy.options]
    assert hm_options == list(SP["policy"].choices)


def test_cli_simulate_options_derive_from_the_table():
    from kit.cli import parser
    sub = next(a for a in parser()._actions if a.dest == "cmd").choices["simulate"]
    opts = {a.dest: a for a in sub._actions}
    for name, p in SP.items():
        if name in ("steps", "p4k", "touched"):
            continue                                                    # not CLI options
        assert opts[name].default == p.default and opts[name].help == p.describe()
    help_text = re.sub(r"\s+", " ", sub.format_help())
    assert "1..4096 vCPUs" in help_text and "1..1023 guests" in help_text and "1..8192 CPUs" in help_text
    assert f"4MiB..{format_size(SP['guest_mem'].max)}" in help_text and f"1GiB..{format_size(HOST_MEM.max)}" in help_text


def test_docs_bounds_table_is_the_tables():
    text = (ROOT / "docs" / "sim-model.md").read_text()
    block = text.split("<!-- bounds table:")[1].split("<!-- end bounds table -->")[0]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    want = [f"| `{r['name']}` | {r['min']} | {r['max']} | {r['unit']} | {r['why']} |" for r in bounds_table()]
    assert rows == want


def test_no_citation_outside_the_repository():
    notes = ("kvm-uapi.md", "snp-rmp.md", "directmap.md", "questions.md", "sources-2026.md", "seeds/",
             "reference notes", "measurements notes")
    files = [*(ROOT / "kit" / "sim").glob("*.py"), ROOT / "data" / "cost_params.json", ROOT / "docs" / "sim-model.md",
             ROOT / "docs" / "sources.md", ROOT / "docs" / "cost-figures.md", ROOT / "kit" / "host" / "limits.py",
             ROOT / "kit" / "lab" / "validate.py"]
    for f in files:
        if f.name == "trace.py":
            continue
        text = f.read_text()
        assert not [n for n in notes if re.search(r"(?<![/(\[])" + re.escape(n), text)], f
    assert (ROOT / "docs" / "sources.md").exists() and (ROOT / "docs" / "cost-figures.md").exists()


# ---------------------------------------------------------------- bounds across parameters, checked before work
def test_a_guest_is_one_memslot():
    """The issue's `simulate --guest-mem 8TiB --host-mem 9TiB` ended in a KvmError from
    KVM_SET_USER_MEMORY_REGION2 (more than KVM_MEM_MAX_NR_PAGES pages): refused by the table."""
    with pytest.raises(ValueError, match=r"^guest_mem: at most 8191GiB, got 8TiB \(the limit: a guest is one memslot"):
        api.simulate(guest_mem="8TiB", host_mem="9TiB")
    r = api.simulate(guest_mem="8191GiB", host_mem="9TiB", vcpus=8, host_cores=16)
    assert r.scenario.guest_mem == 8191 * GiB and r.fault_in_gbps > 0


def test_a_des_run_traces_a_bounded_amount_of_work():
    from kit.sim.scenario import GUEST_KINDS, TOTAL_STEPS, TOTAL_TOUCHED
    big = dict(guest_mem="4TiB", vcpus=1024, host_mem="5TiB")
    assert scenario(**big).engine == "analytic"                          # the analytic engine samples
    with pytest.raises(ValueError, match=r"^touched: 1 guests fault in 4TiB in all; a DES run traces at most 2TiB"):
        scenario(engine="des", **big)
    assert scenario(engine="des", touched=TOTAL_TOUCHED.max, **big).touched == 2 * TiB
    with pytest.raises(ValueError, match=f"^steps: 2 guests x {TOTAL_STEPS.max} conversions"):
        scenario("conversions", engine="des", steps=TOTAL_STEPS.max, **SMALL | {"guests": 2})
    assert scenario("conversions", engine="des", steps=TOTAL_STEPS.max, **SMALL).steps == TOTAL_STEPS.max
    kinds = [(1, f"{4 * (i + 1)}MiB") for i in range(GUEST_KINDS.max + 1)]
    with pytest.raises(ValueError, match=f"^guest_specs: {GUEST_KINDS.max + 1} different"):
        scenario(guest_specs=kinds, host_mem="64GiB")
    assert len(scenario(guest_specs=kinds[:-1], host_mem="64GiB").specs) == GUEST_KINDS.max


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_scenario_input_is_a_scenario_or_one_valueerror(data):
    """Values in and out of every bound, of every type: scenario() returns or raises a
    ValueError (ParamTypeError is one) naming a parameter; never anything else."""
    kw = {}
    for name, p in SP.items():
        if not data.draw(st.booleans(), label=f"set {name}"):
            continue
        if p.kind in ("int", "float"):
            good = st.integers(int(p.min), int(p.max)) if p.kind == "int" else st.floats(p.min, p.max)
        elif p.kind == "size":
            good = st.integers(int(p.min) // p.multiple, int(p.max) // p.multiple).map(lambda n, m=p.multiple: n * m)
        else:
            good = st.sampled_from(list(p.choices))
        bad = st.one_of(st.none(), st.text(max_size=6), st.floats(), st.integers(-2 ** 70, 2 ** 70),
                        st.booleans(), st.lists(st.integers(0, 3), max_size=2))
        kw[name] = data.draw(st.one_of(good, bad), label=name)
    try:
        s = scenario(**kw)
    except ValueError as e:
        assert re.match(r"^[a-z_0-9]+(\[\d+\])?[ :,]", str(e)), str(e)
    else:
        assert isinstance(s, Scenario)
