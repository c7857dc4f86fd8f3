"""Precision sweeps: models x configurations as independent jobs on Dask, resumable from disk.

:func:`sweep` evaluates a grid of configurations (precision, calibration method, calibration-set
size, nodes kept in FP32, batch size) for several models. Each (model, configuration) is one job
that runs the public pipeline on a Dask worker: :func:`trtlab.to_fp16` or
:func:`trtlab.quantize_int8`, :func:`trtlab.partition` and :func:`trtlab.build` (or ONNX Runtime
when TensorRT cannot build here), the outputs over the evaluation data scored by a pluggable
metric (:mod:`trtlab.study.metrics`) and compared with FP32, and :func:`trtlab.benchmark` for
latency. The result is one tidy DataFrame, one row per model x configuration.

Every finished job is written to ``cache_dir`` (one JSON file, temp + fsync + rename) under a key
of its inputs: the model's hash, the configuration, the data's hash, the metric and the versions
of trtlab, TensorRT and ONNX Runtime. A rerun reads finished jobs back and computes only the
others, so a crash, a kernel restart or a lost worker loses at most the jobs in flight. A job
that raises is a row with ``status = "error"`` and the error, not a dead study.

With no ``client`` an embedded ``LocalCluster`` of worker processes sized to the machine runs the
jobs; with a ``distributed.Client`` or a scheduler address the same call runs on that cluster
(each worker builds its own engines; trtlab must be installed there).

Examples
--------
>>> grid = sweep_grid(precisions=("fp32", "fp16", "int8"), methods=("entropy", "minmax"),
...                   calibration_sizes=(64, 200))
>>> len(grid)
6
>>> table = sweep({"digits": "data/digits_cnn.onnx"}, grid,                     # doctest: +SKIP
...               {"inputs": x_test, "targets": y_test, "calibration": x_calib})
>>> table = sweep(models, grid, data, client="tcp://gpu-head:8786")             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trtlab.errors import MissingDependencyError, TrtlabError

log = logging.getLogger(__name__)

__all__ = ["sweep", "sweep_grid", "sweep_results", "SweepConfig", "SweepData", "SweepRun", "SweepError",
           "JobStore", "RESULT_COLUMNS", "PRECISIONS"]

#: Version of the stored job records; a change makes every stored job a miss.
JOB_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
RUNNERS = ("auto", "hybrid", "onnxruntime")
RESULT_COLUMNS = ["model", "config", "precision", "method", "calibration_size", "fp32_nodes", "batch_size",
                  "metric", "target", "accuracy", "accuracy_delta", "cosine", "max_abs", "latency_ms",
                  "size_bytes", "engine_bytes", "executor", "tensorrt", "status", "error", "seconds", "worker",
                  "cached", "key"]


class SweepError(TrtlabError, ValueError):
    """A sweep was asked for something it cannot do: bad grid, models, data or cluster."""


# ----------------------------------------------------------------------------------------------
# what to run
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    """One point of a sweep grid.

    Attributes
    ----------
    precision
        ``"fp32"``, ``"fp16"`` or ``"int8"``.
    method
        INT8 calibration method (``"entropy"``, ``"minmax"``, ``"percentile"``); INT8 only.
    calibration_size
        INT8: calibrate on the first this many calibration samples (``None``: all of them).
    keep_fp32_nodes
        Nodes held in FP32 (FP16 and INT8).
    batch_size
        Evaluation batch size for dynamic-batch models (``None``: 64).
    """

    precision: str = "fp32"
    method: Optional[str] = None
    calibration_size: Optional[int] = None
    keep_fp32_nodes: Tuple[str, ...] = ()
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        from trtlab.precision import METHODS

        object.__setattr__(self, "keep_fp32_nodes", tuple(self.keep_fp32_nodes))
        if self.precision not in PRECISIONS:
            raise SweepError(f"Unknown precision {self.precision!r} in a sweep config; use one of {PRECISIONS}.")
        if self.precision == "int8":
            if self.method is None:
                object.__setattr__(self, "method", "entropy")
            if self.method not in METHODS:
                raise SweepError(f"Unknown calibration method {self.method!r}; use one of {METHODS}.")
        elif self.method is not None or self.calibration_size is not None:
            raise SweepError(f"method= and calibration_size= apply to INT8 only; got them with {self.precision}.")
        for name in ("calibration_size", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise SweepError(f"{name} must be a positive integer or None, got {value!r}.")

    @property
    def name(self) -> str:
        """Short label: ``fp32``, ``fp16``, ``int8 entropy n=64``, ``... + 2 fp32 node(s)``, ``... b=8``."""
        label = self.precision
        if self.precision == "int8":
            label += f" {self.method}" + (f" n={self.calibration_size}" if self.calibration_size else "")
        if self.keep_fp32_nodes:
            label += f" + {len(self.keep_fp32_nodes)} fp32 node(s)"
        if self.batch_size:
            label += f" b={self.batch_size}"
        return label

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["keep_fp32_nodes"] = list(self.keep_fp32_nodes)
        return d


def sweep_grid(precisions: Iterable[str] = PRECISIONS, *,
               methods: Iterable[str] = ("entropy", "minmax", "percentile"),
               calibration_sizes: Iterable[Optional[int]] = (None,),
               keep_fp32_nodes: Iterable[Sequence[str]] = ((),),
               batch_sizes: Iterable[Optional[int]] = (None,)) -> List[SweepConfig]:
    """The product of the given settings as :class:`SweepConfig` objects, meaningless points left out.

    Methods and calibration sizes multiply INT8 only; FP32 ignores ``keep_fp32_nodes``.

    >>> [c.name for c in sweep_grid(("fp16", "int8"), methods=("minmax",), calibration_sizes=(32, 128))]
    ['fp16', 'int8 minmax n=32', 'int8 minmax n=128']
    """
    configs: List[SweepConfig] = []
    for precision, keep, batch in itertools.product(list(precisions), list(keep_fp32_nodes), list(batch_sizes)):
        keep = tuple(keep)
        if precision == "fp32" and keep:
            continue
        if precision == "int8":
            for method, size in itertools.product(list(methods), list(calibration_sizes)):
                configs.append(SweepConfig("int8", method, size, keep, batch))
        else:
            configs.append(SweepConfig(precision, None, None, keep, batch))
    return list(dict.fromkeys(configs))


@dataclass(frozen=True)
class SweepData:
    """Data of one model in a sweep.

    Attributes
    ----------
    inputs
        Evaluation inputs: one array (single-input models), a dict input name -> array (batch on
        axis 0) or a list of feed dicts.
    targets
        What the metric scores against (labels, boxes, strings, embeddings); ``None`` scores
        agreement with the FP32 model's outputs.
    calibration
        INT8 calibration inputs (same forms as ``inputs``).
    """

    inputs: Any
    targets: Any = None
    calibration: Any = None


_DATA_KEYS = {"inputs", "targets", "labels", "calibration"}


def _as_data(value: Any, model: str) -> SweepData:
    if isinstance(value, SweepData):
        return value
    if isinstance(value, Mapping) and set(value) <= _DATA_KEYS and "inputs" in value:
        if "targets" in value and "labels" in value:
            raise SweepError(f"Data of {model!r} gives both targets= and labels=; give one.")
        return SweepData(value["inputs"], value.get("targets", value.get("labels")), value.get("calibration"))
    if isinstance(value, tuple) and 1 <= len(value) <= 3:
        return SweepData(*value)
    return SweepData(value)


def _per_model_data(data: Any, names: Sequence[str]) -> Dict[str, SweepData]:
    if isinstance(data, Mapping) and data and set(data) <= set(names) and not (set(data) & _DATA_KEYS):
        missing = [n for n in names if n not in data]
        if missing:
            raise SweepError(f"data= has no entry for model(s) {missing}; it has {sorted(data)}. Give data "
                             "for every model, or one data set shared by all.")
        return {n: _as_data(data[n], n) for n in names}
    if isinstance(data, Mapping) and set(data) and not set(data) <= _DATA_KEYS | set(names) and len(names) > 1:
        raise SweepError(f"data= has keys {sorted(data)}: neither model names {list(names)} nor "
                         f"{sorted(_DATA_KEYS)}. Pass {{model name: data}} or one data set for all models.")
    shared = _as_data(data, names[0])
    return {n: shared for n in names}


def _model_bytes(source: Any) -> Tuple[str, bytes]:
    """(name, serialized ONNX) of a model given as a zoo name, path, bytes, ModelProto or Model."""
    import onnx

    from trtlab.model import Model

    if isinstance(source, Model):
        return source.name, source.to_bytes()
    if isinstance(source, onnx.ModelProto):
        return source.graph.name or "model", source.SerializeToString()
    if isinstance(source, (bytes, bytearray)):
        return "model", bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.is_file() and isinstance(source, str) and os.sep not in source and not source.endswith(".onnx"):
            from trtlab import zoo

            path = zoo.path(source)
        if not path.is_file():
            raise SweepError(f"Model file {path} not found; pass a path to an .onnx file, a zoo name "
                             "(trtlab.zoo.names()), bytes, an onnx.ModelProto or a trtlab Model.")
        return path.stem, path.read_bytes()
    raise SweepError(f"A sweep model is a {type(source).__name__}; pass a zoo name, a path, bytes, an "
                     "onnx.ModelProto or a trtlab Model.")


def _models(models: Any) -> Dict[str, bytes]:
    if isinstance(models, Mapping):
        items = [(str(k), _model_bytes(v)[1]) for k, v in models.items()]
    else:
        if isinstance(models, (str, bytes, os.PathLike)) or not isinstance(models, Iterable):
            models = [models]
        items = [_model_bytes(m) for m in models]
    names = [n for n, _ in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SweepError(f"Two sweep models are named {dupes}; pass a dict name -> model to tell them apart.")
    if not items:
        raise SweepError("sweep() needs at least one model.")
    return dict(items)


def _take(data: Any, n: Optional[int], what: str) -> Any:
    """The first ``n`` samples of ``data`` (array, dict of arrays or list of feed dicts)."""
    if n is None:
        return data
    if isinstance(data, np.ndarray):
        if len(data) < n:
            raise SweepError(f"{what}: calibration_size={n} but only {len(data)} calibration samples.")
        return data[:n]
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items()}
        have = min(len(v) for v in arrays.values()) if arrays else 0
        if have < n:
            raise SweepError(f"{what}: calibration_size={n} but only {have} calibration samples.")
        return {k: v[:n] for k, v in arrays.items()}
    feeds, count = [], 0
    for feed in data:
        size = len(next(iter(feed.values())))
        feeds.append({k: np.asarray(v)[: n - count] for k, v in feed.items()})
        count += min(size, n - count)
        if count >= n:
            return feeds
    raise SweepError(f"{what}: calibration_size={n} but only {count} calibration samples.")


def _hash_update(h: Any, obj: Any) -> None:
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.ascontiguousarray(obj)
        h.update(f"nd{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes() if arr.dtype.kind != "O" else repr(arr.tolist()).encode())
    elif isinstance(obj, Mapping):
        h.update(b"map")
        for k in sorted(obj, key=str):
            h.update(str(k).encode())
            _hash_update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq{len(obj)}".encode())
        for x in obj:
            _hash_update(h, x)
    elif obj is None or isinstance(obj, (str, bytes, int, float, bool)):
        h.update(repr(obj).encode())
    else:
        try:
            items = list(obj)
        except TypeError:
            raise SweepError(f"Cannot hash sweep data of type {type(obj).__name__}; use arrays, dicts, "
                             "lists, strings or numbers.") from None
        _hash_update(h, items)


def data_hash(*parts: Any) -> str:
    """sha256 of arrays, dicts, lists, strings and numbers (what a sweep job's data is made of)."""
    h = hashlib.sha256()
    for p in parts:
        _hash_update(h, p)
    return h.hexdigest()


def versions() -> Dict[str, Optional[str]]:
    """Versions that make a stored job stale: trtlab, TensorRT (flavor and version), ONNX Runtime."""
    import onnxruntime

    import trtlab
    from trtlab.backends.tensorrt import flavor as trt

    return {"trtlab": trtlab.__version__, "tensorrt": f"{trt.flavor()} {trt.version()}" if trt.flavor() else None,
            "onnxruntime": onnxruntime.__version__, "job_format": str(JOB_FORMAT)}


@dataclass(frozen=True)
class _Job:
    key: str
    model: str
    config: SweepConfig
    fields: Dict[str, Any] = field(compare=False)


# ----------------------------------------------------------------------------------------------
# one job (runs on a worker)
# ----------------------------------------------------------------------------------------------



def run_job(model_bytes: bytes, data: SweepData, config: SweepConfig, metric: Any, *, runner: str = "auto",
            latency_iterations: int = 50, engine_cache: Any = None) -> Dict[str, Any]:
    """Run one sweep job and return its row; an exception becomes ``status = "error"``.

    Steps: load -> convert (FP16 / INT8 with the first ``calibration_size`` calibration samples)
    -> build (``trtlab.build`` on the default partition, or ONNX Runtime) -> outputs over the
    evaluation inputs, scored by ``metric`` and compared with FP32 -> ``trtlab.benchmark``.
    """
    start = time.perf_counter()
    row: Dict[str, Any] = {"status": "ok", "error": "", "worker": _worker_name()}
    try:
        row.update(_evaluate(model_bytes, data, config, metric, runner, latency_iterations, engine_cache))
    except Exception as exc:  # a failing job is a row with its error, not a dead study
        row.update(status="error", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    row["seconds"] = time.perf_counter() - start
    return row


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"local pid {os.getpid()}"


def _evaluate(model_bytes: bytes, data: SweepData, config: SweepConfig, metric: Any, runner: str,
              latency_iterations: int, engine_cache: Any) -> Dict[str, Any]:
    import trtlab
    from trtlab.backends.tensorrt import flavor as _flavor
    from trtlab.backends.onnxruntime.session import session
    from trtlab.precision import ort_variant
    from trtlab.precision._common import feed_list

    src = trtlab.load(model_bytes, fold_constants=False)
    keep = list(config.keep_fp32_nodes)
    if config.precision == "fp16":
        variant = trtlab.to_fp16(src, keep_fp32_nodes=keep)
    elif config.precision == "int8":
        if data.calibration is None:
            raise SweepError("INT8 needs calibration data: give calibration= in the sweep data.")
        calib = _take(data.calibration, config.calibration_size, src.name)
        variant = trtlab.quantize_int8(src, calib, method=config.method, exclude_nodes=keep, progress=False)
    else:
        variant = src
    feeds = feed_list(src, data.inputs, batch_size=config.batch_size)
    use_build = runner == "hybrid" or (runner == "auto" and _flavor.info().build)
    engine_bytes = float("nan")
    if use_build:
        hybrid = trtlab.build(trtlab.partition(variant), cache_dir=engine_cache, progress=False,
                              feeds=feeds[0])
        call, timed = hybrid.run, hybrid
        executor = "+".join(dict.fromkeys(hybrid.executors["executor"])) or "hybrid"
        engine_bytes = float(hybrid.engine_bytes)
    else:
        model, executor = ort_variant(variant) if config.precision == "fp16" else (variant, "onnxruntime")
        sess = session(model)
        names = [o.name for o in sess.get_outputs()]
        call = lambda feeds: dict(zip(names, sess.run(names, feeds)))  # noqa: E731
        timed = sess
    outputs = [{k: np.asarray(v) for k, v in call(f).items()} for f in feeds]
    ref_sess = session(src)
    ref_names = [o.name for o in ref_sess.get_outputs()]
    reference = [dict(zip(ref_names, ref_sess.run(ref_names, f))) for f in feeds]
    scores = metric(outputs, reference if data.targets is None else data.targets)
    first = src.outputs[0].name
    got = np.concatenate([np.asarray(o[first], dtype=np.float64).reshape(-1) for o in outputs])
    ref = np.concatenate([np.asarray(r[first], dtype=np.float64).reshape(-1) for r in reference])
    norm = float(np.linalg.norm(got) * np.linalg.norm(ref))
    latency = float("nan")
    if latency_iterations:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a busy machine's spread is in the row, not a warning
            stats = trtlab.benchmark(timed, feeds[0], warmup=min(5, latency_iterations),
                                     iterations=latency_iterations, progress=False)
        latency = float(stats.median)
    return {"metric": metric.name, "target": "fp32" if data.targets is None else "targets",
            "accuracy": scores[metric.name], "scores": scores,
            "cosine": float(np.dot(got, ref) / norm) if norm else float(np.array_equal(got, ref)),
            "max_abs": float(np.max(np.abs(got - ref))) if got.size else 0.0,
            "latency_ms": latency, "size_bytes": len(variant.proto.SerializeToString()),
            "engine_bytes": engine_bytes, "executor": executor,
            "tensorrt": f"{_flavor.flavor()} {_flavor.version()}" if _flavor.flavor() else None}


# ----------------------------------------------------------------------------------------------
# the store of finished jobs
# ----------------------------------------------------------------------------------------------


class JobStore:
    """Finished sweep jobs on disk: ``<folder>/<key>.json``, written atomically, read back by key."""

    def __init__(self, folder: Union[str, os.PathLike]) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def read(self, key: str) -> Optional[Dict[str, Any]]:
        """The stored record of ``key``, or ``None`` when absent, unreadable or of another format."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("sweep job record %s unreadable (%s); the job runs again", path, exc)
            return None
        if record.get("format") != JOB_FORMAT or record.get("key") != key:
            log.warning("sweep job record %s is of another format or key; the job runs again", path)
            return None
        return record

    def write(self, key: str, record: Dict[str, Any]) -> Path:
        """Write ``record`` for ``key`` (temp file + fsync + rename; nothing half-written is left)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"Cannot create the sweep folder {self.folder}: {exc}. Pass a writable "
                             "cache_dir=.") from exc
        from trtlab import _io

        path = self.path(key)
        text = json.dumps({"format": JOB_FORMAT, "key": key, **record}, indent=1, sort_keys=True,
                          default=_json_default)
        _io.write_text(path, text, what="sweep job record")
        return path

    def records(self) -> List[Dict[str, Any]]:
        """Every readable record in the folder, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime):
            record = self.read(path.stem)
            if record is not None:
                out.append(record)
        return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def _store_dir(cache_dir: Any) -> Path:
    if cache_dir is None:
        from trtlab.config import cache_dir as default_cache

        return default_cache() / "sweeps"
    return Path(cache_dir).expanduser()


def _frame(records: Sequence[Dict[str, Any]], cached: Sequence[bool]) -> Any:
    import pandas as pd

    rows, extra = [], []
    for rec, was_cached in zip(records, cached):
        cfg = rec["config"]
        result = rec["result"]
        row = {"model": rec["model"], "config": SweepConfig(**{**cfg, "keep_fp32_nodes": tuple(cfg["keep_fp32_nodes"])}).name,
               "precision": cfg["precision"], "method": cfg["method"] or "",
               "calibration_size": cfg["calibration_size"], "fp32_nodes": len(cfg["keep_fp32_nodes"]),
               "batch_size": cfg["batch_size"], "cached": bool(was_cached), "key": rec["key"]}
        for col in RESULT_COLUMNS:
            if col not in row:
                row[col] = result.get(col)
        for name, value in (result.get("scores") or {}).items():
            if name != result.get("metric"):
                row[name] = value
                if name not in extra:
                    extra.append(name)
        rows.append(row)
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS + extra)
    for col in ("accuracy", "accuracy_delta", "cosine", "max_abs", "latency_ms", "engine_bytes", "seconds"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    table["calibration_size"] = table["calibration_size"].astype("Int64")
    table["batch_size"] = table["batch_size"].astype("Int64")
    table["size_bytes"] = table["size_bytes"].astype("Int64")
    table["error"] = table["error"].fillna("")
    for _model, part in table.groupby("model", sort=False):
        base = part.loc[(part["precision"] == "fp32") & (part["status"] == "ok"), "accuracy"]
        if len(base):
            table.loc[part.index, "accuracy_delta"] = (part["accuracy"] - float(base.iloc[0])) * 100.0
    return table


def sweep_results(cache_dir: Any = None) -> Any:
    """Every job stored in a sweep folder as the sweep's DataFrame (readable while a sweep runs)."""
    records = JobStore(_store_dir(cache_dir)).records()
    return _frame(records, [True] * len(records))


# ----------------------------------------------------------------------------------------------
# the sweep
# ----------------------------------------------------------------------------------------------


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            "trtlab.sweep runs its jobs on Dask: pip install 'dask[distributed]' (in trtlab's 'study' "
            "extra: pip install 'trtlab[study]').") from exc
    return distributed


