"""The dependency direction of architecture.md, checked on the import graph of the source.

``valuation`` <- ``lakehouse``, ``tracking`` <- ``pipeline`` <- ``cli``, ``spark_jobs``, ``dags``, with
``config`` over ``valuation`` (its method settings are the estimator's parameters), and
``engines`` (over ``lakehouse``) between ``lakehouse`` and ``pipeline``, and ``reporting`` (figures and
pages from the engine's summaries, over ``lakehouse``) under ``tracking``, which publishes them;
the bottom floor (exceptions, identifiers, keys, process, progress) imports nothing above it. Every
import counts: module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ecoval_ops"

BOTTOM = {"exceptions", "files", "identifiers", "keys", "process", "progress", "storage"}
ALLOWED = {
    "bottom": {"bottom"},
    "valuation": {"bottom", "valuation"},
    "lakehouse": {"bottom", "valuation", "lakehouse"},
    "reporting": {"bottom", "valuation", "lakehouse", "reporting"},
    "tracking": {"bottom", "valuation", "reporting", "tracking"},
    "config": {"bottom", "valuation", "config"},
    "engines": {"bottom", "valuation", "lakehouse", "config", "engines"},
    "pipeline": {"bottom", "valuation", "lakehouse", "reporting", "tracking", "config", "engines", "pipeline"},
    "front": {"bottom", "valuation", "lakehouse", "reporting", "tracking", "config", "engines", "pipeline", "front"},
}
"""Which layers each layer may import; ``front`` is the CLI, the demo, ``ecoval explain`` and the Airflow task group."""


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "ecoval_ops" or len(parts) == 1:
        raise ValueError(module)
    name = parts[1]
    if name in BOTTOM:
        return "bottom"
    if name in ("valuation", "lakehouse", "reporting", "tracking", "engines", "pipeline", "config"):
        return name
    if name in ("cli", "demo", "explain", "airflow"):
        return "front"
    raise AssertionError(f"module {module} belongs to no layer of architecture.md: add it to this test")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("ecoval_ops.")}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def test_imports_follow_the_dependency_direction() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module(path)
        if source == "ecoval_ops":
            continue
        for target in _imports(path):
            if not _is_module(target):
                continue
            if _layer(target) not in ALLOWED[_layer(source)]:
                wrong.append(f"{source} -> {target}")
    assert wrong == []


def test_nothing_imports_the_front_ends_or_the_dags() -> None:
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "spark_jobs").glob("*.py")]:
        for target in _imports(path):
            assert not target.startswith(("ecoval_ops.cli", "dags")), f"{path} imports {target}"


def test_the_layering_check_sees_type_checking_and_function_imports(tmp_path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ecoval_ops.config import RunConfig\n"
        "def f():\n    from ecoval_ops.pipeline import steps\n"
    )
    assert {"ecoval_ops.config", "ecoval_ops.pipeline", "ecoval_ops.pipeline.steps"} <= _imports(probe)


def test_the_dags_parse_fast_in_a_fresh_process_without_heavy_imports() -> None:
    code = (
        # Airflow's own import (~1.3 s here) is paid once by the dag-processor, not per DAG file.
        "import json, sys, time, runpy, airflow.sdk; t = time.perf_counter();"
        f"runpy.run_path({str(ROOT / 'dags' / 'ecoval_nightly.py')!r});"
        "elapsed = time.perf_counter() - t;"
        "heavy = [m for m in ('pyspark', 'mlflow', 'torch', 'sklearn', 'deltalake') if m in sys.modules];"
        "print(json.dumps([elapsed, heavy]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    elapsed, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"parsing the DAG imported {heavy}"
    assert elapsed < 2.0, f"the DAG file took {elapsed:.2f} s to parse"


INTERNALS = {"state_", "game_", "feature_space_", "cluster_model_", "member_draws_"}
"""The fitted estimator's parts: only ``valuation/`` builds on them; everyone else calls ``model_``."""


def _internal_reads(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if "valuation" in path.relative_to(root).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            private = isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
            if isinstance(node, ast.Attribute) and (node.attr in INTERNALS or (private and _on_model(node))):
                found.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
    return sorted(found)


def _on_model(node: ast.Attribute) -> bool:
    """``<x>.model_._anything``: a private part of the fitted model."""
    return isinstance(node.value, ast.Attribute) and node.value.attr == "model_"


def test_no_module_outside_valuation_reads_the_estimators_internals() -> None:
    assert _internal_reads(PACKAGE) == []


def test_the_internals_check_sees_each_kind_of_read(tmp_path) -> None:
    (tmp_path / "valuation").mkdir()
    (tmp_path / "valuation" / "inside.py").write_text("ev.state_.Z\n")
    (tmp_path / "outside.py").write_text("a = ev.game_.phi\nb = ev.model_._state\nc = ev.model_.game\nd = x._y\n")
    assert _internal_reads(tmp_path) == ["outside.py:1 .game_", "outside.py:2 ._state"]
