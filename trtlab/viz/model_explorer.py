"""The op-level view of large graphs: Google's Model Explorer, coloured by trtlab's partition.

:func:`draw` stays the teaching view up to a few hundred nodes and draws one box per segment
above. To see every node of a large model, Model Explorer (``ai-edge-model-explorer`` with the
``model-explorer-onnx`` adapter, the ``trtlab[explorer]`` extra) lays out ONNX graphs of tens
of thousands of nodes and takes a per-node data overlay. trtlab writes that overlay itself, as
plain JSON in Model Explorer's node-data format (no import needed):

* ``segment``: one distinct colour per segment (the colours of :func:`trtlab.draw`), value =
  segment index;
* ``backend``: accelerated nodes in one colour and fallback nodes grey, value 1 / 0.

With the extra installed, :func:`show` starts the Model Explorer server in a daemon thread of
the notebook's kernel (its own ``visualize()`` blocks the kernel) and returns an IFrame.

Examples
--------
>>> from trtlab.viz import model_explorer
>>> model_explorer.write_node_data(part, "segments.json")        # doctest: +SKIP
>>> model_explorer.show(part)                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

from trtlab.errors import MissingDependencyError, PartitionError, TrtlabError

__all__ = ["node_data", "write_node_data", "write_model", "show", "OVERLAYS", "Server"]

log = logging.getLogger(__name__)

OVERLAYS = ("segment", "backend")
_BACKEND_COLORS = {"accelerated": "#4e79a7", "fallback": "#c9c9c9"}
_ADAPTER = "model_explorer_onnx"
ADAPTER_ID = "onnx_adapter"  # model-explorer-onnx's adapter id


def _partition_of(obj: Any) -> Any:
    if hasattr(obj, "segments") and hasattr(obj, "assignment") and hasattr(obj, "model"):
        return obj
    raise PartitionError(
        f"Model Explorer overlays colour a partition; got a {type(obj).__name__}. Pass "
        "trtlab.partition(model) (or a HybridModel's .partition).")


def _text_on(color: str) -> str:
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "#ffffff"


def graph_id(model: Any) -> str:
    """The id Model Explorer's ONNX adapter gives the main graph (its name, else ``<main>``)."""
    return model.proto.graph.name or "<main>"


def node_data(partition: Any, by: str = "segment") -> Dict[str, Any]:
    """Model Explorer node data (``ModelNodeData`` JSON) colouring ``partition``'s nodes.

    Parameters
    ----------
    partition
        A :class:`trtlab.Partition`.
    by
        ``"segment"`` (a distinct colour per segment, value = segment index) or ``"backend"``
        (accelerated vs fallback, value 1 / 0).

    Returns
    -------
    dict
        ``{graph id: {"name", "results": {node name: {"value", "bgColor", "textColor"}}}}``:
        Model Explorer matches ``results`` keys to node ids, which its ONNX adapter takes from
        the ONNX node names.
    """
    from trtlab.viz._style import segment_colors

    part = _partition_of(partition)
    if by not in OVERLAYS:
        raise TrtlabError(f"node_data(by={by!r}) is not an overlay; use one of {OVERLAYS}.")
    results: Dict[str, Dict[str, Any]] = {}
    if by == "segment":
        colors = segment_colors(part.segments)
        for seg, color in zip(part.segments, colors):
            for name in seg.nodes:
                results[name] = {"value": int(seg.index), "bgColor": color,
                                 "textColor": _text_on(color)}
        title = f"trtlab segments ({len(part.segments)})"
    else:
        for seg in part.segments:
            fallback = seg.backend == "fallback"
            color = _BACKEND_COLORS["fallback" if fallback else "accelerated"]
            for name in seg.nodes:
                results[name] = {"value": 0 if fallback else 1, "bgColor": color,
                                 "textColor": _text_on(color)}
        title = f"trtlab backend ({part.backend} = 1, fallback = 0)"
    return {graph_id(part.model): {"name": title, "results": results}}


def _atomic_write(path: Path, data: bytes) -> Path:
    from trtlab import _io

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _io.write_bytes(path, data, what="Model Explorer file")


def write_node_data(partition: Any, path: Union[str, os.PathLike], by: str = "segment") -> Path:
    """Write :func:`node_data` as a JSON file Model Explorer loads (atomically)."""
    data = json.dumps(node_data(partition, by), indent=1).encode("utf-8")
    try:
        return _atomic_write(Path(path), data)
    except OSError as exc:
        raise TrtlabError(f"Cannot write the Model Explorer overlay to {path}: {exc}. Pass a "
                          "writable path.") from exc


def write_model(partition: Any, folder: Union[str, os.PathLike]) -> Path:
    """Write the partitioned model (the node names the overlay refers to) into ``folder``."""
    part = _partition_of(partition)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in part.model.name) or "model"
    path = Path(folder) / f"{name}.onnx"
    try:
        return _atomic_write(path, part.model.to_bytes())
    except OSError as exc:
        raise TrtlabError(f"Cannot write the model for Model Explorer to {path}: {exc}.") from exc


