"""`kit explore` and `%kit explore`: on a toy catalog (tests/viz/toy_catalog.py) the JSON shape,
the human table and counterexample, exit status 0 whatever is found and 2 on bad input; on the
kit's own scenarios, as a separate process: the progress bar on stderr only."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

from kit.cli import main
from kit.lab.commands import SUBCOMMANDS
from tests.viz import toy_catalog

INV = "counter equals live maps"


@pytest.fixture(autouse=True)
def toy_unless_real(request, monkeypatch):
    """The toy catalog, except for the tests of the kit's own scenarios (named ``*_real_*``)."""
    if "_real_" not in request.node.name:
        toy_catalog.install(monkeypatch)


def kit(*argv):
    """``python -m kit ARGV`` in its own process (the real catalog, stdout and stderr apart)."""
    return subprocess.run([sys.executable, "-m", "kit", *argv], capture_output=True, text=True, timeout=300)


def explore(capsys, *argv):
    status = main(["explore", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_is_one_object_of_the_fixed_shape_and_progress_is_on_stderr(capsys):
    status, out, err = explore(capsys, "lost-update", "--scheme", "lockless", "--mode", "exhaustive", "--json")
    assert status == 0 and out.count("\n") == 1                   # one line: one object, nothing else
    doc = json.loads(out)
    assert set(doc) == {"complete", "schedules", "invariants"}
    assert doc["complete"] is True and isinstance(doc["schedules"], int) and doc["schedules"] > 0
    assert list(doc["invariants"]) == [INV, "no-deadlock", "bounded-steps", "no-exception"]
    assert all(set(v) == {"violations", "example"} for v in doc["invariants"].values())
    broken = doc["invariants"][INV]
    assert broken["violations"] == 2 and len(broken["example"]) == 6
    assert set(broken["example"][0]) == {"thread", "step", "changed"}
    assert doc["invariants"]["no-deadlock"] == {"violations": 0, "example": None}
    assert doc == toy_catalog.explore_named("lost-update", "lockless").to_json()
    assert "lost-update / lockless [exhaustive]" in err and "schedules" in err      # the bar


def test_json_when_every_invariant_holds_exits_0(capsys):
    status, out, _ = explore(capsys, "lost-update", "--scheme", "locked", "--json")
    doc = json.loads(out)
    assert status == 0 and all(v == {"violations": 0, "example": None} for v in doc["invariants"].values())


def test_human_output_is_the_table_and_the_numbered_counterexample(capsys):
    status, out, err = explore(capsys, "lost-update", "--scheme", "lockless", "--no-progress")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("lost-update / lockless [exhaustive]: 6 schedules,") and lines[0].endswith("complete")
    assert lines[1].split() == ["invariant", "schedules", "violations", "complete"]
    assert lines[2].split() == [*INV.split(), "6", "2", "yes"]
    start = lines.index(f"{INV}: shortest counterexample, 6 steps, 2 context switches")
    assert lines[start + 1].split() == ["#", "thread", "step", "changed"]
    steps = lines[start + 2:start + 8]
    assert [s.split()[0] for s in steps] == ["1", "2", "3", "4", "5", "6"]
    assert steps[0].split()[1:] == ["writer", "kmap", "page", "mapping:", "0", "->", "1"]
    assert lines[-1] == f"1 of 4 invariants broken: {INV}"


def test_modes_bounded_random_and_replay(capsys):
    lockless = ("lost-update", "--scheme", "lockless")
    status, out, _ = explore(capsys, *lockless, "--mode", "bounded", "--bound", "0", "--json")
    assert status == 0 and json.loads(out)["invariants"][INV]["violations"] == 0      # no preemption: no race
    status, out, _ = explore(capsys, *lockless, "--mode", "bounded", "--bound", "2", "--json")
    assert json.loads(out)["invariants"][INV]["violations"] > 0
    status, out, err = explore(capsys, "lost-update", "--scheme", "lockless", "--mode", "random", "--bound", "7",
                               "--seed", "1", "--json")
    assert status == 0 and json.loads(out)["schedules"] == 7 and "7/7" in err
    status, out, err = explore(capsys, "lost-update", "--scheme", "lockless", "--mode", "replay",
                               "--schedule", "writer,writer,fault,fault,fault,writer", "--json")
    doc = json.loads(out)
    assert status == 0 and doc["schedules"] == 1 and len(doc["invariants"][INV]["example"]) == 6
    assert err == ""                                                # one schedule: no bar


@pytest.mark.parametrize("argv,msg", [
    (["nope", "--scheme", "locked"], "scenario: unknown 'nope'; allowed: lost-update"),
    (["lost-update"], "scheme: required (--scheme); allowed for lost-update: lockless, locked"),
    (["lost-update", "--scheme", "srcu"], "scheme: unknown 'srcu' for lost-update; allowed: lockless, locked"),
    (["lost-update", "--scheme", "locked", "--mode", "dfs"],
     "mode: unknown 'dfs'; allowed: exhaustive, bounded, random, replay"),
    (["lost-update", "--scheme", "locked", "--bound", "2"], "bound: applies to modes bounded, random, not exhaustive"),
    (["lost-update", "--scheme", "locked", "--mode", "bounded", "--bound", "-1"], "bound: expected an integer >= 0"),
    (["lost-update", "--scheme", "locked", "--mode", "bounded", "--bound", "two"],
     "bound: expected an integer >= 0, got 'two'"),
    (["lost-update", "--scheme", "locked", "--mode", "random", "--bound", "0"], "bound: expected an integer >= 1"),
    (["lost-update", "--scheme", "locked", "--seed", "1"], "seed: applies to mode random, not exhaustive"),
    (["lost-update", "--scheme", "locked", "--mode", "replay"], "schedule: mode replay needs --schedule"),
    (["lost-update", "--scheme", "locked", "--schedule", "writer"], "schedule: applies to mode replay"),
    (["lost-update", "--scheme", "locked", "--mode", "replay", "--schedule", "writer,nobody"], "schedule[1]:"),
    (["lost-update", "--scheme", "locked", "--time-budget", "0"], "time-budget: expected a number >= 0.001"),
    (["lost-update", "--scheme", "locked", "--mode", "replay", "--schedule", "writer", "--max-schedules", "3"],
     "max-schedules: applies to modes exhaustive, bounded, random, not replay")])
def test_bad_input_is_status_2_with_one_line_naming_the_argument(capsys, argv, msg):
    status, out, err = explore(capsys, *argv, "--json")
    assert status == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith(f"kit explore: {msg}"), line


def test_limits_make_the_result_incomplete(capsys):
    status, out, _ = explore(capsys, "lost-update", "--scheme", "lockless", "--max-schedules", "2", "--json")
    doc = json.loads(out)
    assert status == 0 and doc["complete"] is False and doc["schedules"] == 2


def test_explore_is_a_subcommand_of_kit_and_of_the_magic():
    assert "explore" in SUBCOMMANDS


def test_magic_explore_prints_what_kit_explore_prints(ip, capsys):
    assert ip.run_line_magic("kit", "explore lost-update --scheme lockless --no-progress") is None
    out = capsys.readouterr().out
    assert f"{INV}: shortest counterexample, 6 steps" in out
    assert ip.run_line_magic("kit", "explore lost-update --scheme locked --json --no-progress") is None
    assert json.loads(capsys.readouterr().out)["complete"] is True


@pytest.mark.parametrize("line,msg", [("explore nope --scheme x", "scenario: unknown 'nope'"),
                                      ("explore lost-update --scheme locked --mode bounded --bound x", "bound:")])
def test_magic_explore_bad_input_is_a_one_line_usage_error(ip, line, msg):
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("kit", line)
    assert str(e.value).startswith(f"%kit explore: {msg}") and "\n" not in str(e.value)


def test_magic_dashboard_race_explorer(ip):
    d = ip.run_line_magic("kit", "dashboard race-explorer scenario=lost-update scheme=lockless")
    assert type(d).__name__ == "RaceExplorer" and d.result.violated == [INV]
    assert "application/vnd.jupyter.widget-view+json" in d._repr_mimebundle_()
    with pytest.raises(UsageError, match="scheme: unknown 'srcu' for lost-update"):
        ip.run_line_magic("kit", "dashboard race-explorer scenario=lost-update scheme=srcu")


# ------------------------------------------------------------------ the kit's own scenarios
def test_real_json_on_stdout_progress_on_stderr():
    r = kit("explore", "mirror-setup", "--scheme", "mirror-2021", "--mode", "exhaustive", "--json")
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    doc = json.loads(r.stdout)
    assert set(doc) == {"complete", "schedules", "invariants"} and doc["complete"] is True
    broken = {n for n, v in doc["invariants"].items() if v["violations"]}
    assert broken == {"no mirror of a mirror", "no mirror of a VM with vCPUs"}      # the TOCTOU
    steps = doc["invariants"]["no mirror of a mirror"]["example"]
    assert {s["thread"] for s in steps} == {"copy1", "copy2"} and all(set(s) >= {"thread", "step", "changed"}
                                                                      for s in steps)
    assert "mirror-setup / mirror-2021 [exhaustive]" in r.stderr and "schedules" in r.stderr   # the bar


def test_real_every_invariant_holds_is_status_0_too():
    r = kit("explore", "mirror-setup", "--scheme", "mirror-merged", "--json", "--no-progress")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and r.stderr == "" and doc["complete"] is True
    assert all(v == {"violations": 0, "example": None} for v in doc["invariants"].values())


def test_real_human_output_names_the_srcu_counterexample():
    r = kit("explore", "host-write-vs-conversion", "--scheme", "srcu", "--no-progress")
    assert r.returncode == 0 and r.stderr == ""
    assert "no RMPUPDATE to private while mapped: shortest counterexample, 8 steps" in r.stdout
    block = r.stdout.split("no RMPUPDATE to private while mapped: shortest counterexample")[1]
    lines = [ln.split(None, 2) for ln in block.splitlines()[2:10]]
    labels = [ln[2] for ln in lines]
    # the reviewers' schedule: the synchronize starts, the writer maps, the wait ends, RMPUPDATE
    sync = next(i for i, t in enumerate(labels) if "synchronize_srcu_expedited" in t and "wait" in t)
    kmap = next(i for i, t in enumerate(labels) if "kmap" in t)
    assert kmap < sync and "RMPUPDATE" in labels[-1] and lines[kmap][1] == "writer"


@pytest.mark.parametrize("argv,msg", [
    (["host-write-vs-conversion", "--scheme", "mirror-2021"],
     "scheme: 'mirror-2021' is not a scheme of host-write-vs-conversion; allowed: srcu, host_write_track, "
     "host_write_track_locked, flip_back_unmap, flip_back_split, upstream"),
    (["mirror", "--scheme", "mirror-2021"],
     "scenario: unknown 'mirror'; allowed: host-write-vs-conversion, mirror-setup"),
    (["mirror-setup", "--scheme", "mirror-2021", "--mode", "replay", "--schedule", "copy1,nobody"], "schedule[1]:")])
def test_real_bad_input_is_status_2(argv, msg):
    r = kit("explore", *argv, "--json")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"kit explore: {msg}"), line
