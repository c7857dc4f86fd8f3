"""Build the trtlab model zoo: the ONNX models, the digits data splits and README.md in this folder.

Usage::

    python data/make_models.py             # everything (trains digits_cnn, about a minute on CPU)
    python data/make_models.py --readme    # only rewrite README.md from the files present

Every model is ONNX opset 17 with IR version 8, passes ``onnx.checker.check_model(full_check=True)``,
has unique non-empty node names (subgraphs included) and runs in ONNX Runtime on CPU.
``digits_cnn`` is trained with PyTorch on scikit-learn's digits; every other model is written
node by node with ``onnx.helper`` and seeded random weights. Everything is seeded from ``SEED``.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
IR_VERSION = 8
PRODUCER = "trtlab data/make_models.py"

Attr = Union[int, float, str, Sequence[int], Sequence[float], onnx.GraphProto]


class GraphBuilder:
    """Small helper that writes ONNX nodes with unique names and named initializers.

    Subgraph builders made with :meth:`sub` share the set of used names, so node names stay
    unique across a model and all of its subgraphs.
    """

    def __init__(self, name: str, rng: np.random.Generator, used: Optional[set] = None) -> None:
        self.name = name
        self.rng = rng
        self.nodes: list = []
        self.initializers: list = []
        self.used = used if used is not None else set()

    def sub(self, name: str) -> "GraphBuilder":
        return GraphBuilder(name, self.rng, self.used)

    def _claim(self, name: str) -> str:
        if not name or name in self.used:
            raise ValueError(f"duplicate or empty name {name!r} in graph {self.name!r}")
        self.used.add(name)
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), self._claim(name)))
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        return self.init(name, np.asarray(values, dtype=dtype))

    def weight(self, name: str, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> str:
        w = self.rng.standard_normal(shape) * np.sqrt(gain / fan_in)
        return self.init(name, w.astype(np.float32))

    def bias(self, name: str, n: int, scale: float = 0.05) -> str:
        return self.init(name, (self.rng.standard_normal(n) * scale).astype(np.float32))

    def op(self, op_type: str, inputs: Sequence[str], name: str, *, n_out: int = 1, domain: str = "",
           outputs: Optional[Sequence[str]] = None, **attrs: Attr) -> Union[str, list]:
        """Add one node called ``name``; return its output name (a list when ``n_out > 1``).

        Outputs are called ``<name>.out`` / ``<name>.out<i>`` unless ``outputs`` names them.
        """
        self._claim(name)
        if outputs is not None:
            outputs = list(outputs)
            n_out = len(outputs)
        else:
            outputs = [f"{name}.out"] if n_out == 1 else [f"{name}.out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name,
                                           domain=domain or None, **attrs))
        return outputs[0] if n_out == 1 else outputs

    def graph(self, inputs: list, outputs: list) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)


def finish(graph: onnx.GraphProto, doc: str, extra_domains: Sequence[tuple] = ()) -> onnx.ModelProto:
    """Wrap a graph into an opset-17, IR-8 model and check it (strict shape inference included)."""
    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in extra_domains]
    model = helper.make_model(graph, opset_imports=opsets, producer_name=PRODUCER,
                              ir_version=IR_VERSION, doc_string=doc)
    onnx.checker.check_model(model, full_check=True)
    return model


def io_info(name: str, elem_type: int, shape: Sequence[Union[int, str, None]]):
    return helper.make_tensor_value_info(name, elem_type, list(shape))


F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


# --------------------------------------------------------------------------------------------
# digits_cnn: trained on scikit-learn's digits
# --------------------------------------------------------------------------------------------

def digits_splits(seed: int = SEED) -> dict:
    """Stratified, disjoint train / calib / test splits of scikit-learn's 8x8 digits.

    Images are scaled to [0, 1] (pixel / 16) and shaped (N, 1, 8, 8) float32; labels are int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    index = np.arange(len(y))
    train, rest = train_test_split(index, test_size=600, stratify=y, random_state=seed)
    calib, test = train_test_split(rest, test_size=400, stratify=y[rest], random_state=seed)
    return {name: (x[idx], y[idx], idx) for name, idx in
            (("train", train), ("calib", calib), ("test", test))}


