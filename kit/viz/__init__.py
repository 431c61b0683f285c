"""What the kit shows: figure builders (:mod:`.figures`, pure), model views (:mod:`.state`),
HTML display (:mod:`.html`) and widget dashboards (:mod:`.dashboards`, ``%kit dashboard``)."""
from __future__ import annotations


def bokehjs_components(layout) -> list[str]:
    """The BokehJS bundles a layout needs: the core, and the widgets and tables bundles only
    when it holds a widget or a data table (not GL, not MathJax: 1.3 MB instead of 4 MB)."""
    from bokeh.models import DataTable, Widget
    models = layout.references()
    out = ["bokeh"]
    if any(isinstance(m, Widget) for m in models):
        out.append("bokeh-widgets")
    if any(isinstance(m, DataTable) for m in models):
        out.append("bokeh-tables")
    return out


def show(layout) -> None:
    """Show a static Bokeh layout in the notebook with inline resources (only the bundles it
    needs, :func:`bokehjs_components`): the saved notebook holds BokehJS and the final data,
    so it renders with no network."""
    from bokeh.io import output_notebook, show as _show
    from bokeh.resources import Resources
    output_notebook(resources=Resources(mode="inline", components=bokehjs_components(layout)), hide_banner=True)
    _show(layout)


def dashboard(name: str, **kw):
    """A dashboard by name (``host-map``, ``policy-explorer``, ``guest-inspector``,
    ``simulation-runner``, ``race-explorer``)."""
    from .dashboards import dashboard as _d
    return _d(name, **kw)


__all__ = ["show", "dashboard"]
