"""Parameter values never become code: only values papermill writes as literals reach it, from
``-p``, ``--grid``, ``kit.lab.run(..., params)`` and ``kit.lab.sweep(grid=...)``; anything else is
refused with one line naming the parameter before a kernel starts. Also: a notebook in another
language is refused, and ``table.csv`` cannot run formulas in a spreadsheet."""
import ast
import csv
import io
import json
import math
from pathlib import Path

import papermill
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from papermill.translators import PythonTranslator

import kit.lab
from kit.cli import main
from kit.lab import inspect
from kit.lab.batch import csv_safe, run_notebook
from kit.lab.execute import execute
from kit.lab.parameters import check_params, check_value, parse_grid, parse_pairs, parse_value
from kit.lab.store import Store

from .nbmake import make_notebook, untyped

INJECT = """('", __import__("os").system("touch PWNED"), "',)"""
# the same attack without a comma (a --grid value is split at commas)
INJECT_BYTES = """b'"+__import__("os").system("touch PWNED")+"'"""
INJECT_SET = """{'"+__import__("os").system("touch PWNED")+"'}"""
INJECT_LIST = """['ok', ('", __import__("os").system("touch PWNED"), "',)]"""
INJECT_DICT = """{'k': b'"+__import__("os").system("touch PWNED")+"'}"""


@pytest.fixture
def nb(tmp_path):
    return untyped(tmp_path / "nb" / "untyped.ipynb")


@pytest.fixture
def kernels(monkeypatch):
    """Counts papermill executions (each would start a kernel)."""
    calls = []
    real = papermill.execute_notebook

    def count(*a, **kw):
        calls.append(kw.get("parameters"))
        return real(*a, **kw)
    monkeypatch.setattr(papermill, "execute_notebook", count)
    return calls


def _pwned(root: Path) -> list:
    return list(Path(root).rglob("PWNED"))


def test_the_attack_is_real_without_the_check():
    """papermill writes a tuple as "<its str()>" unescaped: the injection string is code."""
    src = PythonTranslator.codify({"value": ast.literal_eval(INJECT)})
    calls = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)]
    assert calls, src                      # __import__("os").system(...) is a call in the cell
    assert not [n for n in ast.walk(ast.parse(PythonTranslator.codify({"value": INJECT}))) if isinstance(n, ast.Call)]


@pytest.mark.parametrize("text,what", [(INJECT, "tuple"), (INJECT_BYTES, "bytes"), (INJECT_SET, "set"),
                                       (INJECT_LIST, "value[1]: a tuple"), (INJECT_DICT, "value['k']: a bytes"),
                                       ("1j", "complex"), ("...", "ellipsis"), ("[[(1,)]]", "value[0][0]: a tuple"),
                                       ("set()", "a set"), ("{1: 2}", "dict key 1")])
