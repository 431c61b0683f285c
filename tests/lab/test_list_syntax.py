"""One list syntax for ``-p`` and ``--grid`` (kit.lab.parameters.LIST_SYNTAX): a value written by
``format_value`` reads back as itself through ``parse_value`` (``-p``) and through a grid axis
(``--grid``), for every parameter type a notebook's defaults give."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kit.lab.commands import build_parser
from kit.lab.notebook import canonical
from kit.lab.parameters import LIST_SYNTAX, format_value, grid_specs, item_kind, parse_grid, parse_value

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
scalars = st.one_of(st.integers(), finite, st.booleans(), text, st.none())

#: (papermill's inferred type, the default's source text, a strategy of values of that type)
KINDS = {
    "int": ("int", "0", st.integers()),
    "float": ("float", "0.5", finite),
    "bool": ("bool", "False", st.booleans()),
    "str": ("str", '"x"', text),
    "list of int": ("list", "[8, 16]", st.lists(st.integers(), max_size=5)),
    "list of float": ("list", "[0.5, 1]", st.lists(finite, max_size=5)),
    "list of str": ("list", '["a", "b"]', st.lists(text, max_size=5)),
    "list of bool": ("list", "[True]", st.lists(st.booleans(), max_size=5)),
    "untyped list": ("list", "[]", st.lists(scalars, max_size=5)),
    "dict": ("dict", "{}", st.dictionaries(text, scalars, max_size=4)),
    "untyped": ("None", "None", st.one_of(scalars, st.lists(scalars, max_size=3))),
}


def _same(a, b) -> bool:
    return canonical(a) == canonical(b) and type(a) is type(b)


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_format_then_parse_gives_the_value_back(kind, data):
    name, default, values = KINDS[kind]
    info = {"inferred_type_name": name, "default": default}
    value = data.draw(values)
    if name == "float":
        value = float(value)
    assert _same(parse_value("p", format_value(value, info), info), value)


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_grid_axis_of_formatted_values_gives_the_values_back(kind, data):
    name, default, values = KINDS[kind]
    info = {"p": {"inferred_type_name": name, "default": default}}
    vals = data.draw(st.lists(values, min_size=1, max_size=4, unique_by=canonical))
    spec = grid_specs({"p": vals}, info)
    got = [c["p"] for c in parse_grid(spec, info)]
    assert len(got) == len(vals) and all(_same(a, b) for a, b in zip(got, vals)), spec


def test_the_same_list_text_for_p_and_grid():
    info = {"vcpu_sweep": {"inferred_type_name": "list", "default": "[8, 16, 32]"}}
    assert parse_value("vcpu_sweep", "16;64", info["vcpu_sweep"]) == [16, 64]
    assert parse_value("vcpu_sweep", "[16, 64]", info["vcpu_sweep"]) == [16, 64]
    assert parse_value("vcpu_sweep", "16", info["vcpu_sweep"]) == [16]
    combos = parse_grid(["vcpu_sweep=16;64,32;128"], info)
    assert combos == [{"vcpu_sweep": [16, 64]}, {"vcpu_sweep": [32, 128]}]
    assert parse_grid(["vcpu_sweep=[16, 64],[32]"], info) == [{"vcpu_sweep": [16, 64]}, {"vcpu_sweep": [32]}]
    pol = {"policies": {"inferred_type_name": "list", "default": '["a", "b"]'}}
    assert parse_grid(["policies=none;presplit-4k,split-on-demand"], pol) == [
        {"policies": ["none", "presplit-4k"]}, {"policies": ["split-on-demand"]}]


def test_item_types_come_from_the_default():
    assert item_kind({"default": "[8, 16]"}) == "int"
    assert item_kind({"default": "[0.5, 1]"}) == "float"
    assert item_kind({"default": '["a"]'}) == "str"
    assert item_kind({"default": "[]"}) == "None"
    with pytest.raises(ValueError, match="vcpu_sweep: cannot read '16;x'"):
        parse_value("vcpu_sweep", "16;x", {"inferred_type_name": "list", "default": "[8]"})
    with pytest.raises(ValueError, match="vcpu_sweep: an empty item"):
        parse_value("vcpu_sweep", "16;;64", {"inferred_type_name": "list", "default": "[8]"})


def test_the_help_of_p_and_grid_names_the_syntax():
    p = build_parser(raise_errors=True)
    sub = p._subparsers._group_actions[0].choices
    for cmd in ("run", "sweep"):
        assert LIST_SYNTAX in " ".join(sub[cmd].format_help().split())
    assert math.isfinite(1.0)


def test_the_documented_list_examples_parse():
    """docs/lab.md's `-p` and `--grid` examples, read with the notebook's own parameters."""
    import re
    import shlex
    from pathlib import Path

    from kit.lab.notebook import inspect
    from kit.lab.parameters import parse_pairs
    doc = (Path(__file__).resolve().parents[2] / "docs" / "lab.md").read_text()
    lines = [ln.strip() for ln in doc.splitlines() if re.match(r"\s*kit (run|sweep) lazy-acceptance-scaling", ln)]
    assert len(lines) >= 3
    nb = inspect("lazy-acceptance-scaling")
    for ln in lines:
        argv = shlex.split(ln, comments=True)
        args = build_parser(raise_errors=True).parse_args(argv[1:])
        if args.cmd == "run":
            assert parse_pairs(nb, args.param) == {"vcpu_sweep": [16, 64]}
        else:
            assert len(parse_grid(args.grid, nb.parameters)) == 2, ln
