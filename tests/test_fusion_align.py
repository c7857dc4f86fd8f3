"""trtlab.fusion.align: two engines of one network, paired layer by layer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from trtlab.errors import FusionError  # noqa: E402
from trtlab.backends.tensorrt.layers import align_engines, fusion  # noqa: E402
from trtlab.viz.engine_card import plot_alignment  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _rep(stem, **kw):
    return fusion(FIXTURES / f"{stem}.engine.graph.json",
                  profile=FIXTURES / f"{stem}.engine.profile.json", **kw)


@pytest.fixture(scope="module")
def tf():
    return _rep("tf_resnet50.fp16"), _rep("tf_resnet50.qat")


def _block(name):
    """The Keras block a TF layer name belongs to (``conv3_block2_1``), QAT prefix dropped."""
    m = re.search(r"resnet50/(?:quant_)?([a-z0-9_]+?)_(?:conv|relu|add|out|bn)\b", str(name))
    return m.group(1) if m else None


def test_tf_fp16_and_qat_align_on_most_layers(tf):
    a, b = tf
    # names alone cannot do it: the two exports share 18 of 309 node names
    assert len(set(a.onnx_to_layers) & set(b.onnx_to_layers)) == 18
    al = align_engines(a, b)
    assert al.coverage > 0.8
    assert al.running == (61, 62)
    pairs = al.pairs[al.pairs["how"] != "unmatched"]
    assert len(pairs) == al.matched
    # the pairs are right: the same Keras block on both sides
    blocks = [(_block(x), _block(y)) for x, y in zip(pairs["name_a"], pairs["name_b"])]
    known = [(x, y) for x, y in blocks if x and y]
    assert len(known) >= 50
    assert sum(x == y for x, y in known) / len(known) > 0.95
    # each layer of either engine appears once
    assert pairs["layer_a"].is_unique and pairs["layer_b"].is_unique
    assert len(al.pairs) == 61 + 62 - al.matched
    assert "coverage" in set(al.summary()["how"])


def test_alignment_by_metadata_survives_renamed_layers():
    doc = json.loads((FIXTURES / "controlnet_trt86.fp16.engine.graph.json").read_text())
    a = fusion(doc)
    renamed = json.loads(json.dumps(doc))
    for i, layer in enumerate(renamed["Layers"]):
        layer["Name"] = f"layer_{i}"
        for t in layer["Inputs"] + layer["Outputs"]:
            t["Name"] = "t_" + t["Name"]
    b = fusion(renamed)
    al = a.align(b)
    by_nodes = al.pairs[al.pairs["how"] == "onnx nodes"]
    with_meta = a.layers[(a.layers["mapping"] == "metadata") & a.layers["runs"] &
                         (a.layers["kind"] != "reformat")]
    assert len(by_nodes) == len(with_meta)
    assert (by_nodes["layer_a"] == by_nodes["layer_b"]).all()
    # and the rest (Myelin ranges, reformats) by topology and signature, on the same index
    rest = al.pairs[al.pairs["how"].isin(["signature", "family"])]
    assert (rest["layer_a"] == rest["layer_b"]).mean() > 0.9
    assert al.coverage > 0.95


def test_align_refuses_other_objects(tf):
    with pytest.raises(FusionError, match="two FusionReports"):
        align_engines(tf[0], tf[0].layers)


def test_alignment_plot(tf):
    al = align_engines(*tf)
    fig = plot_alignment(al, top=20)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == 20
    assert "aligned layers" in ax.get_title()
    plt.close("all")
