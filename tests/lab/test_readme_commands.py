"""Every shell command README.md and notebooks/README.md show runs, in a temporary folder.

Commands come from fenced blocks with no language or ``sh``/``bash``/``console``/``shell``
(the Python blocks run in ``test_readme.py``); a line ending in ``\\`` continues on the next, a
``# ...`` comment is dropped, and the lines of a block run in order in one folder (a later
line may use what an earlier one wrote). Every command must be known to :data:`EXPECT`, which
says what it must print or write: a README that gains a command this test does not know how to
run fails :func:`test_every_readme_command_is_known`.

How a command is run:

- ``kit ...`` as ``python -m kit ...`` with this interpreter (the ``kit`` script is
  ``kit.cli:entry``, as ``python -m kit`` is: checked below);
- ``%...`` lines in the test IPython shell (the first is ``%load_ext kit``), their values checked;
- ``make demo``: the Makefile's recipe (``$(PY) -m kit demo --out reports/index.html``) with this
  interpreter as ``$(PY)``; the recipe's prerequisite (building ``.venv``) is not run;
- ``make test`` is not run (it would run this suite again): its recipe must be the suite's
  command, ``$(PY) -m pytest -q``;
- ``make lab`` as ``make -n lab`` (JupyterLab is not started; the dry run must show it).

An optional part ``[A]`` or ``[A | B]`` is run once without any optional part and once with
each alternative (each of those in its own sub-folder). Work is made small by
:data:`SMALLER`, which replaces parts of a command by what the test runs instead.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", ROOT / "notebooks" / "README.md"]
SHELL = {"", "sh", "bash", "console", "shell"}
SCHEDULER = "tcp://HOST:8786"           # a README placeholder: replaced by a scheduler this test starts

#: README spelling -> what the test runs instead (the same command on less work), and why
SMALLER = [
    ("--guest-mem 160GiB", "--guest-mem 16GiB"),          # the discrete-event engine on 8 x 160 GiB: minutes
    ("--seeds 2", "--seeds 1"),                           # one run per grid point
    ("--grid guest_mem=64GiB,160GiB", "--grid guest_mem=64GiB"),
    ("--grid host_cores=256,512", "--grid host_cores=256"),
    ("-p steps 500", "-p steps 100 -p policies ['presplit-4k','split-on-demand']"),
    ("--grid steps=20,40", "--grid steps=10,20"),
    ("kit calibrate", "kit calibrate -o cost_params.json"),   # not over the kit's own data/cost_params.json
    ("kit demo --out reports/index.html", "kit demo --out reports/index.html --policies presplit-4k,split-on-demand --steps 200"),
]


@dataclass
class Ran:
    """One command as run: its variant text, folder, output and (``%`` lines) value."""
    command: str
    cwd: Path
    stdout: str = ""
    value: object = None


def prints(*texts):
    def check(r: Ran):
        for t in texts:
            assert t in r.stdout, (r.command, t, r.stdout[-2000:])
    return check


def writes(*paths):
    def check(r: Ran):
        for p in paths:
            assert (r.cwd / p).exists(), (r.command, p, sorted(str(q.relative_to(r.cwd)) for q in r.cwd.rglob("*"))[:50])
    return check


def both(*checks):
    def check(r: Ran):
        for c in checks:
            c(r)
    return check


def simulate_output(r: Ran):
    if "--json" in r.command:
        out = json.loads(r.stdout)
        assert out["fault_in_gbps"] > 0 and out["policy"] == "presplit-4k"
    else:
        assert "fault-in GB/s" in r.stdout and "utilisation" in r.stdout, r.stdout
    if "--engine des" in r.command:
        assert "des" in r.stdout


def explore_output(r: Ran):
    """``kit explore``: the table and the shortest counterexamples, or exactly one JSON object."""
    if "--json" in r.command:
        doc = json.loads(r.stdout)
        assert set(doc) == {"complete", "schedules", "invariants"} and doc["complete"] is True
        assert doc["invariants"]["no RMPUPDATE to private while mapped"]["violations"] > 0
    else:
        assert r.stdout.splitlines()[1].split() == ["invariant", "schedules", "violations", "complete"], r.stdout
        assert ": shortest counterexample, " in r.stdout and "invariants broken:" in r.stdout


def sim_result(r: Ran):
    assert r.value.fault_in_gbps > 0 and r.value.scenario.guests == 8 and r.value.scenario.policy == "presplit-4k"


def widget(r: Ran):
    assert "application/vnd.jupyter.widget-view+json" in r.value._repr_mimebundle_()


#: every README command (comments dropped, continued lines joined) -> what it must print or write
EXPECT = {
    "make demo": both(prints("measured rows reproduced within their spread", "report:"),
                      writes("reports/index.html", "reports/directmap-policies/directmap-policies.json")),
    "make test": None,                  # checked against the Makefile, not run
    "make lab": prints("jupyter lab --notebook-dir=notebooks"),
    "kit simulate --workload lazy-accept --guests 8 --vcpus 128 --guest-mem 160GiB --host-cores 512 "
    "--host-mem 1536GiB --policy presplit-4k [--engine des] [--json]": simulate_output,
    "kit calibrate": both(prints("free parameters: 4", "parameter set:"), writes("cost_params.json")),
    "%load_ext kit": None,
    "%kit simulate --guests 8 --vcpus 128 --guest-mem 160GiB --policy presplit-4k": sim_result,
    "%kit dashboard policy-explorer": widget,
    "%kit run tour -p pages 8 -o runs/tour": both(prints("executed notebook:", "result: tour", "report:"),
                                                   writes("runs/tour/tour.json", "runs/tour/report.html")),
    "kit run directmap-policies -p steps 500 -o runs/dp": both(
        prints("executed notebook:", "result: directmap-policies"),
        writes("runs/dp/directmap-policies.ipynb", "runs/dp/directmap-policies.json", "runs/dp/report.html")),
    "kit sweep lazy-acceptance-scaling --grid guest_mem=64GiB,160GiB --grid host_cores=256,512 --seeds 2 "
    "-o sweeps/scaling [--workers 2 | --scheduler tcp://HOST:8786]": both(
        prints("1 runs: 1 complete, 0 failed or missing"),
        writes("sweeps/scaling/table.csv", "sweeps/scaling/table.json", "sweeps/scaling/report.html")),
    "kit run tour -p pages 8 -o runs/tour": both(prints("executed notebook:", "result: tour"),
                                                  writes("runs/tour/tour.json", "runs/tour/report.html")),
    "kit sweep asid-mirroring --grid steps=20,40 -o sweeps/asid": both(
        prints("2 runs: 2 complete, 0 failed or missing"), writes("sweeps/asid/table.csv", "sweeps/asid/report.html")),
    "kit report runs/tour -o tour.html": both(prints("report:"), writes("tour.html")),
    "kit explore host-write-vs-conversion --scheme srcu [--json]": explore_output,
    "kit explore mirror-setup --scheme mirror-2021 --mode bounded --bound 2": prints(
        "mirror-setup / mirror-2021 [bounded]", "no mirror of a mirror: shortest counterexample"),
    "kit run races -p scheme flip_back_unmap -o runs/races": both(
        prints("executed notebook:", "result: races", "report:"), writes("runs/races/races.json", "runs/races/report.html")),
}


# ------------------------------------------------------------------ reading the READMEs
@dataclass
class Command:
    text: str                           # as the README shows it (comment dropped, lines joined)
    base: list                          # tokens without the optional parts
    options: list = field(default_factory=list)   # each optional part: its alternatives (token lists)

    def variants(self) -> list[list[str]]:
        """The command without optional parts, then with each alternative of each part."""
        out = [self.base]
        for alternatives in self.options:
            out += [self.base + alt for alt in alternatives]
        return out


def parse(line: str) -> Command:
    """A README line: ``%`` lines whole (run as written, comment included: ``%kit`` drops it);
    shell lines as tokens, with their ``[...]`` optional parts apart."""
    if line.startswith("%"):
        return Command(" ".join(re.sub(r"\s#\s.*$", "", line).split()), [line])
    tokens = shlex.split(line, comments=True)
    base, options, group = [], [], None
    for t in tokens:
        if group is None and t.startswith("["):
            group, t = [[]], t[1:]
        if group is None:
            base.append(t)
            continue
        closing = t.endswith("]")
        t = t[:-1] if closing else t
        if t == "|":
            group.append([])
        elif t:
            group[-1].append(t)
        if closing:
            options.append(group)
            group = None
    return Command(" ".join(tokens), base, options)


def blocks(path: Path) -> list[list[Command]]:
    """The shell blocks of a README, each a list of commands."""
    out = []
    for lang, body in re.findall(r"^```([\w-]*)\n(.*?)^```", path.read_text(), flags=re.M | re.S):
        if lang not in SHELL:
            continue
        lines, cur = [], ""
        for raw in body.splitlines():
            raw = raw.removeprefix("$ ") if lang == "console" else raw
            if raw.rstrip().endswith("\\"):
                cur += raw.rstrip()[:-1] + " "
                continue
            cur += raw
            if cur.strip() and not cur.strip().startswith("#"):
                lines.append(cur.strip())
            cur = ""
        out.append([parse(ln) for ln in lines])
    return out


ALL = [(f"{p.relative_to(ROOT)}:{i}", b) for p in READMES for i, b in enumerate(blocks(p))]


def test_every_readme_command_is_known():
    """A command added to a README must be added to EXPECT (and, if it is slow, to SMALLER)."""
    shown = [c.text for _, b in ALL for c in b]
    assert len(shown) >= 10
    unknown = [c for c in shown if c not in EXPECT]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"
    stale = [c for c in EXPECT if c not in shown]
    assert not stale, f"EXPECT names commands no README shows any more: {stale}"


def test_the_kit_script_is_python_m_kit():
    """``kit`` (the console script) and ``python -m kit`` are the same entry point."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"kit": "kit.cli:entry"}
    assert "from .cli import entry" in (ROOT / "kit" / "__main__.py").read_text()


