"""The command line as a kernel engineer meets it: help with defaults and units, ``kit params``,
what a bare ``kit simulate`` simulated, progress only where someone watches, ``kit calibrate``
that writes only where asked and checks a user's measurements, and sizes that say they are
binary."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from kit.cli import main
from kit.lab import commands as C
from kit.lab.commands import SUBCOMMANDS, build_parser
from kit.sim.measurements import COLUMN_NAMES, check_measurements, schema_table
from kit.sim.params import DEFAULT_PATH
from kit.sim.scenario import SCENARIO_PARAMS
from kit.units import GiB, SIZE_UNITS, parse_size

ROOT = Path(__file__).resolve().parents[2]


def _help(cmd: str) -> str:
    sub = build_parser(raise_errors=True)._subparsers._group_actions[0].choices[cmd]
    return " ".join(sub.format_help().split())


def test_every_subcommand_option_shows_its_default():
    for cmd in SUBCOMMANDS:
        sub = build_parser(raise_errors=True)._subparsers._group_actions[0].choices[cmd]
        text = _help(cmd)
        for a in sub._actions:
            if a.option_strings and a.default not in (None, False, [], "==SUPPRESS==") and a.dest != "help":
                assert f"default {a.default}" in text, (cmd, a.dest)


def test_simulate_help_derives_from_the_scenario_table():
    text = _help("simulate")
    for name in ("guests", "vcpus", "guest_mem", "host_cores", "host_mem", "policy", "engine", "seed"):
        assert " ".join(SCENARIO_PARAMS[name].describe().split()) in text, name
    note = " ".join(SIZE_UNITS.split())[1:]            # the help starts it with a capital
    assert "1..4096 vCPUs" in text and note in text and note in _help("host-demo")


def test_bare_simulate_says_what_it_simulated(capsys):
    assert main(["simulate"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    d = {n: SCENARIO_PARAMS[n].default for n in SCENARIO_PARAMS}
    assert first == (f"simulated {d['workload']}: 1 guest x {d['vcpus']} vCPUs x {d['guest_mem']} on a host of "
                     f"{d['host_cores']} cores / {d['host_mem']}, direct-map policy {d['policy']}, "
                     f"{d['engine']} engine, seed 0")


def test_sizes_are_binary_and_said_so(capsys):
    assert parse_size("160G") == parse_size("160GB") == parse_size("160GiB") == 160 * GiB
    assert main(["simulate", "--guest-mem", "160G", "--guests", "8", "--host-mem", "1.5T"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"x 160GiB on a host of {SCENARIO_PARAMS['host_cores'].default} cores / 1536GiB" in first


def test_params_lists_types_defaults_bounds_and_help(capsys):
    assert main(["params", "lazy-acceptance-scaling"]) == 0
    out = capsys.readouterr().out
    assert "vcpu_sweep" in out and "list of int" in out and "a list of 1..4096 vCPUs" in out
    assert "vCPUs per guest (1 guest)" in out
    assert main(["params", "lazy-acceptance-scaling", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    hc = SCENARIO_PARAMS["host_cores"]
    assert rows["host_cores"] == {"name": "host_cores", "type": "int", "default": str(hc.default),
                                  "allowed": f"{hc.bounds_text()} {hc.unit}", "help": "host cores for the vCPU and guest sweeps"}
    assert main(["params", "no-such-notebook"]) == 2


def test_run_takes_the_list_syntax_before_a_kernel(capsys, tmp_path):
    # a bad item is refused before any kernel, naming the parameter
    assert main(["run", "lazy-acceptance-scaling", "-p", "vcpu_sweep", "16;x", "-o", str(tmp_path / "r")]) == 2
    assert "vcpu_sweep: cannot read '16;x'" in capsys.readouterr().err
    from kit.lab.notebook import inspect
    from kit.lab.parameters import parse_pairs
    assert parse_pairs(inspect("lazy-acceptance-scaling"), [("vcpu_sweep", "16;64")]) == {"vcpu_sweep": [16, 64]}


def test_progress_is_silent_off_a_terminal_and_with_quiet(monkeypatch):
    bar = C.progress_bar(3, "x")
    assert bar.disable                       # pytest's stderr is not a terminal
    bar.close()

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(C.sys, "stderr", Tty())
    bar = C.progress_bar(3, "x")
    assert not bar.disable
    bar.update(3)
    bar.close()
    assert C.progress_bar(3, "x", quiet=True).disable
    assert C.show_progress(build_parser().parse_args(["run", "tour"]))
    assert not C.show_progress(build_parser().parse_args(["run", "tour", "-q"]))


def test_des_simulate_moves_a_bar_and_keeps_stdout_the_result(monkeypatch, capsys):
    seen = []
    real = C.progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(C.sys, "stderr", Tty())

    def spy(total, desc, **kw):
        bar = real(total, desc, **kw)
        seen.append(bar)
        return bar
    monkeypatch.setattr(C, "progress_bar", spy)
    argv = ["simulate", "--engine", "des", "--guests", "1", "--vcpus", "4", "--guest-mem", "4GiB",
            "--host-cores", "8", "--host-mem", "32GiB", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "des"
    assert seen and seen[0].n == seen[0].total


def test_calibrate_never_writes_the_tracked_parameters_unless_asked(capsys, tmp_path):
    before = DEFAULT_PATH.read_bytes()
    main(["calibrate"])
    out = capsys.readouterr().out
    assert "parameter set: not written" in out and DEFAULT_PATH.read_bytes() == before
    assert main(["calibrate", "--write", "-o", str(tmp_path / "x.json")]) == 2
    assert "--write and -o/--out" in capsys.readouterr().err


@pytest.mark.parametrize("edit,msg", [
    (lambda rows: rows.__setitem__(1, rows[1].replace("presplit-4k", "bogus", 1)),
     "row {line}, column policy: 'bogus' is not allowed; allowed: none, invalidate-4k"),
    (lambda rows: rows.__setitem__(1, rows[1].replace(",12.9,", ",fast,", 1)),
     "row {line}, column gbps: 'fast' is not allowed; allowed: a number > 0"),
    (lambda rows: rows.__setitem__(1, rows[1].replace("unpinned", "pinned", 1)),
     "row {line}, column pinning: 'pinned' is not allowed; allowed: unpinned or numa-node-N"),
    (lambda rows: rows.__setitem__(1, rows[1].replace(",2.2", ",", 1)),
     "row {line}, column sd: empty; a mean_sd row needs its standard deviation"),
    (lambda rows: rows.__setitem__(0, rows[0].replace("gbps", "rate")),
     "row {head} (header): missing gbps; unknown rate"),
])
def test_calibrate_data_is_checked_with_one_line_naming_file_row_and_column(tmp_path, capsys, edit, msg):
    lines = (ROOT / "data" / "measurements.csv").read_text().splitlines()
    head = next(i for i, ln in enumerate(lines) if not ln.startswith("#"))
    rows = lines[head:head + 2]
    edit(rows)
    bad = tmp_path / "mine.csv"
    bad.write_text("\n".join(lines[:head] + rows) + "\n")
    assert main(["calibrate", "--data", str(bad), "-o", str(tmp_path / "fit.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kit calibrate: {bad}: " + msg.format(line=head + 2, head=head + 1)), err
    assert not (tmp_path / "fit.json").exists()


def test_calibrate_fits_a_users_own_measurements(tmp_path, capsys):
    lines = (ROOT / "data" / "measurements.csv").read_text().splitlines()
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(ln for ln in lines if not ln.startswith("#")) + "\n")
    assert len(check_measurements(mine)) == len(check_measurements(ROOT / "data" / "measurements.csv"))
    main(["calibrate", "--data", str(mine), "-o", str(tmp_path / "fit.json")])
    out = capsys.readouterr().out
    assert f"measured configurations of {mine}" in out and (tmp_path / "fit.json").exists()


def test_docs_data_shows_the_schema_table():
    text = (ROOT / "docs" / "data.md").read_text()
    assert schema_table() in text
    assert ",".join(COLUMN_NAMES) in text


def test_demo_shows_the_notebook_run_cell_by_cell_unless_quiet(monkeypatch, tmp_path):
    """``kit demo`` (tens of seconds) passes papermill's progress bar on a terminal; ``-q`` stops it."""
    seen = []

    def pipeline(nb, params, out, timeout, progress=False):
        seen.append(progress)
        raise C.RunFailed("stopped here")

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(C, "_pipeline", pipeline)
    monkeypatch.setattr(C.sys, "stderr", Tty())
    out = str(tmp_path / "r" / "index.html")
    assert main(["demo", "--policies", "presplit-4k", "--out", out]) == 1
    assert main(["demo", "--policies", "presplit-4k", "--out", out, "-q"]) == 1
    assert seen == [True, False]