def make_digits_cnn(splits: dict, epochs: int = 40) -> tuple:
    """Train a small CNN with PyTorch and export it with a dynamic batch dimension."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(1, 16, 3, padding=1))
    model.add_module("relu1", nn.ReLU())
    model.add_module("conv2", nn.Conv2d(16, 32, 3, padding=1))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(32 * 4 * 4, 64))
    model.add_module("relu3", nn.ReLU())
    model.add_module("fc2", nn.Linear(64, 10))

    x_train, y_train, _ = splits["train"]
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()

    x_test, y_test, _ = splits["test"]
    with torch.no_grad():
        torch_accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (xt[:1],), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = IR_VERSION
    proto.producer_name = PRODUCER
    proto.graph.name = "digits_cnn"
    proto.doc_string = (f"Small CNN (2 Conv, 2 Gemm) trained with PyTorch (Adam, {epochs} epochs, "
                        f"{len(y_train)} images) on scikit-learn digits (8x8, pixel/16); exported with "
                        "torch.onnx.export (TorchScript exporter), dynamic batch.")
    onnx.checker.check_model(proto, full_check=True)
    return proto, torch_accuracy


def gemm_to_matmul(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, B, C, transB) nodes as MatMul + Add so dynamic quantization reaches them."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {t.name: t for t in out.graph.initializer}
    nodes = []
    for node in out.graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ValueError(f"Gemm {node.name} has attributes this rewrite does not handle: {attrs}")
        a, b, c = node.input
        w = numpy_helper.to_array(inits[b])
        if attrs.get("transB", 0):
            inits[b].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.T), b))
        mm = f"{node.name}_matmul"
        nodes.append(helper.make_node("MatMul", [a, b], [f"{mm}.out"], name=mm))
        nodes.append(helper.make_node("Add", [f"{mm}.out", c], list(node.output), name=f"{node.name}_bias"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def make_quantized_dynamic(digits_proto: onnx.ModelProto, workdir: Path) -> onnx.ModelProto:
    """Dynamic INT8 quantization of digits_cnn (Conv -> ConvInteger, MatMul -> MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = workdir / "digits_cnn_matmul.onnx"
    dst = workdir / "quantized_dynamic.onnx"
    onnx.save(gemm_to_matmul(digits_proto), str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "MatMul"])
    proto = onnx.load(str(dst))
    proto.ir_version = IR_VERSION
    proto.producer_name = PRODUCER
    proto.graph.name = "quantized_dynamic"
    proto.doc_string = ("digits_cnn with Gemm rewritten as MatMul+Add, then "
                        "onnxruntime.quantization.quantize_dynamic (uint8 weights).")
    seen: dict = {}
    for i, node in enumerate(proto.graph.node):
        base = node.name or f"{node.op_type}_{i}"
        seen[base] = seen.get(base, 0) + 1
        node.name = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"
    if [o for o in proto.opset_import if o.domain in ("", "ai.onnx")][0].version != OPSET:
        raise ValueError("quantize_dynamic changed the opset")
    onnx.checker.check_model(proto, full_check=True)
    return proto


# --------------------------------------------------------------------------------------------
# CNNs with random weights
# --------------------------------------------------------------------------------------------

