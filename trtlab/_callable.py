"""Pipeline steps whose module and function share a name (``trtlab.build`` and ``build``).

Importing ``trtlab.build`` makes the package attribute ``trtlab.build`` the module, hiding the
function of the same name. :func:`callable_module` makes such a module callable, so
``trtlab.build(partition)`` works whichever of the two the attribute holds.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def callable_module(module_name: str, func_name: str) -> None:
    """Make module ``module_name`` call its function ``func_name`` when called."""
    module = sys.modules[module_name]

    class _StepModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, func_name)(*args, **kwargs)

    _StepModule.__name__ = f"{func_name}_module"
    _StepModule.__call__.__doc__ = getattr(module, func_name).__doc__
    module.__class__ = _StepModule
