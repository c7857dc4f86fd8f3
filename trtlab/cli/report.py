"""An HTML report of the whole pipeline for one model, and the demo over the model zoo.

A report is a list of sections, each computed by one pipeline step. A step that fails with a
:class:`~trtlab.errors.TrtlabError` becomes a section that says so (the error is data, shown
in the report and in the summary), and the other sections still run.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from trtlab.errors import TrtlabError

log = logging.getLogger(__name__)

__all__ = ["Section", "Report", "report", "demo", "DEMO_MODELS"]

#: Zoo models the demo reports on (transformer_large is drawn condensed only: it is a scale test).
DEMO_MODELS = ("digits_cnn", "resnet_mini", "mobilenet_mini", "transformer_stack", "detection_postproc",
               "lstm_seq", "loop_model", "quantized_dynamic", "transformer_large")


@dataclass
class Section:
    """One part of a report: a title, HTML body, and the error if its step failed."""

    title: str
    body: str = ""
    error: Optional[str] = None
    seconds: float = 0.0


@dataclass
class Report:
    """Sections for one model, written as one HTML page."""

    model_name: str
    sections: List[Section] = field(default_factory=list)
    facts: Dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> List[Section]:
        return [s for s in self.sections if s.error]

    def to_html(self) -> str:
        parts = [f"<h2 id='{html.escape(self.model_name)}'>{html.escape(self.model_name)}</h2>"]
        for s in self.sections:
            parts.append(f"<h3>{html.escape(s.title)} <small>({s.seconds:.1f} s)</small></h3>")
            if s.error:
                parts.append(f"<p class='err'>This step failed: {html.escape(s.error)}</p>")
            parts.append(s.body)
        return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #eee; }
.err { color: #a00; font-weight: bold; }
nav a { margin-right: 1em; }
"""


def _table(df: Any, max_rows: int = 40) -> str:
    if df is None:
        return ""
    frame = getattr(df, "frame", df)
    if len(frame) == 0:
        return "<p>(none)</p>"
    if hasattr(frame, "to_frame") and not hasattr(frame, "to_html"):
        frame = frame.to_frame()
    if len(frame) > max_rows:
        note = f"<p>first {max_rows} of {len(frame)} rows</p>"
        frame = frame.head(max_rows)
    else:
        note = ""
    return frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}") + note


