"""What people read of a valuation: its figures computed once, rendered as plots, pages and lines.

:mod:`.figures` (the fit's diagnostics and a run's figures), :mod:`.night` (the night's figures
and alerts), :mod:`.plots` (matplotlib), :mod:`.pages` (the ``review/`` files and HTML) and
:mod:`.table` (``ecoval report``). :mod:`ecoval_ops.tracking` publishes them to MLflow.
"""
