"""Workloads on the semantic model, the cost model and the timing engines.

``simulate(...)`` runs one configuration and returns a :class:`SimResult`; ``calibrate()``
fits the free cost parameters to ``data/measurements.csv``.
"""
from .api import SimResult, scenario, simulate
from .params import CostParams

__all__ = ["simulate", "scenario", "SimResult", "CostParams"]
