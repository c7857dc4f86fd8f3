"""Stand-in engine builders that run in TensorRT's build workers (module level, so they pickle).

Each has the builder signature ``(onnx_bytes, profile, settings) -> engine bytes`` and looks at
the ONNX it is given like TensorRT would, without TensorRT.
"""

from __future__ import annotations

import os
import signal
import time

import onnx


def _ops(data: bytes) -> set:
    return {n.op_type for n in onnx.load_from_string(data).graph.node}


def segfault_on_tanh(data, profile, settings=None):
    """Kills its own process with SIGSEGV when the network holds a Tanh, like a crash in libtensorrt."""
    if "Tanh" in _ops(data):
        os.kill(os.getpid(), signal.SIGSEGV)
    return b"engine:" + str(sorted(_ops(data))).encode()


def hang_on_tanh(data, profile, settings=None):
    """Never returns when the network holds a Tanh (a hung build)."""
    if "Tanh" in _ops(data):
        time.sleep(3600)
    return b"engine"


def refuse_tanh_and_abs(data, profile, settings=None):
    """Refuses Tanh and Abs with a builder message (a normal build failure)."""
    from trtlab.errors import BuildError

    bad = sorted(_ops(data) & {"Tanh", "Abs"})
    if bad:
        exc = BuildError(f"{bad[0]} has no implementation")
        exc.stage = "build"
        exc.errors = [f"{bad[0]} has no implementation"]
        raise exc
    return b"engine"
