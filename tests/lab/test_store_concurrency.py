"""Concurrent and interrupted work loses nothing: leases, cleaning only the dead, each run once
with several writers (processes, a property test without kernels and real sweeps), subfolders
in a run, the final folder in provenance, repeated grid values, stale results."""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kit.lab.store as store_mod
from kit.lab import inspect
from kit.lab.batch import merge_tables, table
from kit.lab.parameters import parse_grid
from kit.lab.record import record
from kit.lab.store import COMPLETE, LEASED, Lease, Store, environment, run_key

from .nbmake import counter

PY = sys.executable
PROBE = Path(__file__).parents[1] / "notebooks" / "data" / "probe.ipynb"


def _hold(path, ready, **kw):
    lease = Lease.acquire(path, **kw)
    ready.set()
    time.sleep(600)
    lease.release()


def _holder_process(path):
    """A process that takes the lease on ``path`` and sleeps: (process, its pid)."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(str(path), ready), daemon=True)
    p.start()
    assert ready.wait(30)
    return p


# ------------------------------------------------------------------ leases
def test_a_lease_is_exclusive_names_its_owner_and_goes_with_it(tmp_path):
    path = tmp_path / ".lease-k"
    a = Lease.acquire(path, key="k")
    assert a is not None and Lease.acquire(path) is None          # even from this process
    held = Lease.holder(path)
    assert held["pid"] == os.getpid() and held["host"] == store_mod.HOST and held["token"] == a.token
    a.release()
    assert not path.exists() and Lease.holder(path) is None
    with Lease.acquire(path) as b:
        assert b is not None and Lease.acquire(path) is None
    assert Lease.acquire(path, wait=False) is not None


def test_a_lease_of_a_killed_owner_is_free(tmp_path):
    path = tmp_path / ".lease-k"
    p = _holder_process(path)
    assert Lease.holder(path)["pid"] == p.pid and Lease.acquire(path) is None
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert path.exists()                                           # the file stays behind ...
    assert Lease.holder(path) is None and not path.exists()        # ... but nobody holds it
    assert Lease.acquire(path) is not None


def test_a_lease_another_host_wrote_counts_until_it_is_stale(tmp_path, monkeypatch):
    """A file system whose locks other hosts do not see: the file's owner and age decide."""
    path = tmp_path / ".lease-k"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "abc"}))
    assert Lease.holder(path)["host"] == "elsewhere" and Lease.acquire(path) is None
    old = time.time() - store_mod.LEASE_STALE - 5
    os.utime(path, (old, old))
    assert Lease.holder(path) is None
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "abc"}))
    os.utime(path, (old, old))
    lease = Lease.acquire(path)
    assert lease is not None and Lease.holder(path)["host"] == store_mod.HOST


def test_a_held_lease_is_renewed(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "LEASE_RENEW", 0.1)
    monkeypatch.setattr(Lease, "_renewer", None)
    with Lease.acquire(tmp_path / ".lease-k") as lease:
        old = time.time() - 100
        os.utime(lease.path, (old, old))
        time.sleep(0.5)
        assert time.time() - lease.path.stat().st_mtime < 5


def test_clean_removes_only_what_dead_writers_left(tmp_path):
    store = Store(tmp_path)
    live = _holder_process(store.lease_path("aa11"))
    token = Lease.holder(store.lease_path("aa11"))["token"]
    mine = store.runs / f".tmp-aa11-{token}"                      # the live writer's
    theirs = store.runs / ".tmp-aa11-0123456789ab"                 # a dead writer's, same key
    dead = store.runs / ".tmp-bb22-0123456789ab"                   # a dead writer's, free key
    trash = store.runs / ".old-bb22-0123456789ab"
    for d in (mine, theirs, dead, trash):
        (d / "sub").mkdir(parents=True)
    assert store.clean() == 3
    assert mine.exists() and not theirs.exists() and not dead.exists() and not trash.exists()
    os.kill(live.pid, signal.SIGKILL)
    live.join()
    assert store.clean() == 1 and not mine.exists()
    assert not list(store.runs.glob(".lease-*"))


# ------------------------------------------------------------------ each run once (no kernels)
def _fake_execute(log):
    """Stands for the papermill call: a result file, some work, and a line per execution."""
    def execute(nb, params, folder, **kw):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(f"start {params['x']} {os.getpid()}\n")
        time.sleep(random.uniform(0, 0.03))
        record("probe", {"y": params["x"] ** 2}, outdir=folder, display=False)
        (folder / "sub").mkdir(exist_ok=True)
        (folder / "sub" / "part.txt").write_text(str(params["x"]))
        with open(log, "a") as f:
            f.write(f"done {params['x']} {os.getpid()}\n")
        return folder / "probe.ipynb"
    return execute


