"""The lab's one linear pipeline: a notebook resolved and inspected once, its parameters checked
once, executed by one papermill call (in one place), its results recorded and stored; the CLI
and ``%kit`` share one parser and the same commands; the lab never imports the CLI."""
import ast
import json
from pathlib import Path

import papermill
import pytest
from IPython.core.error import UsageError

import kit.lab.parameters
from kit.cli import main
from kit.lab import commands, inspect
from kit.lab.notebook import Notebook
from kit.lab.record import record
from kit.lab.report import report
from kit.lab.store import Store

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "notebooks" / "data" / "probe.ipynb"


@pytest.fixture
def counted(monkeypatch):
    """Calls of papermill's inspection and execution, and in-process runs of a validation cell."""
    calls = {"inspect": 0, "execute": 0, "validation": 0}
    inspect_nb, execute_nb = papermill.inspect_notebook, papermill.execute_notebook

    def count(name, fn):
        def wrapper(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapper
    monkeypatch.setattr(papermill, "inspect_notebook", count("inspect", inspect_nb))
    monkeypatch.setattr(papermill, "execute_notebook", count("execute", execute_nb))
    monkeypatch.setattr(kit.lab.parameters, "exec", count("validation", exec), raising=False)
    return calls


def test_kit_run_inspects_checks_and_executes_once(tmp_path, counted, capsys):
    assert main(["run", str(PROBE), "-p", "x", "3", "-o", str(tmp_path / "r")]) == 0
    assert counted == {"inspect": 1, "execute": 1, "validation": 1}
    assert json.loads((tmp_path / "r" / "probe.json").read_text())["results"]["y"] == 9
    assert "report:" in capsys.readouterr().out


def test_a_bad_value_stops_before_any_kernel(tmp_path, counted, capsys):
    assert main(["run", str(PROBE), "-p", "x", "-1", "-o", str(tmp_path / "r")]) == 2
    assert counted == {"inspect": 1, "execute": 0, "validation": 1}
    assert capsys.readouterr().err.startswith("kit run: x: expected an integer")


def test_the_store_executes_an_inspected_notebook_without_reading_it_again(tmp_path, counted):
    nb = inspect(PROBE)
    assert isinstance(nb, Notebook) and inspect(nb) is nb and nb.name == "probe" and "x" in nb.parameters
    assert nb.validation.startswith("import kit.lab") and len(nb.cells_hash) == 64
    counted["inspect"] = 0
    st = Store(tmp_path).execute(nb, {"x": 4, "outdir": "elsewhere"})
    assert st["state"] == "complete" and counted == {"inspect": 0, "execute": 1, "validation": 0}
    assert Store(tmp_path).results(st["key"])[0]["results"]["y"] == 16        # side file in the run folder


def _calls(path: Path, attr: str) -> int:
    tree = ast.parse(path.read_text())
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == attr)


def test_papermill_is_called_in_one_place_each():
    files = sorted((ROOT / "kit").rglob("*.py"))
    assert [f.relative_to(ROOT).as_posix() for f in files if _calls(f, "execute_notebook")] == ["kit/lab/execute.py"]
    assert [f.relative_to(ROOT).as_posix() for f in files if _calls(f, "inspect_notebook")] == ["kit/lab/notebook.py"]


def test_the_lab_never_imports_the_cli():
    for f in (ROOT / "kit" / "lab").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom):
                names = [n.module or ""] + [a.name for a in n.names]
                assert not (n.level == 2 and "cli" in names) and n.module != "kit.cli", f
            elif isinstance(n, ast.Import):
                assert all(a.name != "kit.cli" for a in n.names), f


def test_cli_and_magic_share_the_parser_and_the_commands(ip):
    from kit.cli import parser
    from kit.lab.magics import SUBCOMMANDS
    sub = next(a for a in parser()._actions if a.dest == "cmd")
    assert tuple(sub.choices) == commands.SUBCOMMANDS
    assert set(commands.SUBCOMMANDS) < set(SUBCOMMANDS)
    for name, p in sub.choices.items():
        assert p.get_default("command") is getattr(commands, name.replace("-", "_"))


@pytest.mark.parametrize("line,msg", [
    (f"run {PROBE} -p nope 1", "%kit run: parameters: unknown nope for probe"),
    (f"run {PROBE} -p x -1", "%kit run: x: expected an integer >= 0"),
    (f"sweep {PROBE} --grid x=1,,2", "%kit sweep: grid: x has an empty value"),
    ("run", "%kit run: the following arguments are required: notebook")])
def test_magic_run_and_sweep_errors_are_one_line(ip, line, msg):
    with pytest.raises(UsageError) as e:
        ip.run_line_magic("kit", line)
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_magic_run_prints_what_kit_run_prints(ip, tmp_path, capsys):
    assert ip.run_line_magic("kit", f"run {PROBE} -p x 5 -o {tmp_path / 'm'}   # a comment") is None
    out = capsys.readouterr().out
    assert f"executed notebook: {tmp_path / 'm' / 'probe.ipynb'}" in out and "result: probe" in out
    assert json.loads((tmp_path / "m" / "probe.json").read_text())["results"]["y"] == 25


def test_report_of_mixed_sweep_rows(tmp_path):
    """lazy-acceptance-scaling records three sweeps in one list: the report draws each."""
    from kit.sim.experiments import sweep
    fixed = dict(policies=["presplit-4k"], guest_mem="8GiB", host_mem="64GiB")
    rows = sweep("vcpus", [4, 8], guests=1, host_cores=16, **fixed) + sweep("guests", [1, 2], vcpus=4, host_cores=16, **fixed)
    record("scaling", {"sweep": rows}, outdir=tmp_path, display=False)
    html = report([tmp_path], tmp_path / "r.html").read_text()
    assert "fault-in rate vs vcpus" in html and "fault-in rate vs guests" in html


def test_old_names_stay_importable():
    from kit.cli import ArgError, cmd_run, main, parser, simulate_args               # noqa: F401
    from kit.lab.batch import (parse_grid, parse_value, run, sweep, table, validate,   # noqa: F401
                               validation_source)
    from kit.lab.runner import NOTEBOOKS, ipc_kernel_manager, notebook_path, parameter_names, run_notebook
    from kit.lab.store import Store, canonical, notebook_hash, run_key                 # noqa: F401
    assert notebook_path("tour") == NOTEBOOKS / "tour.ipynb"
    assert "pages" in parameter_names("tour") and callable(run_notebook) and callable(ipc_kernel_manager)
    assert issubclass(ArgError, ValueError) and parser().prog == "kit"
    assert notebook_hash(PROBE) == inspect(PROBE).cells_hash and validation_source(PROBE) == inspect(PROBE).validation


def test_magic_help_prints_the_commands_usage(ip, capsys):
    assert ip.run_line_magic("kit", "sweep --help") is None
    assert capsys.readouterr().out.startswith("usage: kit sweep [-h] [--grid NAME=V1,V2,...]")