def _connect(client: Any, n_workers: Optional[int], n_jobs: int,
             cluster_options: Optional[Mapping[str, Any]]) -> Tuple[Any, Any]:
    """(client, cluster it owns or None)."""
    distributed = _distributed()
    if client is not None:
        if isinstance(client, distributed.Client):
            return client, None
        if isinstance(client, str):
            try:
                return distributed.Client(client, timeout="30s"), "address"
            except OSError as exc:
                raise SweepError(f"Cannot reach the Dask scheduler at {client!r}: {exc}. Start it with "
                                 "`dask scheduler` and workers with `dask worker <address>`.") from exc
        raise SweepError(f"client= is a {type(client).__name__}; pass a distributed.Client, a scheduler "
                         "address ('tcp://host:8786') or None for a local cluster.")
    import dask

    from dask.system import CPU_COUNT

    workers = n_workers or max(1, min(int(CPU_COUNT), n_jobs))
    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0",
               "silence_logs": logging.ERROR, **dict(cluster_options or {})}
    # Workers are not daemonic, so a job may start processes of its own (engine builds).
    try:
        with dask.config.set({"distributed.worker.daemon": False}):
            cluster = distributed.LocalCluster(**options)
    except Exception as exc:  # Dask reports worker start failures as RuntimeError and friends
        raise SweepError(
            f"Could not start a local Dask cluster of {workers} worker process(es): {str(exc).rstrip('.')}. Worker "
            "processes import the main module again: in a script, call trtlab.sweep under "
            "`if __name__ == \"__main__\":`. Or pass client= (a distributed.Client or a scheduler "
            "address).") from exc
    return distributed.Client(cluster), cluster