# -- the server -----------------------------------------------------------------------------------

def _require_extra() -> Any:
    try:
        import model_explorer  # noqa: F401
        import model_explorer_onnx  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "The large-graph view needs Model Explorer and its ONNX adapter, which are not "
            "installed: pip install 'trtlab[explorer]' (ai-edge-model-explorer, "
            "model-explorer-onnx). The overlay JSON is written without them: "
            "trtlab.viz.model_explorer.write_node_data(partition, path).") from exc
    import model_explorer

    return model_explorer


class Server:
    """A Model Explorer server running in a daemon thread of this process.

    Parameters
    ----------
    host
        Loopback address to listen on.
    port
        Port; ``None`` picks a free one.
    """

    _lock = threading.Lock()
    _running: Dict[Tuple[str, int], "Server"] = {}

    def __init__(self, host: str = "127.0.0.1", port: Optional[int] = None) -> None:
        self.host = host
        self.port = port
        self.thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "Server":
        """Start the server (once) and wait until it answers."""
        me = _require_extra()
        if self.thread is not None and self.thread.is_alive():
            return self
        if self.port is None:
            import socket

            with socket.socket() as sock:
                sock.bind((self.host, 0))
                self.port = int(sock.getsockname()[1])
        from model_explorer import server

        # start() serves from its own daemon thread and then sleeps while that thread lives,
        # so it runs in a thread here. Its check for a newer release would reach the internet:
        # this server only ever talks to the loopback address.
        server._check_new_version = lambda *args, **kwargs: None

        def run() -> None:
            server.start(host=self.host, port=self.port, no_open_in_browser=True,
                         extensions=[_ADAPTER], skip_health_check=True)

        del me
        # The server prints its start-up banner from its thread; keep it out of whatever
        # notebook cell runs next (this thread waits here until the server answers).
        import contextlib
        import io

        banner = io.StringIO()
        with contextlib.redirect_stdout(banner):
            self.thread = threading.Thread(target=run, name="trtlab-model-explorer", daemon=True)
            self.thread.start()
            answered = self._wait(timeout)
        log.debug("Model Explorer start-up output: %s", banner.getvalue())
        if answered:
            log.info("Model Explorer serving at %s", self.url)
            return self
        raise TrtlabError(f"Model Explorer did not answer at {self.url} within {timeout:.0f} s. "
                          "Check that the port is free, or pass port=.")

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/check_health", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    @classmethod
    def shared(cls, host: str = "127.0.0.1", port: Optional[int] = None) -> "Server":
        """The server of this process for ``host`` (started on first use)."""
        with cls._lock:
            for (h, p), srv in cls._running.items():
                if h == host and (port is None or p == port) and srv.thread is not None \
                        and srv.thread.is_alive():
                    return srv
            srv = cls(host, port).start()
            cls._running[(host, int(srv.port))] = srv
            return srv

    def page_url(self, model_path: Path, node_data_paths: Sequence[Path]) -> str:
        """The address of the page showing ``model_path`` with the overlays."""
        data = {"models": [{"url": str(Path(model_path).resolve()), "adapterId": ADAPTER_ID}],
                "nodeData": [str(Path(p).resolve()) for p in node_data_paths],
                "nodeDataTargets": ["" for _ in node_data_paths]}
        return f"{self.url}/?data={urllib.parse.quote(json.dumps(data))}"


def show(partition: Any, *, overlays: Iterable[str] = OVERLAYS, folder: Any = None,
         host: str = "127.0.0.1", port: Optional[int] = None, width: Union[int, str] = "100%",
         height: int = 720) -> Any:
    """Model Explorer in the notebook, every node coloured by segment and by backend.

    Writes the model and one overlay per entry of ``overlays`` into ``folder`` (a fresh
    temporary folder by default), starts the server in a daemon thread (once per kernel) and
    returns an ``IPython.display.IFrame`` of the page; ``.src`` is its address.

    Raises
    ------
    MissingDependencyError
        When the ``trtlab[explorer]`` extra is not installed.
    """
    part = _partition_of(partition)
    _require_extra()
    overlays = tuple(overlays)
    bad = [o for o in overlays if o not in OVERLAYS]
    if bad:
        raise TrtlabError(f"Unknown overlay(s) {bad}; use any of {OVERLAYS}.")
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="trtlab-me-"))
    model_path = write_model(part, folder)
    data_paths = [write_node_data(part, folder / f"{model_path.stem}.{o}.json", by=o)
                  for o in overlays]
    srv = Server.shared(host, port)
    from IPython.display import IFrame

    return IFrame(srv.page_url(model_path, data_paths), width=width, height=height)
