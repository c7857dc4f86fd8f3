"""An ipywidgets explorer for partitioning what-ifs.

The widgets only set arguments of :func:`trtlab.partitioning.partitioner.partition` and :func:`trtlab.draw`.
A change re-partitions the model and redraws only what changed:

* changes arriving within ``debounce`` seconds (slider key presses, a burst of clicks) make
  one refresh;
* settings equal to the last ones, or a partition equal to the shown one, redraw nothing;
* the full-graph view keeps its figure (layout, boxes, labels) and recolours it in place
  (:func:`trtlab.viz.graph.recolor`); the one-box-per-segment view is redrawn (it is a few
  collections);
* the picture is rendered once by the Agg canvas and encoded as a fast PNG straight into an
  ``ipywidgets.Image`` (no ``savefig``), and recent pictures are kept per partition.

The picture is the state of an Image widget, so a notebook saved with its widget state shows
it when reopened; the explorer's display bundle also carries the PNG for viewers without
widgets. :class:`Explorer` keeps the last results (``partition_``, ``figure_``, ``summary_``,
``boundaries_``, ``png_``, ``timings_``) so it can be driven and checked without a browser.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

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


PNG_MAX_PIXELS = 4_000_000
EAGER_TABLES_UP_TO = 1000  # nodes; larger models build a table when its tab is shown


def _picture(fig: Any, dpi: float) -> Tuple[bytes, str]:
    """The figure rendered once by Agg and encoded without the savefig machinery.

    PNG (zlib level 1) up to :data:`PNG_MAX_PIXELS`; larger pictures (thousands of segments)
    are JPEG at quality 90, which encodes several times faster and keeps 7.5 pt labels legible.
    Returns ``(bytes, format)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    if fig.dpi != dpi:
        fig.set_dpi(dpi)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height(physical=True)
    rgb = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0,
                           1).convert("RGB")
    buf = io.BytesIO()
    if rgb.width * rgb.height <= PNG_MAX_PIXELS:
        rgb.save(buf, format="png", compress_level=1)
        return buf.getvalue(), "png"
    rgb.save(buf, format="jpeg", quality=90)
    return buf.getvalue(), "jpeg"


def _legend_html(handles: List[Any]) -> str:
    from matplotlib.colors import to_hex

    items = []
    for h in handles:
        label = html.escape(h.get_label())
        try:
            face = h.get_facecolor()
            edge = h.get_edgecolor()
        except AttributeError:       # a marker for graph inputs / outputs
            face = edge = h.get_color()
        face_hex = "transparent" if len(face) == 4 and face[3] == 0 else to_hex(face)
        hatch = getattr(h, "get_hatch", lambda: None)()
        style = (f"display:inline-block;width:14px;height:10px;background:{face_hex};"
                 f"border:{'2px dashed' if hatch else '1px solid'} {to_hex(edge)};"
                 "margin-right:4px;vertical-align:middle")
        items.append(f"<span style='margin-right:12px;white-space:nowrap'>"
                     f"<span style='{style}'></span>{label}</span>")
    return "<div style='font-size:12px;line-height:1.8'>" + "".join(items) + "</div>"


def _signature(part: Any) -> Tuple[Any, ...]:
    """What a drawing of ``part`` depends on: segments, their backends and the decisions."""
    frame = part.decisions
    decided = tuple(zip(frame["subject"], frame["kind"])) if len(frame) else ()
    return (tuple((s.backend, tuple(s.nodes)) for s in part.segments), decided)