def conv(g: GraphBuilder, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1,
         group: int = 1, bias: bool = True) -> str:
    w = g.weight(f"{name}.weight", (cout, cin // group, k, k), fan_in=cin // group * k * k)
    inputs = [x, w] + ([g.bias(f"{name}.bias", cout)] if bias else [])
    pad = k // 2
    return g.op("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
                pads=[pad, pad, pad, pad], group=group)


def batchnorm(g: GraphBuilder, x: str, name: str, c: int) -> str:
    rng = g.rng
    scale = g.init(f"{name}.scale", rng.uniform(0.5, 1.5, c).astype(np.float32))
    shift = g.init(f"{name}.shift", (rng.standard_normal(c) * 0.1).astype(np.float32))
    mean = g.init(f"{name}.running_mean", (rng.standard_normal(c) * 0.1).astype(np.float32))
    var = g.init(f"{name}.running_var", rng.uniform(0.5, 1.5, c).astype(np.float32))
    return g.op("BatchNormalization", [x, scale, shift, mean, var], name, epsilon=1e-5)


def make_resnet_mini(rng: np.random.Generator) -> onnx.ModelProto:
    """ResNet-style CNN: Conv + BatchNormalization (kept) + Relu, basic blocks, MaxPool, GAP, Gemm."""
    g = GraphBuilder("resnet_mini", rng)
    x = conv(g, "input", "stem/conv", 3, 16, 3, bias=False)
    x = g.op("Relu", [batchnorm(g, x, "stem/bn", 16)], "stem/relu")
    x = g.op("MaxPool", [x], "stem/maxpool", kernel_shape=[2, 2], strides=[2, 2])
    cin = 16
    for i, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        p = f"layer{i + 1}"
        y = conv(g, x, f"{p}/conv1", cin, cout, 3, stride, bias=False)
        y = g.op("Relu", [batchnorm(g, y, f"{p}/bn1", cout)], f"{p}/relu1")
        y = conv(g, y, f"{p}/conv2", cout, cout, 3, bias=False)
        y = batchnorm(g, y, f"{p}/bn2", cout)
        if stride != 1 or cin != cout:
            x = conv(g, x, f"{p}/downsample/conv", cin, cout, 1, stride, bias=False)
            x = batchnorm(g, x, f"{p}/downsample/bn", cout)
        x = g.op("Relu", [g.op("Add", [y, x], f"{p}/add")], f"{p}/relu2")
        cin = cout
    x = g.op("GlobalAveragePool", [x], "head/gap")
    x = g.op("Flatten", [x], "head/flatten", axis=1)
    w = g.weight("head/fc.weight", (10, 64), fan_in=64, gain=1.0)
    g.op("Gemm", [x, w, g.bias("head/fc.bias", 10)], "head/fc", transB=1, outputs=["logits"])
    graph = g.graph([io_info("input", F32, [1, 3, 32, 32])], [io_info("logits", F32, [1, 10])])
    return finish(graph, "ResNet-style CNN, random weights, BatchNormalization kept unfolded, static batch 1.")


def make_mobilenet_mini(rng: np.random.Generator) -> onnx.ModelProto:
    """MobileNetV2-style CNN: inverted residuals with depthwise convs, Clip (ReLU6) and HardSwish."""
    g = GraphBuilder("mobilenet_mini", rng)
    zero, six = g.const("relu6.min", 0.0, np.float32), g.const("relu6.max", 6.0, np.float32)

    def act(x: str, name: str, kind: str) -> str:
        if kind == "relu6":
            return g.op("Clip", [x, zero, six], f"{name}/relu6")
        return g.op("HardSwish", [x], f"{name}/hardswish")

    x = act(conv(g, "input", "stem/conv", 3, 16, 3, 2), "stem", "relu6")
    cin = 16
    blocks = [(1, 16, 1, "relu6"), (4, 24, 2, "relu6"), (4, 24, 1, "relu6"),
              (4, 32, 2, "hardswish"), (4, 32, 1, "hardswish")]
    for i, (expand, cout, stride, kind) in enumerate(blocks):
        p = f"block{i}"
        hidden = cin * expand
        y = x
        if expand != 1:
            y = act(conv(g, y, f"{p}/expand", cin, hidden, 1), f"{p}/expand", kind)
        y = act(conv(g, y, f"{p}/depthwise", hidden, hidden, 3, stride, group=hidden), f"{p}/depthwise", kind)
        y = conv(g, y, f"{p}/project", hidden, cout, 1)
        x = g.op("Add", [x, y], f"{p}/residual") if stride == 1 and cin == cout else y
        cin = cout
    x = act(conv(g, x, "head/conv", cin, 64, 1), "head", "hardswish")
    x = g.op("GlobalAveragePool", [x], "head/gap")
    x = g.op("Flatten", [x], "head/flatten", axis=1)
    w = g.weight("head/fc.weight", (10, 64), fan_in=64, gain=1.0)
    g.op("Gemm", [x, w, g.bias("head/fc.bias", 10)], "head/fc", transB=1, outputs=["logits"])
    graph = g.graph([io_info("input", F32, ["batch", 3, 32, 32])], [io_info("logits", F32, ["batch", 10])])
    return finish(graph, "MobileNetV2-style CNN, random weights (BN folded into conv bias), dynamic batch.")


# --------------------------------------------------------------------------------------------
# Transformer encoder stacks
# --------------------------------------------------------------------------------------------

def layernorm_decomposed(g: GraphBuilder, x: str, p: str, d: int) -> str:
    mean = g.op("ReduceMean", [x], f"{p}/mean", axes=[-1], keepdims=1)
    centered = g.op("Sub", [x, mean], f"{p}/sub")
    sq = g.op("Pow", [centered, g.const(f"{p}.two", 2.0, np.float32)], f"{p}/pow")
    var = g.op("ReduceMean", [sq], f"{p}/var", axes=[-1], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{p}.eps", 1e-5, np.float32)], f"{p}/add_eps")], f"{p}/sqrt")
    normed = g.op("Div", [centered, std], f"{p}/div")
    gamma = g.init(f"{p}.gamma", (1.0 + 0.1 * g.rng.standard_normal(d)).astype(np.float32))
    beta = g.init(f"{p}.beta", (0.05 * g.rng.standard_normal(d)).astype(np.float32))
    return g.op("Add", [g.op("Mul", [normed, gamma], f"{p}/scale"), beta], f"{p}/shift")


def layernorm_op(g: GraphBuilder, x: str, p: str, d: int, outputs: Optional[Sequence[str]] = None) -> str:
    gamma = g.init(f"{p}.gamma", (1.0 + 0.1 * g.rng.standard_normal(d)).astype(np.float32))
    beta = g.init(f"{p}.beta", (0.05 * g.rng.standard_normal(d)).astype(np.float32))
    return g.op("LayerNormalization", [x, gamma, beta], f"{p}/layernorm", axis=-1, epsilon=1e-5,
                outputs=outputs)


def linear(g: GraphBuilder, x: str, p: str, din: int, dout: int) -> str:
    w = g.weight(f"{p}.weight", (din, dout), fan_in=din, gain=1.0)
    return g.op("Add", [g.op("MatMul", [x, w], f"{p}/matmul"), g.bias(f"{p}.bias", dout)], f"{p}/bias")


def gelu_erf(g: GraphBuilder, x: str, p: str) -> str:
    scaled = g.op("Div", [x, g.const(f"{p}.sqrt2", np.sqrt(2.0), np.float32)], f"{p}/div")
    erf = g.op("Erf", [scaled], f"{p}/erf")
    one_plus = g.op("Add", [erf, g.const(f"{p}.one", 1.0, np.float32)], f"{p}/add")
    prod = g.op("Mul", [x, one_plus], f"{p}/mul")
    return g.op("Mul", [prod, g.const(f"{p}.half", 0.5, np.float32)], f"{p}/mul_half")


def encoder_layer(g: GraphBuilder, x: str, p: str, seq: int, d: int, heads: int, mlp: int) -> str:
    """Pre-norm encoder layer; the head split uses an exporter-style Shape/Gather/Concat chain."""
    dh = d // heads
    h = layernorm_decomposed(g, x, f"{p}/ln1", d)
    q = linear(g, h, f"{p}/attn/q", d, d)
    k = linear(g, h, f"{p}/attn/k", d, d)
    v = linear(g, h, f"{p}/attn/v", d, d)
    shape = g.op("Shape", [h], f"{p}/attn/shape")
    batch = g.op("Gather", [shape, g.const(f"{p}/attn.batch_index", 0)], f"{p}/attn/gather_batch", axis=0)
    batch1 = g.op("Unsqueeze", [batch, g.const(f"{p}/attn.unsqueeze_axes", [0])], f"{p}/attn/unsqueeze_batch")
    split_shape = g.op("Concat", [batch1, g.const(f"{p}/attn.head_dims", [seq, heads, dh])],
                       f"{p}/attn/concat_split_shape", axis=0)
    merge_shape = g.op("Concat", [batch1, g.const(f"{p}/attn.model_dims", [seq, d])],
                       f"{p}/attn/concat_merge_shape", axis=0)
    qh = g.op("Transpose", [g.op("Reshape", [q, split_shape], f"{p}/attn/q_reshape")],
              f"{p}/attn/q_transpose", perm=[0, 2, 1, 3])
    kh = g.op("Transpose", [g.op("Reshape", [k, split_shape], f"{p}/attn/k_reshape")],
              f"{p}/attn/k_transpose", perm=[0, 2, 3, 1])
    vh = g.op("Transpose", [g.op("Reshape", [v, split_shape], f"{p}/attn/v_reshape")],
              f"{p}/attn/v_transpose", perm=[0, 2, 1, 3])
    scores = g.op("MatMul", [qh, kh], f"{p}/attn/qk_matmul")
    scores = g.op("Div", [scores, g.const(f"{p}/attn.scale", np.sqrt(dh), np.float32)], f"{p}/attn/scale")
    probs = g.op("Softmax", [scores], f"{p}/attn/softmax", axis=-1)
    ctx = g.op("MatMul", [probs, vh], f"{p}/attn/av_matmul")
    ctx = g.op("Transpose", [ctx], f"{p}/attn/ctx_transpose", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, merge_shape], f"{p}/attn/ctx_reshape")
    x = g.op("Add", [x, linear(g, ctx, f"{p}/attn/out", d, d)], f"{p}/attn/residual")
    h = layernorm_op(g, x, f"{p}/ln2", d)
    h = gelu_erf(g, linear(g, h, f"{p}/mlp/fc1", d, mlp), f"{p}/mlp/gelu")
    return g.op("Add", [x, linear(g, h, f"{p}/mlp/fc2", mlp, d)], f"{p}/mlp/residual")


def make_transformer(name: str, rng: np.random.Generator, *, layers: int, seq: int, d: int,
                     heads: int, mlp: int) -> onnx.ModelProto:
    g = GraphBuilder(name, rng)
    x = "input"
    for i in range(layers):
        x = encoder_layer(g, x, f"layer{i}", seq, d, heads, mlp)
    out = layernorm_op(g, x, "final_ln", d, outputs=["hidden"])
    graph = g.graph([io_info("input", F32, ["batch", seq, d])], [io_info(out, F32, ["batch", seq, d])])
    doc = (f"Pre-norm transformer encoder stack, random weights: {layers} layers, seq {seq}, d_model {d}, "
           f"{heads} heads, MLP {mlp}, dynamic batch. Attention LayerNorm decomposed (ReduceMean/Sub/Pow/Sqrt/"
           "Div), MLP LayerNorm as LayerNormalization, Erf Gelu, head split via Shape/Gather/Concat/Reshape.")
    return finish(graph, doc)


# --------------------------------------------------------------------------------------------
# Detection post-processing, recurrent and control-flow models
# --------------------------------------------------------------------------------------------

def make_detection_postproc(rng: np.random.Generator, anchors: int = 64, features: int = 16,
                            classes: int = 4) -> onnx.ModelProto:
    """Score head (com.microsoft Gelu + FusedMatMul), box decoding, NMS, NonZero, data-dependent TopK."""
    g = GraphBuilder("detection_postproc", rng)
    side = int(np.sqrt(anchors))
    cy, cx = np.meshgrid((np.arange(side) + 0.5) / side, (np.arange(side) + 0.5) / side, indexing="ij")
    half = 0.75 / side
    anchor_boxes = np.stack([cy - half, cx - half, cy + half, cx + half], -1).reshape(1, anchors, 4)
    anchor = g.init("anchors", anchor_boxes.astype(np.float32))

    proj = g.op("MatMul", ["features", g.weight("head/proj.weight", (features, features), fan_in=features)],
                "head/proj")
    act = g.op("Gelu", [proj], "head/gelu", domain="com.microsoft")
    w = g.weight("head/cls.weight", (features, classes), fan_in=features, gain=1.0)
    logits = g.op("FusedMatMul", [act, w], "head/fused_matmul", domain="com.microsoft", alpha=1.0)
    skip_w = g.weight("head/skip.weight", (features, classes), fan_in=features, gain=0.5)
    logits = g.op("Add", [logits, g.op("MatMul", [proj, skip_w], "head/skip")], "head/add_skip")
    logits = g.op("Add", [logits, g.bias("head/cls.bias", classes)], "head/cls_bias")
    scores = g.op("Sigmoid", [logits], "head/sigmoid")
    scores_t = g.op("Transpose", [scores], "nms/scores_transpose", perm=[0, 2, 1])

    deltas = g.op("Mul", ["box_deltas", g.const("decode.scale", 0.1, np.float32)], "decode/scale")
    boxes = g.op("Add", [anchor, deltas], "decode/add_anchors")
    boxes = g.op("Clip", [boxes, g.const("decode.min", 0.0, np.float32), g.const("decode.max", 1.0, np.float32)],
                 "decode/clip")

    selected = g.op("NonMaxSuppression",
                    [boxes, scores_t, g.const("nms.max_per_class", [8]), g.const("nms.iou", [0.5], np.float32),
                     g.const("nms.score_threshold", [0.3], np.float32)],
                    "nms/non_max_suppression", center_point_box=0)
    class_ids = g.op("Gather", [selected, g.const("nms.class_column", 1)], "nms/class_ids", axis=1)
    box_ids = g.op("Gather", [selected, g.const("nms.box_column", 2)], "nms/box_ids", axis=1)
    sel_scores = g.op("GatherND", [scores_t, selected], "nms/selected_scores")

    n_sel = g.op("Slice", [g.op("Shape", [selected], "topk/shape"), g.const("topk.start", [0]),
                           g.const("topk.end", [1])], "topk/num_selected")
    k = g.op("Min", [n_sel, g.const("topk.max_detections", [10])], "topk/k")
    top_scores, top_idx = g.op("TopK", [sel_scores, k], "topk/topk", axis=0, largest=1, sorted=1,
                               outputs=["det_scores", "topk/topk.indices"])

    flat_boxes = g.op("Squeeze", [boxes, g.const("gather.squeeze_axes", [0])], "gather/squeeze_boxes")
    det_box_ids = g.op("Gather", [box_ids, top_idx], "gather/box_ids", axis=0)
    det_boxes = g.op("Gather", [flat_boxes, det_box_ids], "gather/boxes", axis=0, outputs=["det_boxes"])
    det_classes = g.op("Gather", [class_ids, top_idx], "gather/classes", axis=0, outputs=["det_classes"])
    k_scalar = g.op("Squeeze", [k, g.const("gather.k_axes", [0])], "gather/k_scalar")
    det_rank = g.op("Range", [g.const("gather.zero", 0), k_scalar, g.const("gather.one", 1)], "gather/rank",
                    outputs=["det_rank"])

    best = g.op("ReduceMax", [scores], "candidates/best_score", axes=[2], keepdims=0)
    mask = g.op("Greater", [best, g.const("candidates.threshold", 0.3, np.float32)], "candidates/mask")
    nonzero = g.op("NonZero", [mask], "candidates/nonzero")
    count = g.op("Gather", [g.op("Shape", [nonzero], "candidates/shape"), g.const("candidates.axis", 1)],
                 "candidates/count", axis=0, outputs=["num_candidates"])

    inputs = [io_info("features", F32, [1, anchors, features]), io_info("box_deltas", F32, [1, anchors, 4])]
    outputs = [io_info(det_boxes, F32, ["detections", 4]), io_info(top_scores, F32, ["detections"]),
               io_info(det_classes, I64, ["detections"]), io_info(det_rank, I64, ["detections"]),
               io_info(count, I64, [])]
    doc = ("Detection post-processing with random weights: score head MatMul -> com.microsoft Gelu -> "
           "com.microsoft FusedMatMul with a MatMul skip around them, "
           "anchor box decoding, NonMaxSuppression, GatherND, TopK with data-dependent K, Range, NonZero.")
    return finish(g.graph(inputs, outputs), doc, extra_domains=[("com.microsoft", 1)])


def make_lstm_seq(rng: np.random.Generator, seq: int = 10, features: int = 8, hidden: int = 16,
                  classes: int = 4) -> onnx.ModelProto:
    """Sequence classifier: Transpose to time-major, ONNX LSTM, last hidden state, Gemm."""
    g = GraphBuilder("lstm_seq", rng)
    scale = 1.0 / np.sqrt(hidden)
    w = g.init("lstm.W", rng.uniform(-scale, scale, (1, 4 * hidden, features)).astype(np.float32))
    r = g.init("lstm.R", rng.uniform(-scale, scale, (1, 4 * hidden, hidden)).astype(np.float32))
    b = g.init("lstm.B", rng.uniform(-scale, scale, (1, 8 * hidden)).astype(np.float32))
    x = g.op("Transpose", ["input"], "time_major", perm=[1, 0, 2])
    _, y_h, _ = g.op("LSTM", [x, w, r, b], "lstm", n_out=3, hidden_size=hidden, direction="forward")
    last = g.op("Squeeze", [y_h, g.const("last.axes", [0])], "last_hidden")
    fc_w = g.weight("fc.weight", (classes, hidden), fan_in=hidden, gain=1.0)
    g.op("Gemm", [last, fc_w, g.bias("fc.bias", classes)], "fc", transB=1, outputs=["logits"])
    graph = g.graph([io_info("input", F32, ["batch", seq, features])], [io_info("logits", F32, ["batch", classes])])
    return finish(graph, "LSTM sequence classifier, random weights, batch-major input, dynamic batch.")


def make_loop_model(rng: np.random.Generator, width: int = 16, classes: int = 4,
                    max_iters: int = 6) -> onnx.ModelProto:
    """Iterative refinement in an ONNX Loop (data-dependent early exit), then an If on the result sign."""
    g = GraphBuilder("loop_model", rng)
    w_loop = g.weight("loop.weight", (width, width), fan_in=width, gain=1.0)
    b_loop = g.bias("loop.bias", width)

    body = g.sub("loop_body")
    h_in = "loop_body.h_in"
    u = body.op("Tanh", [body.op("Add", [body.op("MatMul", [h_in, w_loop], "loop/body/matmul"), b_loop],
                                 "loop/body/bias")], "loop/body/tanh")
    step = body.op("Mul", [u, g.const("loop.step", 0.5, np.float32)], "loop/body/step")
    h_out = body.op("Add", [h_in, step], "loop/body/update")
    change = body.op("ReduceMax", [body.op("Abs", [step], "loop/body/abs")], "loop/body/max_change", keepdims=0)
    cond_out = body.op("Greater", [change, g.const("loop.tolerance", 0.05, np.float32)], "loop/body/continue")
    body_graph = body.graph(
        [io_info("loop_body.iter", I64, []), helper.make_tensor_value_info("loop_body.cond_in", TensorProto.BOOL, []),
         io_info(h_in, F32, ["batch", width])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []), io_info(h_out, F32, ["batch", width]),
         io_info(change, F32, [])])

    h0 = g.op("Tanh", ["input"], "pre/tanh")
    h_final, changes = g.op("Loop", [g.const("loop.max_iters", max_iters), g.const("loop.cond", True, np.bool_), h0],
                            "loop/loop", body=body_graph, outputs=["loop/loop.h", "loop_changes"])

    positive = g.op("Greater", [g.op("ReduceSum", [h_final], "branch/sum", keepdims=0),
                                g.const("branch.zero", 0.0, np.float32)], "branch/is_positive")
    then_b = g.sub("then_branch")
    then_out = then_b.op("Mul", [h_final, g.const("branch.gain", 2.0, np.float32)], "branch/then/scale")
    else_b = g.sub("else_branch")
    else_out = else_b.op("Neg", [h_final], "branch/else/neg")
    chosen = g.op("If", [positive], "branch/if",
                  then_branch=then_b.graph([], [io_info(then_out, F32, ["batch", width])]),
                  else_branch=else_b.graph([], [io_info(else_out, F32, ["batch", width])]))
    fc_w = g.weight("fc.weight", (classes, width), fan_in=width, gain=1.0)
    logits = g.op("Gemm", [chosen, fc_w, g.bias("fc.bias", classes)], "fc", transB=1, outputs=["logits"])
    graph = g.graph([io_info("input", F32, ["batch", width])],
                    [io_info(logits, F32, ["batch", classes]), io_info(changes, F32, ["iterations"])])
    doc = (f"Control flow, random weights: a Loop (at most {max_iters} steps, stops when the update is small) "
           "whose body reads outer-scope weights, then an If choosing between two branch graphs; dynamic batch.")
    return finish(graph, doc)


# --------------------------------------------------------------------------------------------
# Checks and README
# --------------------------------------------------------------------------------------------

def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)


