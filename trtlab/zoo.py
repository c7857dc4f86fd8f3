"""The model zoo shipped with trtlab.

The zoo is a set of small ONNX models (see ``data/README.md``) plus the digits test and
calibration splits. The repository keeps them in ``data/``; the wheel carries the same files as
package data (``trtlab/_zoo_data``, found with :mod:`importlib.resources` by
:func:`trtlab.config.data_dir`), so the zoo works from any folder after ``pip install``.
``TRTLAB_DATA`` points at another folder with the same layout.

Examples
--------
>>> from trtlab import zoo
>>> zoo.names()[:3]
['detection_postproc', 'digits_cnn', 'loop_model']
>>> x, y = zoo.digits("test")
>>> feeds = zoo.example_inputs("transformer_stack", batch=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from trtlab import config
from trtlab.errors import InputError, ModelLoadError
from trtlab.feeds import random_array

if TYPE_CHECKING:
    from trtlab.model import Model

__all__ = ["data_dir", "names", "path", "load", "digits", "example_inputs"]

DATA_ENV = "TRTLAB_DATA"
DIGITS_SPLITS = ("test", "calib")
_DIGITS_MODELS = ("digits_cnn", "quantized_dynamic")


def data_dir() -> Path:
    """Folder holding the zoo: ``$TRTLAB_DATA`` if set, else the zoo shipped with trtlab.

    Raises
    ------
    ModelLoadError
        If the folder does not exist.
    """
    folder = config.data_dir()
    if not folder.is_dir():
        where = f"{DATA_ENV}={folder}" if config.data_dir() != config.data_dir({}) else "shipped with trtlab"
        raise ModelLoadError(
            f"Model zoo folder {folder} not found ({where}). The zoo ships inside the trtlab wheel "
            f"and in the repository's data/ folder: reinstall trtlab (pip install trtlab), point "
            f"{DATA_ENV} at a folder with the zoo files, or unset {DATA_ENV}.")
    return folder


def names() -> List[str]:
    """Names of the zoo models present (ONNX file stems), sorted."""
    return sorted(p.stem for p in data_dir().glob("*.onnx"))


def path(name: str) -> Path:
    """Path of zoo model ``name`` (with or without the ``.onnx`` suffix).

    Raises
    ------
    ModelLoadError
        If no such model is in the zoo; the message lists the available names.
    """
    stem = name[:-5] if isinstance(name, str) and name.endswith(".onnx") else name
    available = names()
    if not isinstance(stem, str) or stem not in available:
        raise ModelLoadError(
            f"No zoo model named {name!r} in {data_dir()}. Available: {', '.join(available) or 'none'}. "
            "Pass one of these names, or trtlab.load(path) for a model outside the zoo.")
    return data_dir() / f"{stem}.onnx"


def load(name: str, **kwargs: Any) -> "Model":
    """Load zoo model ``name`` with :func:`trtlab.model.load`; ``kwargs`` are passed through."""
    from trtlab.model import load as load_model

    return load_model(path(name), **kwargs)


def digits(split: str = "test") -> Tuple[np.ndarray, np.ndarray]:
    """The digits ``"test"`` (400 images) or ``"calib"`` (200 images) split.

    Returns
    -------
    x : numpy.ndarray
        float32 images, shape (N, 1, 8, 8), pixel values / 16 in [0, 1] (what ``digits_cnn`` expects).
    y : numpy.ndarray
        int64 labels 0-9, shape (N,).
    """
    if split not in DIGITS_SPLITS:
        raise InputError(f"Unknown digits split {split!r}. Available: {', '.join(DIGITS_SPLITS)}.")
    file = data_dir() / f"digits_{split}.npz"
    if not file.is_file():
        raise ModelLoadError(f"Digits split file {file} not found. The zoo shipped with trtlab has it: "
                             f"point {DATA_ENV} at a folder that has it, or unset {DATA_ENV}.")
    with np.load(file) as archive:
        return archive["x"].astype(np.float32), archive["y"].astype(np.int64)


def example_inputs(name: str, batch: int = 1, seed: int = 0,
                   dims: Optional[Mapping[str, int]] = None) -> Dict[str, np.ndarray]:
    """Deterministic feeds for every input of zoo model ``name``.

    Symbolic dimension ``batch`` takes ``batch``; any other symbolic dimension must be given in
    ``dims``. Float inputs are standard normal, integer inputs uniform in [0, 10), booleans fair
    coin flips, all from ``numpy.random.default_rng(seed)``. The digits models get real test
    images, chosen by ``seed``.

    Raises
    ------
    InputError
        If ``batch`` is not a positive integer or a symbolic dimension has no value.
    """
    import onnx
    from onnx import helper

    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}.")
    sizes = {"batch": int(batch), **dict(dims or {})}
    rng = np.random.default_rng(seed)
    model_path = path(name)
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    feeds: Dict[str, np.ndarray] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.dim_param in sizes:
                shape.append(int(sizes[dim.dim_param]))
            else:
                label = dim.dim_param or "unnamed"
                raise InputError(
                    f"Input {value.name!r} of zoo model {name!r} has symbolic dimension {label!r} "
                    f"(axis {axis}) with no value. Pass dims={{{label!r}: N}}; given: {sorted(sizes)}.")
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if model_path.stem in _DIGITS_MODELS and dtype == np.float32 and shape[1:] == [1, 8, 8]:
            x, _ = digits("test")
            feeds[value.name] = x[rng.permutation(len(x))[np.arange(shape[0]) % len(x)]]
        else:
            feeds[value.name] = random_array(rng, shape, dtype, f"{value.name}' of zoo model '{name}")
    return feeds
