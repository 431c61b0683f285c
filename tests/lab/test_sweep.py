"""`kit run` and `kit sweep`: parameters checked before any kernel, sweeps on a LocalCluster and
on real scheduler/worker processes, and a store that loses nothing (resume after a kill, a
killed worker, a failing notebook, a corrupted result)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kit.cli import main
from kit.lab.store import Store, notebook_hash, run_key
from kit.lab.batch import sweep

PROBE = Path(__file__).parents[1] / "notebooks" / "data" / "probe.ipynb"
PY = sys.executable
COLS = ["p.x", "p.label", "p.seed", "state", "probe.y", "probe.label", "probe.summary.x2"]


def _runs(root: Path):
    return sorted(p.name for p in (root / "runs").iterdir() if not p.name.startswith("."))


def test_local_cluster_sweep_table_and_skip(tmp_path):
    df = sweep(PROBE, ["x=1,2", "label=a,b"], seeds=2, outdir=tmp_path, workers=2, progress=False)
    assert len(df) == 8 and set(df["state"]) == {"complete"}
    for _, r in df.iterrows():
        assert r["probe.y"] == r["p.x"] ** 2 + r["p.seed"] and r["probe.label"] == r["p.label"]
    assert (tmp_path / "table.csv").exists() and len(json.loads((tmp_path / "table.json").read_text())) == 8
    assert "sweep of probe" in (tmp_path / "report.html").read_text()
    started = {k: Store(tmp_path).status(k)["started"] for k in df["key"]}
    again = sweep(PROBE, ["x=1,2", "label=a,b"], seeds=2, outdir=tmp_path, workers=1, progress=False)
    assert {k: Store(tmp_path).status(k)["started"] for k in again["key"]} == started   # nothing re-run
    assert again[COLS].equals(df[COLS])


def test_scheduler_sweep_gives_the_same_table(tmp_path, dask_cluster):
    addr, _ = dask_cluster
    grid = ["x=0,3", "label=a,c"]
    local = sweep(PROBE, grid, seeds=1, outdir=tmp_path / "local", workers=2, progress=False)
    remote = sweep(PROBE, grid, seeds=1, outdir=tmp_path / "remote", scheduler=addr, progress=False)
    assert remote[COLS + ["key"]].equals(local[COLS + ["key"]])
    hosts = {Store(tmp_path / "remote").status(k)["host"] for k in remote["key"]}
    assert hosts == {os.uname().nodename}


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, dask_cluster):
    addr, procs = dask_cluster
    out = {}
    # runs sleep 3 s each so that a worker is surely mid-run when it is killed
    t = threading.Thread(target=lambda: out.update(df=_sweep_sleep(tmp_path, addr)))
    t.start()
    deadline = time.time() + 60
    while not list((tmp_path / "runs").glob(".tmp-*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(procs[1].pid, signal.SIGKILL)        # one worker (nanny and its process) gone
    t.join(300)
    df = out["df"]
    assert set(df["state"]) == {"complete"} and len(df) == 4
    assert len(_runs(tmp_path)) == 4               # every run present exactly once


def _sweep_sleep(root, addr):
    return sweep(PROBE, {"x": [1, 2, 3, 4], "sleep": [3.0]}, outdir=root, scheduler=addr, progress=False)


def test_resume_after_the_sweep_is_killed(tmp_path):
    cmd = [PY, "-m", "kit", "sweep", str(PROBE), "--grid", "x=1,2,3,4,5,6", "--grid", "sleep=1.0",
           "-o", str(tmp_path), "--workers", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(_runs(tmp_path) if (tmp_path / "runs").exists() else []) < 2:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)               # the sweep, its cluster and its kernels
    p.wait()
    first = {k: Store(tmp_path).status(k) for k in _runs(tmp_path)}
    assert 2 <= len(first) < 6 and all(s and s["state"] == "complete" for s in first.values())
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "6 runs: 6 complete, 0 failed" in r.stdout
    assert len(_runs(tmp_path)) == 6 and not list((tmp_path / "runs").glob(".tmp-*"))
    for k, st in first.items():                    # the runs done before the kill were not redone
        assert Store(tmp_path).status(k)["started"] == st["started"]


def test_a_failing_notebook_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    rc = main(["sweep", str(PROBE), "--grid", "fail=False,True", "--grid", "x=2", "-o", str(tmp_path), "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1 and "2 runs: 1 complete, 1 failed or missing" in out
    nbh = notebook_hash(PROBE)
    bad = Store(tmp_path).status(run_key(nbh, {"fail": True, "x": 2}))
    assert bad["state"] == "failed" and "probe failed as asked" in bad["error"]
    assert "RuntimeError" in bad["traceback"] and "probe.ipynb" in bad["files"]
    good_key = run_key(nbh, {"fail": False, "x": 2})
    good = Store(tmp_path).status(good_key)
    # a re-run re-does the failed run only
    main(["sweep", str(PROBE), "--grid", "fail=False,True", "--grid", "x=2", "-o", str(tmp_path), "--workers", "1"])
    assert Store(tmp_path).status(good_key)["started"] == good["started"]
    assert Store(tmp_path).status(run_key(nbh, {"fail": True, "x": 2}))["started"] != bad["started"] or \
        Store(tmp_path).status(run_key(nbh, {"fail": True, "x": 2}))["finished"] != bad["finished"]


def test_a_corrupted_result_is_detected_and_run_again(tmp_path):
    df = sweep(PROBE, ["x=5"], outdir=tmp_path, workers=1, progress=False, report=False)
    key = df["key"][0]
    res = tmp_path / "runs" / key / "probe.json"
    before = Store(tmp_path).status(key)
    res.write_text(res.read_text()[:40])           # truncated
    assert Store(tmp_path).status(key) is None
    df2 = sweep(PROBE, ["x=5"], outdir=tmp_path, workers=1, progress=False, report=False)
    assert df2["state"][0] == "complete" and df2["probe.y"][0] == 25
    assert Store(tmp_path).status(key)["started"] != before["started"] or \
        Store(tmp_path).status(key)["finished"] != before["finished"]
    json.loads(res.read_text())


@pytest.mark.parametrize("grid,seeds,msg", [
    (["nope=1,2"], None, "grid: unknown parameter 'nope'"), (["x=1,abc"], None, "x: cannot read 'abc'"),
    (["x=1,-2"], None, "x: expected an integer >= 0"), (["label=a,z"], None, "label: unknown 'z'"),
    ([], None, "grid: empty"), (["x="], None, "empty value"), (["x=1,,2"], None, "empty value"),
    (["x1"], None, "expected NAME=V1,V2"), (["x=1", "x=2"], None, "given twice"), (["x=1"], 0, "seeds:")])
def test_bad_grids_are_rejected_before_any_run(tmp_path, grid, seeds, msg, capsys):
    argv = ["sweep", str(PROBE), *sum((["--grid", g] for g in grid), []), "-o", str(tmp_path / "s")]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not (tmp_path / "s").exists()


def test_kit_run_writes_notebook_result_and_report(tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["run", str(PROBE), "-p", "x", "7", "-p", "label", "c", "-o", str(out)]) == 0
    doc = json.loads((out / "probe.json").read_text())
    assert doc["results"]["y"] == 49 and doc["results"]["label"] == "c"
    assert (out / "probe.ipynb").exists() and "probe" in (out / "report.html").read_text()


@pytest.mark.parametrize("argv,msg", [(["-p", "nope", "1"], "unknown nope"), (["-p", "x", "-1"], "x: expected"),
                                      (["-p", "x", "one"], "x: cannot read"), (["-p", "label", "q"], "label: unknown")])
def test_kit_run_checks_parameters_before_a_kernel_starts(tmp_path, argv, msg, capsys):
    out = tmp_path / "one"
    assert main(["run", str(PROBE), *argv, "-o", str(out)]) == 2
    assert msg in capsys.readouterr().err and not out.exists()


def test_kit_run_reports_a_failing_notebook(tmp_path, capsys):
    assert main(["run", str(PROBE), "-p", "fail", "true", "-o", str(tmp_path / "f")]) == 1
    assert "probe failed as asked" in capsys.readouterr().err
    assert (tmp_path / "f" / "probe.ipynb").exists()       # the executed notebook is kept


def test_python_api_returns_the_table(tmp_path):
    import kit
    df = kit.lab.sweep(PROBE, {"x": [2, 3], "label": ["b"]}, outdir=tmp_path, workers=1, progress=False, report=False)
    assert list(df["probe.y"]) == [4, 9] and list(df["p.label"]) == ["b", "b"]


def test_no_kernel_is_left_running(tmp_path):
    """papermill shuts down only kernels whose manager it created: the kit stops its own."""
    import psutil

    from kit.lab.batch import run_notebook
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    run_notebook(PROBE, tmp_path / "a", x=1)
    Store(tmp_path / "s").execute(PROBE, {"x": 2})
    Store(tmp_path / "s").execute(PROBE, {"x": 3, "fail": True})
    time.sleep(0.5)
    left = [p for p in me.children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


@pytest.mark.parametrize("params,timeout,want", [({"die": True}, 60, "DeadKernelError"),
                                                 ({"sleep": 30.0}, 2, "CellTimeoutError")])
def test_a_dead_kernel_or_a_timeout_is_a_failed_run_with_its_notebook(tmp_path, params, timeout, want):
    st = Store(tmp_path).execute(PROBE, params, timeout=timeout)
    assert st["state"] == "failed" and want in st["error"] + st["traceback"], st["error"]
    assert "probe.ipynb" in st["files"] and Store(tmp_path).status(st["key"])["state"] == "failed"
