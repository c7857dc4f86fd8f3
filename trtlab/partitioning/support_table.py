"""SupportTable: one row per node saying whether TensorRT takes it, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set

if TYPE_CHECKING:
    import pandas as pd

from trtlab.errors import SupportError

__all__ = ["SupportTable", "COLUMNS"]

COLUMNS = ["node", "op_type", "supported", "reason", "source"]


class SupportTable:
    """Per-node support verdicts, in the model's topological order.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns ``node, op_type, supported, reason, source``; ``source`` is ``"parser"`` or
        ``"rules"`` (or a backend's name).
    model_name : str
    target : str
        What was judged against, e.g. ``"TensorRT-RTX 1.7.1.116 parser"``.
    details : object
        The :class:`~trtlab.backends.tensorrt.parser.ParserReport` for parser tables, else ``None``.
    """

    def __init__(self, frame: "pd.DataFrame", *, model_name: str = "", target: str = "",
                 details: Any = None) -> None:
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise SupportError(f"a SupportTable needs columns {COLUMNS}; {missing} are missing "
                               f"(got {list(frame.columns)}).")
        self._init(*(frame[c].tolist() for c in COLUMNS), model_name, target, details)

    def _init(self, nodes: List[Any], ops: List[Any], supported: List[Any], reasons: List[Any],
              sources: List[Any], model_name: str, target: str, details: Any, clean: bool = False) -> None:
        """The table from its columns (the order of :data:`COLUMNS`), kept as they are given."""
        if not clean:
            supported = [bool(v) for v in supported]
        if len(set(nodes)) != len(nodes):
            seen: Set[str] = set()
            dup = [n for n in nodes if n in seen or seen.add(n)][:5]
            raise SupportError(f"a SupportTable has one row per node; {dup} appear twice.")
        self._columns = (nodes, ops, supported, reasons, sources)
        self._row_dicts: Optional[List[Dict[str, Any]]] = None
        self._frame: Optional["pd.DataFrame"] = None
        self.model_name = model_name
        self.target = target
        self.details = details
        self._reasons: Optional[Dict[str, str]] = None

    @classmethod
    def from_rows(cls, rows: Iterable[Dict[str, Any]], *, model_name: str = "", target: str = "",
                  details: Any = None) -> "SupportTable":
        """A table from dicts with the keys of :data:`COLUMNS` (pandas is not needed until ``frame``)."""
        rows = list(rows)
        table = cls.__new__(cls)
        table._init(*([r.get(c) for r in rows] for c in COLUMNS), model_name, target, details)
        return table

    @classmethod
    def _from_columns(cls, nodes: List[str], ops: List[str], supported: List[bool], reasons: List[str],
                      source: str, *, model_name: str = "", target: str = "",
                      details: Any = None) -> "SupportTable":
        """A table from clean columns (a bool per node in ``supported``) answered by one ``source``
        (the backends' own tables); the lists are not copied."""
        table = cls.__new__(cls)
        table._init(nodes, ops, supported, reasons, [source] * len(nodes), model_name, target, details,
                    clean=True)
        return table

    @property
    def _rows(self) -> List[Dict[str, Any]]:
        """One dict per node with the keys of :data:`COLUMNS` (made on first use)."""
        if self._row_dicts is None:
            self._row_dicts = [dict(zip(COLUMNS, values)) for values in zip(*self._columns)]
        return self._row_dicts

    @property
    def frame(self) -> "pd.DataFrame":
        """Columns ``node, op_type, supported, reason, source`` (built on first use)."""
        if self._frame is None:
            import pandas as pd

            self._frame = pd.DataFrame(dict(zip(COLUMNS, self._columns)), columns=COLUMNS).astype(
                {"supported": bool})
        return self._frame

    # -- queries -------------------------------------------------------------------------------
    @property
    def supported_nodes(self) -> Set[str]:
        nodes, _, supported, _, _ = self._columns
        return {n for n, ok in zip(nodes, supported) if ok}

    @property
    def unsupported_nodes(self) -> Set[str]:
        nodes, _, supported, _, _ = self._columns
        return {n for n, ok in zip(nodes, supported) if not ok}

    @property
    def source(self) -> str:
        sources = sorted({str(v) for v in self._columns[4]})
        return sources[0] if len(sources) == 1 else "+".join(sources)

    @property
    def coverage(self) -> float:
        """Fraction of nodes supported (1.0 for an empty graph)."""
        supported = self._columns[2]
        return sum(supported) / len(supported) if supported else 1.0

    def is_supported(self, node: str) -> bool:
        return node in self.supported_nodes

    def reason(self, node: str) -> str:
        """Why ``node`` is (not) supported."""
        if self._reasons is None:
            self._reasons = dict(zip(self._columns[0], self._columns[3]))
        try:
            return self._reasons[node]
        except KeyError:
            near = [n for n in self._reasons if node.lower() in n.lower()][:5]
            raise SupportError(
                f"node {node!r} is not in the support table of {self.model_name or 'this model'} "
                f"({len(self._reasons)} nodes)" + (f"; similar names: {near}" if near else "")
                + ". Use the names in table.frame['node'].") from None

    def unsupported(self) -> "pd.DataFrame":
        """Rows of the nodes that are not supported."""
        return self.frame.loc[~self.frame["supported"]].reset_index(drop=True)

    def summary(self) -> "pd.DataFrame":
        """Per op type: node count, supported, unsupported, and the most common reason."""
        import pandas as pd

        if not len(self.frame):
            return pd.DataFrame(columns=["op_type", "nodes", "supported", "unsupported", "reason"])
        rows: List[Dict[str, Any]] = []
        for op, group in self.frame.groupby("op_type", sort=False):
            bad = group.loc[~group["supported"], "reason"]
            rows.append({"op_type": op, "nodes": len(group), "supported": int(group["supported"].sum()),
                         "unsupported": int((~group["supported"]).sum()),
                         "reason": bad.mode().iloc[0] if len(bad) else ""})
        return pd.DataFrame(rows).sort_values(["unsupported", "nodes"], ascending=False,
                                              ignore_index=True)

    def to_frame(self) -> "pd.DataFrame":
        return self.frame.copy()

    # -- display -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns[0])

    def __iter__(self):
        return iter(self.frame.itertuples(index=False))

    def _headline(self) -> str:
        n, ok = len(self._columns[0]), sum(self._columns[2])
        name = f" for {self.model_name}" if self.model_name else ""
        target = f", {self.target}" if self.target else ""
        return f"SupportTable{name}: {ok}/{n} nodes supported (source={self.source}{target})"

    def __repr__(self) -> str:
        return self._headline()

    def _repr_html_(self) -> str:
        import html

        head = f"<p><b>{html.escape(self._headline())}</b></p>"
        bad = self.unsupported()
        if not len(bad):
            return head + "<p>Every node is supported.</p>"
        shown = bad.head(50)
        more = f"<p>... and {len(bad) - 50} more unsupported nodes</p>" if len(bad) > 50 else ""
        return head + shown.to_html(index=False, escape=True) + more