def validate(name: str, proto: onnx.ModelProto) -> None:
    """Checker, unique names, opset/IR, and a run in ONNX Runtime with the zoo's example inputs."""
    import onnxruntime as ort

    from trtlab import zoo

    onnx.checker.check_model(proto, full_check=True)
    names = [n.name for n in all_nodes(proto.graph)]
    if "" in names or len(set(names)) != len(names):
        raise ValueError(f"{name}: node names are empty or duplicated")
    if proto.ir_version != IR_VERSION:
        raise ValueError(f"{name}: IR version {proto.ir_version}, expected {IR_VERSION}")
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, zoo.example_inputs(name, batch=2))
    for info, value in zip(sess.get_outputs(), outs):
        if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
            raise ValueError(f"{name}: output {info.name} has non-finite values")


def parser_report(path: Path) -> Optional[str]:
    """The TensorRT ONNX parser's ``supports_model_v2`` verdict, or None without TensorRT.

    Names the nodes the parser reports errors for and counts the nodes inside subgraphs it
    marks supported.
    """
    from trtlab.backends.tensorrt import flavor as trt
    from trtlab.errors import MissingDependencyError

    try:
        builder, network, parser, logger = trt.make_parser()
    except MissingDependencyError:
        return None
    nodes = list(onnx.load(str(path)).graph.node)
    ok = parser.supports_model_v2(path.read_bytes(), str(path))
    supported = set()
    for i in range(parser.num_subgraphs):
        if parser.is_subgraph_supported(i):
            supported.update(parser.get_subgraph_nodes(i))
    errors = sorted({f"{nodes[e.node()].op_type} (`{e.node_name()}`)" for e in
                     (parser.get_error(i) for i in range(parser.num_errors)) if 0 <= e.node() < len(nodes)})
    if ok and len(supported) == len(nodes):
        return f"all {len(nodes)} nodes supported"
    return (f"not supported; errors at {', '.join(errors) or 'no node'}; "
            f"{len(supported)}/{len(nodes)} nodes in supported subgraphs")