# ------------------------------------------------------------------ running them
def makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", ln))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return recipe


def smaller(tokens: list[str]) -> list[str]:
    text = " ".join(tokens)
    for readme, test in SMALLER:
        text = re.sub(rf"(?<!\S){re.escape(readme)}(?!\S)", test, text)
    return text.split()


def run_shell(tokens: list[str], cwd: Path, scheduler) -> Ran:
    tokens = [scheduler() if t == SCHEDULER else t for t in tokens]
    if tokens[:2] == ["make", "test"]:
        assert makefile_recipe("test") == ["$(PY) -m pytest -q"]
        return Ran(" ".join(tokens), cwd)
    if tokens[:2] == ["make", "lab"]:
        r = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return Ran(" ".join(tokens), cwd, r.stdout)
    if tokens[:2] == ["make", "demo"]:
        (recipe,) = makefile_recipe("demo")
        tokens = recipe.replace("$(PY) -m ", "").split()
    assert tokens[0] == "kit", f"no rule to run {tokens}"
    argv = [sys.executable, "-m", "kit", *smaller(tokens)[1:]]
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (argv, r.stdout[-3000:], r.stderr[-3000:])
    return Ran(" ".join(tokens), cwd, r.stdout)


def run_magic(line: str, cwd: Path, ip, monkeypatch, capsys) -> Ran:
    monkeypatch.chdir(cwd)
    line = " ".join(smaller(line.split()))
    res = ip.run_cell(line)
    res.raise_error()
    return Ran(line, cwd, capsys.readouterr().out, res.result)


