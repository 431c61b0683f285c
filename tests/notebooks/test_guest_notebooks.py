"""The guests notebook, executed with small parameters; assertions on its recorded result."""
import papermill
import pytest

from kit.guest import BEHAVIOURS, OUTCOMES
from kit.units import PAGES_PER_2M

from .test_kvm_notebooks import ends_with_inline_bokeh, side_file_matches

SMALL = dict(guest_mem="4MiB", max_exits=4, gmem_hugepages=True)


def test_guests(run_nb):
    path, (doc,) = run_nb("guests", **SMALL)
    side_file_matches(path, doc, "guests")
    ends_with_inline_bokeh(path)
    res = doc["results"]
    matrix = res["guest_matrix"]
    assert len(matrix) == len(BEHAVIOURS) * 2 * 2 * 2 and {r["outcome"] for r in matrix} == set(OUTCOMES)
    cells = res["summary"]["cells"]
    assert cells == {f'{r["behaviour"]}/{r["npf_policy"]}/{r["owner"]}/{r["vmm"]}': r["outcome"] for r in matrix}
    for npf in ("exit", "auto-convert"):
        assert cells[f"Linux/{npf}/userspace/qemu"] == cells[f"Linux/{npf}/guest/qemu"] == "converted"
        # the VMM that denies first: userspace's refusal terminates Linux, guest ownership converts
        assert cells[f"Linux/{npf}/userspace/denies-first"] == "terminated"
        assert cells[f"Linux/{npf}/guest/denies-first"] == "converted"
        assert f"Linux/{npf}/denies-first: terminated vs converted" in res["summary"]["owner_decides"]
        assert cells[f"Unenlightened/{npf}/userspace/qemu"] == "#VC"
    assert cells["Unenlightened/exit/guest/qemu"] == "stuck"
    decided = {(r["behaviour"], r["npf_policy"], r["vmm"]) for r in res["ownership_decides"]}
    assert ("Linux", "exit", "denies-first") in decided and ("Linux", "exit", "qemu") not in decided
    # the behaviour written in a cell: refused once per request, granted on the retry
    assert res["summary"]["retry"] == {
        "Linux/exit/userspace": "terminated", "Linux/exit/guest": "converted",
        "Linux/auto-convert/userspace": "terminated", "Linux/auto-convert/guest": "converted",
        "Resubmits/exit/userspace": "exited", "Resubmits/exit/guest": "converted",
        "Resubmits/auto-convert/userspace": "exited", "Resubmits/auto-convert/guest": "converted"}
    retried = [r for r in res["retry"] if r["behaviour"] == "Resubmits" and r["owner"] == "userspace"]
    assert all(r["refusals"] == 3 and r["view_agrees"] for r in retried)
    names = [s["step"] for s in res["linux_steps"]]
    assert names[:2] == ["accept", "psc"] and "pvalidate" in names and names.count("touch") == 3
    assert names.index("c_bit") > names.index("tlb_flush")
    assert res["linux_state"]["validated pages"] == 2 * PAGES_PER_2M and res["linux_state"]["#VC"] == 0
    assert doc["provenance"]["parameters"]["guest_mem"] == "4MiB"


def test_guests_on_a_subset(run_nb):
    _, (doc,) = run_nb("guests", behaviours=["Unenlightened"], owners=["guest"], vmms=["qemu"],
                       npf_policies=["exit"], **SMALL)
    (row,) = doc["results"]["guest_matrix"]
    assert (row["outcome"], row["memory_faults"]) == ("stuck", 4)
    assert doc["results"]["ownership_decides"] == []


@pytest.mark.parametrize("params,msg", [
    ({"vmms": ["libvirt"]}, "vmms: unknown 'libvirt'"),
    ({"guest_mem": "3MiB"}, "guest_mem: must be a whole number of 2MiB regions"),
    ({"behaviours": []}, "behaviours: expected a non-empty list")])
def test_bad_parameters_fail_in_the_validation_cell(run_nb, tmp_path, params, msg):
    with pytest.raises(papermill.PapermillExecutionError) as e:
        run_nb("guests", **params)
    assert msg in str(e.value) and "kit.lab.check(" in e.value.source
    assert not (tmp_path / "guests" / "guests.json").exists()