def describe(path: Path) -> dict:
    proto = onnx.load(str(path))
    nodes = list(all_nodes(proto.graph))
    counts: dict = {}
    for node in nodes:
        key = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        counts[key] = counts.get(key, 0) + 1

    def fmt(vi) -> str:
        t = vi.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return f"`{vi.name}` {dtype}[{','.join(dims)}]"

    opset = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")][0]
    domains = [f"{o.domain} v{o.version}" for o in proto.opset_import if o.domain not in ("", "ai.onnx")]
    return {
        "file": path.name,
        "doc": proto.doc_string,
        "opset": f"{opset}" + (f" (+{', '.join(domains)})" if domains else ""),
        "ir": proto.ir_version,
        "nodes": len(nodes),
        "top_nodes": len(proto.graph.node),
        "ops": counts,
        "inputs": ", ".join(fmt(v) for v in proto.graph.input),
        "outputs": ", ".join(fmt(v) for v in proto.graph.output),
        "kb": path.stat().st_size / 1024,
    }


NOTABLE = ["BatchNormalization", "Conv", "MaxPool", "GlobalAveragePool", "Gemm", "Clip", "HardSwish",
           "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Softmax", "MatMul", "Erf", "Reshape",
           "Transpose", "Shape", "NonMaxSuppression", "NonZero", "TopK", "Range", "GatherND",
           "com.microsoft::Gelu", "com.microsoft::FusedMatMul", "LSTM", "Loop", "If", "ConvInteger",
           "MatMulInteger", "DynamicQuantizeLinear"]


