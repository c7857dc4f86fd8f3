"""Scale check for trtlab.fusion: a 2,000-layer engine JSON parses in under a second.

The engine JSON is built by repeating the layers of the real TensorRT 8.x MobileNetV2 fixture
(node and tensor numbers shifted per copy, so every copy names different ONNX nodes), with a
matching profile. Prints the parse time, the time of the per-node roll-up, of the plots, of the
report card and engine graph, and of the real 389-layer ControlNet engine (TensorRT 8.6), and
exits non-zero when parsing takes a second or more.

Run: python benchmarks/fusion_scale.py [--layers 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

FIXTURES = ROOT / "tests" / "fixtures"
GRAPH = FIXTURES / "mobilenet_v2_residuals.qat.engine.graph.json"
PROFILE = FIXTURES / "mobilenet_v2_residuals.qat.engine.profile.json"


def repeated(n_layers: int) -> tuple:
    """(engine JSON text, profile JSON text) with ``n_layers`` layers."""
    base = json.loads(GRAPH.read_text())
    times = {r["name"]: r for r in json.loads(PROFILE.read_text()) if "name" in r}
    layers, profile, k = [], [{"count": 100}], 0
    while len(layers) < n_layers:
        def shift(s: str, k: int = k) -> str:
            return re.sub(r"(\d+)", lambda m: str(int(m.group(1)) + 10000 * k), s)
        for layer in base["Layers"]:
            copy = json.loads(json.dumps(layer))
            copy["Name"] = shift(layer["Name"])
            for t in copy["Inputs"] + copy["Outputs"]:
                t["Name"] = shift(t["Name"])
            layers.append(copy)
            profile.append({**times[layer["Name"]], "name": copy["Name"]})
        k += 1
    doc = {"Layers": layers[:n_layers], "Bindings": base["Bindings"]}
    return json.dumps(doc), json.dumps(profile[: n_layers + 1])


def chain_model(nodes: list) -> "object":
    """An ONNX chain with one Relu per node name, so the overlay has a graph to draw on."""
    from onnx import TensorProto, helper

    from trtlab.model import load

    made = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=n) for i, n in enumerate(nodes)]
    graph = helper.make_graph(made, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"t{len(nodes)}", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return load(proto, fold_constants=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from trtlab.backends.tensorrt.layers import fusion
    from trtlab.viz.fusion_plots import plot_before_after, plot_layer_latency

    text, profile = repeated(args.layers)
    fusion(text)  # warm-up: imports
    parse = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        rep = fusion(text)
        parse.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    timed = fusion(text, profile=profile)
    with_profile = time.perf_counter() - t0
    t0 = time.perf_counter()
    roll = timed.node_latency()
    groups = timed.groups()
    rollup = time.perf_counter() - t0
    t0 = time.perf_counter()
    plot_layer_latency(timed, top=None)
    plot_before_after(timed)
    plots = time.perf_counter() - t0
    from trtlab.viz.graph import draw

    model = chain_model(list(timed.onnx_to_layers))
    t0 = time.perf_counter()
    fig = draw(model, fusion=timed, show_reasons=False)
    overlay = time.perf_counter() - t0
    drawn = getattr(fig, "_trtlab", {}).get("fusion_groups", "?")
    from trtlab.backends.tensorrt.layers import align_engines, report_card
    from trtlab.viz.engine_card import plot_engine_graph, plot_report_card

    t0 = time.perf_counter()
    card = report_card(timed)
    card_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plot_report_card(card)
    card_plot = time.perf_counter() - t0
    t0 = time.perf_counter()
    align = align_engines(timed, timed)
    align_s = time.perf_counter() - t0
    cn = FIXTURES / "controlnet_trt86.fp16.engine.graph.json"
    cn_parse = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cn_rep = fusion(cn, profile=FIXTURES / "controlnet_trt86.fp16.engine.profile.json")
        cn_parse.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    plot_engine_graph(cn_rep)
    cn_graph = time.perf_counter() - t0
    best = min(parse)
    print(f"engine JSON: {len(rep)} layers, {len(text) / 1e6:.1f} MB, "
          f"{len(rep.onnx_to_layers)} ONNX nodes, {len(groups)} fused groups")
    print(f"parse: best {best:.3f} s, median {sorted(parse)[len(parse) // 2]:.3f} s "
          f"over {args.repeat} runs")
    print(f"parse + profile join: {with_profile:.3f} s; node roll-up ({len(roll)} nodes) + "
          f"groups: {rollup:.3f} s; latency bars ({len(timed)} layers) + before/after: "
          f"{plots:.3f} s")
    print(f"overlay: draw() of a {len(model.node_names)}-node graph with {drawn} fused groups "
          f"outlined: {overlay:.3f} s")
    print(f"report card of {len(timed)} layers: {card_s:.3f} s, its figure {card_plot:.3f} s; "
          f"self-alignment: {align_s:.3f} s ({align.coverage:.0%} paired)")
    print(f"ControlNet (TensorRT 8.6, {len(cn_rep)} layers, {len(cn_rep.running)} running): "
          f"parse + profile best {min(cn_parse):.3f} s; engine graph figure {cn_graph:.3f} s")
    if best >= 1.0:
        print(f"FAIL: parsing {len(rep)} layers took {best:.3f} s (limit 1 s)")
        return 1
    print("OK: under 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
