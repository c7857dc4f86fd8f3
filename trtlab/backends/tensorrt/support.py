"""Which nodes TensorRT takes, and why.

Two sources answer the question:

``parser``
    TensorRT's own ONNX parser (:mod:`trtlab.backends.tensorrt.parser`): the ground truth for the
    installed TensorRT (``tensorrt`` or ``tensorrt_rtx``; no GPU needed).
``rules``
    trtlab's operator table (:mod:`trtlab.backends.tensorrt.ops`): no TensorRT needed, any target
    version, every verdict explained, editable in a notebook.

:func:`compare_support` measures how often the two agree.

Examples
--------
>>> import trtlab
>>> table = trtlab.check_support(model, source="rules", trt_version="10.8")   # doctest: +SKIP
>>> table.frame.query("not supported")                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, Union

if TYPE_CHECKING:
    import pandas as pd

from trtlab.errors import SupportError
from trtlab.backends.tensorrt.parser import ParserReport, ParserVerdict, _parse, parse_support
from trtlab.backends.tensorrt.ops import (BOOL, FLOATS, INTS, LATEST, QUANTIZED, RTX_FEATURE_LEVEL, Rule, RuleContext,
                    RuleSet, TrtTarget, Verdict, _TensorIndex, all_of, attr_in, constant_input,
                    default_rules, dtypes, no_input, no_output, rank_in, register_rule,
                    reset_rules, resolve_target, since, supported, unsupported)
from trtlab.partitioning.support_table import COLUMNS, SupportTable

log = logging.getLogger(__name__)

__all__ = [
    "check_support", "compare_support", "SupportComparison", "SupportTable", "rules_support",
    "parse_support", "ParserReport", "ParserVerdict",
    "Verdict", "RuleContext", "RuleSet", "Rule", "TrtTarget", "resolve_target",
    "register_rule", "reset_rules", "default_rules",
    "all_of", "since", "dtypes", "attr_in", "constant_input", "rank_in", "no_input", "no_output",
    "supported", "unsupported", "LATEST", "RTX_FEATURE_LEVEL", "FLOATS", "INTS", "BOOL",
    "QUANTIZED", "COLUMNS",
]

_SOURCES = ("auto", "parser", "rules")
RulesArg = Union[None, RuleSet, Mapping[str, Callable[[RuleContext], Any]]]


def _as_model(model: Any) -> Any:
    from trtlab.model import Model, load

    return model if isinstance(model, Model) else load(model)


def _as_ruleset(rules: RulesArg) -> RuleSet:
    if rules is None:
        return default_rules()
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, Mapping):
        merged = default_rules().copy("default + user rules")
        for op, rule in rules.items():
            merged.register(op, rule)
        return merged
    raise SupportError(
        f"rules={type(rules).__name__} is not a rule set: pass a trtlab.backends.tensorrt.support.RuleSet, a dict "
        "{op_type: predicate} (merged over the defaults), or None for the default table.")


def rules_support(model: Any, *, trt_version: Any = None, rules: RulesArg = None) -> SupportTable:
    """Support from trtlab's operator table (no TensorRT needed).

    Parameters
    ----------
    model : Model or anything :func:`trtlab.load` accepts
    trt_version : str or tuple, optional
        TensorRT (``"10.8"``) or TensorRT-RTX (``"1.7"``) version to judge for; default: the
        installed TensorRT, else :data:`LATEST`.
    rules : RuleSet or dict, optional
        Rule set to use; a dict ``{op_type: predicate}`` is merged over the defaults.
    """
    model = _as_model(model)
    target = resolve_target(trt_version)
    ruleset = _as_ruleset(rules)
    proto = model.proto
    index = _TensorIndex(proto.graph, functions=proto.functions, base_dir=getattr(model, "base_dir", None))
    opset = model.opset or 17
    rows = []
    for node in proto.graph.node:
        ctx = RuleContext(node, model, target, opset, index, ruleset)
        verdict = ruleset.check(ctx)
        rows.append({"node": node.name, "op_type": node.op_type, "supported": verdict.supported,
                     "reason": verdict.reason, "source": "rules"})
        log.debug("rules: %s [%s] -> %s (%s)", node.name, node.op_type, verdict.supported,
                  verdict.reason)
    return SupportTable.from_rows(rows, model_name=model.name, target=f"{target} rules")


def _vague(reason: str) -> bool:
    """A parser reason that says nothing beyond 'no' (the parser reported only ``false``)."""
    text = str(reason).strip().lower()
    return text in ("", "false", "unknown") or text.endswith((": false", ": unknown", ":"))


def _most_precise(model: Any, names: List[str], supported: List[bool], reasons: List[str],
                  trt_version: Any = None) -> None:
    """Rejections whose parser reason is only 'false' take trtlab's rule reason when the
    rules reject the node too (the parser's words are kept after it); ``reasons`` is updated.
    ``trt_version``: the parser's version (default: the installed TensorRT's)."""
    vague = [k for k, ok in enumerate(supported) if not ok and _vague(reasons[k])]
    if not vague:
        return
    by_rules = rules_support(model, trt_version=trt_version)
    for k in vague:
        if not by_rules.is_supported(names[k]):
            reasons[k] = f"{by_rules.reason(names[k])} (parser: {reasons[k]})"


def _parser_table(model: Any, recheck: bool, worker: Any = None) -> SupportTable:
    report, names, ops, answers = _parse(model, recheck, worker)
    supported = [a[0] for a in answers]
    reasons = [a[1] for a in answers]
    _most_precise(model, names, supported, reasons,
                  worker.version_tuple() if worker is not None else None)
    flavor = "TensorRT-RTX" if report.flavor == "tensorrt_rtx" else "TensorRT"
    return SupportTable._from_columns(names, ops, supported, reasons, "parser", model_name=model.name,
                                      target=f"{flavor} {report.version} parser", details=report)


def check_support(model: Any, *, source: str = "auto", trt_version: Any = None,
                  rules: RulesArg = None, recheck: bool = True, worker: Any = None) -> SupportTable:
    """Which nodes TensorRT supports, one row per node with the reason.

    Parameters
    ----------
    model : Model or anything :func:`trtlab.load` accepts
    source : {"auto", "parser", "rules"}
        ``"parser"`` asks the installed TensorRT's ONNX parser; ``"rules"`` uses trtlab's
        operator table; ``"auto"`` uses the parser when :func:`trtlab.backends.tensorrt.flavor.info` says it can
        parse (and no other ``trt_version`` is asked for), else the rules. The ``source``
        column says which one answered.
    trt_version : str or tuple, optional
        Target version for the rules (``"10.8"``, ``(10, 15)``, TensorRT-RTX ``"1.7"``).
    rules : RuleSet or dict, optional
        Rules to use instead of :func:`default_rules`.
    recheck : bool
        Parser only: parse again what the parser did not import after a failure.
    worker : ParserWorker, optional
        Parser only: a worker process of :func:`trtlab.backends.tensorrt.parser_worker.start`
        that runs the parser (and says which TensorRT it has) instead of this process; the
        table is the same. ``trtlab partition`` starts one before it imports onnx, so TensorRT
        is imported beside the model's loading. A worker that cannot parse is not used.

    Returns
    -------
    SupportTable
    """
    if source not in _SOURCES:
        raise SupportError(f"source={source!r} is not a support source; use one of {_SOURCES}.")
    model = _as_model(model)
    if worker is not None and not worker.can_parse:
        log.info("parser worker not used: %s", worker.problem or "it was closed")
        worker = None
    if source == "auto":
        from trtlab.backends.tensorrt import flavor as _trt

        source = "rules"
        if worker is not None or _trt.info().parse:
            wanted = resolve_target(trt_version) if trt_version is not None else None
            installed = worker.version_tuple() if worker is not None else _trt.version_tuple()
            if wanted is None or wanted.version[:2] == installed[:2]:
                source = "parser"
        log.info("check_support(source='auto') uses the %s", source)
    if source == "parser":
        if trt_version is not None:
            from trtlab.backends.tensorrt import flavor as _trt

            installed = worker.version_tuple() if worker is not None else _trt.version_tuple()
            if resolve_target(trt_version).version[:2] != installed[:2]:
                raise SupportError(
                    f"trt_version={trt_version!r} was asked for with source='parser', but the "
                    f"installed parser is {worker.flavor if worker is not None else _trt.flavor()} "
                    f"{worker.version if worker is not None else _trt.version()}. Use source='rules' to "
                    "judge for another version, or drop trt_version.")
        return _parser_table(model, recheck, worker)
    return rules_support(model, trt_version=trt_version, rules=rules)


@dataclass(frozen=True)
class SupportComparison:
    """Rules versus parser on one model.

    Attributes
    ----------
    agreement : float
        Percentage (0-100) of nodes on which rules and parser agree.
    disagreements : pandas.DataFrame
        ``node, op_type, rules, parser, rules_reason, parser_reason`` for each disagreement.
    frame : pandas.DataFrame
        The same columns for every node, plus ``agree``.
    target : str
        The TensorRT the rules judged for and the parser that answered.
    """

    agreement: float
    disagreements: "pd.DataFrame"
    frame: "pd.DataFrame"
    target: str = ""

    def __repr__(self) -> str:
        return (f"SupportComparison({self.agreement:.1f}% agreement, "
                f"{len(self.disagreements)} disagreements of {len(self.frame)} nodes; {self.target})")


def compare_support(model: Any, *, trt_version: Any = None, rules: RulesArg = None,
                    recheck: bool = True) -> SupportComparison:
    """Agreement of the rules with the installed TensorRT's parser.

    The rules judge for the installed TensorRT (TensorRT-RTX versions mapped to their
    TensorRT feature level) unless ``trt_version`` says otherwise.
    """
    model = _as_model(model)
    if trt_version is None:
        from trtlab.backends.tensorrt import flavor as _trt

        if not _trt.version_tuple():
            _trt.module()  # raises MissingDependencyError with install advice
    by_parser = check_support(model, source="parser", recheck=recheck)
    by_rules = rules_support(model, trt_version=trt_version, rules=rules)
    import pandas as pd

    frame = pd.DataFrame({
        "node": by_rules.frame["node"], "op_type": by_rules.frame["op_type"],
        "rules": by_rules.frame["supported"].to_numpy(),
        "parser": by_parser.frame["supported"].to_numpy(),
        "rules_reason": by_rules.frame["reason"], "parser_reason": by_parser.frame["reason"]})
    frame["agree"] = frame["rules"] == frame["parser"]
    agreement = 100.0 * float(frame["agree"].mean()) if len(frame) else 100.0
    disagreements = frame.loc[~frame["agree"]].drop(columns="agree").reset_index(drop=True)
    return SupportComparison(agreement, disagreements, frame,
                             f"{by_rules.target} vs {by_parser.target}")
