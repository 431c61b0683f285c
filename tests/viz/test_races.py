"""The race explorer's displays: step rows, states at each step, the table of invariants by scheme
and the sequence diagram, from a counterexample object or its recorded JSON alike."""
from __future__ import annotations

import json

import pytest
from bokeh.embed import json_item

from kit.viz import figures as F
from kit.viz import traces as T

from .toy_catalog import explore_named

INV = "counter equals live maps"


def lanes(f) -> list:
    """The lanes of a sequence diagram, by their tick labels."""
    return [f.xaxis.major_label_overrides[t] for t in f.xaxis.ticker.ticks]


@pytest.fixture(scope="module")
def results():
    return {s: explore_named("lost-update", s) for s in ("lockless", "locked")}


@pytest.fixture(scope="module")
def example(results):
    return results["lockless"].example(INV)


def test_steps_from_the_object_and_from_its_json_are_the_same(example):
    as_json = json.loads(json.dumps(example.to_json()))
    assert T.trace_steps(example) == T.trace_steps(as_json) == T.trace_steps(example.trace)
    assert T.trace_steps(None) == []
    with pytest.raises(ValueError, match=r"trace\[0\]"):
        T.trace_steps([{"step": "x"}])


def test_step_rows_number_the_steps_and_say_what_changed(example):
    rows = T.step_rows(example)
    assert [r["#"] for r in rows] == list(range(1, example.steps + 1))
    assert [r["thread"] for r in rows] == list(example.schedule)
    assert list(rows[0]) == T.STEP_COLUMNS
    stores = [r for r in rows if r["step"].startswith("store maps")]
    assert stores[0]["changed"] == "maps: 0 -> 1" and stores[1]["changed"] == ""       # the lost update
    assert T.changed_text({"changed": {"rmp": [{"a": 1}, "x"]}, "raised": "KvmError"}) == \
        'rmp: {"a":1} -> x; raised KvmError'


def test_states_at_each_step_follow_the_changes(example):
    states = T.trace_states(example)
    assert len(states) == example.steps + 1
    assert states[0] == {"mapping": 0, "maps": 0}
    assert states[-1] == {"mapping": 2, "maps": 1}               # two live maps, counted once
    # with the scenario's initial view, the names no step changed are shown too
    full = T.trace_states(example, {"mapping": 0, "maps": 0, "rmp[0x200]": "shared"})
    assert all(s["rmp[0x200]"] == "shared" for s in full)
    rows = {r["name"]: r for r in T.state_rows(example, 1)}
    assert rows["mapping"] == {"name": "mapping", "value": "1", "changed": "by this step"}
    assert rows["maps"]["changed"] == ""
    last = {r["name"]: r for r in T.state_rows(example, example.steps)}
    assert last["mapping"]["changed"] == "at step 3" and last["maps"]["value"] == "1"
    with pytest.raises(ValueError, match="index"):
        T.state_rows(example, example.steps + 1)
    # the model's own states at each step (catalog.state_views) take the place of the rebuilt ones
    states = [{"mapping": i, "maps": 0, "rmp[0x200]": "shared"} for i in range(example.steps + 1)]
    rows = {r["name"]: r for r in T.state_rows(example, 4, states=states)}
    assert rows["mapping"]["value"] == "4" and rows["rmp[0x200]"] == {"name": "rmp[0x200]", "value": "shared",
                                                                      "changed": ""}
    with pytest.raises(ValueError, match="states: expected 7 states"):
        T.state_rows(example, 1, states=states[:3])


