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
from typing import Any

__all__ = ["lazy_import", "LazyModule"]

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
