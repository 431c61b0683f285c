"""Honest error bars: leave-one-out on a dataset whose answer is known, sensitivities against
finite differences, the parameters' covariance and the band it gives a rate, and the
validation rows (data/validation.csv) with their schema."""
import json

import numpy as np
import pytest

from kit.sim import api
from kit.sim.calibrate import (Config, Evaluator, Target, band, calibrate, covariance, leave_one_out,
                               load_measurements, sensitivities)
from kit.sim.params import COUNT_UNITS, CostParams
from kit.sim import validation as V

SMALL = dict(guests=1, vcpus=8, guest_mem="8GiB", host_cores=16, host_mem="64GiB")

# configurations where every fitted parameter is determined by at least two rows, so that any
# one of them can be left out (test_every_fitted_parameter_moves_at_least_two_synthetic_rows).
# Elasticities d ln(rate) / d ln(param) at the known answer (convert_us, cpa_hold_us, smt_yield,
# dm4k_walk_ns): split-on-demand -1, 0, 0, 0; presplit-4k -0.66, 0, 0, -0.34; invalidate-4k 0,
# -0.95, 0, 0; and the 4-guest rows, whose 512 vCPU threads share every core's two threads,
# carry smt_yield with +1 (a 1-guest row uses one thread per core and never reads it).
SYNTHETIC = [
    Config("S", 512, 1536, 1, 128, 512, "unpinned", "split-on-demand"),
    Config("S", 512, 1536, 1, 96, 512, "unpinned", "split-on-demand"),
    Config("S", 512, 1536, 1, 128, 512, "unpinned", "presplit-4k"),
    Config("S", 512, 1536, 1, 96, 512, "unpinned", "presplit-4k"),
    Config("S", 512, 1536, 1, 128, 1024, "unpinned", "invalidate-4k"),
    Config("S", 512, 1536, 1, 96, 512, "unpinned", "invalidate-4k"),
    Config("S", 512, 1536, 4, 128, 256, "unpinned", "presplit-4k"),
    Config("S", 512, 1536, 4, 128, 256, "unpinned", "split-on-demand"),
]


#: how far each fitted parameter's known value sits from its base value (in the table's order)
TRUTH_FACTORS = [1.2, 1.4, 1.3, 3.0, 1.1, 0.9]


def _truth(base):
    """Known parameters: every fitted one moved from the base set (names from the table),
    each inside its fit bounds (an answer outside them could not be recovered)."""
    truth = base.with_values(**{n: base[n] * f for n, f in zip(base.fitted, TRUTH_FACTORS)})
    for n in base.fitted:
        lo, hi = base.log_bounds(n)
        assert lo < np.log(truth[n]) < hi and truth[n] != base[n], n
    return truth


@pytest.fixture(scope="module")
def synthetic():
    """Rates the model gives at known parameters, as measurements with a 5% spread."""
    base = CostParams()
    targets = [Target(c, 1.0, 1.0, "mean_sd") for c in SYNTHETIC]
    ev = Evaluator(targets)
    truth = _truth(base)
    rates = ev.predict(truth)
    for t, r in zip(targets, rates):
        t.mean, t.spread = float(r), 0.05 * float(r)
    return base, truth, targets, ev


@pytest.fixture(scope="module")
def measured():
    targets = load_measurements()
    return targets, Evaluator(targets)


# ---------------------------------------------------------------- leave-one-out
def test_leave_one_out_recovers_a_known_answer(synthetic):
    base, truth, targets, ev = synthetic
    rows, info = leave_one_out(base, targets=targets, evaluator=ev)
    assert len(rows) == len(targets) == info["fits"]
    for r, t in zip(rows, targets):
        assert r["predicted"] == pytest.approx(t.mean, rel=0.02), r
        assert r["within"] and r["undetermined"] == ""
    assert info["within"] == len(targets) and info["seconds"] > 0


