"""What the kit shows: figure builders (:mod:`.figures`, pure), model views (:mod:`.state`),
HTML display (:mod:`.html`) and widget dashboards (:mod:`.dashboards`, ``%kit dashboard``)."""
from __future__ import annotations


def show(layout) -> None:
    """Show a static Bokeh layout in the notebook with INLINE resources: the saved notebook
    (and its HTML export) holds BokehJS and the final data, so it renders with no network."""
    from bokeh.io import output_notebook, show as _show
    from bokeh.resources import INLINE
    output_notebook(resources=INLINE, hide_banner=True)
    _show(layout)


def dashboard(name: str, **kw):
    """A dashboard by name (``host-map``, ``policy-explorer``, ``guest-inspector``,
    ``simulation-runner``, ``race-explorer``)."""
    from .dashboards import dashboard as _d
    return _d(name, **kw)


__all__ = ["show", "dashboard"]