def test_run_p_refuses_unsafe_literals_before_a_kernel(tmp_path, nb, kernels, monkeypatch, capsys, text, what):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    assert main(["run", str(nb), "-p", "value", text, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kit run: value") and what in err[0], err
    assert kernels == [] and not out.exists() and not _pwned(tmp_path)


@pytest.mark.parametrize("name,text,msg", [
    ("items", INJECT_LIST, "items[1]: a tuple"), ("items", INJECT, "items: expected a list"),
    ("pair", INJECT, "pair: expected a list"), ("pair", "(1, 2)", "pair: expected a list"),
    ("mapping", INJECT_DICT, "mapping['k']: a bytes"), ("mapping", "[1]", "mapping: expected a dict"),
    ("value", "1e999", "value: inf is not a finite number"), ("value", "[" * 40 + "]" * 40, "value: lists and dicts nested more than 32 deep"),
    ("value", "\udcff", "value: text that is not valid UTF-8")])
def test_typed_parameters_refuse_unsafe_values(nb, name, text, msg):
    with pytest.raises(ValueError) as e:
        parse_pairs(inspect(nb), [(name, text)])
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


@pytest.mark.parametrize("spec,msg", [(f"value={INJECT_BYTES}", "value: a bytes"), (f"value={INJECT_SET}", "value: a set"),
                                      ("value=1,1j", "value: a complex"), ("items=[1],[{1}]", "items[0]: a set")])
def test_sweep_grid_refuses_unsafe_literals_before_a_kernel(tmp_path, nb, kernels, monkeypatch, capsys, spec, msg):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s"
    assert main(["sweep", str(nb), "--grid", spec, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
    assert kernels == [] and not out.exists() and not _pwned(tmp_path)


@pytest.mark.parametrize("value,msg", [(ast.literal_eval(INJECT), "value: a tuple"), (b"x", "value: a bytes"),
                                       ([1, (2,)], "value[1]: a tuple"), ({"a": {1, 2}}, "value['a']: a set"),
                                       (float("nan"), "not a finite number"), (Ellipsis, "ellipsis"),
                                       (Path("/x"), "PosixPath"), (type("S", (str,), {})("x"), "a S")])
def test_python_api_refuses_unsafe_values(tmp_path, nb, kernels, value, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        kit.lab.run(nb, {"value": value}, tmp_path / "r")
    with pytest.raises(ValueError, match="value"):
        kit.lab.sweep(nb, {"value": [1, value]}, outdir=tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="value"):
        run_notebook(nb, tmp_path / "n", value=value)
    with pytest.raises(ValueError, match="value"):
        Store(tmp_path / "st").execute(nb, {"value": value})
    with pytest.raises(ValueError, match="value"):        # the one papermill call checks too
        execute(inspect(nb), {"value": value}, tmp_path / "e")
    assert kernels == [] and not _pwned(tmp_path)
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_grid_axis_must_be_a_list_of_values(tmp_path, nb):
    for grid, msg in [({"value": 3}, "expected a list"), ({"value": "ab"}, "expected a list"),
                      ({"value": []}, "no values"), ({"nope": [1]}, "unknown parameter")]:
        with pytest.raises(ValueError, match=msg):
            kit.lab.sweep(nb, grid, outdir=tmp_path / "s", progress=False)


def test_safe_values_reach_the_kernel_as_they_are(tmp_path, nb):
    """The values that pass arrive unchanged: a string holding the attack stays a string."""
    params = {"value": INJECT, "items": ["a", 1, 2.5, None, True, [1, {"k": "v"}]], "mapping": {"x\"'": [1]}}
    kit.lab.run(nb, params, tmp_path / "r")
    got = json.loads((tmp_path / "r" / "got.json").read_text())["results"]
    assert got == {"value": repr(INJECT), "items": repr(params["items"]), "mapping": repr(params["mapping"])}
    assert not _pwned(tmp_path)


# ------------------------------------------------------------------ the fuzzer
def _same(a, b) -> bool:
    """Equal with the same types all the way down (1 != 1.0 != True here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _render(v) -> str:
    """A Python literal's source (``...`` for Ellipsis, which repr writes as a name)."""
    if v is Ellipsis:
        return "..."
    if isinstance(v, list):
        return "[" + ", ".join(map(_render, v)) + "]"
    if isinstance(v, tuple):
        return "(" + "".join(_render(x) + ", " for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_render(k)}: {_render(x)}" for k, x in v.items()) + "}"
    return repr(v)


hashables = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                      st.binary(max_size=4), st.complex_numbers(allow_nan=False), st.just(Ellipsis))
literals = st.recursive(
    hashables,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner), st.tuples(inner),
                            st.frozensets(hashables, max_size=3).map(set),
                            st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.booleans()), inner, max_size=3)),
    max_leaves=10)

KINDS = {"value": "None", "items": "list", "mapping": "dict", "pair": "tuple", "label": "str"}


def _papermill_round_trip(value):
    src = PythonTranslator.translate(value)
    assert _same(ast.literal_eval(src), value), (value, src)
    # and the whole parameters cell papermill writes is assignments of literals only
    tree = ast.parse(PythonTranslator.codify({"value": value}))
    assert all(isinstance(n, ast.Assign) for n in tree.body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=literals, kind=st.sampled_from(sorted(KINDS)))