def _writer(root, nb, xs, log, mode, seed):
    random.seed(seed)
    store_mod.execute = _fake_execute(log)
    store = Store(root)
    if mode == "clean":
        for _ in range(40):
            store.clean()
            time.sleep(0.005)
        return
    xs = list(xs)
    random.shuffle(xs)
    held = []
    for x in xs:
        st = store.execute(nb, {"x": x}, wait=(mode == "wait"))
        if st["state"] == LEASED:
            held.append(x)
    for x in held:                  # a sweep's end: take over what the other writer left
        store.execute(nb, {"x": x}, wait=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_several_writers_execute_each_run_once(tmp_path, seed):
    """Property: writers in processes, in random orders, waiting or skipping leased runs, with
    a cleaner running beside them: every run is executed exactly once and stored complete."""
    nb = inspect(PROBE)
    log = tmp_path / "log"
    rng = random.Random(seed)
    xs = list(range(24))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path / "s", nb, rng.sample(xs, rng.randint(12, 24)), log,
                                               rng.choice(["wait", "skip"]), seed * 10 + i)) for i in range(4)]
    procs += [ctx.Process(target=_writer, args=(tmp_path / "s", nb, xs, log, "clean", 0))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    lines = log.read_text().split()
    done = [int(lines[i + 1]) for i in range(0, len(lines), 3) if lines[i] == "done"]
    assert sorted(done) == sorted(set(done)), "a run was executed twice"
    store = Store(tmp_path / "s")
    for x in set(done):
        st = store.status(run_key(nb.cells_hash, {"x": x}))
        assert st["state"] == COMPLETE and "sub/part.txt" in st["files"]
    assert not [p for p in store.runs.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------ one run's folder
def test_a_run_with_a_subfolder_is_complete_and_checked(tmp_path):
    nb = counter(tmp_path / "counter.ipynb")
    store = Store(tmp_path / "s")
    st = store.execute(nb, {"x": 3, "subdir": True})
    assert st["state"] == COMPLETE and not st["skipped"] and "sub/deeper/data.txt" in st["files"]
    again = store.execute(nb, {"x": 3, "subdir": True})
    assert again["skipped"] and again["started"] == st["started"]          # not run again
    part = store.path(st["key"]) / "sub" / "deeper" / "data.txt"
    part.write_text("tampered")
    assert store.status(st["key"]) is None                                 # a changed file in a subfolder
    part.write_text("3")
    assert store.complete(st["key"])
    (store.path(st["key"]) / "sub" / "extra").write_text("x")
    assert store.status(st["key"]) is None                                 # an added file


def test_provenance_names_the_final_folder(tmp_path):
    nb = counter(tmp_path / "counter.ipynb")
    store = Store(tmp_path / "s")
    st = store.execute(nb, {"x": 2})
    final = store.path(st["key"]).resolve()
    assert st["outdir"] == str(final)
    doc = json.loads((final / "count.json").read_text())
    assert doc["provenance"]["parameters"]["outdir"] == str(final)
    executed = json.loads((final / "counter.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["outdir"] == str(final)
    for p in final.rglob("*"):
        if p.is_file():
            assert ".tmp-" not in p.read_text(errors="replace"), p
    from kit.lab.record import read_notebook_results
    assert read_notebook_results(final / "counter.ipynb")[0]["provenance"]["parameters"]["outdir"] == str(final)


def test_repeated_grid_values_run_once_and_are_reported_once():
    notes = []
    combos = parse_grid(["x=1,1,01", "label=a,b,a"], {"x": {"inferred_type_name": "int"},
                                                      "label": {"inferred_type_name": "str"}}, notes=notes)
    assert combos == [{"x": 1, "label": "a"}, {"x": 1, "label": "b"}]
    assert notes == ["grid: x=1 given 3 times; run once", 'grid: label="a" given 2 times; run once']
    assert parse_grid({"x": [2, 2.0, 2]}, {"x": {}}) == [{"x": 2}, {"x": 2.0}]      # 2 and 2.0 differ


# ------------------------------------------------------------------ nothing stale
def test_results_of_other_code_or_data_are_run_again_and_marked_stale(tmp_path, monkeypatch):
    nb = inspect(PROBE)
    store = Store(tmp_path)
    old = store.execute(nb, {"x": 4})
    assert store.execute(nb, {"x": 4})["skipped"]
    # the kit's sources change
    monkeypatch.setattr(store_mod, "code_digest", lambda: "0" * 64)
    assert not store.complete(run_key(nb.cells_hash, {"x": 4}))
    new = store.execute(nb, {"x": 4})
    assert not new["skipped"] and new["key"] != old["key"] and new["env"]["code"] == "0" * 64
    rows = {r["key"]: r for r in merge_tables(tmp_path, report=True)}
    assert rows[old["key"]]["stale"] and not rows[new["key"]]["stale"]
    assert [r["stale"] for r in table(store, nb.cells_hash, [{"x": 4}])] == [False]
    html = (tmp_path / "report.html").read_text()
    assert html.count("<section id='run-") == 1                              # the current run only
    # a data file a notebook reads changes
    data = tmp_path / "cost_params.json"
    data.write_text("{}")
    monkeypatch.setattr(store_mod, "DATA_FILES", (data,))
    k1 = run_key(nb.cells_hash, {"x": 4})
    data.write_text('{"changed": 1}')
    assert run_key(nb.cells_hash, {"x": 4}) != k1 and not store.complete(run_key(nb.cells_hash, {"x": 4}))


def test_a_worker_with_other_code_refuses_the_run(tmp_path):
    env = {**environment(), "code": "f" * 64}
    with pytest.raises(ValueError, match="other kit code or data than the sweep"):
        Store(tmp_path).execute(PROBE, {"x": 1}, env=env)
    assert not list((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------ real sweeps in processes
def _done_counts(log: Path) -> dict:
    counts: dict = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        what, x = line.split()
        if what == "done":
            counts[int(x)] = counts.get(int(x), 0) + 1
    return counts


def _sweep_cmd(nb, root, log, xs, sleep, workers=1):
    return [PY, "-m", "kit", "sweep", str(nb), "--grid", f"x={','.join(map(str, xs))}", "--grid", f"log={log}",
            "--grid", f"sleep={sleep}", "-o", str(root), "--workers", str(workers)]


def test_two_sweeps_into_one_store_run_each_run_once(tmp_path):
    nb = counter(tmp_path / "counter.ipynb")
    root, log = tmp_path / "s", tmp_path / "log"
    a = subprocess.Popen(_sweep_cmd(nb, root, log, [0, 1, 2, 3, 4, 5, 1, 1], 0.3), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(_sweep_cmd(nb, root, log, [3, 4, 5, 6, 7, 8], 0.3), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out_a, err_a = a.communicate(timeout=400)
    out_b, err_b = b.communicate(timeout=400)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    assert "6 runs: 6 complete, 0 failed" in out_a and "6 runs: 6 complete, 0 failed" in out_b
    assert "x=1 given 3 times; run once" in err_a
    assert _done_counts(log) == {x: 1 for x in range(9)}                  # every run executed once
    tables = sorted((root / "sweeps").glob("*/table.json"))
    assert len(tables) == 2                                                # one table per invocation
    got = sorted(sorted(r["p.x"] for r in json.loads(t.read_text())) for t in tables)
    assert got == [[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]]
    for t in tables:
        assert {r["state"] for r in json.loads(t.read_text())} == {"complete"}
        assert (t.parent / "report.html").exists()
    merged = json.loads((root / "table.json").read_text())
    assert sorted(r["p.x"] for r in merged) == list(range(9)) and {r["state"] for r in merged} == {"complete"}
    assert (root / "table.csv").read_text().count("\n") == 10 and (root / "report.html").exists()
    assert not [p for p in (root / "runs").iterdir() if p.name.startswith(".")]


def test_a_killed_sweep_and_its_resume_run_each_run_once(tmp_path):
    nb = counter(tmp_path / "counter.ipynb")
    root, log = tmp_path / "s", tmp_path / "log"
    kdirs = tmp_path / "t"
    kdirs.mkdir()
    env = {**os.environ, "TMPDIR": str(kdirs)}
    cmd = _sweep_cmd(nb, root, log, range(5), 2.0)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 180
    while time.time() < deadline:          # a run has started its work after two were done: kill it there
        lines = log.read_text().splitlines() if log.exists() else []
        done = {ln.split()[1] for ln in lines if ln.startswith("done")}
        if len(done) >= 2 and any(ln.startswith("start") and ln.split()[1] not in done for ln in lines):
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)       # the sweep, its cluster and its kernel
    p.wait()
    before = _done_counts(log)
    assert 2 <= len(before) < 5 and set(before.values()) == {1}
    left = [d for d in (root / "runs").iterdir() if d.name.startswith(".tmp-")]
    assert left                                                            # the killed run's folder
    leaked = list(kdirs.glob("kit-k-*"))
    assert leaked and all((d / "kernel.json").exists() for d in leaked)    # sockets and connection file
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "5 runs: 5 complete, 0 failed" in r.stdout
    assert _done_counts(log) == {x: 1 for x in range(5)}                  # each run once, over both
    assert not [d for d in (root / "runs").iterdir() if d.name.startswith(".")]
    assert not [d for d in leaked if d.exists()]                           # cleaned on the next start
    assert not list(kdirs.glob("*.json"))                                  # no connection file left outside