def write_readme(torch_accuracy: Optional[float] = None) -> str:
    """Write README.md from the files present (node counts, ops and accuracies measured on them)."""
    rows = []
    for path in sorted(HERE.glob("*.onnx")):
        d = describe(path)
        ops = sorted(d["ops"].items(), key=lambda kv: (-kv[1], kv[0]))
        notable = ", ".join(f"**{op}** ×{n}" if op in NOTABLE else f"{op} ×{n}" for op, n in ops)
        verdict = parser_report(path)
        nodes = f"{d['nodes']}" + (f" ({d['top_nodes']} top level)" if d["nodes"] != d["top_nodes"] else "")
        rows.append(f"| `{d['file']}` | {d['doc']} | {d['opset']} / IR {d['ir']} | {nodes} | {notable} | "
                    f"{d['inputs']} → {d['outputs']} | {verdict or 'not checked'} | {d['kb']:.0f} KB |")
    data_rows = []
    for path in sorted(HERE.glob("digits_*.npz")):
        with np.load(path) as z:
            x, y = z["x"], z["y"]
            counts = np.bincount(y, minlength=10)
        data_rows.append(f"| `{path.name}` | `x` {x.dtype}{list(x.shape)} in [0, 1] (pixel / 16), "
                         f"`y` {y.dtype}{list(y.shape)} labels 0–9 (per class {counts.min()}–{counts.max()}), "
                         f"`index` int64[{len(y)}] rows in `load_digits()` | {path.stat().st_size / 1024:.0f} KB |")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file()) / 1024 / 1024
    lines = [
        "# trtlab model zoo",
        "",
        "Small ONNX models and data for tests, notebooks and studies. Every file here is written by "
        "`python data/make_models.py` (seeded, CPU only; it also rewrites this README from the files "
        "themselves). Load them with `trtlab.zoo.load(name)`; `trtlab.zoo.example_inputs(name)` makes "
        "deterministic feeds and `trtlab.zoo.digits(\"test\"|\"calib\")` returns the digits splits.",
        "",
        "All models: ai.onnx opset 17, IR version 8, `onnx.checker.check_model(full_check=True)` clean, "
        "unique non-empty node names (subgraph nodes included), runnable in ONNX Runtime on CPU. "
        "`digits_cnn` is trained; every other model has seeded random weights. Node counts include "
        "nodes inside Loop/If bodies. The parser column is the TensorRT ONNX parser's "
        "`supports_model_v2` verdict on this machine (TensorRT-RTX).",
        "",
        "| file | what it is / how it was made | opset | nodes | ops (notable ones in bold) | inputs → outputs "
        "| TensorRT parser | size |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Digits data",
        "",
        "scikit-learn's `load_digits` (1,797 8×8 images) split with stratified `train_test_split` "
        f"(seed {SEED}) into 1,197 training images (used to train `digits_cnn`, not shipped), 200 "
        "calibration images and 400 test images; the three splits are disjoint.",
        "",
        "| file | contents | size |",
        "|---|---|---|",
        *data_rows,
        "",
    ]
    x_test, y_test = load_split("test")
    lines += ["## Accuracy on `digits_test.npz`", ""]
    if torch_accuracy is not None:
        lines += [f"- `digits_cnn`, PyTorch after training: {torch_accuracy:.4f}"]
    for name in ("digits_cnn", "quantized_dynamic"):
        if (HERE / f"{name}.onnx").is_file():
            accuracy = digits_accuracy(onnx.load(str(HERE / f"{name}.onnx")), x_test, y_test)
            lines += [f"- `{name}`, ONNX Runtime CPU: {accuracy:.4f}"]
    lines += [""]
    lines += [f"Total size of `data/`: {total:.2f} MB.", ""]
    text = "\n".join(lines)
    (HERE / "README.md").write_text(text, encoding="utf-8")
    return text


