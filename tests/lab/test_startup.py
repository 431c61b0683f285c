"""Start-up of ``kit simulate``: it loads what it uses (benchmarks/startup.py times it).

The notebook pipeline, the sweep scheduler, the plotting library and the progress bar load
only with the subcommands that use them (docs/architecture.md, "Deferred loading")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: top-level packages and kit modules that ``kit simulate`` must not import
NOT_FOR_SIMULATE = ("papermill", "nbformat", "nbclient", "bokeh", "dask", "distributed", "pandas", "scipy",
                    "ipywidgets", "IPython", "tqdm", "kit.lab.batch", "kit.lab.execute", "kit.lab.store",
                    "kit.explore.search",
                    "kit.viz.figures", "kit.viz.dashboards")


def imported_by(*argv: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kit", *argv], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


def test_simulate_loads_no_notebook_pipeline_plotting_or_scheduler():
    mods = imported_by("simulate", "--json")
    loaded = sorted(m for m in mods for name in NOT_FOR_SIMULATE if m == name or m.startswith(name + "."))
    assert loaded == []
    assert "kit.sim.api" in mods                     # the check sees the imports at all


def test_the_lab_names_still_resolve_when_asked_for():
    import kit.lab
    from kit.lab import check, inspect, record, report, run, sweep
    assert callable(record) and callable(report)
    import kit.lab.record                            # a submodule import keeps the function's name
    import kit.lab.report
    assert kit.lab.record is record and kit.lab.report is report
    assert {run, sweep, check, inspect} <= {getattr(kit.lab, n) for n in ("run", "sweep", "check", "inspect")}


def test_simulate_draws_nothing_so_loads_no_random_generator():
    """The host's generator and the lazy-accept trace's are made at their first draw; the
    default run never draws (numpy.random costs about a tenth of ``import numpy``)."""
    mods = imported_by("simulate", "-q")
    assert "kit.sim.api" in mods and not any(m == "numpy.random" or m.startswith("numpy.random.") for m in mods)
    assert not {"tempfile", "traceback", "kit.lab.paths", "kit.viz.traces"} & mods


@pytest.mark.parametrize("columns", [None, "120", "0", "wide"])
def test_help_width_is_the_terminal_width_shutil_reads(columns, monkeypatch):
    import shutil
    from kit.lab.commands import terminal_columns
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns


def test_an_analytic_run_loads_neither_the_event_engine_nor_the_intel_tables():
    """Both load on first use: ``engine="des"`` and ``kit.kvm.tdx`` still work."""
    mods = imported_by("simulate", "-q")
    assert "kit.sim.mva" in mods
    assert not {"kit.sim.des", "kit.kvm.tdx"} & mods
    code = ("import kit.kvm, kit.sim.api as a; assert kit.kvm.tdx.shared_bit(48) > 0; "
            "r = a.simulate(engine='des', guests=1, vcpus=4, guest_mem='1GiB', host_mem='32GiB', host_cores=8); "
            "assert r.fault_in_gbps > 0; import sys; assert 'kit.sim.des' in sys.modules")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_process_entry_freezes_what_start_up_made_and_main_does_not(monkeypatch):
    """``kit.cli.entry`` (the console script, ``python -m kit``) calls ``gc.freeze`` before the
    command; :func:`kit.cli.main`, called inside a longer-lived process, never does."""
    import gc
    import kit.cli
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(sys, "argv", ["kit", "--version"])
    assert kit.cli.main(["--version"]) == 0 and calls == []
    assert kit.cli.entry() == 0 and calls == ["freeze"]
