"""The Makefile: `make demo` installs only the kit (`pip install -e .`), `make test` adds the test
extra, `make lab` passes `--allow-root` when run as root. Checked with `make -n` in a copy (so
no virtualenv is built and the recipes are printed whatever this checkout holds)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_run(tmp_path: Path, target: str) -> str:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    # run under `make test` too: without the outer make's variables, and without its
    # "Entering directory" lines (printed by a make started from another)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_demo_installs_only_the_kit(tmp_path):
    out = dry_run(tmp_path, "demo")
    assert "pip install --quiet -e ." in out and "[test]" not in out
    assert out.strip().splitlines()[-1].endswith("-m kit demo --out reports/index.html")


def test_test_installs_the_test_extra(tmp_path):
    out = dry_run(tmp_path, "test")
    assert "pip install --quiet -e '.[test]'" in out
    assert out.strip().splitlines()[-1].endswith("-m pytest -q")


def test_lab_allows_root_only_as_root(tmp_path):
    out = dry_run(tmp_path, "lab").strip().splitlines()[-1]
    assert "jupyter lab --notebook-dir=notebooks" in out
    assert ("--allow-root" in out) == (os.getuid() == 0)


def test_readme_says_how_to_run_lab_as_root_and_what_demo_installs():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "--allow-root" in text and "pip install -e ." in text
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```")[1].strip().splitlines()
    assert [ln.split()[:2] for ln in block] == [["make", "demo"], ["make", "test"]]


def test_outputs_of_the_commands_are_ignored_by_git():
    lines = (ROOT / ".gitignore").read_text().splitlines()
    for d in ("runs/", "sweeps/", "reports/", "output/", "exports/"):
        assert d in lines
