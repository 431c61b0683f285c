"""A fuzzer over the command line's argument space (hypothesis): subcommands, their options,
hostile values (huge, negative, other scripts' digits, NaN, empty, folders, missing and
unwritable paths, bytes that are not UTF-8, code in parameter values) and junk tokens.

Each input runs the CLI in-process through :func:`kit.cli.main` in one worker process whose
address space is limited to :data:`tests.test_hostile_api.MEMORY_BOUND` (``RLIMIT_AS``), with
its home, cache and temporary folder inside the test's folder. The work itself (a notebook's
kernel, a sweep's cluster, a calibration fit, the host demo) is replaced by a marker: what is
fuzzed is everything before and after it. Property: the exit status is 0, 1 or 2, stderr is
at most a few lines with no traceback and no "internal error", and nothing is written outside
the test's folder (the repository's files unchanged).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kit.lab.commands import SUBCOMMANDS, build_parser
from tests.hostile import CLI_GRIDS, CLI_JUNK, CLI_NOTEBOOKS, CLI_PARAMS, CLI_PATHS, cli_fixtures, cli_value
from tests.test_hostile_api import MEMORY_BOUND

ROOT = Path(__file__).resolve().parents[2]

#: the worker: limits its address space, stubs the work, then runs one argv per stdin line
WORKER = r'''
import contextlib, io, json, resource, sys, time
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from kit.cli import main
from kit.lab import batch, commands


class ReachedTheWork(BaseException):
    """The input passed every check and the work would start now."""


def work(*a, **kw):
    raise ReachedTheWork()


batch.execute = batch._execute_all = commands.fit = work
commands.host_demo_model.run_all = commands.host_demo_model.run_policy = work     # host-demo runs one policy at a time
for line in sys.stdin:
    argv = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except ReachedTheWork:
        status = "work"
    except BaseException as e:               # main must never raise
        status = f"escaped {type(e).__name__}: {e}"
    print(json.dumps({"status": status, "err": err.getvalue()[-3000:], "out": len(out.getvalue()),
                      "s": round(time.perf_counter() - t, 3)}), flush=True)
'''


def _options() -> dict[str, list[tuple[str, int]]]:
    """Each subcommand's options (the longest spelling) and how many values each takes."""
    import argparse
    p = build_parser(raise_errors=True)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, sp in sub.choices.items():
        opts = []
        for a in sp._actions:
            if a.option_strings and a.dest != "help":
                n = 0 if a.nargs == 0 else a.nargs if isinstance(a.nargs, int) else 1
                opts.append((a.option_strings[-1], n))
        out[name] = opts
    return out


OPTIONS = _options()
FIRST = {"run": CLI_NOTEBOOKS, "sweep": CLI_NOTEBOOKS, "report": CLI_PATHS,
         "explore": ("host-write-vs-conversion", "mirror-setup", "x", "", "١")}


@st.composite
def argvs(draw):
    """One command line: a subcommand (sometimes junk), its positional argument, up to four
    options with hostile values, sometimes a junk token."""
    pick = lambda seq: draw(st.sampled_from(seq))      # noqa: E731
    cmd = pick(SUBCOMMANDS + ("", "nope", "--version"))
    argv = [cmd] if cmd else []
    if cmd in FIRST:
        argv.append(pick(FIRST[cmd]))
    for opt, n in draw(st.lists(st.sampled_from(OPTIONS.get(cmd) or [("--x", 1)]), max_size=4)):
        argv.append(opt)
        if opt == "--param":
            argv += list(pick(CLI_PARAMS))
        elif opt == "--grid":
            argv.append(pick(CLI_GRIDS))
        elif n:
            argv.append(cli_value(opt, pick))
    if draw(st.integers(0, 5)) == 3:            # not 0: hypothesis prefers it, and junk is the exception
        argv.insert(len(argv) - draw(st.integers(0, len(argv))), pick(CLI_JUNK))
    return argv