@pytest.mark.parametrize("what", ["bytes", "rows", "configurations"])
def test_a_measurements_file_past_its_bounds_is_refused_before_any_fit(tmp_path, capsys, what):
    """The file's size, its rows and its configurations are bounded and checked before work
    (kit.sim.measurements.MAX_FILE_BYTES, MAX_ROWS, MAX_CONFIGURATIONS)."""
    from kit.sim import measurements as M
    head = "table,host_cores,host_mem_gib,guests,vcpus_per_guest,guest_mem_gib,pinning,policy,kind,run,gbps,sd"
    if what == "bytes":
        body = ["# " + "x" * 1000] * (M.MAX_FILE_BYTES // 1000 + 1) + [head, "A,,,1,8,8,unpinned,presplit-4k,mean_sd,,1.0,0.1"]
        msg = f"at most {M.MAX_FILE_BYTES} bytes"
    elif what == "rows":
        body = [head] + ["A,,,1,8,8,unpinned,presplit-4k,run,1,1.0,"] * (M.MAX_ROWS + 1)
        msg = f"{M.MAX_ROWS + 1} measured rows; at most {M.MAX_ROWS}"
    else:
        body = [head] + [f"A,,,1,{v},8,unpinned,presplit-4k,mean_sd,,1.0,0.1" for v in range(1, M.MAX_CONFIGURATIONS + 2)]
        msg = f"{M.MAX_CONFIGURATIONS + 1} configurations; at most {M.MAX_CONFIGURATIONS}"
    bad = tmp_path / "big.csv"
    bad.write_text("\n".join(body) + "\n")
    with pytest.raises(ValueError, match=msg):
        check_measurements(bad)
    assert main(["calibrate", "--data", str(bad), "-o", str(tmp_path / "fit.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and not (tmp_path / "fit.json").exists()
