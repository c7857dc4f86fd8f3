"""An ipywidgets explorer for partitioning what-ifs.

The widgets only set arguments of :func:`trtlab.partitioning.partitioner.partition` and :func:`trtlab.draw`;
every change re-partitions the model and redraws the coloured graph, the segment summary and
the boundary table. :class:`Explorer` keeps the last results (``partition_``, ``figure_``,
``summary_``, ``boundaries_``) so it can be driven and checked without a browser.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections import Counter
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

from trtlab.errors import MissingDependencyError, TrtlabError

__all__ = ["Explorer", "explore"]

log = logging.getLogger(__name__)

_GIVEN = "given"


def _widgets() -> Any:
    try:
        import ipywidgets
    except ImportError as exc:
        raise MissingDependencyError(
            "trtlab.explore needs ipywidgets, which is not installed. Install it with "
            "`pip install ipywidgets` (or the trtlab[notebook] extra) and restart the kernel."
        ) from exc
    return ipywidgets


def _parser_available() -> bool:
    from trtlab.backends.tensorrt import flavor as trt

    try:
        return bool(trt.info().parse)
    except TrtlabError as exc:
        log.info("TensorRT parser unavailable for the explorer: %s", exc)
        return False


def _frame_html(frame: Any, max_rows: int = 60) -> str:
    if frame is None or len(frame) == 0:
        return "<i>none</i>"
    more = len(frame) - max_rows
    body = frame.head(max_rows).to_html(index=False, border=0)
    return body + (f"<i>… {more} more rows</i>" if more > 0 else "")


class Explorer:
    """Widgets that re-partition a model live and redraw it.

    Parameters
    ----------
    model
        A :class:`trtlab.Model` (or anything :func:`trtlab.load` reads).
    support
        A :class:`~trtlab.backends.tensorrt.support.SupportTable` to start from (listed as ``"given"``), or a
        source name (``"parser"`` / ``"rules"``). Default: the TensorRT parser when it is
        installed, else trtlab's rules.
    draw_options
        Extra keyword arguments for :func:`trtlab.draw`.

    Attributes
    ----------
    ops, nodes : ipywidgets.SelectMultiple
        Op types and nodes forced to fallback.
    min_size : ipywidgets.IntSlider
        ``min_subgraph_size``.
    no_mac : ipywidgets.Checkbox
        ``remove_no_mac_subgraphs``.
    source : ipywidgets.Dropdown
        Support source.
    view : ipywidgets.Dropdown
        Full graph, condensed, or automatic.
    graph : ipywidgets.Output
        The drawing (a PNG display).
    status, summary, boundaries : ipywidgets.HTML
    widget : ipywidgets.VBox
        Everything, laid out; displaying the explorer displays this.
    partition_, figure_, summary_, boundaries_, error_
        Results of the last :meth:`refresh` (``error_`` is the message of a failed one).

    Examples
    --------
    >>> ex = trtlab.explore(model)                  # doctest: +SKIP
    >>> ex.ops.value = ("Softmax",)                 # re-partitions and redraws
    >>> ex.partition_.summary()                     # doctest: +SKIP
    """

    def __init__(self, model: Any, *, support: Any = None,
                 draw_options: Optional[Dict[str, Any]] = None) -> None:
        w = _widgets()
        from trtlab.viz.graph import _resolve

        self.model, _ = _resolve(model, None)
        self.draw_options = dict(draw_options or {})
        self._supports: Dict[str, Any] = {}
        sources: List[str] = []
        initial: Optional[str] = None
        if support is not None and not isinstance(support, str):
            self._supports[_GIVEN] = support
            sources.append(_GIVEN)
            initial = _GIVEN
        parser_ok = _parser_available()
        if parser_ok:
            sources.append("parser")
        sources.append("rules")
        if isinstance(support, str):
            if support not in ("parser", "rules"):
                raise TrtlabError(
                    f"explore(support={support!r}) is not a support source; use 'parser', "
                    "'rules' or a SupportTable from trtlab.check_support(model).")
            if support == "parser" and not parser_ok:
                raise MissingDependencyError(
                    "explore(support='parser') needs the TensorRT ONNX parser, which is not "
                    "usable here (see trtlab.backends.tensorrt.flavor.info()); use support='rules' or install "
                    "tensorrt / tensorrt_rtx.")
            initial = support
        initial = initial or sources[0]

        names = self.model.node_names
        graph = self.model.graph
        op_counts = Counter(graph.nodes[n]["op_type"] for n in names)
        self.ops = w.SelectMultiple(
            options=[(f"{op} ({k})", op) for op, k in sorted(op_counts.items())],
            rows=min(8, max(2, len(op_counts))), description="Fallback ops")
        self.nodes = w.SelectMultiple(
            options=[(f"{n} · {graph.nodes[n]['op_type']}", n) for n in names],
            rows=8, description="Fallback nodes")
        self.min_size = w.IntSlider(value=1, min=1, max=max(2, min(64, len(names))),
                                    description="Min segment", continuous_update=False)
        self.no_mac = w.Checkbox(value=False, description="Drop segments without MAC ops",
                                 indent=False)
        self.source = w.Dropdown(options=sources, value=initial, description="Support")
        self.view = w.Dropdown(options=[("auto", "auto"), ("full graph", False),
                                        ("one box per segment", True)],
                               value="auto", description="View")
        self.status = w.HTML()
        self.graph = w.Output()
        self.summary = w.HTML()
        self.boundaries = w.HTML()

        tabs = w.Tab(children=[self.graph, self.summary, self.boundaries])
        for i, title in enumerate(("Graph", "Segments", "Boundaries")):
            tabs.set_title(i, title)
        controls = w.HBox([
            w.VBox([self.source, self.view, self.min_size, self.no_mac]),
            w.VBox([self.ops]),
            w.VBox([self.nodes]),
        ])
        self.widget = w.VBox([controls, self.status, tabs])

        self.partition_: Any = None
        self.figure_: Any = None
        self.summary_: Any = None
        self.boundaries_: Any = None
        self.error_: Optional[str] = None
        self._holding = False
        for control in (self.ops, self.nodes, self.min_size, self.no_mac, self.source, self.view):
            control.observe(self._on_change, names="value")
        self.refresh()

    # -- state ---------------------------------------------------------------------------------
    def settings(self) -> Dict[str, Any]:
        """The keyword arguments the widgets currently give :func:`trtlab.partitioning.partitioner.partition`."""
        return dict(min_subgraph_size=int(self.min_size.value),
                    remove_no_mac_subgraphs=bool(self.no_mac.value),
                    exclude_ops=tuple(self.ops.value), exclude_nodes=tuple(self.nodes.value))

    def support_table(self) -> Any:
        """The support table of the selected source (computed once per source)."""
        source = self.source.value
        if source not in self._supports:
            from trtlab.backends.tensorrt.support import check_support

            self._supports[source] = check_support(self.model, source=source)
        return self._supports[source]

    @contextmanager
    def hold(self) -> Iterator["Explorer"]:
        """Change several widgets with one refresh at the end.

        >>> with ex.hold():                          # doctest: +SKIP
        ...     ex.min_size.value = 3
        ...     ex.no_mac.value = True
        """
        self._holding = True
        try:
            yield self
        finally:
            self._holding = False
        self.refresh()

    def _on_change(self, change: Dict[str, Any]) -> None:
        if not self._holding:
            self.refresh()

    # -- work ----------------------------------------------------------------------------------
    def refresh(self) -> "Explorer":
        """Re-partition with the widget values and redraw every view.

        A :class:`~trtlab.errors.TrtlabError` (for example a node list the partitioner
        refuses) is shown in ``status`` and kept in ``error_``; the previous results are
        cleared so nothing stale is shown.
        """
        from trtlab.partitioning.partitioner import partition
        from trtlab.viz.graph import draw

        try:
            part = partition(self.model, support=self.support_table(), **self.settings())
            options = dict(self.draw_options)
            options.setdefault("condensed", self.view.value)
            fig = draw(self.model, part, **options)
        except TrtlabError as exc:
            self._clear(str(exc))
            return self
        self.partition_, self.figure_, self.error_ = part, fig, None
        self.summary_ = part.summary()
        self.boundaries_ = part.boundaries()
        self.graph.outputs = (self._display_bundle(fig),)
        self.summary.value = _frame_html(self.summary_)
        self.boundaries.value = _frame_html(self.boundaries_)
        self.status.value = self._status_html(part)
        return self

    def _clear(self, message: str) -> None:
        self.partition_ = self.figure_ = self.summary_ = self.boundaries_ = None
        self.error_ = message
        self.graph.outputs = ()
        self.summary.value = self.boundaries.value = ""
        self.status.value = f"<span style='color:#b00020'>{html.escape(message)}</span>"

    def _status_html(self, part: Any) -> str:
        segs = part.segments
        acc = [s for s in segs if s.backend != "fallback"]
        on_acc = sum(len(s.nodes) for s in acc)
        cut = self.boundaries_
        cut_bytes = int(cut["bytes"].dropna().sum()) if len(cut) else 0
        from trtlab.viz._style import fmt_bytes

        kinds = part.decisions["kind"].value_counts()
        decided = ", ".join(f"{k} {v}" for k, v in kinds.items()) or "none"
        plural = "s" if len(segs) != 1 else ""
        return (f"<b>{len(segs)} segment{plural}</b> ({len(acc)} {html.escape(part.backend)}, "
                f"{len(segs) - len(acc)} fallback) · {on_acc}/{len(part.assignment)} nodes "
                f"accelerated · {len(cut)} boundary tensors ({fmt_bytes(cut_bytes)}) · "
                f"decisions: {html.escape(decided)} · support: {html.escape(self.source.value)}")

    @staticmethod
    def _display_bundle(fig: Any, dpi: int = 72) -> Dict[str, Any]:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        title = fig._trtlab.get("title", "graph")
        return {"output_type": "display_data", "metadata": {},
                "data": {"image/png": data, "text/plain": f"<Figure: {title}>"}}

    # -- display -------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = self.error_ or (f"{len(self.partition_.segments)} segments"
                                if self.partition_ is not None else "not run")
        return f"Explorer({self.model.name!r}: {state})"


def explore(model: Any, *, support: Any = None, **draw_options: Any) -> Explorer:
    """An interactive partitioning explorer for a notebook.

    Toggle op types or nodes to fallback, change the minimum segment size, drop segments
    without MAC ops and switch the support source; the model is re-partitioned and the
    coloured graph, segment summary and boundary table are redrawn on each change.

    Parameters
    ----------
    model
        A :class:`trtlab.Model` (or anything :func:`trtlab.load` reads).
    support
        A SupportTable, or ``"parser"`` / ``"rules"``.
    **draw_options
        Passed to :func:`trtlab.draw` (for example ``max_labels=``).

    Returns
    -------
    Explorer
        Displays as the widget; drive it from code through its widgets.
    """
    return Explorer(model, support=support, draw_options=draw_options)
