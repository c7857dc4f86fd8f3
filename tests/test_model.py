"""trtlab.load and Model: structure, views, and every kind of bad input."""

from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import onnx
import pytest

import factories as F
import trtlab
from trtlab.errors import ExternalDataError, InvalidModelError, ModelLoadError, TrtlabError
from trtlab.model import TrtlabWarning, WRITE_IR_VERSION


# -- sources ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["proto", "bytes", "path", "model"])
def test_load_from_every_source(kind, tmp_path):
    proto = F.conv_relu()
    if kind == "proto":
        src = proto
    elif kind == "bytes":
        src = proto.SerializeToString()
    elif kind == "path":
        src = tmp_path / "m.onnx"
        onnx.save(proto, src)
    else:
        src = trtlab.load(proto)
    m = trtlab.load(src)
    assert m.node_names == ["conv", "relu"]
    assert [t.name for t in m.inputs] == ["x"]
    assert m.inputs[0].shape == ("N", 3, 8, 8)
    assert m.tensor("c").shape == ("N", 4, 8, 8)


def test_node_table_and_macs():
    m = trtlab.load(F.mlp())
    df = m.nodes
    assert list(df.columns) == ["name", "op_type", "domain", "inputs", "outputs", "output_shapes",
                                "output_dtypes", "macs"]
    macs = dict(zip(df.name, df.macs))
    assert macs["mm1"] == 2 * 16 * 32
    assert macs["gemm2"] == 2 * 32 * 10
    assert macs["relu1"] == 0 and macs["softmax"] == 0
    conv = trtlab.load(F.conv_relu(batch=1)).nodes
    assert conv.loc[conv.name == "conv", "macs"].item() == 4 * 8 * 8 * 3 * 3 * 3
    assert df.loc[df.name == "gemm2", "output_shapes"].item() == [[2, 10]]
    assert df.loc[df.name == "gemm2", "output_dtypes"].item() == ["float"]


def test_graph_view_edges_carry_tensor_facts():
    m = trtlab.load(F.mlp())
    g = m.graph
    assert set(g.nodes) == set(m.node_names)
    e = g.edges["mm1", "add1"]
    assert e["tensor"] == "h0" and e["shape"] == (2, 32) and e["dtype"] == "float"
    assert e["bytes"] == 2 * 32 * 4
    assert g.nodes["gemm2"]["op_type"] == "Gemm"
    assert g.graph["inputs"] == ["x"] and g.graph["outputs"] == ["y"]


def test_op_histogram_counts():
    m = trtlab.load(F.mlp())
    h = m.op_histogram()
    assert h["count"].sum() == 5
    assert h.set_index("op_type").loc["Gemm", "macs"] == 640


def test_save_round_trip_and_ir_version_readable(tmp_path):
    proto = F.conv_relu(batch=1)
    proto.ir_version = 14  # what onnx >= 1.23 writes by default
    m = trtlab.load(proto)
    assert m.proto.ir_version <= WRITE_IR_VERSION
    out = m.save(tmp_path / "out.onnx")
    again = onnx.load(out)
    assert again.ir_version <= WRITE_IR_VERSION
    from trtlab.backends.onnxruntime.session import run_onnx

    y = run_onnx(out, {"x": np.ones((1, 3, 8, 8), np.float32)})["y"]
    assert y.shape == (1, 4, 8, 8)


def test_constant_folding_removes_constant_nodes():
    proto = F.mlp()
    k = onnx.helper.make_node("Constant", [], ["two"], name="two",
                              value=onnx.numpy_helper.from_array(np.array(2.0, np.float32)))
    mul = onnx.helper.make_node("Mul", ["y", "two"], ["y2"], name="mul")
    proto.graph.node.extend([k, mul])
    proto.graph.output[0].name = "y2"
    folded = trtlab.load(proto, fold_constants=True)
    kept = trtlab.load(proto)
    assert "two" in kept.node_names and "two" not in folded.node_names
    assert folded.is_constant("two") and kept.is_constant("two")
    assert float(kept.constant_value("two")) == 2.0