def test_each_left_out_prediction_carries_the_band_of_its_own_fit(synthetic, measured):
    """The band is the left-out fit's (its covariance, :func:`band`): it holds the prediction,
    it is not the full fit's band, and ``overlaps`` says whether the measurement's spread
    meets it (every row within its spread overlaps; a row can overlap without being within)."""
    for base, targets, ev in ((synthetic[0], synthetic[2], synthetic[3]), (None, *measured)):
        rows, info = leave_one_out(base, targets=targets, evaluator=ev)
        for r in rows:
            lo, hi = r["band"]
            assert lo <= r["predicted"] + 1e-3 and r["predicted"] <= hi + 1e-3, r
            lo_m, hi_m = r["measured"] - r["spread"], r["measured"] + r["spread"]
            assert r["overlaps"] == (lo_m <= hi + 1e-3 and lo - 1e-3 <= hi_m), r
            assert r["overlaps"] or not r["within"], r
        assert info["overlaps"] == sum(r["overlaps"] for r in rows) >= info["within"]
    # the measured rows: a left-out fit's band differs from the full fit's for the row it left out
    targets, ev = measured
    full = band(CostParams.load(), ev)
    rows, _ = leave_one_out(targets=targets, evaluator=ev)
    assert any(abs(r["band"][0] - f[0]) > 1e-2 or abs(r["band"][1] - f[1]) > 1e-2 for r, f in zip(rows, full))


def test_a_row_without_fitted_parameters_has_its_point_as_band(measured):
    targets, ev = measured
    p = CostParams([q if q.kind != "fitted" else q.__class__(**{**q.__dict__, "kind": "assumed"})
                    for q in CostParams.load()])
    rows, info = leave_one_out(p, targets=targets, evaluator=ev)
    assert all(r["band"][0] == r["band"][1] == r["predicted"] for r in rows)


def test_the_fit_recovers_the_known_parameters(synthetic):
    base, truth, targets, ev = synthetic
    fitted, rows, info = calibrate(base, targets=targets, evaluator=ev)
    for n in base.fitted:
        assert fitted[n] == pytest.approx(truth[n], rel=0.02), n
    assert info["undetermined"] == [] and all(r["within"] for r in rows)


def test_every_fitted_parameter_moves_at_least_two_synthetic_rows(synthetic):
    """The claim the known-answer tests rest on, checked: at the known answer each fitted
    parameter has an elasticity of at least 0.1 on two or more rows."""
    base, truth, targets, ev = synthetic
    s = sensitivities(truth, ev, names=truth.fitted)
    for n in truth.fitted:
        assert sum(abs(r[n]) >= 0.1 for r in s["rows"]) >= 2, (n, [r[n] for r in s["rows"]])


def test_a_parameter_no_row_reads_is_named_undetermined(synthetic):
    """Without the rows that share cores (one guest only), the parameter only they read
    (found from the elasticities, not by name) is reported undetermined, not fitted silently."""
    base, truth, targets, ev = synthetic
    one = [i for i, t in enumerate(targets) if t.config.guests == 1]
    sub = [targets[i] for i in one]
    sev = Evaluator(sub)
    s = sensitivities(truth, sev, names=truth.fitted)
    unread = [n for n in truth.fitted if all(r[n] == 0 for r in s["rows"])]
    assert len(unread) == 1
    _, rows, info = calibrate(base, targets=sub, evaluator=sev)
    assert info["undetermined"] == unread and all(r["within"] for r in rows)


def test_leave_one_out_on_the_measurements_names_what_the_others_leave_undetermined(measured):
    targets, ev = measured
    rows, info = leave_one_out(targets=targets, evaluator=ev)
    assert len(rows) == 8 and info["rows"] == 8
    assert set(rows[0]) >= {"config", "measured", "spread", "predicted", "error_pct", "within", "undetermined"}
    fitted = set(CostParams.load().fitted)
    assert all(set(filter(None, r["undetermined"].split(", "))) <= fitted for r in rows)
    for r in rows:
        assert r["within"] == (abs(r["predicted"] - r["measured"]) <= r["spread"] + 1e-3)
    assert set(info["jackknife_log_sd"]) == set(CostParams.load().fitted)


def test_a_set_without_fitted_parameters_is_judged_as_it_is(measured):
    """Whatever the parameter table marks fitted is fitted: none, nothing moves, no band."""
    targets, ev = measured
    p = CostParams([q if q.kind != "fitted" else q.__class__(**{**q.__dict__, "kind": "assumed"})
                    for q in CostParams.load()])
    fitted, rows, info = calibrate(p, targets=targets, evaluator=ev)
    assert info["free_parameters"] == 0 and fitted.values() == p.values() and fitted.band_sets() == []
    loo, li = leave_one_out(p, targets=targets, evaluator=ev)
    assert [r["predicted"] for r in loo] == [r["model"] for r in rows]