def load_split(split: str) -> tuple:
    with np.load(HERE / f"digits_{split}.npz") as archive:
        return archive["x"], archive["y"]


def digits_accuracy(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def main(argv: Optional[Sequence[str]] = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="only rewrite README.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    if args.readme:
        write_readme()
        return 0

    splits = digits_splits()
    for split in ("calib", "test"):
        x, y, index = splits[split]
        np.savez_compressed(HERE / f"digits_{split}.npz", x=x, y=y, index=index.astype(np.int64))

    digits_proto, torch_acc = make_digits_cnn(splits)
    with tempfile.TemporaryDirectory() as tmp:
        quantized = make_quantized_dynamic(digits_proto, Path(tmp))

    builders = {
        "digits_cnn": lambda: digits_proto,
        "quantized_dynamic": lambda: quantized,
        "resnet_mini": lambda: make_resnet_mini(np.random.default_rng(SEED + 1)),
        "mobilenet_mini": lambda: make_mobilenet_mini(np.random.default_rng(SEED + 2)),
        "transformer_stack": lambda: make_transformer("transformer_stack", np.random.default_rng(SEED + 3),
                                                      layers=4, seq=16, d=32, heads=4, mlp=64),
        "transformer_large": lambda: make_transformer("transformer_large", np.random.default_rng(SEED + 4),
                                                      layers=48, seq=8, d=8, heads=2, mlp=16),
        "detection_postproc": lambda: make_detection_postproc(np.random.default_rng(SEED + 5)),
        "lstm_seq": lambda: make_lstm_seq(np.random.default_rng(SEED + 6)),
        "loop_model": lambda: make_loop_model(np.random.default_rng(SEED + 7)),
    }
    for name, build in builders.items():
        proto = build()
        onnx.save(proto, str(HERE / f"{name}.onnx"))
        validate(name, proto)

    print(write_readme(torch_acc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
