"""ecoval_ops: EcoVal data valuation for ML lakehouse pipelines.

The method lives in :mod:`ecoval_ops.valuation` (see ``shared/spec/ecoval-method.md``).
Importing this package is cheap: heavy dependencies load inside the modules that need them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
