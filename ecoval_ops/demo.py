"""``ecoval demo``: the nightly lakehouse flow on scikit-learn's digits with injected label noise.

The data ships inside scikit-learn, so the demo needs no download. It builds a Delta table of
1500 digits with 10% of the labels flipped (the demo remembers which), runs the nightly job
(a full valuation, registered in MLflow), appends 297 new rows and runs it again (the new rows
are valued out of sample, without retraining), then measures how well the values and the suspect
flag find the flipped labels.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.lakehouse.queries import CLEAN_PREDICATE
from ecoval_ops.pipeline.run import RunSummary

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FILTER_SQL", "DemoResult", "run_demo"]

FILTER_SQL = "SELECT row_id, label, ecoval_value FROM delta.`{table}` WHERE " + CLEAN_PREDICATE
"""The Spark SQL a downstream job runs to keep helpful, label-consistent rows."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo did and measured.

    Attributes:
        table: the Delta table written.
        tracking_uri: the MLflow store.
        experiment_id: the MLflow experiment of the runs.
        nights: the two run summaries.
        n_rows: rows in the table after both nights.
        n_flipped: labels flipped on purpose.
        auroc: AUROC of ``-ecoval_value`` against the flipped rows, all rows.
        auroc_new: the same on the rows valued out of sample the second night.
        suspect_precision: share of ``ecoval_suspect`` rows whose label was flipped.
        suspect_recall: share of flipped rows flagged ``ecoval_suspect``.
        flagged_flips: flipped rows flagged suspect (each has an ``ecoval_suggested_label``).
        restored: of those, rows whose suggested label is the label before the flip.
        clean_rows: rows the filter query keeps, counted by Spark SQL (Spark engine) or by
            delta-rs's SQL engine (delta-rs engine).
        quarantine: the first night's quarantine preview at 5% (a ``Cut`` dict).
        quarantine_flipped: flipped rows among that cut's rows.
    """

    table: Path
    tracking_uri: str
    experiment_id: str
    nights: tuple[RunSummary, RunSummary]
    n_rows: int
    n_flipped: int
    auroc: float
    auroc_new: float
    suspect_precision: float
    suspect_recall: float
    flagged_flips: int
    restored: int
    clean_rows: int
    quarantine: dict[str, Any]
    quarantine_flipped: int


def _digits(
    seed: int, noise: float
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(y.size)
    X, y = X[order], y[order].astype(np.int64)
    flipped = np.zeros(y.size, dtype=bool)
    flipped[rng.choice(y.size, size=round(noise * y.size), replace=False)] = True
    noisy = np.where(flipped, (y + rng.integers(1, 10, size=y.size)) % 10, y)
    return X, noisy, flipped, y


def _frame(X: NDArray[np.float64], y: NDArray[np.int64], rows: slice) -> pa.Table:
    import pyarrow as pa

    ids = np.arange(X.shape[0])[rows]
    columns = {"row_id": pa.array(ids), "label": pa.array(y[rows])}
    columns.update({f"px{j}": pa.array(X[rows, j]) for j in range(X.shape[1])})
    return pa.table(columns)


def run_demo(
    workdir: str | Path = "ecoval-demo", *, engine: Literal["spark", "delta-rs"] = "spark", seed: int = 0
) -> DemoResult:
    """Build the demo table under ``workdir`` (replacing an earlier demo's table) and run two nights.

    The MLflow store beside it is kept, so runs of earlier demos stay reviewable.
    """
    from deltalake import DeltaTable, write_deltalake
    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    from ecoval_ops.config import load_config
    from ecoval_ops.pipeline import engine_for, run_valuation

    root = Path(workdir).resolve()
    table = root / "lake" / "digits"
    # The lake folder also holds the table's workspace (embeddings table), which must go with it.
    if table.parent.exists():
        shutil.rmtree(table.parent)
    X, y, flipped, original = _digits(seed, 0.1)
    write_deltalake(str(table), _frame(X, y, slice(0, 1500)))
    cfg = load_config(
        None,
        table=str(table),
        key="row_id",
        label="label",
        features=",".join(f"px{j}" for j in range(64)),
        engine=engine,
        mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        experiment="ecoval-demo",
        seed=seed,
    )
    runner = engine_for(cfg)
    first = run_valuation(cfg, runner)
    write_deltalake(str(table), _frame(X, y, slice(1500, None)), mode="append", schema_mode="merge")
    second = run_valuation(cfg, runner)
    valued = DeltaTable(str(table)).to_pyarrow_table(
        columns=["row_id", "ecoval_value", "ecoval_suspect", "ecoval_mode", "ecoval_suggested_label", "ecoval_run_id"]
    )
    ids = valued.column("row_id").to_numpy()
    truth = flipped[ids]
    value = valued.column("ecoval_value").to_numpy()
    suspect = valued.column("ecoval_suspect").to_numpy(zero_copy_only=False).astype(bool)
    new = ids >= 1500
    suggested = valued.column("ecoval_suggested_label").to_numpy(zero_copy_only=False)
    flagged = truth & suspect
    quarantine = next(c for c in first.preview if c["cut"] == "5%")
    night_one = np.flatnonzero(valued.column("ecoval_run_id").to_numpy(zero_copy_only=False) == first.run_id)
    lowest = night_one[np.argsort(value[night_one], kind="stable")[: quarantine["rows_removed"]]]
    experiment = MlflowClient(tracking_uri=cfg.tracking_uri).get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is not None, "the runs above created the experiment"
    return DemoResult(
        table=table,
        tracking_uri=cfg.tracking_uri,
        experiment_id=str(experiment.experiment_id),
        nights=(first, second),
        n_rows=int(ids.size),
        n_flipped=int(truth.sum()),
        auroc=float(roc_auc_score(truth, -value)),
        auroc_new=float(roc_auc_score(truth[new], -value[new])),
        suspect_precision=float(truth[suspect].mean()) if suspect.any() else 0.0,
        suspect_recall=float(suspect[truth].mean()),
        flagged_flips=int(flagged.sum()),
        restored=int((suggested[flagged] == original[ids][flagged]).sum()),
        clean_rows=_count_clean(table, engine),
        quarantine=quarantine,
        quarantine_flipped=int(truth[lowest].sum()),
    )


def _count_clean(table: Path, engine: str) -> int:
    """Run the filter as SQL on the engine of the run, as a downstream job would."""
    if engine == "spark":
        from ecoval_ops.lakehouse.spark import spark_session

        row = spark_session().sql(f"SELECT count(*) FROM delta.`{table}` WHERE {CLEAN_PREDICATE}").first()
        return 0 if row is None else int(row[0])
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    reader = (
        QueryBuilder()
        .register("rows", DeltaTable(str(table)))
        .execute(f"SELECT count(*) AS n FROM rows WHERE {CLEAN_PREDICATE}")
    )
    return int(pa.table(reader.read_all()).column("n")[0].as_py())
