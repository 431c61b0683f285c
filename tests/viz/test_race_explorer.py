"""The race-explorer dashboard, headless, on the toy catalog (tests/viz/toy_catalog.py): run, step
forward and back through the counterexample, see the state at each step; updates replace the
source's data, never the figure."""
from __future__ import annotations

import pytest

from kit.viz import dashboards as D
from kit.viz import figures as F

from . import toy_catalog

INV = "counter equals live maps"


def lanes(f) -> list:
    return [f.xaxis.major_label_overrides[t] for t in f.xaxis.ticker.ticks]


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    return toy_catalog.install(monkeypatch)


def state(d) -> dict:
    """The state table's rows as {name: (value, changed)}."""
    import re
    cells = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", d.state.value)
    return {n: (v, c) for n, v, c in cells}


def test_the_states_are_the_models_at_each_step():
    d = D.RaceExplorer("lost-update", "lockless")
    assert d._states == toy_catalog.state_views("lost-update", "lockless", d.example.schedule)
    assert [s["mapping"] for s in d._states] == [0, 1, 1, 2, 2, 2, 2]


def test_run_shows_the_invariants_and_the_first_broken_one():
    d = D.RaceExplorer("lost-update", "lockless")
    assert d.runs == 1 and d.result.violated == [INV]
    assert "1 invariant(s) broken" in d.status.value and INV in d.summary.value
    assert d.invariant.options == (INV,) and d.invariant.value == INV
    assert d.fig.title.text == f"lost-update / lockless: '{INV}' broken after 6 steps"
    assert lanes(d.fig) == ["writer", "fault"]
    assert d.step.value == 0 and d.step.max == 6
    assert d.src.data["alpha"] == [0.25] * 6                     # nothing has run yet
    assert "before the first step" in d.state.value and d.back_button.disabled


def test_step_forward_and_back_through_the_counterexample():
    d = D.RaceExplorer("lost-update", "lockless")
    fig, src = d.fig, d.src
    d.forward_button.click()
    assert d.step.value == 1 and "after step 1: writer: kmap page" in d.state.value
    assert state(d)["mapping"] == ("1", "by this step") and state(d)["maps"] == ("0", "")
    assert state(d)["rmp[0x200]"] == ("shared", "") and state(d)["kvm-&gt;lock"] == ("-", "")    # unchanged names
    assert src.data["alpha"][:2] == [1.0, 0.25] and src.data["line_width"][0] == 3
    d.goto(5)
    assert state(d)["maps"] == ("1", "by this step") and state(d)["mapping"] == ("2", "at step 3")
    d.forward_button.click()
    assert d.step.value == 6 and d.forward_button.disabled
    assert state(d)["maps"] == ("1", "at step 5")                # the lost update: two maps, counted once
    d.forward_button.click()
    assert d.step.value == 6                                     # clamped at the end
    d.back_button.click()
    assert d.step.value == 5 and not d.forward_button.disabled
    d.step.value = 2                                             # the slider moves it too
    assert "after step 2: writer: load maps" in d.state.value
    d.goto(-3)
    assert d.step.value == 0
    assert d.fig is fig and d.src is src                         # same figure and source, new data


def test_a_scheme_that_holds_clears_the_diagram():
    d = D.RaceExplorer("lost-update", "lockless")
    src = d.src
    d.scheme.value = "locked"
    d.run()
    assert d.runs == 2 and "every invariant holds" in d.status.value and d.invariant.options == ()
    assert d.src is src and src.data["y"] == [] and d.example is None and d.state.value == ""
    assert d.fig.title.text == "lost-update / locked: every invariant holds"
    assert lanes(d.fig) == ["-"] and d.fig.y_range.start == 1.5


def test_modes_and_bounds():
    d = D.RaceExplorer("lost-update", "lockless", mode="bounded", bound=0)
    assert d.result.ok and d.result.mode == "bounded"             # no preemption: no lost update
    d.bound.value = 2
    d.run()
    assert d.result.violated == [INV]
    d.mode.value = "random"
    assert d.bound.value == 100 and not d.bound.disabled          # the runs' default
    d.bound.value = 0
    assert d.run() is None and "bound: expected an integer &gt;= 1" in d.status.value and d.runs == 2
    d.mode.value = "exhaustive"
    assert d.bound.disabled


def test_a_users_scheme_class_joins_the_options():
    class Careful(toy_catalog.Locked):
        pass
    d = D.RaceExplorer("lost-update", Careful)
    assert d.scheme.options[-1] == ("Careful", Careful) and d.result.ok
    assert "Careful: every invariant holds" in d.status.value


@pytest.mark.parametrize("kw,name", [({"scenario": "nope"}, "scenario"), ({"scheme": "srcu"}, "scheme"),
                                     ({"mode": "replay"}, "mode"), ({"bound": 3}, "bound"),
                                     ({"mode": "random", "bound": 0}, "bound")])
def test_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        D.RaceExplorer(**{"scenario": "lost-update", **kw})


def test_registered_and_displayable():
    d = D.dashboard("race-explorer", scenario="lost-update", scheme="lockless")
    assert isinstance(d, D.RaceExplorer) and d.result.violated == [INV]     # displayed: tests/lab (%kit)
    longest = max(map(len, d.src.data["text"]))
    assert F.sequence_size(2, 6, longest) == (d.fig.frame_width, d.fig.frame_height)
