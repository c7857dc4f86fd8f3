"""TensorRT build-failure isolation: bisection candidates built in the worker pool.

The search itself is backend-independent (:mod:`trtlab.backends.isolation`); this module gives
it TensorRT builds: each candidate sub-model gets a profile from the observed shapes (or shape
inference over the segment's profile) and all candidates of a round build in parallel.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

import onnx

from trtlab.backends.base import Profile
from trtlab.backends.isolation import isolate, nearest_original, submodel, value_infos
from trtlab.backends.tensorrt.profiles import segment_profile, shape_table
from trtlab.errors import BuildError

log = logging.getLogger(__name__)

__all__ = ["isolate_build_failure", "submodel", "_nearest_original"]

_nearest_original = nearest_original


def isolate_build_failure(proto: onnx.ModelProto, profile: Optional[Profile],
                          try_build: Callable[[bytes, Optional[Profile]], None],
                          *, progress: bool = False) -> Tuple[str, str]:
    """The first node whose addition makes a segment fail to build, and the builder's error.

    ``try_build(onnx_bytes, profile)`` raises :class:`BuildError` when the build fails; it runs
    in this process, one candidate at a time (see :meth:`TensorRTBackend.isolate` for the
    pooled, parallel search).
    """
    ranges = dict(profile or ())
    table = shape_table(proto, ranges) if ranges else {}

    def try_many(subs: List[onnx.ModelProto]) -> List[Optional[str]]:
        out: List[Optional[str]] = []
        for sub in subs:
            try:
                try_build(sub.SerializeToString(), segment_profile(sub, table, ranges))
                out.append(None)
            except BuildError as exc:
                out.append("; ".join(getattr(exc, "errors", None) or [str(exc)]))
        return out

    culprits, _ = isolate(proto, try_many, progress=progress, max_culprits=1)
    return culprits[0]


def candidate_profiles(proto: onnx.ModelProto, profile: Optional[Profile], facts: Dict[str, Tuple],
                       ) -> Callable[[onnx.ModelProto], Optional[Profile]]:
    """Profiles for bisection candidates of a segment: observed ranges first, then shape inference."""
    ranges = dict(profile or ())
    table = dict(shape_table(proto, ranges)) if ranges else {}
    table.update(facts)

    def for_sub(sub: onnx.ModelProto) -> Optional[Profile]:
        return segment_profile(sub, table, ranges)

    return for_sub


__all__ += ["value_infos", "candidate_profiles"]
