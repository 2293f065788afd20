"""The one exception hierarchy of ecoval_ops.

Every error the library raises on purpose is an :class:`EcovalError`. Subclasses also inherit
the builtin a caller would expect (``ValueError`` for bad input, ``AttributeError`` for using an
unfitted estimator), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "EcovalError",
    "EcovalWarning",
    "InvalidInputError",
    "NotFittedError",
]


class EcovalError(Exception):
    """Base class of every error raised on purpose by ecoval_ops."""


class InvalidInputError(EcovalError, ValueError):
    """Input data or parameters that cannot be valued; the message names the problem."""


class NotFittedError(EcovalError, ValueError, AttributeError):
    """A fitted-only method or attribute was used before ``fit``."""


class EcovalWarning(UserWarning):
    """Something was adjusted to make the input valuable (for example fewer clusters)."""
