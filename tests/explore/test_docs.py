"""docs/explore.md: its example runs, and its JSON shape is what to_json() gives."""
from __future__ import annotations

import json
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "explore.md"


def test_the_example_runs_and_finds_the_lost_update(capsys):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    namespace = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert "no lost update: broken after 4 steps" in capsys.readouterr().out
    from kit.explore import explore
    shown = json.loads(re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)[0])
    assert explore(namespace["LostUpdate"]()).to_json() == shown


def test_the_domain_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[1:]
    assert len(blocks) == 2
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "flip_back_split" in out and "upstream" in out and "no mirror of a mirror: broken after" in out
    assert "'tracking counter equals live maps'" not in out.splitlines()[-1]
    assert "no RMPUPDATE to private while mapped" in out.splitlines()[-1]
