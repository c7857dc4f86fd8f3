"""Many short labels drawn as one path collection.

matplotlib draws every ``Text`` on its own (layout, then each glyph rasterized): about 2 ms per
label, which dominates a drawing with thousands of labelled boxes. Here each distinct character
is turned into an outline once (``TextPath``), labels are assembled from those outlines with
NumPy, and all labels become a single ``PathCollection`` sized in points, so they keep their
size at any dpi and render in one pass.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["label_collection"]

_CACHE: Dict[Tuple[str, float, str], Tuple[np.ndarray, np.ndarray, float]] = {}


def _glyph(ch: str, size: float, weight: str) -> Tuple[np.ndarray, np.ndarray, float]:
    key = (ch, size, weight)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath, TextToPath

    prop = FontProperties(size=size, weight=weight)
    if ch == " ":
        verts, codes = np.zeros((0, 2)), np.zeros(0, dtype=np.uint8)
    else:
        path = TextPath((0, 0), ch, prop=prop)
        verts, codes = np.asarray(path.vertices, dtype=float), np.asarray(path.codes, dtype=np.uint8)
    width = TextToPath().get_text_width_height_descent(ch, prop, ismath=False)[0]
    if ch == " ":
        width = TextToPath().get_text_width_height_descent("a a", prop, ismath=False)[0] - \
            2 * TextToPath().get_text_width_height_descent("a", prop, ismath=False)[0]
    _CACHE[key] = (verts, codes, float(width))
    return _CACHE[key]


def _label_path(text: str, size: float, weight: str, dy: float = 0.0) -> Tuple[Any, float]:
    from matplotlib.path import Path

    verts: List[np.ndarray] = []
    codes: List[np.ndarray] = []
    x = 0.0
    for ch in text:
        v, c, w = _glyph(ch, size, weight)
        if len(v):
            verts.append(v + (x, 0.0))
            codes.append(c)
        x += w
    if not verts:
        return Path(np.zeros((1, 2)), [Path.MOVETO]), x
    allv = np.concatenate(verts)
    allv[:, 0] -= x / 2.0                    # centred horizontally
    allv[:, 1] -= size * 0.36 - dy           # centred on the x-height, shifted by dy points
    return Path(allv, np.concatenate(codes)), x


def _label_paths(texts: Sequence[str], size: float, weight: str,
                 dy: float) -> List[Tuple[Any, float]]:
    """:func:`_label_path` for many labels of one size, assembled with array operations."""
    from matplotlib.path import Path

    if not texts:
        return []
    glyphs = {ch: _glyph(ch, size, weight) for ch in set("".join(texts))}
    if not glyphs:
        return [(Path(np.zeros((1, 2)), [Path.MOVETO]), 0.0) for _ in texts]
    chars = [ch for t in texts for ch in t]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    widths = np.fromiter((glyphs[ch][2] for ch in chars), dtype=float, count=len(chars))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    running = np.concatenate([[0.0], np.cumsum(widths)])     # width before each character
    label_of = np.repeat(np.arange(len(texts)), lengths)
    label_width = np.bincount(label_of, weights=widths, minlength=len(texts))
    # x of each character: its offset within its label, minus half the label's width.
    x0 = running[:-1] - running[starts][label_of] - label_width[label_of] / 2
    counts = np.fromiter((len(glyphs[ch][0]) for ch in chars), dtype=np.int64, count=len(chars))
    if counts.sum() == 0:
        return [(Path(np.zeros((1, 2)), [Path.MOVETO]), float(w)) for w in label_width]
    verts = np.concatenate([glyphs[ch][0] for ch in chars if len(glyphs[ch][0])])
    codes = np.concatenate([glyphs[ch][1] for ch in chars if len(glyphs[ch][1])])
    verts = verts + np.column_stack([np.repeat(x0, counts),
                                     np.full(int(counts.sum()), dy - size * 0.36)])
    per_label = np.bincount(label_of, weights=counts, minlength=len(texts)).astype(np.int64)
    cuts = np.cumsum(per_label)[:-1]
    out = []
    for v, c, n, w in zip(np.split(verts, cuts), np.split(codes, cuts), per_label, label_width):
        out.append((Path(v, c) if n else Path(np.zeros((1, 2)), [Path.MOVETO]), float(w)))
    return out


def label_collection(ax: Any, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], *,
                     size: Any = 8.0, colors: Any = "#111111", weight: str = "normal",
                     dy: float = 0.0, background: Any = None, zorder: float = 5,
                     gid: str = "labels") -> Any:
    """Draw ``texts`` centred at data points ``(xs, ys)`` in ``ax``, ``size`` points high.

    ``size`` is one size or one per label (rounded to quarter points so glyphs are shared);
    ``dy`` shifts every label up by that many points; ``background`` (a colour) puts a box of
    that colour behind each label. Returns the ``PathCollection`` of the glyphs (its
    ``labels_`` attribute holds the strings, in order).
    """
    from matplotlib.collections import PathCollection
    from matplotlib.path import Path
    from matplotlib.transforms import Affine2D

    sizes = (np.full(len(texts), float(size)) if np.ndim(size) == 0
             else np.round(np.asarray(size, dtype=float) * 4) / 4)
    built = (_label_paths(texts, float(sizes[0]), weight, dy) if np.ndim(size) == 0
             else [_label_path(t, float(z), weight, dy) for t, z in zip(texts, sizes)])
    paths = [p for p, _ in built]
    fig = ax.figure
    offsets = np.column_stack([xs, ys]) if len(paths) else None
    to_display = Affine2D().scale(1.0 / 72.0) + fig.dpi_scale_trans
    if background is not None and paths:
        boxes = []
        for (_, w), z in zip(built, sizes):
            pad = z * 0.25
            x0, x1 = -w / 2 - pad, w / 2 + pad
            y0, y1 = dy - z * 0.55 - pad * 0.4, dy + z * 0.55 + pad * 0.4
            boxes.append(Path([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], closed=True))
        back = PathCollection(boxes, offsets=offsets, offset_transform=ax.transData,
                              facecolors=background, edgecolors="none", linewidths=0,
                              zorder=zorder - 0.1, gid=f"{gid}_background")
        back.set_transform(to_display)
        ax.add_collection(back, autolim=False)
    coll = PathCollection(paths, offsets=offsets, offset_transform=ax.transData,
                          facecolors=colors, edgecolors="none", linewidths=0, zorder=zorder,
                          gid=gid)
    coll.set_transform(to_display)
    coll.labels_ = list(texts)
    ax.add_collection(coll, autolim=False)
    return coll
