"""No traceback for a user's mistake: every expected error of ``kit`` and ``%kit`` is one line
naming the input and status 2 (1 for a failed run); a bug is one line naming the crash report
that holds its traceback, status 70 (docs/cli-errors.md). Each instance of issue 15, section 4,
is a case here; the fuzzer over the whole argument space is tests/lab/test_hostile_cli.py."""
from __future__ import annotations

import argparse
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from kit.cli import main
from kit.errors import KvmError
from kit.lab import commands
from kit.lab.commands import CRASH_STATUS, ArgError, build_parser, call, text_table
from kit.lab.limits import LAB_PARAMS, SWEEP_CONFIRM, bounds_markdown
from kit.lab.magics import _command
from kit.units import parse_int

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "notebooks" / "data" / "probe.ipynb"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def one_line(capsys, status, argv, *, starts=None, has=()):
    """``kit ARGV`` returns ``status`` with exactly one line on stderr and no traceback."""
    got = main(argv)
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert got == status, (got, cap.err[-2000:], cap.out[-2000:])
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    if starts:
        assert lines[0].startswith(starts), lines[0]
    for h in has:
        assert h in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """Crash reports go under the test's folder; the test runs there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------ output paths, before the work
def _writers(out: str) -> list[list[str]]:
    """Every subcommand that writes, with ``out`` as its output (file or folder)."""
    return [["demo", "--out", out], ["host-demo", "--mem", "8GiB", "--guest-mem", "4GiB", "--out", out],
            ["calibrate", "-o", out], ["calibrate", "-o", "fit.json", "--residuals", out],
            ["report", str(ROOT / "data" / "measurements.csv"), "-o", out],
            ["run", str(PROBE), "-o", out], ["sweep", str(PROBE), "--grid", "x=1", "-o", out]]


def _id(argv) -> str:
    return argv[0] + ("-res" if "--residuals" in argv else "")


def _is_folder_output(argv) -> bool:
    return argv[0] in ("run", "sweep")


@pytest.mark.parametrize("argv", _writers(""), ids=_id)
def test_an_empty_output_path_is_refused_before_the_work(argv, capsys):
    t = time.perf_counter()
    one_line(capsys, 2, argv, has=("empty path",))
    assert time.perf_counter() - t < 30


@pytest.mark.parametrize("argv", _writers("FOLDER"), ids=_id)
def test_an_output_file_that_is_a_folder_is_refused_before_the_work(argv, capsys, tmp_path):
    (tmp_path / "FOLDER.html").mkdir()
    (tmp_path / "FOLDER").mkdir()
    if _is_folder_output(argv):                  # a folder output given a file
        (tmp_path / "FOLDER").rmdir()
        (tmp_path / "FOLDER").write_text("x")
    argv = [("FOLDER.html" if a == "FOLDER" and argv[0] == "demo" else a) for a in argv]
    line = one_line(capsys, 2, argv)
    assert "is a folder" in line or "not a folder" in line or "not a kit" in line, line
    assert not (tmp_path / "fit.json").exists()


@pytest.mark.parametrize("argv", _writers("FILE/sub/out.html"), ids=_id)
def test_an_output_below_a_file_is_refused_before_the_work(argv, capsys, tmp_path):
    (tmp_path / "FILE").write_text("a file, not a folder")
    one_line(capsys, 2, argv, has=("FILE",))


@pytest.mark.parametrize("argv", _writers("ro/sub/out.html"), ids=_id)
def test_an_output_in_a_folder_that_cannot_be_written_is_refused_before_the_work(argv, capsys, tmp_path,
                                                                                  monkeypatch):
    (tmp_path / "ro").mkdir()
    if IS_ROOT:                  # root writes through permission bits: the folder refuses as a read-only mount would
        import tempfile
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == (tmp_path / "ro").resolve():
                raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return real(*a, dir=dir, **kw)
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:
        (tmp_path / "ro").chmod(0o555)
    try:
        one_line(capsys, 2, argv, has=("cannot write in", "ro"))
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert not (tmp_path / "ro" / "sub").exists()


def test_a_missing_output_folder_is_created_once_the_work_is_done(capsys, tmp_path):
    out, res = tmp_path / "new" / "deeper" / "fit.json", tmp_path / "new" / "other" / "res.json"
    assert main(["calibrate", "-o", str(out), "--residuals", str(res)]) in (0, 1)
    assert out.is_file() and res.is_file() and "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------ the instances of issue 15
def test_an_outdir_parameter_does_not_collide_with_the_pipeline(capsys, tmp_path):
    assert main(["run", str(PROBE), "-p", "outdir", "X", "-p", "x", "3"]) == 0
    assert (tmp_path / "X" / "probe.ipynb").is_file()
    assert capsys.readouterr().err == ""


def test_demo_of_policies_without_measurements_prints_an_empty_table_and_writes_atomically(capsys, tmp_path):
    out = tmp_path / "r" / "index.html"
    assert main(["demo", "--policies", "split-on-demand-collapse", "--steps", "10", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "no measured row for split-on-demand-collapse" in cap.out and "Traceback" not in cap.err
    rec = json.loads((tmp_path / "r" / "directmap-policies" / "kit-run.json").read_text())
    assert rec["state"] == "complete" and out.is_file()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]     # no temporary folder left


def test_an_empty_table_is_its_header():
    assert text_table([], ["policy", "measured GB/s"]) == "policy  measured GB/s"


def _params(tmp_path, change=None, name="p.json") -> str:
    data = json.loads((ROOT / "data" / "cost_params.json").read_text())
    if change:
        change(data)
    (tmp_path / name).write_text(json.dumps(data))
    return name


def _set(pname, value):
    def change(d):
        for p in d["params"]:
            if p["name"] == pname:
                p["value"] = value
    return change


COST_FILES = {
    "a string value": (lambda t: _params(t, _set("dram_gbps_per_socket", "fast")), "dram_gbps_per_socket"),
    "NaN": (lambda t: _params(t, _set("dram_gbps_per_socket", float("nan"))), "dram_gbps_per_socket"),
    "infinity": (lambda t: _params(t, _set("convert_us", float("inf"))), "convert_us"),
    "a zero rate": (lambda t: _params(t, _set("dram_gbps_per_socket", 0)), "dram_gbps_per_socket"),
    "a negative rate": (lambda t: _params(t, _set("zero_gbps_core", -1)), "zero_gbps_core"),
    "a negative time": (lambda t: _params(t, _set("exit_us", -2.0)), "exit_us"),
    "a fraction past 1": (lambda t: _params(t, _set("accept_spin_share", 1.5)), "accept_spin_share"),
    "a bool": (lambda t: _params(t, _set("split_us", True)), "split_us"),
    "a missing parameter": (lambda t: _params(t, lambda d: d["params"].pop(0)), "zero_gbps_core"),
    "an unknown parameter": (lambda t: _params(t, lambda d: d["params"].append({**d["params"][0], "name": "bogus"})),
                             "bogus"),
    "a parameter twice": (lambda t: _params(t, lambda d: d["params"].append(d["params"][0])), "twice"),
    "another unit": (lambda t: _params(t, lambda d: next(q for q in d["params"] if q["name"] == "invlpg_us").update(unit="ms")), "invlpg_us"),
    "fit bounds outside the range": (lambda t: _params(t, lambda d: [p.update(lower=-5) for p in d["params"]
                                                                      if p["kind"] == "fitted"]), "lower"),
    "a directory": (lambda t: (t / "d.json").mkdir() or "d.json", "not a file"),
    "a non-kit JSON": (lambda t: (t / "n.json").write_text('{"a": 1}') and "n.json", "not a kit cost-parameter file"),
    "a JSON list": (lambda t: (t / "l.json").write_text("[1, 2]") and "l.json", "not a kit cost-parameter file"),
    "invalid JSON": (lambda t: (t / "b.json").write_text("{") and "b.json", "not JSON"),
    "non-UTF-8 bytes": (lambda t: (t / "u.json").write_bytes(b"\xff\xfe{}") and "u.json", "not UTF-8"),
    "an empty file": (lambda t: (t / "e.json").write_text("") or "e.json", "not JSON"),
    "a missing file": (lambda t: "missing.json", "no parameter file"),
    "an empty path": (lambda t: "", "empty path"),
}


@pytest.mark.parametrize("what", COST_FILES)
@pytest.mark.parametrize("cmd", [["simulate", "--params"], ["calibrate", "-o", "fit.json", "--start"]])
def test_a_malformed_cost_parameter_file_is_refused_naming_it(what, cmd, capsys, tmp_path):
    make, named = COST_FILES[what]
    path = make(tmp_path)
    line = one_line(capsys, 2, [*cmd, path], starts=f"kit {cmd[0]}: params: ", has=(named,))
    assert path in line
    assert not (tmp_path / "fit.json").exists()


def test_cost_parameter_bounds_are_one_table():
    from kit.sim.params import BASE, VALUE_RANGES, CostParams, value_range
    for p in BASE:
        lo, hi, _ = value_range(p.unit)
        assert p.unit in VALUE_RANGES and lo <= p.value <= hi, p.name
        if p.kind == "fitted":
            assert lo <= p.lower < p.upper <= hi, p.name
    with pytest.raises(ValueError, match=r"dram_gbps_per_socket: expected a number 0.01..10000 GB/s"):
        CostParams().with_values(dram_gbps_per_socket=0)
    assert CostParams().with_values(exit_us=0)["exit_us"] == 0        # a free event: a what-if


def test_a_guest_past_a_memslot_is_one_line(capsys):
    one_line(capsys, 2, ["simulate", "--guest-mem", "8TiB", "--host-mem", "9TiB"], starts="kit simulate: guest_mem")


def test_a_kvm_error_reaching_the_command_line_is_one_line(monkeypatch, capsys):
    def refuse(args, say=None):
        raise KvmError(errno.EINVAL, "KVM_SET_USER_MEMORY_REGION2: slot too large")
    monkeypatch.setattr(commands, "simulate", refuse)
    one_line(capsys, 2, ["simulate"], starts="kit simulate: the model refused the input", has=("EINVAL",))


@pytest.mark.parametrize("cmd", ["run", "sweep"])
@pytest.mark.parametrize("what", ["malformed", "folder", "missing", "not a notebook"])
def test_a_bad_notebook_is_one_line(cmd, what, capsys, tmp_path):
    path = {"malformed": "bad.ipynb", "folder": "dir.ipynb", "missing": "gone.ipynb", "not a notebook": "x.txt"}[what]
    if what == "malformed":
        (tmp_path / path).write_text('{"cells": [')
    elif what == "folder":
        (tmp_path / path).mkdir()
    elif what == "not a notebook":
        (tmp_path / path).write_bytes(b"\xff\x00")
    argv = [cmd, path] + (["--grid", "x=1"] if cmd == "sweep" else [])
    one_line(capsys, 2, argv, starts=f"kit {cmd}: notebook")


def test_a_scheduler_that_does_not_answer_is_one_line_within_seconds(capsys, tmp_path):
    t = time.perf_counter()
    one_line(capsys, 2, ["sweep", str(PROBE), "--grid", "x=1", "-o", "s", "--scheduler", "tcp://127.0.0.1:1"],
             starts="kit sweep: scheduler: cannot reach a dask scheduler at 'tcp://127.0.0.1:1' within 5 s")
    assert time.perf_counter() - t < 60


def test_arguments_that_are_not_utf8_are_one_line(capsys):
    bad = os.fsdecode(b"caf\xe9")                      # what Python makes of Latin-1 bytes in argv
    one_line(capsys, 2, ["simulate", "--policy", bad], starts="kit simulate: argument 3: not UTF-8",
             has=("caf\\xe9",))
    one_line(capsys, 2, ["run", "x\0y"], has=("NUL",))


def test_arguments_that_are_not_utf8_from_the_system_are_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "kit", "run", b"\xff.ipynb"], capture_output=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    err = p.stderr.decode("utf-8", "replace").strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "not UTF-8" in err[0], err


def _int_options():
    """Every integer option of every subcommand (each has the one integer type)."""
    p = build_parser(raise_errors=True)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for name, sp in sub.choices.items():
        for a in sp._actions:
            if a.option_strings and a.type is not None and getattr(a.type, "__name__", "") == "integer":
                out.append((name, a.option_strings[-1]))
    return out


def test_every_integer_option_has_the_one_integer_type():
    p = build_parser(raise_errors=True)
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        for a in sp._actions:
            assert a.type is not int, (name, a.option_strings)
    assert len(_int_options()) >= 12


@pytest.mark.parametrize("cmd,option", _int_options())
@pytest.mark.parametrize("digits", ["١٢", "１２", "1_0", "٣.٥", "12" * 30])
def test_integer_options_take_ascii_digits_only(cmd, option, digits, capsys):
    argv = [cmd, *(["x"] if cmd in ("run", "sweep", "explore", "report") else []), option, digits]
    one_line(capsys, 2, argv, starts=f"kit {cmd}: ", has=(option,))


@pytest.mark.parametrize("text,ok", [("12", 12), ("-3", -3), (" +7 ", 7), ("١٢", None), ("1_000", None),
                                     ("1e3", None), ("", None), ("9" * 41, None), ("0x10", None)])
def test_parse_int_reads_ascii_digits_only(text, ok):
    if ok is None:
        with pytest.raises(ValueError, match="ASCII digits"):
            parse_int(text, name="n")
    else:
        assert parse_int(text) == ok


def test_a_size_that_is_not_whole_units_is_refused(capsys, tmp_path):
    one_line(capsys, 2, ["host-demo", "--mem", "64GiB", "--guest-mem", "3.5MiB", "--out", "r.html"],
             starts="kit host-demo: guest_mem: must be a whole number of 2MiB regions, got 3584KiB")
    assert not (tmp_path / "r.html").exists()


def test_a_large_sweep_needs_yes_and_workers_are_bounded(capsys, tmp_path):
    grid = "x=" + ",".join(str(i) for i in range(SWEEP_CONFIRM.max + 1))
    one_line(capsys, 2, ["sweep", str(PROBE), "--grid", grid, "-o", "s"], has=("--yes",))
    one_line(capsys, 2, ["sweep", str(PROBE), "--grid", "x=1", "--workers", "10000000"],
             starts="kit sweep: workers: expected an integer 1..64", has=("(option --workers)",))
    one_line(capsys, 2, ["sweep", str(PROBE), "--grid", "x=" + ",".join(map(str, range(400))),
                         "--seeds", "1000", "--yes"], has=("at most 100000",))
    assert not (tmp_path / "s").exists()


def test_docs_lab_bounds_table_is_the_limits():
    text = (ROOT / "docs" / "lab.md").read_text()
    block = text.split("<!-- lab bounds table:")[1].split("<!-- end lab bounds table -->")[0]
    assert block.splitlines()[1:] == bounds_markdown(LAB_PARAMS)


# ------------------------------------------------------------------ bugs: a crash report, one line
def test_a_bug_is_one_line_naming_its_crash_report(monkeypatch, capsys, tmp_path):
    def broken(args, say=None):
        return 1 / 0
    monkeypatch.setattr(commands, "simulate", broken)
    line = one_line(capsys, CRASH_STATUS, ["simulate", "--seed", "3"],
                    starts="kit simulate: internal error (ZeroDivisionError: division by zero)")
    path = Path(line.split("the full traceback is in ")[1].split(";")[0])
    assert path.parent == tmp_path / "cache" / "kit" / "crashes"
    report = path.read_text()
    assert "Traceback" in report and "ZeroDivisionError" in report and "'--seed', '3'" in report
    assert "please report it" in line


def test_a_bug_without_a_writable_cache_goes_to_the_temporary_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setattr(commands, "simulate", lambda args, say=None: [][1])
    line = one_line(capsys, CRASH_STATUS, ["simulate"], has=("IndexError",))
    path = Path(line.split("the full traceback is in ")[1].split(";")[0])
    assert path.is_file() and "IndexError" in path.read_text()
    path.unlink()


def test_call_passes_expected_errors_and_wraps_the_rest():
    ns = argparse.Namespace(cmd="x", command=lambda a, say=None: (_ for _ in ()).throw(ArgError("n: bad")))
    with pytest.raises(ArgError, match="n: bad"):
        call(ns)
    ns.command = lambda a, say=None: open("/nonexistent-folder/x")
    with pytest.raises(commands.RunFailed, match="nonexistent-folder"):
        call(ns)


# ------------------------------------------------------------------ %kit: the same rule
@pytest.mark.parametrize("argv,match", [
    (["simulate", "--vcpus", "١٢"], "%kit simulate: vcpus: expected an integer"),
    (["simulate", "--params", "nope.json"], "%kit simulate: params: no parameter file"),
    (["host-demo", "--out", ""], "%kit host-demo: out: empty path"),
    (["run", "nope.ipynb"], "%kit run: notebook: unknown"),
])
def test_kit_magic_turns_every_expected_error_into_one_line(argv, match):
    with pytest.raises(UsageError) as e:
        _command(argv)
    assert str(e.value).startswith(match) and "\n" not in str(e.value)


def test_kit_magic_turns_a_kvm_error_and_a_bug_into_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(commands, "simulate", lambda a, say=None: (_ for _ in ()).throw(KvmError(errno.EBUSY, "x")))
    with pytest.raises(UsageError, match="the model refused the input"):
        _command(["simulate"])
    monkeypatch.setattr(commands, "simulate", lambda a, say=None: {}["k"])
    with pytest.raises(UsageError, match=r"internal error \(KeyError: 'k'\).*the full traceback is in") as e:
        _command(["simulate"])
    assert "\n" not in str(e.value)


def test_docs_cost_figures_allowed_values_are_the_ranges():
    from kit.sim.params import VALUE_RANGES
    text = (ROOT / "docs" / "cost-figures.md").read_text().split("## Allowed values")[1]
    rows = {r.split("|")[1].strip(): r.split("|")[2:4] for r in text.splitlines() if r.startswith("| ")
            and not r.startswith("| unit")}
    assert set(rows) == set(VALUE_RANGES)
    for unit, (lo, hi, _) in VALUE_RANGES.items():
        assert [float(x.replace(",", "")) for x in rows[unit]] == [lo, hi], unit
