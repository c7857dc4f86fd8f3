"""Pre-fusion view of every zoo model: each node of each TensorRT segment maps to a layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.tensorrt.layers import prefusion
from trtlab.model import load
from trtlab.partitioning.partitioner import partition

ZOO = sorted((Path(__file__).resolve().parent.parent / "data").glob("*.onnx"))

pytestmark = pytest.mark.skipif(not trt.info().parse,
                                reason="TensorRT's ONNX parser is not available here")


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
def test_every_segment_node_maps_to_a_layer_or_says_why(path, fold):
    model = load(path, fold_constants=fold)
    part = partition(model)
    segments = [s for s in part.segments if s.backend == "tensorrt"]
    assert segments, f"{path.stem}: no TensorRT segment"
    for seg in segments:
        rep = prefusion(part.segment_model(seg.index), progress=False)
        assert rep.stage == "pre-fusion"
        mapped = set(rep.onnx_to_layers)
        why = dict(zip(rep.unmapped["node"], rep.unmapped["reason"]))
        for node in seg.nodes:
            assert node in mapped or why.get(node), f"{path.stem}/{seg.name}: {node} unexplained"
        assert not (mapped & set(why)), "a node is both mapped and listed as unmapped"
        assert all(len(layers) >= 1 for layers in rep.onnx_to_layers.values())


def test_zoo_is_there():
    assert len(ZOO) >= 5, "the zoo models in data/ are missing"