def test_external_data_loads_from_path(tmp_path):
    proto = F.mlp()
    expected = onnx.numpy_helper.to_array(proto.graph.initializer[0])
    path = tmp_path / "ext.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert path.stat().st_size < expected.nbytes  # the weights really are outside the file
    m = trtlab.load(path)
    np.testing.assert_array_equal(m.constant_value("w1"), expected)


def _fixes_needed():
    """Models load() changes before checking them (each a different change), and one it does not."""
    unsorted = F.mlp()
    nodes = list(unsorted.graph.node)[::-1]
    del unsorted.graph.node[:]
    unsorted.graph.node.extend(nodes)
    negative = F.conv_relu()
    negative.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    return {"as written": F.mlp(), "renamed": F.duplicate_names(), "IR-4 inputs": F.initializers_as_inputs(),
            "unsorted": unsorted, "negative dim": negative, "IR 3": F.old_opset()}


@pytest.mark.parametrize("which", list(_fixes_needed()))
def test_path_and_bytes_load_what_a_proto_loads(which, tmp_path):
    """A path or bytes source hands its bytes to the checker and shape inference while load()
    has changed nothing; the loaded model is the one a ModelProto source gives."""
    proto = _fixes_needed()[which]
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrtlabWarning)
        want = trtlab.load(proto)
        for got in (trtlab.load(path, weights="memory"), trtlab.load(proto.SerializeToString())):
            assert got.proto == want.proto, which
            assert got.notes == want.notes and got.renamed == want.renamed
        # by default, weights embedded in the file stay there: the same model, values read from the file
        left = trtlab.load(path)
        big = any(len(t.raw_data) >= trtlab.model.LEAVE_MIN_BYTES for t in want.initializers.values())
        assert any("read from the model file m.onnx" in n for n in left.notes) == big
        assert left.node_names == want.node_names and left.renamed == want.renamed
        assert [n.SerializeToString() for n in left.proto.graph.node] == \
            [n.SerializeToString() for n in want.proto.graph.node]
        assert left.initializers.keys() == want.initializers.keys()
        for name, tensor in want.initializers.items():
            np.testing.assert_array_equal(left.constant_value(name), onnx.numpy_helper.to_array(tensor))
    assert len(want.proto.graph.value_info) >= len(want.proto.graph.node) - 1  # shapes inferred


def _one_weight_model(tensor):
    """w (an initializer of 64 KiB, left out of the copy the checker sees) -> Identity -> y"""
    out = onnx.helper.make_tensor_value_info("y", tensor.data_type, list(tensor.dims))
    return F._model([onnx.helper.make_node("Identity", ["w"], ["y"], name="id")], [], [out], [tensor])


def _short(t):
    t.raw_data = t.raw_data[:-4]


def _twice(t):
    t.float_data.extend(np.zeros(16384, np.float32).tolist())


def _string(t):
    t.data_type = onnx.TensorProto.STRING


@pytest.mark.parametrize("tamper", [_short, _twice, _string])
def test_weights_the_checker_does_not_see_are_checked_as_it_would(tamper):
    """Large weights are left out of the checker's copy; what it would refuse in them still is."""
    w = onnx.numpy_helper.from_array(np.ones((128, 128), np.float32), "w")
    assert trtlab.load(_one_weight_model(w)).tensor("y").shape == (128, 128)
    tamper(w)
    proto = _one_weight_model(w)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(proto)
    with pytest.raises(InvalidModelError, match=r"'w'|tensor name: w\)"):
        trtlab.load(proto)


# -- real-world traps ----------------------------------------------------------------------------

def test_duplicate_and_empty_names_made_unique():
    m = trtlab.load(F.duplicate_names(), fold_constants=False)
    assert len(set(m.node_names)) == 3 and all(m.node_names)
    assert m.node_names[0] == "n"
    assert m.renamed and set(m.renamed.values()) == {"n", ""}
    assert any("renamed" in n for n in m.notes)


def test_initializers_listed_as_inputs_are_dropped():
    m = trtlab.load(F.initializers_as_inputs())
    assert [t.name for t in m.inputs] == ["x"]
    assert any("IR-4" in n for n in m.notes)