def git_status() -> str | None:
    """``git status --porcelain`` of this checkout (None outside a git work tree)."""
    try:
        r = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


@pytest.fixture
def clean_checkout():
    """The README's commands leave ``git status`` of the checkout as it was (outputs go where the
    command runs, and runs/, sweeps/, reports/, output/ are ignored)."""
    before = git_status()
    yield
    if before is not None:
        assert git_status() == before


@pytest.mark.parametrize("where,block", ALL, ids=[w for w, _ in ALL])
def test_readme_block_runs(where, block, tmp_path, ip, monkeypatch, capsys, request, clean_checkout):
    addr = {}

    def scheduler():
        if not addr:
            addr["a"] = request.getfixturevalue("dask_cluster")[0]
        return addr["a"]

    for cmd in block:
        assert cmd.text in EXPECT, f"{where}: unknown command {cmd.text!r} (see test_every_readme_command_is_known)"
        for k, tokens in enumerate(cmd.variants()):
            cwd = tmp_path if k == 0 else tmp_path / f"variant-{k}"      # later commands use the first
            cwd.mkdir(exist_ok=True)
            if cmd.text.startswith("%"):
                ran = run_magic(tokens[0], cwd, ip, monkeypatch, capsys)
            else:
                ran = run_shell(tokens, cwd, scheduler)
            if EXPECT[cmd.text] is not None:
                EXPECT[cmd.text](ran)
