"""Modules imported on first use.

``onnx`` (with NumPy under it), ``numpy``, ``pandas``, ``networkx`` and ``matplotlib`` cost
most of trtlab's start-up, and many commands never touch them (``trtlab info``, ``trtlab
partition`` prints plain rows). A module that uses one at call time names it with
:func:`lazy_import` instead of ``import``::

    from trtlab._lazy import lazy_import

    np = lazy_import("numpy")
    onnx = lazy_import("onnx")
    helper = lazy_import("onnx.helper")

    def f(x):
        return np.asarray(x)      # numpy is imported here, the first time

The stand-in imports the real module at its first attribute access and from then on holds the
module's attributes itself, so later accesses cost what a module attribute costs. It is not put
in ``sys.modules``: ``"numpy" in sys.modules`` stays a true statement about what is loaded.
Module-level code must not touch a lazy module (that would import it at once); a test checks
that importing the analysis steps loads none of them.
"""

from __future__ import annotations

import importlib
import threading
import types
from typing import Any, Callable, Dict, Optional

__all__ = ["lazy_import", "LazyModule", "Later", "Deferred", "resolved_state"]

_lock = threading.RLock()


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` until an attribute is read, then imports it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name
        self.__dict__["_lazy_module"] = None

    def _lazy_load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            with _lock:
                module = self.__dict__["_lazy_module"]
                if module is None:
                    module = importlib.import_module(self.__dict__["_lazy_target"])
                    for key, value in vars(module).items():
                        if key not in ("_lazy_target", "_lazy_module"):
                            self.__dict__[key] = value
                    self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        # Reached only for names not (yet) copied: before the import, or attributes the module
        # gained afterwards (a submodule imported later).
        if attr.startswith("__") and attr.endswith("__") and attr not in ("__version__", "__path__",
                                                                           "__file__", "__all__"):
            raise AttributeError(attr)
        return getattr(self._lazy_load(), attr)

    def __dir__(self) -> list:
        return dir(self._lazy_load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_module"] is not None else "not loaded yet"
        return f"<lazy module {self.__dict__['_lazy_target']!r} ({state})>"


def lazy_import(name: str) -> Any:
    """A stand-in for module ``name`` that imports it at the first attribute access.

    An import error (the package is missing) is raised then, with the module's own message.
    """
    return LazyModule(name)


class Later:
    """A value computed on first read: ``Later(fn)`` given for a :class:`Deferred` field."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class Deferred:
    """A dataclass field that may be given as :class:`Later`: its function runs when the field is
    first read, and the result replaces it (frozen dataclasses too).

    ``dataclasses`` call a descriptor field's ``__set__`` from ``__init__`` and its ``__get__``
    on every read; with no default the field stays required. Give the class
    ``__getstate__ = resolved_state`` so copies and pickles hold values, not functions::

        @dataclass(frozen=True)
        class Segment:
            nodes: Tuple[str, ...]
            macs: int = Deferred()
            __getstate__ = resolved_state

        Segment(nodes, Later(lambda: count(nodes))).macs   # counted here, once
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            raise AttributeError(self.name)  # no class-level default
        value = obj.__dict__[self.name]
        if isinstance(value, Later):
            value = obj.__dict__[self.name] = value.fn()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = value


def resolved_state(obj: Any) -> Dict[str, Any]:
    """``obj.__dict__`` with every :class:`Later` value computed (a ``__getstate__``)."""
    return {k: (getattr(obj, k) if isinstance(v, Later) else v) for k, v in obj.__dict__.items()}
