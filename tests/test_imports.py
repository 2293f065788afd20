"""Importing the method is cheap and pulls in no engine (architecture.md, style 3)."""

from __future__ import annotations

import subprocess
import sys


def test_valuation_imports_no_engine_and_no_torch() -> None:
    code = (
        "import sys, ecoval_ops.valuation, ecoval_ops.valuation.baselines;"
        "heavy = [m for m in ('torch', 'pyspark', 'mlflow', 'airflow', 'sklearn') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_valuation_sources_name_no_engine() -> None:
    from pathlib import Path

    import ecoval_ops.valuation as valuation

    for path in Path(valuation.__file__).parent.glob("*.py"):
        text = path.read_text()
        for engine in ("pyspark", "mlflow", "airflow"):
            assert f"import {engine}" not in text and f"from {engine}" not in text, f"{path.name} imports {engine}"