def _figure(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img src='data:image/png;base64,{data}'/>"


def _run(rep: Report, title: str, step: Callable[[], str]) -> None:
    t0 = time.perf_counter()
    try:
        body = step()
        rep.sections.append(Section(title, body, None, time.perf_counter() - t0))
    except TrtlabError as exc:
        log.warning("%s: %s failed: %s", rep.model_name, title, exc)
        rep.sections.append(Section(title, "", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))


def report(model: Any, *, feeds: Optional[Mapping[str, np.ndarray]] = None, data: Any = None,
           labels: Optional[np.ndarray] = None, calibration_data: Any = None,
           precisions: Sequence[str] = ("fp32", "fp16", "int8"), min_subgraph_size: int = 1,
           iterations: int = 50, cache_dir: Optional[Union[str, Path]] = None,
           progress: bool = True) -> Report:
    """Run every pipeline step on ``model`` and collect the results as report sections.

    Parameters
    ----------
    model
        Anything :func:`trtlab.load` reads.
    feeds
        One batch of inputs for running and benchmarking (default: deterministic random inputs).
    data, labels, calibration_data
        Evaluation inputs (dict name -> batched array), their labels, and INT8 calibration
        inputs for the precision table (default: ``feeds``).
    """
    from trtlab.study.latency import benchmark
    from trtlab.feeds import random_inputs
    from trtlab.codegen import build
    from trtlab.study.accuracy import precision_table
    from trtlab.backends.tensorrt.layers import prefusion
    from trtlab.model import load
    from trtlab.backends.onnxruntime.session import run_onnx, session
    from trtlab.partitioning.partitioner import partition
    from trtlab.backends.tensorrt.support import check_support
    from trtlab.viz import draw, plot_accuracy, plot_latency

    m = load(model)
    rep = Report(m.name)
    feeds = dict(feeds) if feeds is not None else random_inputs(m)
    state: Dict[str, Any] = {}

    def overview() -> str:
        rep.facts["nodes"] = len(m.node_names)
        ins = ", ".join(f"{t.name}: {t.dtype_name}{list(t.shape or [])}" for t in m.inputs)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in m.notes)
        return (f"<p>{len(m.node_names)} nodes, opset {m.opset}; inputs {html.escape(ins)}</p>"
                f"<ul>{notes}</ul>" + _table(m.op_histogram(), 25))

    def support_step() -> str:
        table = check_support(m)
        state["support"] = table
        frame = table.frame
        rejected = frame[~frame["supported"]]
        rep.facts["supported"] = f"{int(frame['supported'].sum())}/{len(frame)}"
        rep.facts["support source"] = str(frame["source"].iloc[0]) if len(frame) else "-"
        return (f"<p>{int(frame['supported'].sum())} of {len(frame)} nodes supported "
                f"(source: {html.escape(rep.facts['support source'])}).</p>"
                + ("<p>Rejected nodes and reasons:</p>" + _table(rejected, 60) if len(rejected) else
                   "<p>No node rejected.</p>"))

    def partition_step() -> str:
        part = partition(m, support=state.get("support"), min_subgraph_size=min_subgraph_size)
        state["partition"] = part
        rep.facts["segments"] = len(part.segments)
        rep.facts["tensorrt segments"] = sum(s.backend != "fallback" for s in part.segments)
        fig = draw(m, part)
        return (_figure(fig) + "<h4>Segments</h4>" + _table(part.summary())
                + "<h4>Boundaries</h4>" + _table(part.boundaries())
                + "<h4>Decisions</h4>" + _table(part.decisions, 30))

    def build_step() -> str:
        part = state["partition"]
        hybrid = build(part, feeds=feeds, precision="fp32", cache_dir=cache_dir, progress=progress)
        state["hybrid"] = hybrid
        out = hybrid.run(feeds)
        ref = run_onnx(m, feeds)
        worst = max(float(np.max(np.abs(np.asarray(out[k], np.float64) - np.asarray(ref[k], np.float64))))
                    if np.asarray(ref[k]).size else 0.0 for k in ref)
        rep.facts["hybrid vs ORT max abs"] = f"{worst:.2e}"
        rep.facts["executors"] = ", ".join(sorted(set(hybrid.executors["executor"])))
        built = hybrid.partition
        decisions = built.decisions
        failed = decisions[decisions["kind"] == "build_failed"] if len(decisions) else decisions
        moved = ""
        if len(failed):
            rep.facts["segments"] = len(built.segments)
            rep.facts["tensorrt segments"] = sum(s.backend != "fallback" for s in built.segments)
            moved = (f"<p>TensorRT could not build {len(failed)} node(s); the build moved them to "
                     f"fallback, so the model runs as {len(built.segments)} segments "
                     f"({rep.facts['tensorrt segments']} TensorRT), drawn here:</p>"
                     + _figure(draw(m, built)) + _table(failed))
        return (moved + f"<p>Hybrid outputs vs ONNX Runtime on the whole model: max abs difference "
                f"{worst:.3g}.</p>" + _table(hybrid.executors) + "<h4>Engine cache</h4>"
                + _table(hybrid.cache_report()))

    def fusion_step() -> str:
        part = state["hybrid"].partition if "hybrid" in state else state["partition"]
        rows = []
        for seg in part.segments:
            if seg.backend == "fallback":
                continue
            rep_f = prefusion(part.segment_model(seg.index))
            ba = rep_f.before_after()
            ba.insert(0, "segment", seg.name)
            rows.append(ba)
        if not rows:
            return "<p>No TensorRT segment.</p>"
        import pandas as pd

        return ("<p>Pre-fusion view (ONNX nodes vs TensorRT network layers, from the parser; "
                "post-fusion needs a runnable TensorRT).</p>" + _table(pd.concat(rows), 60))

    def precision_step() -> str:
        eval_data = data if data is not None else feeds
        table = precision_table(m, eval_data, labels=labels, precisions=precisions,
                                calibration_data=calibration_data if calibration_data is not None else eval_data,
                                progress=progress)
        state["precision"] = table
        return _figure(plot_accuracy(table)) + _table(table)

    def latency_step() -> str:
        import warnings

        import pandas as pd

        from trtlab.study.latency import LatencyWarning

        hybrid = state["hybrid"]
        sess = session(m)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LatencyWarning)
            stats = {"onnxruntime (whole model)": benchmark(sess, feeds, iterations=iterations,
                                                            progress=progress),
                     "hybrid fp32": benchmark(hybrid, feeds, iterations=iterations, progress=progress)}
        noisy = "".join(f"<p>{html.escape(str(w.message))}</p>" for w in caught
                        if issubclass(w.category, LatencyWarning))
        frame = pd.concat([s.to_frame().assign(configuration=k) for k, s in stats.items()])
        return _figure(plot_latency(stats)) + noisy + _table(frame)

    _run(rep, "Model", overview)
    _run(rep, "Support", support_step)
    if "support" in state:
        _run(rep, "Partition", partition_step)
    if "partition" in state:
        _run(rep, "Build and run", build_step)
        _run(rep, "Layer fusion", fusion_step)
    if precisions:
        _run(rep, "Precision", precision_step)
    if "hybrid" in state and iterations:
        _run(rep, "Latency", latency_step)
    return rep


