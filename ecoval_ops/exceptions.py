"""The one exception hierarchy of ecoval_ops.

Every error the library raises on purpose is an :class:`EcovalError`. Subclasses also inherit
the builtin a caller would expect (``ValueError`` for bad input, ``AttributeError`` for using an
unfitted estimator), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConcurrentWriteError",
    "DuplicateKeyError",
    "EcovalError",
    "EcovalWarning",
    "InvalidInputError",
    "MissingColumnError",
    "NotFittedError",
    "RenamedSettingWarning",
    "StateFormatError",
    "TableNotFoundError",
]


class EcovalError(Exception):
    """Base class of every error raised on purpose by ecoval_ops."""


class InvalidInputError(EcovalError, ValueError):
    """Input data or parameters that cannot be valued; the message names the problem."""


class StateFormatError(InvalidInputError):
    """A saved valuation state written by another version of the method, which this one cannot read."""


class TableNotFoundError(InvalidInputError, FileNotFoundError):
    """A path that holds no Delta table, or a table version that does not exist."""


class MissingColumnError(InvalidInputError, LookupError):
    """A column the run needs is not in the table.

    A ``LookupError``, not a ``KeyError``, whose ``str`` would quote the message.
    """


class DuplicateKeyError(InvalidInputError):
    """A key column whose values are not unique (in a table, or in the values to write)."""


class ConcurrentWriteError(EcovalError, RuntimeError):
    """A Delta commit kept conflicting with concurrent writers after every retry.

    Nothing was written; running again is safe.
    """


class NotFittedError(EcovalError, ValueError, AttributeError):
    """A fitted-only method or attribute was used before ``fit``."""


class EcovalWarning(UserWarning):
    """Something was adjusted to make the input valuable (for example fewer clusters)."""


class RenamedSettingWarning(EcovalWarning, FutureWarning):
    """A setting given by its earlier name, read by its name now."""