# ---------------------------------------------------------------- sensitivities
def test_sensitivities_match_finite_differences(measured):
    targets, ev = measured
    p = CostParams.load()
    s = sensitivities(p, ev)
    assert s["names"][:len(p.fitted)] == p.fitted          # fitted first, read from the table
    # counts and 0/1 switches have no derivative (their unit says so): stepped, not differentiated
    assert set(s["names"]) == {q.name for q in p if q.value > 0 and not q.is_count}
    assert set(s["counts"]) == set(p.counts)
    r0 = ev.predict(p)
    for n in s["names"]:
        # inside the values the parameter's unit admits: from below at its limit (a share of 1)
        q = next(x for x in p if x.name == n)
        h = 1e-4 if p[n] * (1 + 1e-4) <= q.limit else -1e-4
        r1 = ev.predict(p.with_values(**{n: p[n] * (1 + h)}))
        fd = (r1 - r0) / r0 / h
        got = np.asarray([row[n] for row in s["rows"]])
        assert np.allclose(got, fd, atol=0.02), (n, got, fd)
        assert s["max_abs"][n] == pytest.approx(np.max(np.abs(got)), abs=1e-3)


def test_a_count_is_stepped_to_its_next_whole_value_not_differentiated(measured):
    """Threads per core, CPUs per socket, a 0/1 switch: whole values only, and the model steps
    at them (a derivative there depends on its side), so each is reported as the rate's change
    when it moves to its next whole value, read from the table's units."""
    targets, ev = measured
    p = CostParams.load()
    counts = [q for q in p if q.is_count]
    assert {q.unit for q in counts} <= set(COUNT_UNITS) and "smt_threads" in p.counts
    assert not any(q.is_count for q in p if q.name in p.fitted)
    s = sensitivities(p, ev)
    r0 = ev.predict(p)
    for q in counts:
        step = s["counts"][q.name]
        assert step["from"] == q.value and step["to"] == round(step["to"]) and step["to"] != q.value
        assert step["to"] == (1 - q.value if q.unit == "0/1" else q.value - 1 if q.value > 1 else q.value + 1)
        r1 = ev.predict(p.with_values(**{q.name: step["to"]}))
        assert np.allclose(step["change"], r1 / r0 - 1, atol=1e-4), q.name
    # one thread per core: no core is shared, so no measured row is slower
    assert min(s["counts"]["smt_threads"]["change"]) >= -1e-9
    # a count named explicitly is stepped too
    s2 = sensitivities(p, ev, names=["smt_threads", "convert_us"])
    assert s2["names"] == ["convert_us"] and list(s2["counts"]) == ["smt_threads"]


def test_a_parameter_at_zero_has_no_elasticity(measured):
    targets, ev = measured
    p = CostParams.load().with_values(ipi_us=0.0)
    s = sensitivities(p, ev, names=["ipi_us", "convert_us"])
    assert all(r["ipi_us"] == 0.0 for r in s["rows"])


# ---------------------------------------------------------------- covariance and bands
def test_band_contains_the_point_estimate_and_widens_with_noisier_data(synthetic):
    base, truth, targets, ev = synthetic
    fitted, _, info = calibrate(base, targets=targets, evaluator=ev)
    pred = ev.predict(fitted)
    b = band(fitted, ev)
    assert np.all(b[:, 0] <= pred + 1e-9) and np.all(pred <= b[:, 1] + 1e-9)
    assert np.all(b[:, 1] > b[:, 0])
    # noisier: the same configurations measured with a spread four times wider
    noisy = [Target(t.config, t.mean, 4 * t.spread, t.kind) for t in targets]
    fitted2, _, info2 = calibrate(base, targets=noisy, evaluator=ev)
    b2 = band(fitted2, ev)
    assert np.all(b2[:, 1] - b2[:, 0] > b[:, 1] - b[:, 0])
    assert all(info2["log_sd"][n] > info["log_sd"][n] for n in base.fitted)
    # noisier: rows that scatter more than their spreads say (chi^2 / dof > 1) widen it too
    rng = np.random.default_rng(1)
    scattered = [Target(t.config, t.mean * (1 + 0.15 * rng.standard_normal()), t.spread, t.kind) for t in targets]
    fitted3, _, info3 = calibrate(base, targets=scattered, evaluator=ev)
    assert info3["covariance_scale"] > 1
    assert all(info3["log_sd"][n] > info["log_sd"][n] for n in base.fitted)