def test_reused_symbolic_dim_warns_and_renames():
    with pytest.warns(TrtlabWarning, match="assumes such axes are equal"):
        m = trtlab.load(F.square_symbolic())
    conflicts = m.symbolic_dim_conflicts()
    assert conflicts.iloc[0]["dim_param"] == "?" and list(conflicts.iloc[0]["axes"]) == [2, 3]
    fixed = m.rename_symbolic_dims()
    assert len(fixed.symbolic_dim_conflicts()) == 0
    assert fixed.inputs[0].shape == ("N", 3, "?", "x_dim3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrtlabWarning)
        again = trtlab.load(F.square_symbolic(), rename_symbolic_dims=True)
    assert len(again.symbolic_dim_conflicts()) == 0


def test_unsorted_nodes_are_sorted():
    proto = F.mlp()
    nodes = list(proto.graph.node)[::-1]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    m = trtlab.load(proto)
    assert m.node_names == ["mm1", "add1", "relu1", "gemm2", "softmax"]


# -- bad input -----------------------------------------------------------------------------------

def test_file_not_found(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as err:
        trtlab.load(tmp_path / "missing.onnx")
    assert isinstance(err.value, TrtlabError)


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is plain text, not a model\n" * 10)
    with pytest.raises(ModelLoadError, match="not an ONNX file"):
        trtlab.load(p)


def test_truncated_file(tmp_path):
    data = F.mlp().SerializeToString()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        trtlab.load(p)


def test_dangling_input():
    with pytest.raises(InvalidModelError, match="dangling input") as err:
        trtlab.load(F.dangling_input())
    assert "ghost" in str(err.value)


def test_cycle():
    with pytest.raises(InvalidModelError, match="cycle"):
        trtlab.load(F.cycle())


def test_checker_invalid_model():
    proto = F.mlp()
    proto.graph.node[0].op_type = "MatMull"
    with pytest.raises(InvalidModelError, match="ONNX checker"):
        trtlab.load(proto)


def test_checker_still_runs_when_an_output_has_unknown_rank():
    from onnx import helper

    def relu_model(**attrs):
        node = helper.make_node("Relu", ["x"], ["y"], name="relu", **attrs)
        return F._model([node], [F.vi("x", [2, 3])], [F.vi("y", None)])

    m = trtlab.load(relu_model(), shape_inference=False)
    assert m.outputs[0].shape is None  # the check leaves the rank unknown
    with pytest.raises(InvalidModelError, match="Unrecognized attribute: foo"):
        trtlab.load(relu_model(foo=3))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is empty \(0 bytes\)"):
        trtlab.load(p)


def test_run_onnx_reports_bad_paths_and_output_names(tmp_path):
    from trtlab.errors import InputError
    from trtlab.backends.onnxruntime.session import run_onnx

    p = tmp_path / "notes.onnx"
    p.write_text("this is plain text, not a model\n" * 10)
    with pytest.raises(ModelLoadError, match="not an ONNX file"):
        run_onnx(p, {})
    x = np.ones((2, 16), np.float32)
    with pytest.raises(InputError, match=r"\['nope'\] are not outputs.*\['y'\]"):
        run_onnx(trtlab.load(F.mlp()), {"x": x}, output_names=["nope"])


def test_opset_too_old_for_tensorrt_loads_and_says_so():
    m = trtlab.load(F.old_opset())
    assert any("opset 6" in n and "convert_version" in n for n in m.notes)


@pytest.mark.parametrize("cid", ["node/test_and2d", "pytorch-converted/test_Conv1d"])
def test_old_opset_cases_run_on_onnxruntime_unchanged(cid):
    """Opsets before TensorRT's parser (< 9): every node is a fallback node, the model runs."""
    from backend_cases import feeds, load_case

    case = load_case(cid)
    m = trtlab.load(case.model)
    assert m.opset < 9 and m.proto.opset_import[0].version == case.model.opset_import[0].version
    rules = trtlab.check_support(m, source="rules")
    assert not rules.frame["supported"].any()
    assert rules.frame["reason"].str.contains("older than TensorRT's ONNX parser").all()
    part = trtlab.partition(m, support=rules)
    assert all(s.is_fallback for s in part.segments)
    out = trtlab.build(part, progress=False, cache_dir=False).run(feeds(case))
    np.testing.assert_allclose(out[m.outputs[0].name], case.data_sets[0][1][0], rtol=1e-3, atol=1e-6)


def test_ir_version_newer_than_onnx():
    proto = F.mlp()
    proto.ir_version = onnx.IR_VERSION + 5
    with pytest.raises(ModelLoadError, match="IR version"):
        trtlab.load(proto)


def test_missing_external_data(tmp_path):
    proto = F.mlp()
    path = tmp_path / "ext.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ExternalDataError, match="weights.bin"):
        trtlab.load(path)


def test_unknown_source_type():
    with pytest.raises(ModelLoadError, match="cannot read a int"):
        trtlab.load(42)


def _torch():
    """PyTorch: the ``torch`` extra is part of what ``make test`` installs."""
    try:
        import torch
    except ImportError as exc:
        pytest.fail(f"the trtlab[torch] extra is not installed ({exc}); pip install 'trtlab[torch]'")
    return torch


def test_torch_module_without_example_inputs():
    torch = _torch()
    with pytest.raises(ModelLoadError, match="example inputs"):
        trtlab.load(torch.nn.Linear(4, 2))


def test_torch_module_exports():
    torch = _torch()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    m = trtlab.load(net, example_inputs=(torch.randn(2, 4),))
    assert "Gemm" in set(m.nodes.op_type) or "MatMul" in set(m.nodes.op_type)
    from trtlab.backends.onnxruntime.session import run_onnx

    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (y,) = run_onnx(m, {m.inputs[0].name: x}).values()
    np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_missing_names_the_extra(monkeypatch):
    class Module:  # looks like a torch.nn.Module by its class path
        pass

    Module.__module__ = "torch.nn.modules.module"
    fake = type("Net", (Module,), {})()
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(trtlab.errors.MissingDependencyError, match=r"trtlab\[torch\]"):
        trtlab.load(fake, example_inputs=(1,))


def test_qdq_models_are_not_folded():
    """Folding DequantizeLinear(int8 weight) would undo explicit quantization."""
    from onnx import TensorProto, helper

    wq = F.const("wq", np.array([[1, -2], [3, 4]], np.int8))
    scale = F.const("s", np.array(0.5, np.float32))
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq_w"),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    proto = F._model(nodes, [F.vi("x", [1, 2])], [F.vi("y", [1, 2])], [wq, scale])
    m = trtlab.load(proto, fold_constants=True)
    assert "dq_w" in m.node_names
    assert m.initializers["wq"].data_type == TensorProto.INT8


def test_constants_inside_if_branches_are_folded():
    """Folding reaches into If branches and keeps the results.

        x -> ReduceSum -> s > 0 -> If(then: x + (k * k), else: x - k) -> y   (k a branch Constant)
    """
    from onnx import helper

    def branch(op, name):
        k = helper.make_node("Constant", [], [f"{name}_k"], name=f"{name}_k",
                             value=onnx.numpy_helper.from_array(np.full(3, 2.0, np.float32)))
        sq = helper.make_node("Mul", [f"{name}_k", f"{name}_k"], [f"{name}_kk"], name=f"{name}_sq")
        out = helper.make_node(op, ["x", f"{name}_kk"], [f"{name}_out"], name=f"{name}_out")
        return helper.make_graph([k, sq, out], name, [], [F.vi(f"{name}_out", [2, 3])])

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("Add", "then"),
                         else_branch=branch("Sub", "else")),
    ]
    proto = F._model(nodes, [F.vi("x", [2, 3])], [F.vi("y", [2, 3])],
                     [F.const("zero", np.array(0.0, np.float32))])
    folded = trtlab.load(proto, fold_constants=True)
    kept = trtlab.load(proto, fold_constants=False)
    branches = [a.g for a in folded.node("if").attribute if a.type == onnx.AttributeProto.GRAPH]
    assert sorted([n.op_type for n in g.node] for g in branches) == [["Add"], ["Sub"]]
    from trtlab.backends.onnxruntime.session import run_onnx

    for sign in (1, -1):
        x = np.full((2, 3), sign, np.float32)
        np.testing.assert_array_equal(run_onnx(folded, {"x": x})["y"], run_onnx(kept, {"x": x})["y"])