def write_html(reports: Sequence[Report], path: Union[str, Path], *, title: str = "trtlab report") -> Path:
    """Write reports as one HTML page with an environment table on top."""
    from trtlab.cli.environment import environment

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                  for k, v in environment().items())
    nav = "".join(f"<a href='#{html.escape(r.model_name)}'>{html.escape(r.model_name)}</a>" for r in reports)
    summary_rows = "".join(
        "<tr>" + f"<td>{html.escape(r.model_name)}</td>"
        + "".join(f"<td>{html.escape(str(r.facts.get(k, '-')))}</td>" for k in _SUMMARY_KEYS)
        + f"<td>{len(r.errors)}</td></tr>" for r in reports)
    head = "".join(f"<th>{k}</th>" for k in ("model",) + _SUMMARY_KEYS + ("failed steps",))
    body = (f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav><h2>Environment</h2>"
            f"<table>{env}</table><h2>Summary</h2><table><tr>{head}</tr>{summary_rows}</table>"
            + "".join(r.to_html() for r in reports) + "</body></html>")
    from trtlab import _io

    _io.write_text(path, body, what="report page")
    return path


_SUMMARY_KEYS = ("nodes", "supported", "support source", "segments", "tensorrt segments", "executors",
                 "hybrid vs ORT max abs", "digits top-1 (ORT)")


def demo(out_dir: Union[str, Path] = "build/demo", *, models: Sequence[str] = DEMO_MODELS,
         progress: bool = True) -> "tuple[Path, List[Report]]":
    """The end-to-end demo: a report for every shipped model, written to ``out_dir/index.html``.

    Returns the page's path and the reports.
    """
    from trtlab import zoo

    out = Path(out_dir)
    reports: List[Report] = []
    x_test, y_test = zoo.digits("test")
    x_cal, _ = zoo.digits("calib")
    for name in models:
        log.info("report for %s", name)
        if name == "digits_cnn":
            rep = report(zoo.path(name), feeds={"input": x_test[:32]}, data={"input": x_test}, labels=y_test,
                         calibration_data={"input": x_cal}, cache_dir=out / "engines", progress=progress)
            from trtlab.backends.onnxruntime.session import run_onnx

            logits = run_onnx(zoo.path(name), {"input": x_test})["logits"]
            rep.facts["digits top-1 (ORT)"] = f"{float((logits.argmax(1) == y_test).mean()):.4f}"
        elif name == "transformer_large":
            rep = report(zoo.path(name), precisions=(), iterations=0, cache_dir=out / "engines",
                         progress=progress)
        else:
            rep = report(zoo.path(name), cache_dir=out / "engines", progress=progress)
        reports.append(rep)
    return write_html(reports, out / "index.html", title="trtlab demo: the model zoo"), reports
