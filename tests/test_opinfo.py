"""The op-knowledge tables of trtlab.opinfo."""

from __future__ import annotations

import onnx

from trtlab.opinfo import ElemType


def test_element_types_match_the_installed_onnx():
    ours = {k: v for k, v in vars(ElemType).items() if k.isupper() and isinstance(v, int)}
    assert len(ours) == 28
    for name, value in ours.items():
        assert getattr(onnx.TensorProto, name) == value, name
    packed = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")}
    assert ElemType.SUB_BYTE == packed