def _repo_digest() -> str:
    """The repository's tracked and untracked files' state (what git sees), and the data files."""
    st_ = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
                         capture_output=True, text=True).stdout
    data = b"".join((ROOT / "data" / f).read_bytes() for f in sorted(os.listdir(ROOT / "data")))
    return hashlib.sha256(st_.encode() + data).hexdigest()


class Worker:
    def __init__(self, folder: Path):
        self.folder = folder
        home = folder / "home"
        (home / "tmp").mkdir(parents=True)
        work = folder / "work"
        work.mkdir()
        cli_fixtures(work)
        script = folder / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
               "TMPDIR": str(home / "tmp"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.p = subprocess.Popen([sys.executable, str(script), str(MEMORY_BOUND)], cwd=work, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, bufsize=1)

    def run(self, argv: list[str]) -> dict:
        self.p.stdin.write(json.dumps(argv) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"the worker died on {argv!r}: {self.p.wait()} {self.p.stderr.read()[-3000:]}")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    before = _repo_digest()
    w = Worker(tmp_path_factory.mktemp("hostile-cli"))
    yield w
    w.close()
    assert _repo_digest() == before, "the fuzzer changed files of the repository"


def check(result: dict, argv) -> None:
    err = result["err"]
    lines = [ln for ln in err.replace("\r", "\n").split("\n") if ln.strip() and "|" not in ln]
    assert result["status"] in (0, 1, 2, "work"), (argv, result)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert len(lines) <= 4, (argv, err)


@settings(max_examples=int(os.environ.get("KIT_FUZZ_EXAMPLES", "300")), derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=argvs())
def test_no_command_line_gives_a_traceback(worker, argv):
    r = worker.run(argv)
    if os.environ.get("KIT_FUZZ_LOG"):          # every input and its outcome, one JSON line each
        with open(os.environ["KIT_FUZZ_LOG"], "a") as f:
            f.write(json.dumps({"argv": argv, **r}) + "\n")
    check(r, argv)


@pytest.mark.parametrize("argv", [
    ["simulate", "--host-mem", "1024TiB"], ["simulate", "--guest-mem", "8TiB", "--host-mem", "9TiB"],
    ["simulate", "--vcpus", "١٢"], ["simulate", "--params", "p_nan.json"], ["simulate", "--params", "FOLDER"],
    ["host-demo", "--mem", "64TiB", "--guest-mem", "3.5MiB"], ["host-demo", "--out", "FOLDER"],
    ["demo", "--policies", "none", "--out", ""], ["run", "probe.ipynb", "-p", "x", "('\",)"],
    ["run", "dir.ipynb"], ["run", "bad.ipynb"],
    ["sweep", "probe.ipynb", "--grid", "x=" + ",".join(map(str, range(99)))],
    ["sweep", "probe.ipynb", "--workers", "10000000", "--grid", "x=1"],
    ["report", "FILE", "-o", "/proc/kit.html"],
    ["calibrate", "--start", "p_missing.json"], ["explore", "x", "--bound", "١"],
    ["simulate", "--policy", "caf\udce9"],
])
def test_the_issues_inputs_are_one_line_in_the_bounded_worker(worker, argv):
    r = worker.run(argv)
    check(r, argv)
    assert r["status"] == 2 and len(r["err"].strip().splitlines()) == 1, (argv, r)


def test_inputs_that_pass_every_check_reach_the_work(worker):
    for argv in (["run", "probe.ipynb", "-p", "x", "3", "-o", "ok"], ["calibrate", "-o", "fit.json"],
                 ["host-demo", "--mem", "8GiB", "--guest-mem", "4GiB", "--out", "r.html"],
                 ["demo", "--policies", "none", "--out", "r/index.html"],
                 ["sweep", "probe.ipynb", "--grid", "x=1,2", "-o", "s"]):
        r = worker.run(argv)
        assert r["status"] == "work", (argv, r)
