"""Cases of the ONNX backend test suite shipped inside the onnx wheel, by id.

``node/<name>`` are the node cases of ``onnx.backend.test.case.node.collect_testcases(None)``;
``light/<name>``, ``simple/<name>``, ``pytorch-converted/<name>`` and ``pytorch-operator/<name>``
are the model cases under ``onnx/backend/test/data``. Unit tests take their regression inputs
from here (``load_case("node/test_shape_start_1")``); the conformance tier runs them all.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

MODEL_KINDS = ("light", "simple", "pytorch-converted", "pytorch-operator")


def _data_dir() -> Path:
    import onnx.backend.test

    return Path(onnx.backend.test.__file__).resolve().parent / "data"


_NODE_CASES: Dict[str, Any] = {}


def _node_cases() -> Dict[str, Any]:
    if not _NODE_CASES:
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            for case in collect_testcases(None):
                _NODE_CASES.setdefault(case.name, case)
    return _NODE_CASES


def case_ids() -> List[str]:
    """Every case of the suite: ``node/<name>`` and ``<kind>/<name>``, in a fixed order."""
    ids = [f"node/{name}" for name in sorted(_node_cases())]
    root = _data_dir()
    for kind in MODEL_KINDS:
        if kind == "light":
            ids += [f"light/{p.stem}" for p in sorted((root / kind).glob("*.onnx"))]
        else:
            ids += [f"{kind}/{p.name}" for p in sorted((root / kind).iterdir())
                    if (p / "model.onnx").exists()]
    return ids


def quick_ids(ids: Sequence[str], every: int = 12) -> List[str]:
    """A deterministic subset for development: every ``every``-th node case, every model case
    of ``light`` and every third other model case."""
    out = []
    node_i = model_i = 0
    for cid in ids:
        kind = cid.split("/", 1)[0]
        if kind == "node":
            node_i += 1
            if node_i % every == 1:
                out.append(cid)
        elif kind == "light":
            out.append(cid)
        else:
            model_i += 1
            if model_i % 3 == 1:
                out.append(cid)
    return out


def _normalize(value: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def _read_value(path: str, type_proto: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    data = Path(path).read_bytes()
    if type_proto is not None and type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return numpy_helper.to_list(seq)
    if type_proto is not None and type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return numpy_helper.to_optional(opt)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(data)
    return numpy_helper.to_array(tensor)


@dataclass
class Case:
    """One suite case: the model, its data sets and the suite's tolerance."""

    id: str
    model: Any
    data_sets: List[Tuple[List[Any], List[Any]]]
    rtol: float = 1e-3
    atol: float = 1e-7


def _light_input(vi: Any) -> np.ndarray:
    """The ONNX runner's deterministic input for ``light`` models (arange / n)."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def load_case(cid: str) -> Case:
    import onnx

    kind, name = cid.split("/", 1)
    if kind == "node":
        c = _node_cases()[name]
        sets = [([_normalize(x) for x in ins], [_normalize(y) for y in outs]) for ins, outs in c.data_sets]
        model = onnx.ModelProto()
        model.CopyFrom(c.model)  # callers may edit it; the collected case stays as shipped
        return Case(cid, model, sets, c.rtol, c.atol)
    root = _data_dir() / kind
    if kind == "light":
        model = onnx.load(str(root / f"{name}.onnx"))
        inits = {t.name for t in model.graph.initializer}
        ins = [_light_input(vi) for vi in model.graph.input if vi.name not in inits]
        outs = [_read_value(p, None) for p in sorted(glob.glob(str(root / f"{name}_output_*.pb")))]
        return Case(cid, model, [(ins, outs)])
    folder = root / name
    model = onnx.load(str(folder / "model.onnx"))
    inits = {t.name for t in model.graph.initializer}
    real_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    sets = []
    for d in sorted(folder.glob("test_data_set_*")):
        n_in = len(list(d.glob("input_*.pb")))
        n_out = len(list(d.glob("output_*.pb")))
        ins = [_read_value(str(d / f"input_{i}.pb"), real_inputs[i].type if i < len(real_inputs) else None)
               for i in range(n_in)]
        outs = [_read_value(str(d / f"output_{i}.pb"), model.graph.output[i].type) for i in range(n_out)]
        sets.append((ins, outs))
    rtol, atol = 1e-3, 1e-7
    meta = folder / "data.json"
    if meta.exists():
        import json

        spec = json.loads(meta.read_text())
        rtol, atol = spec.get("rtol", rtol), spec.get("atol", atol)
    return Case(cid, model, sets, rtol, atol)


def feeds(case: Case, index: int = 0) -> Dict[str, Any]:
    """Input name -> value of data set ``index`` (initializers listed as inputs skipped)."""
    inits = {t.name for t in case.model.graph.initializer}
    names = [vi.name for vi in case.model.graph.input if vi.name not in inits]
    return {n: v for n, v in zip(names, case.data_sets[index][0]) if v is not None}
