"""Every documented ``%kit dashboard`` example opens without an error and with data in its plots:
the README, docs/, the notebooks, the ``%kit`` help and the dashboards' own docstring (and each
dashboard the README names beside its example)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kit.lab import magics
from kit.viz import dashboards as D

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"%kit dashboard [\w-]+(?: [\w]+=[^\s`'\")]+)*")


def _texts():
    yield "README.md", (ROOT / "README.md").read_text()
    for p in sorted((ROOT / "docs").glob("*.md")):
        yield f"docs/{p.name}", p.read_text()
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        yield f"notebooks/{p.name}", "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"])
    yield "%kit help", magics.__doc__
    yield "kit.viz.dashboards", D.__doc__


def documented() -> list[str]:
    found = {m.group(0) for _, text in _texts() for m in LINE.finditer(text)}
    # the README names the other dashboards beside its example ("# or host-map, ...")
    readme = (ROOT / "README.md").read_text()
    for m in re.finditer(r"%kit dashboard [\w-]+\s+# or ([\w, -]+)", readme):
        found |= {f"%kit dashboard {n.strip()}" for n in m.group(1).split(",") if n.strip()}
    return sorted(e for e in found if not e.split()[2].isupper())     # not a placeholder (NAME)


EXAMPLES = documented()


def test_the_examples_are_found():
    assert "%kit dashboard policy-explorer guests=4" in EXAMPLES
    assert {e.split()[2] for e in EXAMPLES} == set(D.DASHBOARDS)


@pytest.mark.parametrize("line", EXAMPLES)
def test_a_documented_dashboard_example_works(line, ip):
    d = ip.run_line_magic("kit", line.removeprefix("%kit "))
    assert isinstance(d, D.Dashboard)
    assert d.problem is None, d.problem
    assert "application/vnd.jupyter.widget-view+json" in d._repr_mimebundle_()
    if isinstance(d, D.PolicyExplorer):
        assert d.answers >= 1 and len(d.src_rate.data["model"]) == len(d.policies.value)
    if isinstance(d, D.GuestInspector):
        assert d.src.data["left"]
