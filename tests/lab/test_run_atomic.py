"""``kit run -o DIR`` writes its folder as a whole: a failed or killed re-run keeps the previous
result and records the failure beside it; kernels' private folders left by ``kill -9`` are
removed on the next start."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.cli import main
from kit.lab.batch import RUN_RECORD
from kit.lab.execute import KERNEL_DIR_PREFIX, clean_kernel_dirs

PY = sys.executable
PROBE = Path(__file__).parents[1] / "notebooks" / "data" / "probe.ipynb"


def _y(folder: Path) -> int:
    return json.loads((folder / "probe.json").read_text())["results"]["y"]


def test_a_failed_rerun_keeps_the_previous_result_and_records_the_failure(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(PROBE), "-p", "x", "3", "-o", str(out)]) == 0
    assert _y(out) == 9 and json.loads((out / RUN_RECORD).read_text())["state"] == "complete"
    capsys.readouterr()
    assert main(["run", str(PROBE), "-p", "x", "4", "-p", "fail", "true", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe failed as asked" in err[0] and f"the previous result in {out} is kept" in err[0]
    assert _y(out) == 9 and "probe" in (out / "report.html").read_text()     # the old run, whole
    failed = list(out.glob("failed-*"))
    assert len(failed) == 1 and (failed[0] / "probe.ipynb").exists()
    rec = json.loads((failed[0] / RUN_RECORD).read_text())
    assert rec["state"] == "failed" and "probe failed as asked" in rec["error"] and rec["params"]["x"] == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temporary folder left
    # a good re-run replaces the result, and keeps the record of the failure
    assert main(["run", str(PROBE), "-p", "x", "5", "-o", str(out)]) == 0
    assert _y(out) == 25 and [p.name for p in out.glob("failed-*")] == [failed[0].name]


def test_a_killed_rerun_leaves_the_previous_result(tmp_path):
    out = tmp_path / "r"
    assert main(["run", str(PROBE), "-p", "x", "2", "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    p = subprocess.Popen([PY, "-m", "kit", "run", str(PROBE), "-p", "x", "6", "-p", "sleep", "30", "-o", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".r.tmp-*/*.ipynb")):
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert {q.name: q.read_bytes() for q in out.iterdir() if q.is_file()} == before
    assert list(tmp_path.glob(".r.tmp-*"))                                   # the killed run's folder ...
    assert main(["run", str(PROBE), "-p", "x", "7", "-o", str(out)]) == 0
    assert _y(out) == 49 and not [q for q in tmp_path.iterdir() if q.name.startswith(".")]   # ... gone


def test_a_failed_first_run_becomes_the_folder(tmp_path):
    out = tmp_path / "f"
    assert main(["run", str(PROBE), "-p", "fail", "true", "-o", str(out)]) == 1
    assert (out / "probe.ipynb").exists() and json.loads((out / RUN_RECORD).read_text())["state"] == "failed"
    assert main(["run", str(PROBE), "-p", "x", "1", "-o", str(out)]) == 0
    assert _y(out) == 1 and not list(out.glob("failed-*"))


@pytest.mark.parametrize("setup", ["file", "foreign", "is-a-file"])
def test_a_folder_that_is_not_a_kit_run_is_refused_before_a_kernel(tmp_path, capsys, setup):
    out = tmp_path / "mine"
    if setup == "is-a-file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / ("notes.txt" if setup == "file" else "data.json")).write_text("keep me")
    assert main(["run", str(PROBE), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kit run: out:"), err
    assert (out.read_text() if setup == "is-a-file" else
            next(out.iterdir()).read_text()) == "keep me"


def test_a_folder_an_earlier_version_wrote_is_replaced(tmp_path):
    """Earlier versions wrote the run in place: the notebook, result files and report.html."""
    out = tmp_path / "old"
    assert main(["run", str(PROBE), "-p", "x", "2", "-o", str(out)]) == 0
    (out / RUN_RECORD).unlink()
    assert main(["run", str(PROBE), "-p", "x", "3", "-o", str(out)]) == 0 and _y(out) == 9


def test_the_outdir_parameter_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(PROBE), "-p", "x", "2", "-p", "outdir", "here"]) == 0
    assert _y(tmp_path / "here") == 4
    doc = json.loads((tmp_path / "here" / "probe.ipynb").read_text())
    assert doc["metadata"]["papermill"]["parameters"]["outdir"] == str((tmp_path / "here").resolve())


def test_run_notebook_takes_an_outdir_parameter_too(tmp_path):
    from kit.lab.batch import run_notebook
    out, docs = run_notebook(PROBE, tmp_path / "a", x=2, outdir=str(tmp_path / "elsewhere"))
    assert out == tmp_path / "a" / "probe.ipynb" and docs[0]["results"]["y"] == 4 and _y(tmp_path / "a") == 4
    out, docs = run_notebook(PROBE, x=3, outdir=str(tmp_path / "b"))
    assert out == tmp_path / "b" / "probe.ipynb" and _y(tmp_path / "b") == 9


def _own_kernel_dir(tmpdir: Path, hold: bool):
    """A kernel folder made in a child process, which then sleeps (``hold``) or is killed."""
    code = ("import sys, time; from kit.lab.execute import _kernel_dir; d, fd = _kernel_dir(); "
            "open(d + '/kernel.json', 'w').write('{}'); print(d, flush=True); time.sleep(600)")
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "TMPDIR": str(tmpdir)})
    d = Path(p.stdout.readline().strip())
    if not hold:
        p.kill()
        p.wait()
    return p, d


def test_kernel_folders_of_dead_owners_are_removed_only(tmp_path):
    dead_p, dead = _own_kernel_dir(tmp_path, hold=False)
    live_p, live = _own_kernel_dir(tmp_path, hold=True)
    fresh = tmp_path / f"{KERNEL_DIR_PREFIX}setup"           # being made: no owner file yet
    fresh.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    try:
        assert clean_kernel_dirs(tmp_path) == 1
        assert not dead.exists() and live.exists() and fresh.exists() and other.exists()
        old = time.time() - 7200
        os.utime(fresh, (old, old))
        assert clean_kernel_dirs(tmp_path) == 1 and not fresh.exists()
    finally:
        live_p.kill()
        live_p.wait()
    assert clean_kernel_dirs(tmp_path) == 1 and not live.exists()


def test_kill_9_of_kit_run_leaks_nothing_past_the_next_start(tmp_path):
    kdirs = tmp_path / "t"
    kdirs.mkdir()
    env = {**os.environ, "TMPDIR": str(kdirs)}
    p = subprocess.Popen([PY, "-m", "kit", "run", str(PROBE), "-p", "sleep", "30", "-o", str(tmp_path / "a")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(kdirs.glob(f"{KERNEL_DIR_PREFIX}*/kernel.json")):
        time.sleep(0.1)
    leaked = list(kdirs.glob(f"{KERNEL_DIR_PREFIX}*"))
    assert leaked
    p.kill()                                # kill -9 of the run (its kernel exits when it sees)
    p.wait()
    assert all(d.exists() for d in leaked)
    r = subprocess.run([PY, "-m", "kit", "run", str(PROBE), "-o", str(tmp_path / "b")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not [d for d in leaked if d.exists()] and not list(kdirs.glob(f"{KERNEL_DIR_PREFIX}*"))
    assert not list(kdirs.glob("*.json"))