def test_invariant_table_by_scheme(results):
    docs = [T.exploration(r, scheme=s) for s, r in results.items()]
    doc = docs[0]
    assert {"complete", "schedules", "invariants", "scheme", "scenario", "mode"} <= set(doc)
    assert doc["scenario"] == "lost-update" and doc["scheme"] == "lockless"
    assert doc["invariants"] == results["lockless"].to_json()["invariants"]
    rows = {r["invariant"]: r for r in T.invariant_table(docs)}
    assert rows[INV] == {"invariant": INV, "lockless": "BROKEN in 2 schedules", "locked": "ok"}
    assert rows["(schedules explored)"]["locked"] == results["locked"].schedules
    assert rows["(search complete)"] == {"invariant": "(search complete)", "lockless": "yes", "locked": "yes"}
    assert list(rows)[2:] == [INV, "no-deadlock", "bounded-steps", "no-exception"]
    # a result file sorts the keys of its objects: the order checked is kept beside them
    recorded = json.loads(json.dumps(docs, sort_keys=True))
    assert [r["invariant"] for r in T.invariant_table(recorded)][2:] == [INV, "no-deadlock", "bounded-steps",
                                                                          "no-exception"]
    summary = T.exploration_rows(docs)
    assert [(r["scheme"], r["broken"]) for r in summary] == [("lockless", 1), ("locked", 0)]
    (c,) = T.counterexamples(json.loads(json.dumps(docs)))
    assert (c["scheme"], c["invariant"], len(c["steps"])) == ("lockless", INV, 6)


def test_sequence_diagram_one_lane_per_thread_breaking_step_marked(example):
    f = F.counterexample_figure(example, scenario="lost-update", scheme="lockless")
    assert f.title.text == f"lost-update / lockless: '{INV}' broken after 6 steps"
    assert lanes(f) == ["writer", "fault"]
    src = f.renderers[0].data_source
    d = src.data
    assert d["thread"] == list(example.schedule) and d["y"] == list(range(1, 7))
    assert d["marker"] == ["circle"] * 5 + ["star"] and d["colour"][-1] == F.BREAK_COLOUR
    assert d["text"][-1].endswith(f"<- breaks {INV}") and d["changed"][4] == "maps: 0 -> 1"
    assert f.hover.tooltips[1] == ("changed", "@changed")
    assert d["x"] == [0, 0, 1, 1, 1, 0] and f.xgrid.ticker is f.xaxis.ticker        # a grid line down each lane
    assert f.y_range.start > f.y_range.end                      # step 1 at the top
    longest = max(map(len, d["text"]))                          # room for the last lane's labels
    assert f.x_range.end >= 1 + (longest * F.SEQUENCE_CHAR_WIDTH) / F.SEQUENCE_LANE_WIDTH
    assert (f.frame_width, f.frame_height) == F.sequence_size(2, 6, longest)
    json_item(f)                                                # serialisable: a report can embed it
    # the same figure from the recorded JSON, with the scenario's thread order
    g = F.counterexample_figure(example.to_json(), scenario="s", scheme="x", invariant=INV,
                                threads=["fault", "writer", "idle"])
    assert lanes(g) == ["fault", "writer", "idle"]
    assert g.renderers[0].data_source.data["thread"] == d["thread"]


def test_sequence_data_fades_steps_after_the_current_one(example):
    d = F.sequence_data(example, invariant=INV, current=2)
    assert d["alpha"] == [1.0, 1.0, 0.25, 0.25, 0.25, 0.25]
    assert d["outline"][1] == "black" and d["line_width"] == [1, 3, 1, 1, 1, 1]
    assert F.sequence_data(example)["alpha"] == [1.0] * 6


def test_initial_state_violation_has_no_steps():
    f = F.counterexample_figure([], scenario="s", scheme="x", invariant="never")
    assert f.title.text == "s / x: 'never' broken in the initial state"
    assert f.renderers[0].data_source.data["y"] == []


def test_result_figures_draw_each_counterexample(results):
    docs = json.loads(json.dumps([T.exploration(r, scheme=s) for s, r in results.items()]))
    figs = F.result_figures({"explorations": docs})
    assert [f.title.text for f in figs] == [
        "lost-update: invariants by scheme (red: broken in that many explored schedules)",
        f"lost-update / lockless: '{INV}' broken after 6 steps"]


def test_invariant_matrix_one_cell_per_scheme_and_invariant(results):
    docs = json.loads(json.dumps([T.exploration(r, scheme=s) for s, r in results.items()]))
    f = F.invariant_matrix_figure(docs)
    d = f.renderers[0].data_source.data
    cells = {(x, y): (c, t) for x, y, c, t in zip(d["x"], d["y"], d["colour"], d["text"])}
    assert len(cells) == 2 * 4 and list(f.x_range.factors) == ["lockless", "locked"]
    assert cells[("lockless", INV)] == (F.BREAK_COLOUR, "broken in 2")
    assert cells[("locked", INV)] == (F.HOLDS_COLOUR, "ok")
    json_item(f)
