"""The model error a fit records from its leave-one-out (``CostParams.model_error``) and the
band every modelled rate carries with it: the fit's uncertainty and that error, in quadrature
(docs/sim-model.md, "Error bars and validation")."""
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kit.sim import api
from kit.sim.calibrate import MODEL_ERROR_METHOD, with_model_error
from kit.sim.params import MODEL_ERROR_MAX, CostParams

SMALL = dict(guests=1, vcpus=4, guest_mem="2GiB", host_cores=8, host_mem="32GiB")


def _fit_only(p: CostParams) -> CostParams:
    c = p.covariance
    return p.with_covariance(c["names"], c["matrix"], c["method"])


def test_the_shipped_set_records_a_model_error_from_its_leave_one_out():
    p = CostParams.load()
    assert 0 < p.model_error <= MODEL_ERROR_MAX
    assert p.covariance["model_error_method"] == MODEL_ERROR_METHOD
    assert _fit_only(p).model_error == 0 and p.without_covariance().model_error == 0


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.01, 1e3), down=st.floats(0, 0.99), up=st.floats(0, 3), e=st.floats(0, MODEL_ERROR_MAX))
def test_a_band_is_the_fits_spread_and_the_model_error_in_quadrature(rate, down, up, e):
    p = CostParams.load()
    q = p.with_model_error(e, "test") if e > 0 else _fit_only(p)
    fit = [rate * (1 - down), rate * (1 + up)]
    lo, hi = q.band(rate, fit)
    assert lo <= fit[0] * (1 + 1e-12) and hi >= fit[1] * (1 - 1e-12)        # never narrower than the fit's
    assert lo >= 0
    assert hi - rate == pytest.approx(math.hypot(rate * up, e * rate), rel=1e-9)
    assert lo == pytest.approx(max(rate - math.hypot(rate * down, e * rate), 0.0), rel=1e-9, abs=1e-12)
    # no model error: exactly the fit's lowest and highest rate
    assert _fit_only(p).band(rate, fit) == [min(rate, fit[0]), max(rate, fit[1])]


def test_a_band_grows_with_the_model_error_and_none_without_rates():
    p = CostParams.load()
    widths = [np.diff(p.with_model_error(e, "t").band(10.0, [9.5, 10.4]))[0] for e in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(widths, widths[1:]))
    assert p.band(10.0, []) is None


@pytest.mark.parametrize("bad", [-0.01, MODEL_ERROR_MAX * 1.01, float("nan"), float("inf"), True, "0.1", None])
def test_a_model_error_out_of_range_is_refused_by_name(bad):
    p = CostParams.load()
    with pytest.raises(ValueError, match="model_error"):
        p.with_model_error(bad, "t")
    data = p.to_json()
    data["covariance"]["model_error"] = bad
    with pytest.raises(ValueError, match=r"^x\.json: model_error"):
        CostParams.from_json(data, source="x.json")


def test_a_model_error_needs_a_covariance_and_a_new_fit_drops_it():
    p = CostParams.load()
    with pytest.raises(ValueError, match="no fit covariance"):
        p.without_covariance().with_model_error(0.1, "t")
    c = p.covariance
    assert p.with_covariance(c["names"], c["matrix"], "refit").model_error == 0
    # it travels with the set through JSON and value changes
    q = CostParams.from_json(json.loads(json.dumps(p.to_json())))
    assert q.model_error == p.model_error and q.with_values(convert_us=300.0).model_error == p.model_error


def test_recording_a_leave_one_outs_error_caps_it():
    p = _fit_only(CostParams.load())
    q, capped = with_model_error(p, {"extra_pct": 12.5})
    assert q.model_error == 0.125 and not capped
    for big in (250.0, math.inf):
        q, capped = with_model_error(p, {"extra_pct": big})
        assert q.model_error == MODEL_ERROR_MAX and capped
    assert with_model_error(p, {"extra_pct": 0.0})[0].model_error == 0
    bare = p.without_covariance()
    assert with_model_error(bare, {"extra_pct": 12.5}) == (bare, False)


@pytest.mark.parametrize("engine", ["analytic", "des"])
def test_a_simulated_rates_band_carries_the_model_error(engine):
    p = CostParams.load()
    r = api.simulate(**SMALL, engine=engine, params=p)
    f = api.simulate(**SMALL, engine=engine, params=_fit_only(p))
    assert r.fault_in_gbps == f.fault_in_gbps
    (lo, hi), (flo, fhi) = r.rate_band_gbps, f.rate_band_gbps
    rate, e = r.fault_in_gbps, p.model_error * r.fault_in_gbps
    assert hi - rate == pytest.approx(math.hypot(fhi - rate, e), rel=1e-9)
    assert rate - lo == pytest.approx(math.hypot(rate - flo, e), rel=1e-9)
    assert lo < flo <= rate <= fhi < hi


def test_the_held_back_prediction_carries_it_too():
    from kit.sim.calibrate import held_back
    p = CostParams.load()
    for r, f in zip(held_back(p), held_back(_fit_only(p))):
        (lo, hi), (flo, fhi) = r["model_band_gbps"], f["model_band_gbps"]
        assert lo < flo and hi > fhi and r["model_gbps"] == f["model_gbps"]
