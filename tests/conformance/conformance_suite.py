"""The conformance tier: the ONNX backend test suite through trtlab's whole pipeline.

The suite ships inside the onnx wheel: the node cases of
``onnx.backend.test.case.node.collect_testcases(None)`` and the model cases under
``onnx/backend/test/data/{light,simple,pytorch-converted,pytorch-operator}``, each with inputs
and expected outputs. Every case runs in a worker process (a pool of ``spawn`` processes fed
one case at a time), so a native crash or a hang is a recorded ``crash`` of the stage it
happened in, not a dead run. Stages of one case:

``ort``
    ONNX Runtime on the original model against the expected outputs; a case ONNX Runtime
    itself cannot run (or gets wrong) is ``ort_cannot`` and leaves the denominators.
``load``
    ``trtlab.load`` with its defaults; the loaded model must compute what the original does
    under ONNX Runtime (``same``), else ``differs``.
``support``
    ``check_support`` from the parser and from the rules: per-node agreement.
``hybrid``
    ``partition`` (parser support) → ``build`` → ``HybridModel.run`` against the expected
    outputs.
``fp16``
    ``to_fp16`` on cases with float tensors, calibrated on the case's inputs (nodes whose
    activations leave the FP16 range stay FP32), run as trtlab runs it on ONNX Runtime, within
    FP16 tolerance.
``int8``
    ``quantize_int8`` on cases with Conv / MatMul / Gemm, calibrated on the case's inputs:
    the checker accepts it and ONNX Runtime runs it.

Every stage ends as ``pass``, ``trtlab_error`` (a clear :class:`trtlab.TrtlabError`),
``wrong`` (the hybrid's values differ), ``out_of_tolerance`` (FP16 beyond FP16 tolerance),
``invalid`` (the INT8 model fails the checker), ``raw_error`` (any other exception: a bug) or
``crash`` (the worker died or timed out). Run ``python tests/conformance/conformance_suite.py [--quick]`` to
print the counts; ``test_conformance.py`` asserts the thresholds.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backend_cases import case_ids, load_case, quick_ids  # noqa: E402

MAC_OPS = {"Conv", "MatMul", "Gemm"}
#: Seconds one case may take in a worker before it is recorded as a hang.
DEFAULT_TIMEOUT = float(os.environ.get("TRTLAB_CONFORMANCE_TIMEOUT", "240"))
#: FP16 tolerance: |got - want| <= FP16_ATOL * max(1, max|want|) + FP16_RTOL * |want|.
FP16_RTOL = 1e-2
FP16_ATOL = 1e-2
#: Loaded model vs original under ONNX Runtime.
LOAD_RTOL = 1e-5
LOAD_ATOL = 1e-6

STAGES = ("ort", "load", "support", "hybrid", "fp16", "int8")
#: Cases one worker process runs before it is replaced by a fresh one.
RECYCLE_AFTER = 300


# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# comparisons
# ----------------------------------------------------------------------------------------------

def close(want: Any, got: Any, rtol: float, atol: float, *, scaled: bool = False) -> bool:
    """Whether ``got`` matches ``want`` (arrays, sequences, optionals; NaN equals NaN)."""
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(want) == len(got) and all(
            close(w, g, rtol, atol, scaled=scaled) for w, g in zip(want, got))
    want, got = np.asarray(want), np.asarray(got)
    if want.shape != got.shape:
        return False
    if want.dtype.kind in "OUS" or got.dtype.kind in "OUS":
        return bool(np.array_equal(want.astype(object), got.astype(object)))
    if want.dtype.kind not in "fc" or got.dtype.kind not in "fc":
        if want.dtype.kind in "fc" or got.dtype.kind in "fc":
            return bool(np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                                    equal_nan=True))
        return bool(np.array_equal(want, got))
    w = want.astype(np.float64) if want.dtype.kind == "f" else want
    g = got.astype(np.float64) if got.dtype.kind == "f" else got
    if scaled and w.size:
        finite = np.abs(w[np.isfinite(w)])
        atol = atol * max(1.0, float(finite.max()) if finite.size else 1.0)
    with np.errstate(all="ignore"):
        return bool(np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True))


def all_close(want: Sequence[Any], got: Sequence[Any], rtol: float, atol: float, *,
              scaled: bool = False) -> bool:
    return len(want) == len(got) and all(close(w, g, rtol, atol, scaled=scaled) for w, g in zip(want, got))


# ----------------------------------------------------------------------------------------------
# one case
# ----------------------------------------------------------------------------------------------

def _session(proto_or_bytes: Any) -> Any:
    import onnxruntime as ort

    data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _feed_names(proto: Any) -> List[str]:
    inits = {t.name for t in proto.graph.initializer}
    return [vi.name for vi in proto.graph.input if vi.name not in inits]


def _feeds(proto: Any, inputs: Sequence[Any]) -> Dict[str, Any]:
    return {n: v for n, v in zip(_feed_names(proto), inputs) if v is not None}


def _ort_run(proto_or_bytes: Any, feeds: Dict[str, Any], outputs: Sequence[str]) -> List[Any]:
    sess = _session(proto_or_bytes)
    return list(sess.run(list(outputs), feeds))


def _outcome(exc: BaseException) -> Tuple[str, str]:
    import trtlab

    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    if isinstance(exc, trtlab.TrtlabError):
        return "trtlab_error", text
    return "raw_error", text + " | " + "".join(traceback.format_tb(exc.__traceback__)[-2:]).replace("\n", " ")[:400]


def _float_case(proto: Any) -> bool:
    import onnx

    ios = list(proto.graph.input) + list(proto.graph.output)
    return any(vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for vi in ios)


def run_case(cid: str, report: Any = None) -> Dict[str, Any]:
    """Run every stage of case ``cid``; ``report(stage)`` is called as each stage starts."""
    import onnx
    import trtlab

    def stage(name: str) -> None:
        if report is not None:
            report(name)

    res: Dict[str, Any] = {"id": cid, "stages": {}, "details": {}, "support": None}
    st, det = res["stages"], res["details"]
    stage("ort")
    case = load_case(cid)
    proto = case.model
    res["ops"] = sorted({n.op_type for n in proto.graph.node})
    res["float"] = _float_case(proto)
    res["mac"] = bool(MAC_OPS & set(res["ops"]))
    out_names = [o.name for o in proto.graph.output]
    sets = [(_feeds(proto, ins), outs) for ins, outs in case.data_sets]
    try:
        refs = [_ort_run(proto, f, out_names) for f, _ in sets]
        ok = all(all_close(outs, ref, case.rtol, case.atol) for (_, outs), ref in zip(sets, refs))
        st["ort"] = "pass" if ok else "ort_cannot"
        if not ok:
            det["ort"] = "ONNX Runtime's outputs differ from the expected outputs"
    except Exception as exc:  # ONNX Runtime itself refuses the model
        st["ort"], det["ort"] = "ort_cannot", f"{type(exc).__name__}: {str(exc)[:200]}"
    if st["ort"] != "pass":
        return res

    stage("load")
    try:
        model = trtlab.load(proto)
    except Exception as exc:
        st["load"], det["load"] = _outcome(exc)
        return res
    try:
        got = [_ort_run(model.to_bytes(), f, out_names) for f, _ in sets]
        same = all(all_close(ref, g, LOAD_RTOL, LOAD_ATOL) for ref, g in zip(refs, got))
        st["load"] = "pass" if same else "differs"
        if not same:
            det["load"] = "the loaded model's outputs differ from the original's"
    except Exception as exc:
        st["load"], det["load"] = "differs", f"the loaded model does not run: {type(exc).__name__}: {str(exc)[:200]}"
    if st["load"] != "pass":
        return res

    stage("support")
    parser = None
    try:
        parser = trtlab.check_support(model, source="parser")
        rules = trtlab.check_support(model, source="rules")
        p_df, r_df = parser.frame, rules.frame
        p_map = {r.node: (bool(r.supported), str(r.reason), r.op_type) for r in p_df.itertuples()}
        r_map = {r.node: (bool(r.supported), str(r.reason)) for r in r_df.itertuples()}
        nodes = [n for n in p_map if n in r_map]
        dis = [(p_map[n][2], n, p_map[n][0], p_map[n][1][:160], r_map[n][1][:160])
               for n in nodes if p_map[n][0] != r_map[n][0]]
        res["support"] = {"nodes": len(nodes), "agree": len(nodes) - len(dis), "disagree": dis}
        st["support"] = "pass"
    except Exception as exc:
        st["support"], det["support"] = _outcome(exc)

    stage("hybrid")
    try:
        part = trtlab.partition(model, support=parser) if parser is not None else trtlab.partition(model)
        hybrid = trtlab.build(part, progress=False, cache_dir=False)
        ok = True
        for f, outs in sets:
            got_map = hybrid.run(f)
            ok = ok and all_close(outs, [got_map[n] for n in out_names], case.rtol, case.atol)
        st["hybrid"] = "pass" if ok else "wrong"
        if not ok:
            det["hybrid"] = "the hybrid's outputs differ from the expected outputs"
    except Exception as exc:
        st["hybrid"], det["hybrid"] = _outcome(exc)

    if res["float"]:
        stage("fp16")
        try:
            from trtlab.precision import ort_variant

            # Data-driven, as trtlab's FP16 is meant to run (and as the INT8 stage calibrates):
            # nodes whose activations leave the FP16 range on the case's inputs stay FP32.
            half = trtlab.to_fp16(model, calibration_data=[f for f, _ in sets])
            variant, _ = ort_variant(half, ["CPUExecutionProvider"])
            vproto = getattr(variant, "proto", variant)
            ok = all(all_close(outs, _ort_run(vproto, f, out_names), FP16_RTOL, FP16_ATOL, scaled=True)
                     for f, outs in sets)
            st["fp16"] = "pass" if ok else "out_of_tolerance"
            if not ok:
                det["fp16"] = "FP16 outputs outside FP16 tolerance"
        except Exception as exc:
            st["fp16"], det["fp16"] = _outcome(exc)

    if res["mac"]:
        stage("int8")
        try:
            q = trtlab.quantize_int8(model, [f for f, _ in sets])
            qproto = getattr(q, "proto", q)
            onnx.checker.check_model(qproto)
            for f, _ in sets:
                _ort_run(qproto, f, out_names)
            st["int8"] = "pass"
        except Exception as exc:
            st["int8"], det["int8"] = _outcome(exc)
            if isinstance(exc, onnx.checker.ValidationError):
                st["int8"] = "invalid"
    return res


# ----------------------------------------------------------------------------------------------
# the pool
# ----------------------------------------------------------------------------------------------

def _worker(conn: Any) -> None:
    os.environ.setdefault("TRTLAB_PROGRESS", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    # Native libraries print to fd 1/2; keep the parent's terminal readable.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    while True:
        cid = conn.recv()
        if cid is None:
            return
        try:
            result = run_case(cid, report=lambda s: conn.send(("stage", cid, s)))
        except Exception as exc:  # a failure of the harness itself, e.g. unreadable data
            result = {"id": cid, "stages": {"ort": "ort_cannot"},
                      "details": {"ort": f"case could not be read: {type(exc).__name__}: {exc}"[:300]},
                      "support": None}
        conn.send(("done", cid, result))


class _Slot:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.cid: Optional[str] = None
        self.stage = "ort"
        self.started = 0.0
        self.done = 0

    def give(self, cid: str) -> None:
        self.cid, self.stage, self.started = cid, "ort", time.monotonic()
        self.done += 1
        self.conn.send(cid)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


def _crashed(cid: str, stage: str, why: str) -> Dict[str, Any]:
    stages = {s: "pass" for s in STAGES[:STAGES.index(stage)] if s not in ("fp16", "int8")}
    stages[stage] = "ort_cannot" if stage == "ort" else "crash"
    return {"id": cid, "stages": stages, "details": {stage: why}, "support": None}


def run_all(ids: Sequence[str], *, workers: int = 2, timeout: float = DEFAULT_TIMEOUT,
            progress: Any = None) -> List[Dict[str, Any]]:
    """Run ``ids`` in ``workers`` spawned processes; a dead or hung worker records a crash."""
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    todo = list(ids)[::-1]
    results: List[Dict[str, Any]] = []
    slots = [_Slot(ctx) for _ in range(max(1, min(workers, len(todo))))]
    for s in slots:
        if todo:
            s.give(todo.pop())
    try:
        while any(s.cid is not None for s in slots):
            busy = [s for s in slots if s.cid is not None]
            ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=1.0)
            now = time.monotonic()
            for i, s in enumerate(slots):
                if s.cid is None:
                    continue
                finished = None
                if s.conn in ready:
                    try:
                        while s.conn.poll():
                            kind, cid, payload = s.conn.recv()
                            if kind == "stage":
                                s.stage = payload
                            else:
                                finished = payload
                    except (EOFError, OSError):
                        pass
                if finished is None and (not s.proc.is_alive() or now - s.started > timeout):
                    why = (f"timeout after {timeout:.0f} s" if s.proc.is_alive()
                           else f"worker died (exit code {s.proc.exitcode})")
                    finished = _crashed(s.cid, s.stage, why)
                    s.stop(kill=True)
                    slots[i] = s = _Slot(ctx)
                if finished is not None:
                    results.append(finished)
                    if progress is not None:
                        progress(finished)
                    s.cid = None
                    if s.done >= RECYCLE_AFTER and todo:
                        s.stop()  # a fresh process keeps the memory of a long run bounded
                        slots[i] = s = _Slot(ctx)
                    if todo:
                        s.give(todo.pop())
    finally:
        for s in slots:
            s.stop(kill=s.cid is not None)
    order = {cid: i for i, cid in enumerate(ids)}
    return sorted(results, key=lambda r: order[r["id"]])


# ----------------------------------------------------------------------------------------------
# counts
# ----------------------------------------------------------------------------------------------

@dataclass
class Summary:
    """The tier's counts and the rates the issue's thresholds are about."""

    cases: int
    counts: Dict[str, Dict[str, int]]
    ort_pass: int
    hybrid_pass: int
    load_differs: int
    crashes: int
    wrong: int
    raw_errors: int
    nodes: int
    agree: int
    fp16_total: int
    fp16_pass: int
    int8_total: int
    int8_pass: int
    disagreements: List[Tuple[str, str, bool, str, str]] = field(default_factory=list)
    failures: Dict[str, List[Tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def hybrid_rate(self) -> float:
        return self.hybrid_pass / max(1, self.ort_pass)

    @property
    def agreement(self) -> float:
        return self.agree / max(1, self.nodes)

    @property
    def fp16_rate(self) -> float:
        return self.fp16_pass / max(1, self.fp16_total)

    @property
    def int8_rate(self) -> float:
        return self.int8_pass / max(1, self.int8_total)

    def text(self) -> str:
        lines = [f"conformance: {self.cases} cases, ONNX Runtime passes {self.ort_pass}"]
        for s in STAGES:
            c = self.counts.get(s, {})
            lines.append(f"  {s:8s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        lines += [
            f"  loaded models differing from the original: {self.load_differs}",
            f"  crashes (native crash or hang): {self.crashes}; wrong values: {self.wrong}; "
            f"raw (non-TrtlabError) exceptions: {self.raw_errors}",
            f"  hybrid passes {self.hybrid_pass}/{self.ort_pass} = {100 * self.hybrid_rate:.2f}% of the cases "
            "ONNX Runtime passes",
            f"  rules vs parser: {self.agree}/{self.nodes} nodes agree = {100 * self.agreement:.2f}%",
            f"  to_fp16 within tolerance: {self.fp16_pass}/{self.fp16_total} = {100 * self.fp16_rate:.2f}%",
            f"  quantize_int8 valid and runnable: {self.int8_pass}/{self.int8_total} = {100 * self.int8_rate:.2f}%",
        ]
        by_op = Counter((d[0], d[2]) for d in self.disagreements)
        if by_op:
            lines.append("  rules/parser disagreements (op, parser says supported): " + ", ".join(
                f"{op}/{'yes' if sup else 'no'} {n}" for (op, sup), n in by_op.most_common()))
        for s, rows in self.failures.items():
            for cid, kind, why in rows:
                lines.append(f"  [{s}] {kind} {cid}: {why}")
        return "\n".join(lines)


def summarize(results: Sequence[Dict[str, Any]]) -> Summary:
    counts: Dict[str, Counter] = {s: Counter() for s in STAGES}
    failures: Dict[str, List[Tuple[str, str, str]]] = {s: [] for s in STAGES if s != "ort"}
    nodes = agree = 0
    dis: List[Tuple[str, str, bool, str, str]] = []
    for r in results:
        for s, v in r["stages"].items():
            counts[s][v] += 1
            if s != "ort" and v != "pass":
                failures[s].append((r["id"], v, r["details"].get(s, "")))
        if r.get("support"):
            nodes += r["support"]["nodes"]
            agree += r["support"]["agree"]
            dis += [tuple(d) for d in r["support"]["disagree"]]
    ort_pass = counts["ort"]["pass"]
    fp16_total = sum(1 for r in results if r["stages"].get("ort") == "pass" and r.get("float", False))
    int8_total = sum(1 for r in results if r["stages"].get("ort") == "pass" and r.get("mac", False))
    return Summary(
        cases=len(results),
        counts={s: dict(c) for s, c in counts.items()},
        ort_pass=ort_pass,
        hybrid_pass=counts["hybrid"]["pass"],
        load_differs=counts["load"]["differs"],
        crashes=sum(c["crash"] for c in counts.values()),
        wrong=counts["hybrid"]["wrong"],
        raw_errors=sum(c["raw_error"] for c in counts.values()),
        nodes=nodes, agree=agree,
        fp16_total=fp16_total, fp16_pass=counts["fp16"]["pass"],
        int8_total=int8_total, int8_pass=counts["int8"]["pass"],
        disagreements=dis,
        failures={s: rows for s, rows in failures.items() if rows},
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a deterministic subset (about 1/10)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--json", help="write every case's result to this JSON file")
    ap.add_argument("cases", nargs="*", help="case ids (node/<name>, light/<name>, ...)")
    args = ap.parse_args(argv)
    ids = args.cases or case_ids()
    if args.quick and not args.cases:
        ids = quick_ids(ids)
    start = time.monotonic()
    results = run_all(ids, workers=args.workers, timeout=args.timeout)
    summary = summarize(results)
    print(summary.text())
    print(f"  wall time {time.monotonic() - start:.0f} s with {args.workers} workers")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