# -- exact folding and old IR versions (ONNX backend test cases) -------------------------------

def _run(model, feeds):
    from trtlab.backends.onnxruntime.session import run_onnx

    return run_onnx(model, feeds, validate=False)


def test_load_keeps_the_model_as_written_by_default():
    """Shape(start=1) must keep computing dims 1.. (onnx-graphsurgeon's folding ignored start)."""
    from backend_cases import feeds, load_case

    case = load_case("node/test_shape_start_1")
    m = trtlab.load(case.model)
    assert [n.op_type for n in m.proto.graph.node] == ["Shape"]
    np.testing.assert_array_equal(_run(m, feeds(case))["y"], case.data_sets[0][1][0])


@pytest.mark.parametrize("cid", ["node/test_shape_start_1", "node/test_shape_end_1",
                                 "node/test_shape_start_negative_1", "node/test_attention_4d_expanded"])
def test_folding_is_exact_on_shape_subgraphs(cid):
    """Fed by a constant, Shape(start, end) folds to exactly what ONNX Runtime computes."""
    from backend_cases import feeds, load_case

    case = load_case(cid)
    proto = copy.deepcopy(case.model)
    if cid.startswith("node/test_shape"):
        # Make the data a constant so the Shape node is foldable.
        x = case.data_sets[0][0][0]
        proto.graph.initializer.append(onnx.numpy_helper.from_array(x, proto.graph.input[0].name))
        del proto.graph.input[0]
        proto.graph.node.append(onnx.helper.make_node("Identity", ["y"], ["y_out"], name="id"))
        proto.graph.node[0].output[0] = "y"
        proto.graph.output[0].name = "y_out"
        want = case.data_sets[0][1][0]
        m = trtlab.load(proto, fold_constants=True)
        assert [n.op_type for n in m.proto.graph.node] == ["Identity"]
        np.testing.assert_array_equal(_run(m, {})["y_out"], want)
        return
    m = trtlab.load(proto, fold_constants=True)
    assert len(m.proto.graph.node) < len(proto.graph.node)
    out = _run(m, feeds(case))
    for vi, want in zip(proto.graph.output, case.data_sets[0][1]):
        np.testing.assert_allclose(out[vi.name], want, rtol=1e-3, atol=1e-6)