class Explorer:
    """Widgets that re-partition a model live and redraw what changed.

    Parameters
    ----------
    model
        A :class:`trtlab.Model` (or anything :func:`trtlab.load` reads).
    support
        A :class:`~trtlab.backends.tensorrt.support.SupportTable` to start from (listed as ``"given"``), or a
        source name (``"parser"`` / ``"rules"``). Default: the TensorRT parser when it is
        installed, else trtlab's rules.
    debounce
        Seconds to wait for further changes made in the browser before refreshing (a burst of
        slider key presses makes one refresh); ``0`` refreshes on every change. Values set from
        code, and changes without a running event loop, refresh at once.
    dpi
        Resolution of the picture.
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
        Full graph, one box per segment, or automatic.
    image : ipywidgets.Image
        The drawing (PNG); ``legend`` (HTML) explains its colours.
    status, summary, boundaries, reasons : ipywidgets.HTML
        The tables; for models over :data:`EAGER_TABLES_UP_TO` nodes each is built when its
        tab (``tabs``) is shown.
    widget : ipywidgets.VBox
        Everything, laid out; displaying the explorer displays this.
    partition_, figure_, summary_, boundaries_, png_, error_
        Results of the last :meth:`refresh` (``error_`` is the message of a failed one);
        ``png_`` holds the picture's bytes, PNG or, above :data:`PNG_MAX_PIXELS`, JPEG
        (``format_``).
    timings_ : dict
        Seconds spent by the last refresh in ``partition``, ``draw`` and ``render``.
    refreshes_, redraws_ : int
        How many refreshes ran, and how many of them drew a new picture.

    Examples
    --------
    >>> ex = trtlab.explore(model)                  # doctest: +SKIP
    >>> ex.ops.value = ("Softmax",)                 # re-partitions and redraws
    >>> ex.partition_.summary()                     # doctest: +SKIP
    """

    _CACHE_SIZE = 8

    def __init__(self, model: Any, *, support: Any = None, debounce: float = 0.2,
                 dpi: float = 80.0, draw_options: Optional[Dict[str, Any]] = None) -> None:
        w = _widgets()
        from trtlab.viz.graph import _resolve

        self.model, _ = _resolve(model, None)
        self.draw_options = dict(draw_options or {})
        self.debounce = float(debounce)
        self.dpi = float(dpi)
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
        nodes = self.model.proto.graph.node
        op_counts = Counter(n.op_type for n in nodes)
        self.ops = w.SelectMultiple(
            options=[(f"{op} ({k})", op) for op, k in sorted(op_counts.items())],
            rows=min(8, max(2, len(op_counts))), description="Fallback ops")
        self.nodes = w.SelectMultiple(
            options=[(f"{n.name} · {n.op_type}", n.name) for n in nodes],
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
        self.legend = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.graph = w.VBox([self.legend, self.image])
        self.summary = w.HTML()
        self.boundaries = w.HTML()
        self.reasons = w.HTML()

        self.tabs = tabs = w.Tab(children=[self.graph, self.summary, self.boundaries,
                                           self.reasons])
        for i, title in enumerate(("Graph", "Segments", "Boundaries", "Decisions")):
            tabs.set_title(i, title)
        controls = w.HBox([
            w.VBox([self.source, self.view, self.min_size, self.no_mac]),
            w.VBox([self.ops]),
            w.VBox([self.nodes]),
        ])
        self.widget = w.VBox([controls, self.status, tabs])
        tabs.observe(lambda change: self._fill_tables(), names="selected_index")

        self.partition_: Any = None
        self.figure_: Any = None
        self._tables: Dict[str, Any] = {}
        self._filled: Optional[int] = None
        self.png_: Optional[bytes] = None
        self.format_ = "png"
        self.error_: Optional[str] = None
        self.timings_: Dict[str, float] = {}
        self.refreshes_ = 0
        self.redraws_ = 0
        self._holding = False
        self._pending: Any = None
        self._last_request: Any = None
        self._shown: Any = None
        self._full_figure: Any = None
        self._pictures: "OrderedDict[Any, Tuple[bytes, Any]]" = OrderedDict()
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
        self._cancel_pending()
        self.refresh()

    def _on_change(self, change: Dict[str, Any]) -> None:
        if self._holding:
            return
        # Only changes made in the browser are debounced (a widget's property lock is held
        # while it applies a state sent by the front end); a value set from code refreshes at
        # once, so the next line of a cell sees the new partition.
        from_browser = bool(getattr(change.get("owner"), "_property_lock", None))
        loop = None
        if self.debounce > 0 and from_browser:
            import asyncio

            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        if loop is None:
            self.refresh()
            return
        self._cancel_pending()
        self._pending = loop.call_later(self.debounce, self._fire)

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _fire(self) -> None:
        self._pending = None
        self.refresh()

    # -- work ----------------------------------------------------------------------------------
    def _view_condensed(self) -> bool:
        from trtlab.viz.graph import CONDENSE_ABOVE

        view = self.draw_options.get("condensed", self.view.value)
        if view == "auto":
            return len(self.model.node_names) > self.draw_options.get("condense_above",
                                                                       CONDENSE_ABOVE)
        return bool(view)

    def _draw(self, part: Any, condensed: bool) -> Any:
        from trtlab.viz.graph import draw, recolor

        options = dict(self.draw_options)
        options.update(condensed=condensed, show_reasons=False, legend=False, title="")
        if condensed:
            return draw(self.model, part, **options)
        if self._full_figure is None:
            self._full_figure = draw(self.model, part, **options)
            return self._full_figure
        return recolor(self._full_figure, part)

    def refresh(self) -> "Explorer":
        """Re-partition with the widget values and redraw what changed.

        A :class:`~trtlab.errors.TrtlabError` (for example a node list the partitioner
        refuses) is shown in ``status`` and kept in ``error_``; the previous results are
        cleared so nothing stale is shown.
        """
        from trtlab.partitioning.partitioner import partition

        self._cancel_pending()
        self.refreshes_ += 1
        condensed = self._view_condensed()
        request = (self.source.value, tuple(sorted(self.settings().items())), condensed)
        if request == self._last_request and self.error_ is None and self.partition_ is not None:
            self.timings_ = {"partition": 0.0, "draw": 0.0, "render": 0.0}
            return self
        t0 = time.perf_counter()
        try:
            part = partition(self.model, support=self.support_table(), **self.settings())
        except TrtlabError as exc:
            self._last_request = None
            self._clear(str(exc))
            return self
        t1 = time.perf_counter()
        key = (_signature(part), condensed)
        changed = key != self._shown
        t2 = t1
        if changed:
            cached = self._pictures.get(key)
            if cached is not None:
                self._pictures.move_to_end(key)
                png, fmt, fig = cached
                if not condensed:
                    fig = self._draw(part, condensed)   # the kept figure follows the partition
                t2 = time.perf_counter()
            else:
                try:
                    fig = self._draw(part, condensed)
                except TrtlabError as exc:
                    self._last_request = None
                    self._clear(str(exc))
                    return self
                t2 = time.perf_counter()
                png, fmt = _picture(fig, self.dpi)
                self._pictures[key] = (png, fmt, fig if condensed else None)
                while len(self._pictures) > self._CACHE_SIZE:
                    self._pictures.popitem(last=False)
            self.redraws_ += 1
            self.figure_ = fig if fig is not None else self._full_figure
            self.png_, self.format_ = png, fmt
            self.image.format = fmt
            self.image.value = png
            self.legend.value = _legend_html(self.figure_._trtlab["legend_handles"])
            self._shown = key
        t3 = time.perf_counter()
        self.partition_, self.error_, self._last_request = part, None, request
        if changed or not self._tables:
            # Tables of large models are built when their tab is shown (or the attribute
            # read); small models fill them all, so a saved notebook has every tab.
            self._tables = {}
            self._filled = None
            if len(self.model.node_names) <= EAGER_TABLES_UP_TO:
                self._fill_all_tables()
            else:
                self._fill_tables()
        self.status.value = self._status_html(part)
        self.timings_ = {"partition": t1 - t0, "draw": t2 - t1, "render": t3 - t2}
        log.debug("explorer refresh: %s", self.timings_)
        return self

    def _table(self, name: str) -> Any:
        if self.partition_ is None:
            return None
        if name not in self._tables:
            from trtlab.viz.graph import reasons_table

            make = {"summary": lambda p: p.summary(), "boundaries": lambda p: p.boundaries(),
                    "reasons": lambda p: reasons_table(p, max_rows=40)}[name]
            self._tables[name] = make(self.partition_)
        return self._tables[name]

    @property
    def summary_(self) -> Any:
        """``partition_.summary()`` (built on first use for each partition)."""
        return self._table("summary")

    @property
    def boundaries_(self) -> Any:
        """``partition_.boundaries()`` (built on first use for each partition)."""
        return self._table("boundaries")

    def _fill_all_tables(self) -> None:
        for name, widget in (("summary", self.summary), ("boundaries", self.boundaries),
                             ("reasons", self.reasons)):
            widget.value = _frame_html(self._table(name))
        self._filled = -1

    def _fill_tables(self) -> None:
        """Fill the table shown in the selected tab, if it is not filled yet."""
        index = self.tabs.selected_index
        if self.partition_ is None or index in (None, 0) or self._filled in (index, -1):
            return
        name, widget = {1: ("summary", self.summary), 2: ("boundaries", self.boundaries),
                        3: ("reasons", self.reasons)}[index]
        for other in (self.summary, self.boundaries, self.reasons):
            if other is not widget:
                other.value = "<i>…</i>"
        widget.value = _frame_html(self._table(name))
        self._filled = index

    def _clear(self, message: str) -> None:
        self.partition_ = self.figure_ = self.png_ = None
        self._tables = {}
        self._filled = None
        self._shown = None
        self.error_ = message
        self.image.value = b""
        self.legend.value = ""
        self.summary.value = self.boundaries.value = self.reasons.value = ""
        self.status.value = f"<span style='color:#b00020'>{html.escape(message)}</span>"

    def _status_html(self, part: Any) -> str:
        segs = part.segments
        acc = [s for s in segs if s.backend != "fallback"]
        on_acc = sum(len(s.nodes) for s in acc)
        read = {t for s in segs for t in s.inputs}
        cut = [t for s in segs for t in s.outputs if t in read]
        cut_bytes = sum(b for b in (self.model.tensor(t).bytes for t in cut) if b is not None)
        from trtlab.viz._style import fmt_bytes

        kinds = part.decisions["kind"].value_counts()
        decided = ", ".join(f"{k} {v}" for k, v in kinds.items()) or "none"
        plural = "s" if len(segs) != 1 else ""
        view = "one box per segment" if self._view_condensed() else "full graph"
        hint = ""
        if self._view_condensed():
            hint = (" · every node: <code>trtlab.viz.model_explorer.show(explorer.partition_)"
                    "</code>")
        return (f"<b>{len(segs)} segment{plural}</b> ({len(acc)} {html.escape(part.backend)}, "
                f"{len(segs) - len(acc)} fallback) · {on_acc}/{len(part.assignment)} nodes "
                f"accelerated · {len(cut)} boundary tensors ({fmt_bytes(cut_bytes)}) · "
                f"decisions: {html.escape(decided)} · support: {html.escape(self.source.value)}"
                f" · view: {view}{hint}")

    # -- display -------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget, plus the current picture as PNG for viewers without widgets."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if self.png_:
            data = dict(data)
            data[f"image/{self.format_}"] = base64.b64encode(self.png_).decode("ascii")
            data["text/plain"] = repr(self)
            if isinstance(bundle, tuple):
                return (data,) + tuple(bundle[1:])
        return data

    def __repr__(self) -> str:
        state = self.error_ or (f"{len(self.partition_.segments)} segments"
                                if self.partition_ is not None else "not run")
        return f"Explorer({self.model.name!r}: {state})"


def explore(model: Any, *, support: Any = None, debounce: float = 0.2,
            **draw_options: Any) -> Explorer:
    """An interactive partitioning explorer for a notebook.

    Toggle op types or nodes to fallback, change the minimum segment size, drop segments
    without MAC ops and switch the support source; the model is re-partitioned and what
    changed is redrawn: the coloured graph, the segment summary, the boundary table and the
    decisions.

    Parameters
    ----------
    model
        A :class:`trtlab.Model` (or anything :func:`trtlab.load` reads).
    support
        A SupportTable, or ``"parser"`` / ``"rules"``.
    debounce
        Seconds to wait for more changes before refreshing in a live kernel.
    **draw_options
        Passed to :func:`trtlab.draw` (for example ``max_labels=``).

    Returns
    -------
    Explorer
        Displays as the widget; drive it from code through its widgets.
    """
    return Explorer(model, support=support, debounce=debounce, draw_options=draw_options)