def test_fuzz_text_values_are_refused_by_name_or_round_trip(value, kind):
    """Any Python literal written as ``-p NAME TEXT`` (or a --grid value): refused with a
    ``ValueError`` naming the parameter, or read as a value of a safe type that papermill
    writes as a literal reading back as the same value."""
    text = _render(value)
    try:
        got = parse_value("p", text, {"inferred_type_name": KINDS[kind], "default": None})
    except ValueError as e:
        assert str(e).startswith("p"), e
        return
    _papermill_round_trip(got)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=literals)
def test_fuzz_python_values_are_refused_by_name_or_round_trip(value):
    """The same for values given from Python (``kit.lab.run(..., params)``, a dict grid)."""
    try:
        check_params({"p": value})
    except ValueError as e:
        assert str(e).startswith("p"), e
        return
    _papermill_round_trip(value)
    assert _same(parse_grid({"value": [value]}, {"value": {}})[0]["value"], value)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30), kind=st.sampled_from(["int", "float", "bool", "str", "list", "dict", "tuple", "None"]))
def test_fuzz_any_text_gives_a_value_or_one_line(text, kind):
    """Whatever the text, a typed parameter gives a safe value or one ValueError line."""
    try:
        got = parse_value("p", text, {"inferred_type_name": kind, "default": None})
    except ValueError as e:
        assert str(e).startswith("p") and "\n" not in str(e)
        return
    check_value("p", got)
    _papermill_round_trip(got)


# ------------------------------------------------------------------ kernel language, CSV
@pytest.mark.parametrize("language", ["R", "julia", "scala"])
def test_a_notebook_in_another_language_is_refused(tmp_path, kernels, capsys, language):
    nb = make_notebook(tmp_path / "other.ipynb", "x = 1", "print(x)", language=language)
    with pytest.raises(ValueError, match=f"is a {language.lower()} notebook"):
        inspect(nb)
    assert main(["run", str(nb), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the kit runs Python notebooks only" in err[0]
    assert main(["sweep", str(nb), "--grid", "x=1,2", "-o", str(tmp_path / "s")]) == 2
    assert kernels == [] and not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_a_folder_or_a_broken_file_named_ipynb_is_one_line(tmp_path, capsys):
    (tmp_path / "dir.ipynb").mkdir()
    (tmp_path / "bad.ipynb").write_text("{not json")
    for p, msg in [(tmp_path / "dir.ipynb", "is a folder"), (tmp_path / "bad.ipynb", "cannot read bad.ipynb")]:
        assert main(["run", str(p), "-o", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


FORMULAS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://x\")"]


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted():
    import pandas as pd
    df = pd.DataFrame({"p.text": FORMULAS + ["plain"], "=head": [1] * 8, "n": [-1, 2, 0, 3, 4, 5, 6, 7]})
    rows = list(csv.reader(io.StringIO(csv_safe(df))))
    assert rows[0] == ["p.text", "'=head", "n"]
    assert [r[0] for r in rows[1:]] == ["'" + f for f in FORMULAS] + ["plain"]
    assert rows[1][2] == "-1"                      # numbers are numbers
    assert df["p.text"][0] == "=1+1"               # the frame itself is left alone


def test_sweep_table_csv_is_safe_end_to_end(tmp_path):
    from .nbmake import counter
    nb = counter(tmp_path / "counter.ipynb")
    df = kit.lab.sweep(nb, {"text": ["=1+1", "@x", "ok"]}, outdir=tmp_path / "s", workers=1, progress=False)
    assert list(df["count.text"]) == ["=1+1", "@x", "ok"]
    for table in [tmp_path / "s" / "table.csv", Path(df.attrs["tables"]) / "table.csv"]:
        rows = list(csv.DictReader(table.open(newline="")))
        assert [r["p.text"] for r in rows] == ["'=1+1", "'@x", "ok"]
        assert [r["count.text"] for r in rows] == ["'=1+1", "'@x", "ok"]