def test_a_direction_no_row_determines_stays_bounded(measured):
    targets, ev = measured
    p = CostParams.load()
    keep = [i for i, t in enumerate(targets) if t.config.policy != "split-on-demand"]
    cov, info = covariance(p, ev, targets, rows=keep)
    assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)
    for j, n in enumerate(p.fitted):
        lo, hi = p.log_bounds(n)
        assert np.sqrt(cov[j, j]) <= (hi - lo)       # no wider than its bounds
    # with no rows at all, every parameter is as wide as the prior: half its bounds' width
    cov0, _ = covariance(p, ev, targets, rows=[])
    for j, n in enumerate(p.fitted):
        lo, hi = p.log_bounds(n)
        assert np.sqrt(cov0[j, j]) == pytest.approx((hi - lo) / 2)


def test_the_covariance_travels_with_the_parameter_set(tmp_path):
    p = CostParams.load()
    assert p.covariance and sorted(p.covariance["names"]) == sorted(p.fitted)
    assert len(p.band_sets()) == 2 * len(p.fitted)
    p.save(tmp_path / "p.json")
    q = CostParams.load(tmp_path / "p.json")
    assert q.covariance == p.covariance and q.with_values(convert_us=300).covariance == p.covariance
    assert q.without_covariance().covariance is None and q.without_covariance().band_sets() == []
    # a covariance of other parameters than the set's fitted ones is stale: no band
    stale = json.loads((tmp_path / "p.json").read_text())
    # the fitted names with one of them swapped for a parameter the table does not fit
    other = next(q.name for q in p if q.kind != "fitted")
    stale["covariance"]["names"] = p.fitted[:-1] + [other]
    assert CostParams.from_json(stale).band_sets() == []
    stale["covariance"]["matrix"] = [[1.0]]
    with pytest.raises(ValueError, match="covariance"):
        CostParams.from_json(stale)
    del stale["covariance"]["names"]
    with pytest.raises(ValueError, match="covariance"):
        CostParams.from_json(stale)


def test_band_sets_stay_inside_the_fit_bounds():
    p = CostParams.load()
    big = np.eye(len(p.fitted)) * 100.0
    for q in p.with_covariance(p.fitted, big, "test").band_sets():
        for n in p.fitted:
            par = next(x for x in p if x.name == n)
            assert max(par.lower, 1e-6) * (1 - 1e-9) <= q[n] <= par.upper * (1 + 1e-9)


@pytest.mark.parametrize("engine", ["analytic", "des"])
def test_every_simulated_rate_carries_its_band(engine):
    r = api.simulate(**SMALL, engine=engine)
    lo, hi = r.rate_band_gbps
    assert lo < r.fault_in_gbps < hi
    assert r.to_json()["rate_band_gbps"] == [lo, hi]
    assert "band" in " ".join(r.summary())
    # no covariance: no band, said so
    r0 = api.simulate(**SMALL, engine=engine, params=CostParams.load().without_covariance())
    assert r0.rate_band_gbps is None and r0.fault_in_gbps == pytest.approx(r.fault_in_gbps)


def test_the_band_follows_the_covariance():
    """No uncertainty: the band is the point; four times the variance: a wider band (the
    held-back 8 x 128 x 160 GiB configuration)."""
    p = CostParams.load()
    held = dict(guests=8, vcpus=128, guest_mem="160GiB", host_cores=512, host_mem="1536GiB")
    cov = np.asarray(p.covariance["matrix"])
    names = p.covariance["names"]
    # the fit's covariance alone (the shipped set's model error widens its band too:
    # tests/sim/test_model_error.py)
    r = api.simulate(**held, params=p.with_covariance(names, cov, "fit"))
    zero = api.simulate(**held, params=p.with_covariance(names, 0 * cov, "none"))
    wide = api.simulate(**held, params=p.with_covariance(names, 4 * cov, "x4"))
    assert zero.rate_band_gbps == pytest.approx([r.fault_in_gbps] * 2)
    lo, hi = r.rate_band_gbps
    wlo, whi = wide.rate_band_gbps
    assert wlo < lo < r.fault_in_gbps < hi < whi


