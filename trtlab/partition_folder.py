"""Reading back a partition folder written by :func:`trtlab.extract.write_partition`.

A folder holds one ONNX file per segment, the tables, ``partition.json`` and ``MANIFEST.json``.
Its weights are either in the folder (``weights.data``, ``--weights copy``) or referenced where
the model keeps them (``--weights reference``): ``partition.json`` then names that folder and
each referenced file's size and modification time. Every reader here checks them first, so a
moved, deleted or rewritten weight file is a clear :class:`~trtlab.errors.PartitionError`, never
a segment silently running on other weights.

>>> part = trtlab.read_partition("out/")                   # the Partition, its model loaded again
>>> hybrid = trtlab.build(part)
>>> seg = trtlab.partition_folder.segment_file("out/", 0)  # one segment file and its weights' folder
>>> sess = session(seg.proto, base_dir=seg.weights_dir)  # trtlab.backends.onnxruntime.session
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Union

from trtlab._lazy import lazy_import
from trtlab.errors import PartitionError

onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

__all__ = ["read_partition", "segment_file", "check_weights", "SegmentFile", "PARTITION_FILE"]

#: The partition's JSON in a partition folder.
PARTITION_FILE = "partition.json"

PathLike = Union[str, "os.PathLike[str]"]


def _rewrite_hint(folder: Path, record: Dict[str, Any], *, first: bool = True) -> str:
    source = (record.get("model_file") or {}).get("path") or "MODEL"
    return (f"{'W' if first else 'w'}rite the partition again from the model (trtlab partition {source} --out {folder} --force), "
            "and use --weights copy (write_partition(..., weights='copy')) for a folder that holds its "
            "own copy of the weights")


def _document(folder: Path) -> Dict[str, Any]:
    from trtlab import _io

    path = folder / PARTITION_FILE
    if not folder.is_dir():
        raise PartitionError(f"{folder} is not a folder; pass the folder written by trtlab partition --out "
                             "(or write_partition).")
    if not path.is_file():
        raise PartitionError(f"{folder} holds no {PARTITION_FILE}, so it is not a partition folder written by "
                             "trtlab partition --out (or write_partition). Pass that folder.")
    text = _io.read_text(path, what="Partition JSON", error=PartitionError)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PartitionError(f"{path} is not valid JSON ({exc}); the folder is damaged. Write the "
                             "partition again (trtlab partition MODEL --out DIR --force).") from None
    if not isinstance(doc, dict):
        raise PartitionError(f"{path} is not a trtlab partition. Write the partition again.")
    return doc


def _record(doc: Dict[str, Any], folder: Path) -> Dict[str, Any]:
    """The ``weights`` entry (folders written before it existed hold their weights: ``copy``)."""
    record = doc.get("weights")
    if record is None:
        return {"mode": "copy", "folder": None, "files": {}, "model_file": None}
    if not isinstance(record, dict) or record.get("mode") not in ("copy", "reference") or \
            not isinstance(record.get("files"), dict) or \
            (record["mode"] == "reference" and not isinstance(record.get("folder"), str)):
        raise PartitionError(f"{folder / PARTITION_FILE} has a malformed 'weights' entry ({record!r}); the "
                             "file was edited or damaged. Write the partition again.")
    return record


def _check_own_files(folder: Path, record: Dict[str, Any]) -> None:
    """Every file the manifest lists is there with its size (sizes only: nothing is hashed)."""
    from trtlab import _io

    path = folder / _io.MANIFEST
    if not path.is_file():
        return
    try:
        files = json.loads(_io.read_text(path, what="Manifest", error=PartitionError)).get("files", {})
    except (ValueError, AttributeError):
        raise PartitionError(f"{path} is damaged. {_rewrite_hint(folder, record)}.") from None
    for name, entry in files.items():
        try:
            size = os.stat(folder / name).st_size
        except OSError:
            raise PartitionError(f"{folder} is missing {name}, which the partition was written with. "
                                 f"{_rewrite_hint(folder, record)}.") from None
        if isinstance(entry, dict) and entry.get("bytes") not in (None, size):
            raise PartitionError(f"{folder / name} has {size} bytes, but was written with {entry['bytes']}: "
                                 f"it was changed or truncated. {_rewrite_hint(folder, record)}.")


def check_weights(folder: PathLike) -> Path:
    """Check the weights of the partition in ``folder``; returns the folder its segments'
    external data locations are relative to (``folder`` itself for a self-contained partition).

    For a reference partition every referenced file must exist in the recorded folder with the
    size and modification time it had when the partition was written (the files are not read).

    Raises
    ------
    PartitionError
        Not a partition folder; a file of the folder missing or resized; a referenced weight file
        moved, deleted or changed since the partition was written (the message names the fix).
    """
    folder = Path(folder)
    doc = _document(folder)
    return _check(folder, doc)


def _check(folder: Path, doc: Dict[str, Any]) -> Path:
    record = _record(doc, folder)
    _check_own_files(folder, record)
    if record["mode"] == "copy":
        return folder
    weights = Path(record["folder"])
    for location, expected in record["files"].items():
        path = weights / location
        try:
            st = os.stat(path)
        except OSError as exc:
            raise PartitionError(
                f"The partition in {folder} refers to weights in {path}, which cannot be read "
                f"({exc.strerror}): the model's data file was moved or deleted. Put it back, or "
                f"{_rewrite_hint(folder, record, first=False)}.") from None
        if not isinstance(expected, dict) or st.st_size != expected.get("bytes") or \
                st.st_mtime_ns != expected.get("mtime_ns"):
            was = expected if isinstance(expected, dict) else {}
            raise PartitionError(
                f"The partition in {folder} refers to weights in {path}, which changed since the partition "
                f"was written ({was.get('bytes')} bytes, mtime_ns {was.get('mtime_ns')} then; {st.st_size} "
                f"bytes, mtime_ns {st.st_mtime_ns} now), so its segments may no longer match the model. "
                f"{_rewrite_hint(folder, record)}.")
    return weights


def read_partition(folder: PathLike, model: Any = None) -> Any:
    """The :class:`~trtlab.partitioning.partitioner.Partition` written to ``folder`` by
    :func:`trtlab.extract.write_partition` (``trtlab partition --out``), ready for
    :func:`trtlab.build`.

    Parameters
    ----------
    folder
        The partition folder.
    model
        The partitioned model (a :class:`~trtlab.model.Model`, or anything :func:`trtlab.load`
        takes). Default: the model file recorded in ``partition.json``, loaded again; it must be
        unchanged (size and modification time) since the partition was written.

    Raises
    ------
    PartitionError
        See :func:`check_weights`; the recorded model file is missing or changed and no
        ``model`` was given; the partition does not fit ``model``.

    Examples
    --------
    >>> part = trtlab.read_partition("out/")
    >>> trtlab.build(part).run(feeds)
    """
    from trtlab.model import Model, load
    from trtlab.partitioning.partitioner import Partition

    folder = Path(folder)
    doc = _document(folder)
    weights_dir = _check(folder, doc)
    record = _record(doc, folder)
    if model is None:
        model = _recorded_model(folder, record)
    elif not isinstance(model, Model):
        model = load(model)
    if record["mode"] == "reference":
        from trtlab.weights import base_dir

        own = base_dir(model)
        if own is None or Path(own).resolve() != weights_dir.resolve():
            raise PartitionError(
                f"The partition in {folder} refers to weights in {weights_dir}, but the model given reads "
                f"its weights from {own}. Pass the model loaded from {weights_dir} (or no model), or "
                f"{_rewrite_hint(folder, record, first=False)}.")
    part = Partition._from_doc(doc, model)
    log.info("read partition of %s from %s (%d segment(s), weights: %s)", model.name, folder,
             len(part.segments), record["mode"])
    return part


def _recorded_model(folder: Path, record: Dict[str, Any]) -> Any:
    from trtlab.model import load

    source = record.get("model_file")
    if not isinstance(source, dict) or not source.get("path"):
        raise PartitionError(f"The partition in {folder} does not record its model's file (it was made "
                             "from a model in memory). Pass the model: read_partition(folder, model).")
    path = Path(source["path"])
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PartitionError(f"The partition in {folder} was made from {path}, which cannot be read "
                             f"({exc.strerror}). Pass the model: read_partition(folder, model).") from None
    if st.st_size != source.get("bytes") or st.st_mtime_ns != source.get("mtime_ns"):
        raise PartitionError(f"The partition in {folder} was made from {path}, which changed since "
                             f"({source.get('bytes')} bytes then, {st.st_size} now). "
                             f"{_rewrite_hint(folder, record)}.")
    return load(path)


@dataclass(frozen=True)
class SegmentFile:
    """One segment file of a partition folder, as ONNX Runtime and TensorRT read it.

    Attributes
    ----------
    path : pathlib.Path
        The segment's ``.onnx`` file in the partition folder.
    proto : onnx.ModelProto
        The segment model, external data left as references (not read).
    weights_dir : pathlib.Path
        The folder its external data locations are relative to: the partition folder (copy) or
        the model's folder (reference). Give it to ONNX Runtime
        (``trtlab.backends.onnxruntime.session.session(proto, base_dir=weights_dir)``).
    """

    path: Path
    proto: Any
    weights_dir: Path

    @property
    def parser_path(self) -> str:
        """The path to give TensorRT's ONNX parser with the segment's bytes
        (``parser.parse(data, path)``): a file name in :attr:`weights_dir`, where the parser
        looks for the external data."""
        return str(self.weights_dir / self.path.name)

    def model(self) -> Any:
        """The segment as a :class:`~trtlab.model.Model` whose external weights are read from
        :attr:`weights_dir`, for every trtlab step (``check_support``, ``partition``, ``build``,
        ``run_onnx``); nothing is read until a step needs a value."""
        from trtlab.model import Model

        return Model(self.proto, name=self.path.stem, path=self.path, base_dir=self.weights_dir)


def segment_file(folder: PathLike, index: int) -> SegmentFile:
    """Segment ``index`` of the partition in ``folder`` (its weights checked first).

    Raises
    ------
    PartitionError
        See :func:`check_weights`; no segment ``index``.
    """
    from trtlab import _io

    folder = Path(folder)
    doc = _document(folder)
    weights_dir = _check(folder, doc)
    names = sorted(p.name for p in folder.glob("*.onnx"))
    count = len(doc.get("segments") or [])
    width = max(2, len(str(max(count - 1, 0))))
    prefix = f"{index:0{width}d}_" if isinstance(index, int) and not isinstance(index, bool) else None
    found = [n for n in names if prefix is not None and n.startswith(prefix)]
    if prefix is None or not 0 <= index < count or len(found) != 1:
        raise PartitionError(f"No segment {index!r} in {folder}: it holds segments 0..{count - 1} ({names[:5]}...).")
    path = folder / found[0]
    data = _io.read_bytes(path, what="Segment model", error=PartitionError)
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise PartitionError(f"{path} is not an ONNX model ({exc}). {_rewrite_hint(folder, _record(doc, folder))}.") from exc
    return SegmentFile(path=path, proto=proto, weights_dir=weights_dir)