def _close(client: Any, owned: Any) -> None:
    """Close a client the sweep opened, and the cluster it started (without Dask's INFO chatter)."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        client.close()
        if owned != "address":
            owned.close()
    finally:
        logger.setLevel(level)


def _dashboard(client: Any) -> Optional[str]:
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # a client without a scheduler connection has no dashboard
        return None


class SweepRun:
    """A sweep in progress: ``table()`` reads results so far, ``wait()`` returns the final table.

    Results are written to disk as jobs finish, so :func:`sweep_results` in another process reads
    them too.
    """

    def __init__(self, jobs: Sequence[_Job], store: JobStore, client: Any, owned: Any,
                 submit: Any, progress: bool) -> None:
        self.jobs = list(jobs)
        self.store = store
        self.client = client
        self._owned = owned
        self.dashboard_link = _dashboard(client)
        self.computed = 0
        self._cached = {j.key for j in jobs if store.read(j.key) is not None}
        self._lock = threading.Lock()
        self._futures: Dict[str, Any] = {}
        self._error: Optional[BaseException] = None
        self._closed = False
        self._submit = submit
        self._progress = progress
        todo = [j for j in self.jobs if j.key not in self._cached]
        log.info("sweep: %d job(s), %d stored, %d to run; Dask dashboard: %s", len(self.jobs),
                 len(self._cached), len(todo), self.dashboard_link or "none (install bokeh)")
        self._futures = submit(todo)
        self._thread = threading.Thread(target=self._collect, name="trtlab-sweep", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def _collect(self) -> None:
        from trtlab._progress import progress as progress_bar

        distributed = _distributed()
        by_future = {fut.key: key for key, fut in self._futures.items()}
        jobs = {j.key: j for j in self.jobs}
        bar = progress_bar(total=len(self.jobs), desc="sweep", enabled=self._progress)
        bar.update(len(self._cached))
        if self.dashboard_link:
            bar.set_postfix_str(f"dashboard {self.dashboard_link}", refresh=True)
        try:
            for fut in distributed.as_completed(list(self._futures.values())):
                key = by_future[fut.key]
                job = jobs[key]
                try:
                    result = fut.result()
                except Exception as exc:  # the scheduler gave up on it (e.g. it killed every worker)
                    result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "seconds": float("nan")}
                record = {"model": job.model, "config": job.config.as_dict(), "fields": job.fields,
                          "result": {k: v for k, v in result.items() if k != "traceback"},
                          "traceback": result.get("traceback", "")}
                with self._lock:
                    self.store.write(key, record)
                    self.computed += 1
                fut.release()
                if result.get("status") != "ok":
                    log.warning("sweep job %s / %s failed: %s", job.model, job.config.name, result.get("error"))
                bar.update(1)
        except BaseException as exc:  # recorded, re-raised by wait()
            self._error = exc
        finally:
            bar.close()

    def table(self) -> Any:
        """The sweep's DataFrame so far: finished jobs only, in grid order."""
        with self._lock:
            pairs = [(self.store.read(j.key), j.key in self._cached) for j in self.jobs]
        pairs = [(r, c) for r, c in pairs if r is not None]
        table = _frame([r for r, _ in pairs], [c for _, c in pairs])
        table.attrs.update(jobs=len(self.jobs), computed=self.computed, dashboard=self.dashboard_link,
                           folder=str(self.store.folder))
        return table

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Block until every job is stored (or ``timeout`` seconds) and return :meth:`table`.

        An interrupt cancels the jobs in flight; finished jobs stay stored.
        """
        try:
            self._thread.join(timeout)
        except BaseException:
            self.cancel()
            raise
        if self._thread.is_alive():
            raise SweepError(f"The sweep is still running after {timeout} s; call wait() again, read "
                             "table() for the results so far, or cancel().")
        if self._error is not None:
            self.cancel()
            raise SweepError(f"The sweep stopped: {self._error}. Finished jobs are stored in "
                             f"{self.store.folder}; run the same call again to resume.") from self._error
        self.close()
        return self.table()

    def cancel(self) -> None:
        """Cancel the jobs not yet finished and close a cluster the sweep started."""
        futures = list(self._futures.values())
        if futures:
            self.client.cancel(futures)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned is not None:
            _close(self.client, self._owned)


def sweep(models: Any, grid: Iterable[Union[SweepConfig, Mapping[str, Any]]], data: Any, *,
          metric: Any = None, client: Any = None, cache_dir: Any = None, runner: str = "auto",
          n_workers: Optional[int] = None, latency_iterations: int = 50, retry_failed: bool = False,
          engine_cache: Any = None, wait: bool = True, progress: bool = True,
          cluster_options: Optional[Mapping[str, Any]] = None) -> Any:
    """Evaluate every model under every configuration of ``grid`` as independent Dask jobs.

    Parameters
    ----------
    models
        Dict name -> model, or a list of models (zoo names, paths, bytes, ``onnx.ModelProto``,
        trtlab Models).
    grid
        :class:`SweepConfig` objects (see :func:`sweep_grid`) or dicts of their fields.
    data
        One data set for every model, or a dict model name -> data set. A data set is a
        :class:`SweepData`, a dict with ``inputs`` and optional ``targets`` (or ``labels``) and
        ``calibration``, a tuple ``(inputs, targets, calibration)``, or the inputs alone.
    metric
        The score (:mod:`trtlab.study.metrics`): ``None`` (top-1), a name, a ``Metric``, a function
        ``(outputs, targets) -> float | dict``, or a dict model name -> any of these. Without
        targets the metric scores agreement with the FP32 model.
    client
        ``None``: an embedded ``LocalCluster`` of worker processes sized to the machine (closed at
        the end); a ``distributed.Client``, or a scheduler address such as ``"tcp://host:8786"``.
    cache_dir
        Folder of finished jobs (default: ``sweeps/`` in trtlab's cache folder). Rerunning with
        the same folder computes only the jobs not stored yet.
    runner
        ``"auto"`` (the hybrid runtime when TensorRT can build engines on the worker, else ONNX
        Runtime), ``"hybrid"`` or ``"onnxruntime"``.
    n_workers
        Workers of the embedded cluster (default: one per core, at most one per job).
    latency_iterations
        Timed runs per job for ``latency_ms`` (0 skips timing). Latency is measured on a worker
        that may share the machine with other jobs; for clean numbers use one worker per machine.
    retry_failed
        Run stored failed jobs again (they are kept, not recomputed, by default).
    engine_cache
        Engine cache folder on the workers (default: each worker's ``TRTLAB_CACHE_DIR``).
    wait
        ``True``: block and return the DataFrame. ``False``: return a :class:`SweepRun` whose
        ``table()`` reads partial results while jobs run.
    progress
        Show a progress bar (the Dask dashboard link in its postfix).
    cluster_options
        Extra ``LocalCluster`` arguments for the embedded cluster.

    Returns
    -------
    pandas.DataFrame or SweepRun
        One row per model x configuration: model, config, precision, method, calibration_size,
        fp32_nodes, batch_size, metric (name of the score), target (``targets`` or ``fp32``),
        accuracy (the score), accuracy_delta (points vs the model's FP32 row), cosine and max_abs
        (first output vs FP32), latency_ms (median per batch), size_bytes (the variant's ONNX),
        engine_bytes, executor, tensorrt (flavor and version on the worker), status (``ok`` / ``error``), error, seconds, worker, cached
        (read from disk), key; then any extra scores of the metric. ``.attrs``: jobs, computed
        (jobs run by this call), dashboard, folder. ``trtlab.plot_accuracy`` draws one model's rows.
    """
    from trtlab.study import metrics as metric_mod

    if runner not in RUNNERS:
        raise SweepError(f"runner={runner!r}; use one of {RUNNERS}.")
    if isinstance(latency_iterations, bool) or not isinstance(latency_iterations, int) or latency_iterations < 0:
        raise SweepError(f"latency_iterations must be an integer >= 0, got {latency_iterations!r}.")
    sources = _models(models)
    names = list(sources)
    configs = [c if isinstance(c, SweepConfig) else SweepConfig(**dict(c)) for c in grid]
    if not configs:
        raise SweepError("The sweep grid is empty; build one with trtlab.sweep_grid(...).")
    datasets = _per_model_data(data, names)
    if isinstance(metric, Mapping):
        missing = [n for n in names if n not in metric]
        if missing:
            raise SweepError(f"metric= has no entry for model(s) {missing}; it has {sorted(metric)}.")
        metrics = {n: metric_mod.resolve(metric[n]) for n in names}
    else:
        shared = metric_mod.resolve(metric)
        metrics = {n: shared for n in names}
    env = versions()
    jobs: List[_Job] = []
    for name in names:
        ds = datasets[name]
        model_hash = hashlib.sha256(sources[name]).hexdigest()
        inputs_hash, targets_hash = data_hash(ds.inputs), data_hash(ds.targets)
        for cfg in dict.fromkeys(configs):
            if cfg.precision == "int8":
                if ds.calibration is None:
                    raise SweepError(f"INT8 configs need calibration data for model {name!r}: give "
                                     "calibration= in its data set.")
                calib_hash = data_hash(_take(ds.calibration, cfg.calibration_size, name))
            else:
                calib_hash = None
            fields = {"model_sha256": model_hash, "config": cfg.as_dict(), "inputs_sha256": inputs_hash,
                      "targets_sha256": targets_hash, "calibration_sha256": calib_hash,
                      "metric": metrics[name].key, "runner": runner, "latency_iterations": latency_iterations,
                      **env}
            key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]
            jobs.append(_Job(key, name, cfg, fields))
    store = JobStore(_store_dir(cache_dir))
    if retry_failed:
        for job in jobs:
            rec = store.read(job.key)
            if rec is not None and rec["result"].get("status") != "ok":
                store.path(job.key).unlink()
    todo = [j for j in jobs if store.read(j.key) is None]
    if not todo:
        records = [store.read(j.key) for j in jobs]
        table = _frame(records, [True] * len(records))
        table.attrs.update(jobs=len(jobs), computed=0, dashboard=None, folder=str(store.folder))
        log.info("sweep: all %d job(s) already stored in %s; nothing to run", len(jobs), store.folder)
        return table

    client_, owned = _connect(client, n_workers, len(todo), cluster_options)

    def submit(todo: Sequence[_Job]) -> Dict[str, Any]:
        shared_models = {n: client_.scatter(sources[n], hash=True) for n in {j.model for j in todo}}
        shared_data = {n: client_.scatter(datasets[n], hash=True) for n in {j.model for j in todo}}
        return {j.key: client_.submit(run_job, shared_models[j.model], shared_data[j.model], j.config,
                                      metrics[j.model], runner=runner, latency_iterations=latency_iterations,
                                      engine_cache=engine_cache, key=f"sweep-{j.key}", pure=False)
                for j in todo}

    try:
        run = SweepRun(jobs, store, client_, owned, submit, progress)
    except BaseException:
        if owned is not None:
            _close(client_, owned)
        raise
    return run.wait() if wait else run
