"""Every error o11ylab raises on purpose derives from ``O11yLabError``.

``except o11ylab.O11yLabError`` catches them all. Each family keeps the built-in base its
callers already catch (``ValueError`` for bad input and bad settings, ``FileNotFoundError``
for a missing model, ``RuntimeError`` for a failed call), so code written against those keeps
working. A message says what happened and what to do next, and never holds a secret.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependency", "O11yLabError", "require"]


class O11yLabError(Exception):
    """The root of o11ylab's own errors."""


class MissingDependency(O11yLabError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise ``MissingDependency`` naming ``pip install 'o11ylab[extra]'``.

    ``what`` is the feature that needs it, as the user asked for it (``%o11y monitor``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = (exc.name or module).split(".")[0]
        raise MissingDependency(
            f"{what} needs {top}, which is not installed: pip install 'o11ylab[{extra}]'",
            name=exc.name,
        ) from None
