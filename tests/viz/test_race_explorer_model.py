"""The race-explorer dashboard on the kit's own scenarios (kit.explore.catalog): the mirrors'
TOCTOU stepped through, and the srcu counterexample with the RMP entry, the mapping and the
counter after each step."""
from __future__ import annotations

import re

from kit.viz import dashboards as D


def state(d) -> dict:
    return {n: (v, c) for n, v, c in re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", d.state.value)}


def test_mirror_2021_two_vms_become_mirrors_of_each_other():
    d = D.RaceExplorer("mirror-setup", "mirror-2021")
    assert set(d.invariant.options) == {"no mirror of a mirror", "no mirror of a VM with vCPUs"}
    d.invariant.value = "no mirror of a mirror"
    assert d.fig.title.text.startswith("mirror-setup / mirror-2021: 'no mirror of a mirror' broken after")
    assert state(d)["A"][0].startswith("SEV") and state(d)["B"][0].startswith("SEV")     # before the first step
    d.goto(d.step.max)
    assert state(d)["A"][0].startswith("mirror of B") and state(d)["B"][0].startswith("mirror of A")
    d.scheme.value = "mirror-merged"
    d.run()
    assert d.result.ok and d.result.complete and "every invariant holds" in d.status.value


def test_srcu_shows_the_rmp_entry_the_mapping_and_the_counter_at_each_step():
    d = D.RaceExplorer("host-write-vs-conversion", "srcu")
    d.invariant.value = "no RMPUPDATE to private while mapped"
    n = d.step.max
    names = set(state(d))
    assert {"rmp", "directmap", "host maps", "kvm-&gt;psc_srcu readers"} <= names      # every name, from the start
    assert state(d)["rmp"] == ("shared", "") and state(d)["host maps"] == ("0", "")
    d.goto(n - 1)
    assert state(d)["host maps"][0] == "1" and state(d)["rmp"] == ("shared", "")          # mapped, still shared
    d.forward_button.click()
    assert state(d)["rmp"][0].startswith("private") and state(d)["rmp"][1] == "by this step"
    assert d.src.data["marker"][-1] == "star" and d.forward_button.disabled
