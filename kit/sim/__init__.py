"""Workloads on the semantic model, the cost model and the timing engines.

``simulate(...)`` runs one configuration and returns a :class:`SimResult`; ``scenario(...)``
validates one through the bounds table (:data:`SCENARIO_PARAMS`, :mod:`kit.sim.scenario`);
``calibrate()`` fits the free cost parameters to ``data/measurements.csv``.
"""
from .api import SimResult, simulate
from .params import CostParams
from .scenario import SCENARIO_PARAMS, Scenario, scenario

__all__ = ["simulate", "scenario", "Scenario", "SCENARIO_PARAMS", "SimResult", "CostParams"]