def test_folding_leaves_huge_constants_computed():
    """ConstantOfShape([16384, 16384]) would be 1 GiB: it stays a node (no memory is taken)."""
    import resource

    from onnx import TensorProto, helper

    shape = F.const("shape", np.array([16384, 16384], np.int64))
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"], name="add")]
    proto = F._model(nodes, [F.vi("x", [1])], [F.vi("y", [1])], [shape])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m = trtlab.load(proto, fold_constants=True)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert "cos" in m.node_names and "sum" in m.node_names
    assert grown_kib < 256 * 1024


def test_folding_size_limit_is_a_knob():
    """A 64 MiB constant stays computed under the default limit and folds under a larger one."""
    from onnx import TensorProto, helper

    shape = F.const("shape", np.array([4096, 4096], np.int64))
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
             helper.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"], name="add")]
    proto = F._model(nodes, [F.vi("x", [1])], [F.vi("y", [1])], [shape])
    kept = trtlab.load(proto, fold_constants=True)
    assert "cos" in kept.node_names
    folded = trtlab.load(proto, fold_constants=True, fold_max_bytes=1 << 27)
    assert "cos" not in folded.node_names and "sum" not in folded.node_names
    x = {"x": np.ones(1, np.float32)}
    np.testing.assert_array_equal(_run(folded, x)["y"], _run(kept, x)["y"])


