"""SupportTable: one row per node saying whether TensorRT takes it, and why."""

from __future__ import annotations

import html
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
        rows = [dict(zip(COLUMNS, values)) for values in frame[COLUMNS].itertuples(index=False, name=None)]
        self._init(rows, model_name, target, details)

    def _init(self, rows: List[Dict[str, Any]], model_name: str, target: str, details: Any,
              clean: bool = False) -> None:
        if not clean:
            for row in rows:
                row["supported"] = bool(row["supported"])
        if len({r["node"] for r in rows}) != len(rows):
            seen: Set[str] = set()
            dup = [r["node"] for r in rows if r["node"] in seen or seen.add(r["node"])][:5]
            raise SupportError(f"a SupportTable has one row per node; {dup} appear twice.")
        self._rows = rows
        self._frame: Optional["pd.DataFrame"] = None
        self.model_name = model_name
        self.target = target
        self.details = details
        self._reasons: Optional[Dict[str, str]] = None

    @classmethod
    def from_rows(cls, rows: Iterable[Dict[str, Any]], *, model_name: str = "", target: str = "",
                  details: Any = None) -> "SupportTable":
        """A table from dicts with the keys of :data:`COLUMNS` (pandas is not needed until ``frame``)."""
        table = cls.__new__(cls)
        table._init([{c: r.get(c) for c in COLUMNS} for r in rows], model_name, target, details)
        return table

    @classmethod
    def _from_clean_rows(cls, rows: List[Dict[str, Any]], *, model_name: str = "", target: str = "",
                         details: Any = None) -> "SupportTable":
        """A table from rows that already have exactly the keys of :data:`COLUMNS`, in that
        order, with a bool ``supported`` (the backends' own tables); the rows are not copied."""
        table = cls.__new__(cls)
        table._init(rows, model_name, target, details, clean=True)
        return table

    @property
    def frame(self) -> "pd.DataFrame":
        """Columns ``node, op_type, supported, reason, source`` (built on first use)."""
        if self._frame is None:
            import pandas as pd

            self._frame = pd.DataFrame(self._rows, columns=COLUMNS).astype({"supported": bool})
        return self._frame

    # -- queries -------------------------------------------------------------------------------
    @property
    def supported_nodes(self) -> Set[str]:
        return {r["node"] for r in self._rows if r["supported"]}

    @property
    def unsupported_nodes(self) -> Set[str]:
        return {r["node"] for r in self._rows if not r["supported"]}

    @property
    def source(self) -> str:
        sources = sorted({str(r["source"]) for r in self._rows})
        return sources[0] if len(sources) == 1 else "+".join(sources)

    @property
    def coverage(self) -> float:
        """Fraction of nodes supported (1.0 for an empty graph)."""
        return sum(r["supported"] for r in self._rows) / len(self._rows) if self._rows else 1.0

    def is_supported(self, node: str) -> bool:
        return node in self.supported_nodes

    def reason(self, node: str) -> str:
        """Why ``node`` is (not) supported."""
        if self._reasons is None:
            self._reasons = {r["node"]: r["reason"] for r in self._rows}
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
        return len(self._rows)

    def __iter__(self):
        return iter(self.frame.itertuples(index=False))

    def _headline(self) -> str:
        n, ok = len(self._rows), sum(r["supported"] for r in self._rows)
        name = f" for {self.model_name}" if self.model_name else ""
        target = f", {self.target}" if self.target else ""
        return f"SupportTable{name}: {ok}/{n} nodes supported (source={self.source}{target})"

    def __repr__(self) -> str:
        return self._headline()

    def _repr_html_(self) -> str:
        head = f"<p><b>{html.escape(self._headline())}</b></p>"
        bad = self.unsupported()
        if not len(bad):
            return head + "<p>Every node is supported.</p>"
        shown = bad.head(50)
        more = f"<p>... and {len(bad) - 50} more unsupported nodes</p>" if len(bad) > 50 else ""
        return head + shown.to_html(index=False, escape=True) + more