def test_the_held_back_configuration_is_predicted_with_its_band():
    from kit.sim.calibrate import held_back
    rows = held_back(CostParams.load())
    assert [r["policy"] for r in rows] == ["presplit-4k", "split-on-demand", "invalidate-4k"]
    for r in rows:
        lo, hi = r["model_band_gbps"]
        assert lo <= r["model_gbps"] <= hi


# ---------------------------------------------------------------- validation rows
def test_validation_rows_load_with_their_sources():
    rows = V.load_validation()
    assert len(rows) >= 4 and len({r.id for r in rows}) == len(rows)
    assert all(r.source and r.quantity in V.QUANTITIES and r.low <= r.high for r in rows)
    # kept apart from the calibration rows: the fit never reads them
    assert V.VALIDATION.name != "measurements.csv"


HEADER = ",".join(V.COLUMNS)
GOOD = "x,map_exits_per_chunk,lazy-accept,1,8,8,64,64,split-on-demand,,2m,default,2,1,3,exits,a source,"


@pytest.mark.parametrize("body,msg", [
    ("id,quantity\nx,map_exits_per_chunk", "columns: missing"),
    (HEADER + ",extra\n" + GOOD + ",1", "unknown \\['extra'\\]"),
    (HEADER + "\n" + GOOD.replace("map_exits_per_chunk", "bogus"), "line 2: quantity: unknown 'bogus'"),
    (HEADER + "\n" + GOOD.replace(",2,1,3,", ",2,3,1,"), "line 2: low: 3 is above high 1"),
    (HEADER + "\n" + GOOD.replace(",2,1,3,", ",2,x,3,"), "line 2: low: expected a number"),
    (HEADER + "\n" + GOOD.replace(",2,1,3,", ",2,nan,3,"), "line 2: low: expected a non-negative finite"),
    (HEADER + "\n" + GOOD.replace(",1,8,8,", ",0,8,8,"), "line 2: guests: expected a positive"),
    (HEADER + "\n" + GOOD.replace("a source", " "), "line 2: source: every validation row names its source"),
    (HEADER + "\n" + GOOD.replace(",2m,", ",1g,"), "line 2: gmem: expected one of"),
    (HEADER + "\n" + GOOD.replace(",default,", ",other,"), "line 2: vmm: expected one of"),
    (HEADER + "\n" + GOOD.replace("map_exits_per_chunk", "rate_ratio"), "baseline_policy: a rate_ratio needs one"),
    (HEADER + "\n" + GOOD + "\n" + GOOD, "line 3: id: empty or repeated 'x'"),
    (HEADER + "\n" + GOOD[:-10], "line 2: expected 18 fields"),
    ("# only a comment\n", "no header line"),
])
def test_a_bad_validation_file_is_refused_naming_line_and_column(tmp_path, body, msg):
    f = tmp_path / "validation.csv"
    f.write_text(body + "\n")
    with pytest.raises(ValueError, match=msg):
        V.load_validation(f)


def test_a_good_validation_file_loads(tmp_path):
    f = tmp_path / "validation.csv"
    f.write_text("# comment\n" + HEADER + "\n" + GOOD + "\n")
    (r,) = V.load_validation(f)
    assert (r.guests, r.gmem, r.measured, r.low, r.high) == (1, "2m", 2.0, 1.0, 3.0)


def test_model_vs_published_figures():
    rows = {r["id"]: r for r in V.validate()}
    assert set(rows) == {r.id for r in V.load_validation()}
    # from the event ledger: one exit per 4K page of a 4 MiB chunk on 4K guest_memfd (QEMU
    # commit 4cdc489eb9c2's 1024 additional exits), two per chunk on 2M folios
    assert rows["map-exits-4k-gmem"]["model"] == 1024 and rows["map-exits-4k-gmem"]["status"] == "within"
    # QEMU's pre-faulting (KVM_PRE_FAULT_MEMORY after each page-state change) maps the pages
    # before the guest validates them: no exit left to map them
    assert rows["map-exits-prefault"]["model"] == 0 and rows["map-exits-prefault"]["status"] == "within"
    assert 1024 <= rows["cpa-lock-per-chunk-v1"]["model"] <= 1034
    for r in rows.values():
        assert r["status"] in ("within", "MISS") or r["status"].startswith("not modelled")
        assert r["within"] == (r["status"] == "within")
