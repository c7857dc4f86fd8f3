"""The op-knowledge tables of trtlab.opinfo."""

from __future__ import annotations

import onnx

from trtlab.opinfo import ElemType


def test_element_types_match_the_installed_onnx():
    ours = {k: v for k, v in vars(ElemType).items() if k.isupper()}
    assert len(ours) == 24
    for name, value in ours.items():
        assert getattr(onnx.TensorProto, name) == value, name