def test_folding_keeps_random_and_qdq_nodes():
    from onnx import helper

    nodes = [helper.make_node("RandomUniform", [], ["r"], name="rnd", shape=[2], seed=1.0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    m = trtlab.load(F._model(nodes, [F.vi("x", [2])], [F.vi("y", [2])]), fold_constants=True)
    assert "rnd" in m.node_names


@pytest.mark.parametrize("cid", ["light/light_resnet50", "light/light_squeezenet"])
def test_ir3_models_with_initializers_as_inputs_load_and_run(cid):
    """IR 3 requires initializers to be graph inputs; load raises the IR when it drops them."""
    from backend_cases import feeds, load_case

    case = load_case(cid)
    assert case.model.ir_version == 3
    m = trtlab.load(case.model)
    assert m.proto.ir_version >= 4
    assert any("IR version 3 raised to 4" in n for n in m.notes)
    out = _run(m, feeds(case))
    np.testing.assert_allclose(out[m.outputs[0].name], case.data_sets[0][1][0], rtol=1e-3, atol=1e-5)


# -- data propagation ------------------------------------------------------------------------------

def _shape_chain():
    """x[N,3,8] -> Shape -> Gather(0) -> Cast(float) -> Mul(x) ... no node reads a computed shape

    x -> Shape -> Gather(idx) -> Cast -> Add(c) -> y ; x -> Relu -> z
    """
    nodes = [
        onnx.helper.make_node("Shape", ["x"], ["s"], name="shape"),
        onnx.helper.make_node("Gather", ["s", "idx"], ["g"], name="gather", axis=0),
        onnx.helper.make_node("Cast", ["g"], ["gf"], name="cast", to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Add", ["gf", "c"], ["y"], name="add"),
        onnx.helper.make_node("Relu", ["x"], ["z"], name="relu"),
    ]
    inits = [onnx.numpy_helper.from_array(np.array([0, 2], np.int64), "idx"),
             onnx.numpy_helper.from_array(np.ones(2, np.float32), "c")]
    return F._model(nodes, [F.vi("x", ["N", 3, 8])], [F.vi("y", [2]), F.vi("z", ["N", 3, 8])], inits)


def test_data_propagation_is_skipped_only_where_it_cannot_change_a_shape():
    """load() runs ONNX's data propagation unless every node is one whose shape inference reads no
    computed shape (model._SHAPES_FROM_SHAPES); on such graphs, from the onnx backend test suite
    (its expanded function cases chain Shape, Gather, Concat ...) and a Shape chain, inference
    gives the same model with and without it."""
    from onnx.backend.test.case.node import collect_testcases
    from trtlab.model import _Nodes, _SHAPES_FROM_SHAPES

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cases = [c.model for c in collect_testcases(None)] + [_shape_chain()]
    compared = 0
    for proto in cases:
        if proto.functions or not _SHAPES_FROM_SHAPES.issuperset(n.op_type for n in proto.graph.node) \
                or any(n.domain not in ("", "ai.onnx") for n in proto.graph.node):
            assert _Nodes.of(proto.graph).data_prop
            continue
        assert not _Nodes.of(proto.graph).data_prop
        data = proto.SerializeToString()
        try:
            with_prop = onnx.shape_inference.infer_shapes(data, data_prop=True)
        except Exception:  # noqa: BLE001 - cases onnx itself cannot infer are not this test's
            continue
        assert with_prop == onnx.shape_inference.infer_shapes(data, data_prop=False), proto.graph.name
        compared += 1
    assert compared > 300, compared
    reshape = _shape_chain()
    reshape.graph.node[-1].op_type = "Reshape"  # a node that reads a shape: propagation stays on
    assert _Nodes.of(reshape.graph).data_prop


def test_load_restores_the_garbage_collector():
    """load() holds Python's cyclic collector off while it runs and restores it, also on error."""
    import gc

    assert gc.isenabled()
    trtlab.load(F.mlp())
    assert gc.isenabled()
    with pytest.raises(InvalidModelError):
        trtlab.load(F.cycle())
    assert gc.isenabled()
    gc.disable()
    try:
        trtlab.load(F.mlp())
        assert not gc.isenabled()  # a caller's choice is left alone
    finally:
        gc.enable()
