"""Colours, hatches and number formats shared by the graph drawings."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["TRT_PALETTE", "FALLBACK_COLOR", "NEUTRAL_COLOR", "MARK_STYLES", "mark_style",
           "segment_color", "segment_colors", "darker", "fmt_bytes", "fmt_macs", "short_op", "ellipsize"]

TRT_PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#bcbd22", "#8c564b", "#e377c2",
    "#aec7e8", "#98df8a",
)
FALLBACK_COLOR = "#c9c9c9"
NEUTRAL_COLOR = "#dbe7f3"
INPUT_COLOR = "#2b8a3e"
OUTPUT_COLOR = "#1c4f9c"
EDGE_COLOR = "#9a9a9a"
BOUNDARY_EDGE_COLOR = "#3a3a3a"
FUSION_COLOR = "#111111"

MARK_STYLES: Dict[str, Tuple[str, str, str]] = {
    "rejected": ("#c0392b", "////", "rejected (unsupported)"),
    "build_failed": ("#7b0000", "xx", "build failed"),
    "excluded": ("#6a3d9a", "\\\\\\\\", "excluded on request"),
    "pruned_small": ("#d35400", "...", "pruned: segment too small"),
    "pruned_no_mac": ("#d35400", "oo", "pruned: segment has no MAC op"),
}
OTHER_MARK = ("#555555", "--", "other decision")

_SHORT_OPS = {
    "BatchNormalization": "BatchNorm",
    "LayerNormalization": "LayerNorm",
    "InstanceNormalization": "InstNorm",
    "GroupNormalization": "GroupNorm",
    "GlobalAveragePool": "GlobalAvgPool",
    "ConvTranspose": "ConvT",
    "QuantizeLinear": "Quant",
    "DequantizeLinear": "Dequant",
    "ReduceMean": "ReduceMean",
    "ConstantOfShape": "ConstOfShape",
}


def mark_style(kind: str) -> Tuple[str, str, str]:
    """(edge colour, hatch, legend label) for a decision kind."""
    return MARK_STYLES.get(kind, OTHER_MARK)


def segment_color(backend: str, trt_rank: int) -> str:
    """Fill colour of a segment: grey for fallback, a distinct colour per accelerated segment.

    The first ``len(TRT_PALETTE)`` accelerated segments take the palette; later ones walk the
    hue circle by the golden angle with alternating saturation and lightness, so no two
    accelerated segments share a colour and neighbours in execution order differ clearly.
    """
    if backend == "fallback":
        return FALLBACK_COLOR
    if trt_rank < len(TRT_PALETTE):
        return TRT_PALETTE[trt_rank]
    import colorsys

    k = trt_rank - len(TRT_PALETTE)
    hue = (0.11 + k * 0.6180339887498949) % 1.0
    light = (0.46, 0.62, 0.54)[k % 3]
    sat = (0.62, 0.78)[(k // 3) % 2]
    r, g, b = colorsys.hls_to_rgb(hue, light, sat)
    return "#{:02x}{:02x}{:02x}".format(round(r * 255), round(g * 255), round(b * 255))


def segment_colors(segments: Iterable[Any]) -> List[str]:
    """Fill colour of each segment (objects with ``backend``), in one pass."""
    out: List[str] = []
    rank = 0
    for seg in segments:
        out.append(segment_color(seg.backend, rank))
        if seg.backend != "fallback":
            rank += 1
    return out


def darker(color: str, factor: float = 0.6) -> Tuple[float, float, float]:
    """A darker shade of ``color`` for outlines."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r * factor, g * factor, b * factor)


def fmt_bytes(n: Optional[float]) -> str:
    """Human-readable byte count (``"?"`` when unknown)."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_macs(n: int) -> str:
    """Human-readable multiply-accumulate count."""
    if n <= 0:
        return "0 MAC"
    for unit, scale in (("GMAC", 1e9), ("MMAC", 1e6), ("kMAC", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} MAC"


def short_op(op_type: str) -> str:
    """A compact op-type label for node boxes."""
    return _SHORT_OPS.get(op_type, op_type)


def ellipsize(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis."""
    text = str(text).replace("\n", " ")
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"
