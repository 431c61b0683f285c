"""The lab's counts and times, each one :class:`~kit.units.Param` with its documented bound:
what ``kit run``, ``kit sweep``, ``kit demo`` and the ``%kit`` magic accept before any kernel
starts. docs/lab.md ("Bounds") is generated from :data:`LAB_PARAMS` (a test keeps the two
equal).

- ``runs`` of a sweep: every combination of the grid (times ``--seeds``) is one notebook run of
  seconds to minutes. Past :data:`SWEEP_CONFIRM` runs a sweep starts only when confirmed
  (``--yes``, ``yes=True``): a typo such as ``n=1,...,1000`` times another axis must not
  start hours of work. Past :data:`SWEEP_RUNS` it is refused: the table of a sweep is built
  in memory (a dict per run) before any run starts, and 100,000 runs of a second each are
  more than a day on one machine.
- ``workers``: local dask workers, one Jupyter kernel each (about 150 MB resident with the kit
  imported); 64 of them fill a 24 GiB machine.
- ``timeout``: seconds one notebook cell may take; a day at most.
- The scheduler of ``kit sweep --scheduler`` must answer within
  :data:`SCHEDULER_CONNECT_TIMEOUT` seconds.
"""
from __future__ import annotations

from ..host.limits import bounds_markdown as _bounds_markdown
from ..units import Param

SWEEP_CONFIRM = Param(
    "confirm", "int", min=1, max=64, unit="runs",
    help="runs of a sweep that start without --yes",
    why="each run is a notebook execution of seconds to minutes: more runs are confirmed (--yes)")
SWEEP_RUNS = Param(
    "runs", "int", min=1, max=100_000, unit="runs",
    help="runs of one sweep (combinations of the grid times --seeds), with --yes",
    why="the sweep's table is built before any run starts; 100,000 runs of a second are more "
        "than a day on one machine")
SWEEP_WORKERS = Param(
    "workers", "int", min=1, max=64, unit="workers", default=2,
    help="local dask workers, one Jupyter kernel each",
    why="a kernel with the kit imported holds about 150 MB: 64 fill a 24 GiB machine")
SWEEP_SEEDS = Param(
    "seeds", "int", min=1, max=SWEEP_RUNS.max, unit="seeds",
    help="runs of each combination with seed 0..N-1",
    why="each seed is a run: at most a sweep's bound of runs")
CELL_TIMEOUT = Param(
    "timeout", "int", min=1, max=86_400, unit="s", default=900,
    help="seconds one notebook cell may take",
    why="a day")

#: Seconds ``kit sweep --scheduler ADDRESS`` waits for the scheduler to answer.
SCHEDULER_CONNECT_TIMEOUT = 5

#: The lab's bounded parameters, in the order docs/lab.md lists them.
LAB_PARAMS = (SWEEP_CONFIRM, SWEEP_RUNS, SWEEP_WORKERS, SWEEP_SEEDS, CELL_TIMEOUT)


def bounds_markdown(params=LAB_PARAMS) -> list[str]:
    """The lab's bounds as the lines of a markdown table (docs/lab.md, "Bounds")."""
    return _bounds_markdown(params)
