"""``ecoval explain``: why one row has its value (method spec sections 4 and 5).

A row's value decomposes as ``v_i = share_c* + kappa (x_i - mean_{j in c} x_j)`` with
``x_i = alpha_i beta_i``: its cluster's per-row share, plus the kappa term of its own label
agreement (alpha) and redundancy (beta) against the cluster's mean. ``alpha_i`` comes from the
vote of the row's nearest members of its cluster in the registered model's supervised space
(with the leave-cluster-out prior), shown with their keys, labels and similarities
``exp(-(d_ij / h'_c)^2)``.

Everything is read back: the row and its value columns from the table (delta-rs), the run's
settings from its MLflow run, and the state, member keys and columns from the model version
that valued the row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ecoval_ops.config import tracking_store_exists
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.lakehouse.columns import EMBEDDING_COL
from ecoval_ops.lakehouse.source import rows_of
from ecoval_ops.lakehouse.source_checks import embedding_matrix
from ecoval_ops.lakehouse.tables import open_table, table_exists
from ecoval_ops.lakehouse.value_writes import read_watermark
from ecoval_ops.pipeline.workspace import Workspace
from ecoval_ops.storage import TableRef

__all__ = ["Explanation", "Neighbour", "explain_row", "text_explanation"]


@dataclass(frozen=True)
class Neighbour:
    """A reference row the explained row was compared with."""

    key: Any
    label: Any
    similarity: float


@dataclass(frozen=True)
class Explanation:
    """The decomposition of one row's value and its neighbours."""

    table: str
    key: Any
    label: Any
    mode: str
    run_id: str
    model: str
    model_version: str
    cluster: int
    value: float
    percentile: float
    cluster_share: float
    alpha: float
    beta: float
    kappa: float
    cluster_mean_x: float
    kappa_term: float
    suspect: bool
    suggested_label: Any
    label_confidence: float | None
    label_prior: float
    prior_weight: float
    neighbours: list[Neighbour]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (numpy scalars as Python ones)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _typed_key(raw: str, arrow_type: Any) -> Any:
    import pyarrow as pa

    try:
        return pa.scalar(raw).cast(arrow_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInputError(f"key {raw!r} is not a value of the key column's type {arrow_type}") from e


def _run_params(tracking_uri: str, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not tracking_store_exists(tracking_uri):
        raise InvalidInputError(f"there is no MLflow store at {tracking_uri}: give --mlflow-uri")
    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException as e:
        raise InvalidInputError(f"run {run_id} is not in the MLflow store {tracking_uri}: give --mlflow-uri") from e
    return dict(run.data.params), dict(run.data.tags)


def _row(table: str, key_col: str, raw_key: str) -> dict[str, Any]:
    import pyarrow as pa

    schema = pa.schema(open_table(table).schema().to_arrow())
    if key_col not in schema.names:
        raise InvalidInputError(f"{table} has no key column {key_col!r}")
    key = _typed_key(raw_key, schema.field(key_col).type)
    found = rows_of(table, None, key_col, None, [key])
    if found.num_rows == 0:
        raise InvalidInputError(f"{table} has no row with {key_col} = {raw_key!r}")
    row = found.slice(0, 1)
    if "ecoval_value" not in row.column_names or row.column("ecoval_value")[0].as_py() is None:
        raise InvalidInputError(f"row {key_col} = {raw_key!r} of {table} has not been valued yet: run `ecoval run`")
    return {"table": row, "key": key}


def _source_row(source: str, key_col: str, key: Any, columns: list[str]) -> Any:
    """``columns`` of the row ``key`` of the run's source table.

    That is the explained table itself, or the source of a separate values table.
    """
    found = rows_of(source, None, key_col, tuple(columns), [key])
    if found.num_rows == 0:
        raise InvalidInputError(f"the source table {source} has no row with {key_col} = {key!r} any more")
    return found.slice(0, 1)


def _embedding(row: Any, params: dict[str, str], tags: dict[str, str], key_col: str, key: Any) -> Any:
    source = params["table"]
    if params.get("features"):
        return np.array([[float(row.column(c)[0].as_py()) for c in params["features"].split(",")]])
    if params.get("embedding_col"):
        return embedding_matrix(row.column(params["embedding_col"]), params["embedding_col"], source)
    fingerprint = tags.get("ecoval.embedder_fingerprint")
    staging = params.get("staging_dir")
    workspace = Workspace.for_table(TableRef.of(source), TableRef.of(staging) if staging else None)
    embeddings = None if fingerprint is None else workspace.embeddings(fingerprint)
    if embeddings is None or not table_exists(embeddings):
        raise InvalidInputError(
            f"the embeddings of {source} are not in {workspace.root} any more; run `ecoval run` again"
        )
    found = rows_of(embeddings, None, key_col, (EMBEDDING_COL,), [key])
    return embedding_matrix(found.column(EMBEDDING_COL), EMBEDDING_COL, str(embeddings))


def explain_row(table: str, raw_key: str, *, tracking_uri: str, n_neighbours: int | None = None) -> Explanation:
    """Explain the value of the row whose key is ``raw_key`` (its text, typed as the key column).

    ``table`` is the valued table: the source, or the separate values table of a run with
    ``values_table`` (the features then come from the run's source table).

    Raises:
        InvalidInputError: no such table or row, a row not valued yet, a run or model version
            the MLflow store does not hold.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from mlflow.exceptions import MlflowException

    from ecoval_ops.tracking import ModelRegistry

    mark = read_watermark(table)
    if mark is None:
        raise InvalidInputError(f"{table} has not been valued yet: run `ecoval run --table {table}` first")
    params, tags = _run_params(tracking_uri, mark.run_id)
    key_col = params["key"]
    found = _row(table, key_col, raw_key)
    row, key = found["table"], found["key"]

    def col(name: str) -> Any:
        return row.column(name)[0].as_py()

    run_id, version = col("ecoval_run_id"), col("ecoval_model_version")
    params, tags = (params, tags) if run_id == mark.run_id else _run_params(tracking_uri, run_id)
    name = params.get("model_name") or f"ecoval_{TableRef.of(table).name}"
    try:
        model = ModelRegistry(tracking_uri, params.get("experiment", "ecoval")).load_model(name, str(version))
    except MlflowException as e:
        raise InvalidInputError(f"model {name} version {version} is not in the MLflow store {tracking_uri}") from e
    ev, members_keys = model.ecoval, model.member_keys
    c = int(col("ecoval_cluster"))
    wanted = [params["label"], *(params.get("features") or params.get("embedding_col") or "").split(",")]
    source = _source_row(params["table"], key_col, key, [c for c in wanted if c])
    member = -1
    if col("ecoval_mode") == "in_sample" and members_keys is not None:
        member = int(pc.index(members_keys, pa.scalar(key, members_keys.type)).as_py())
    label = source.column(params["label"])[0].as_py()
    evidence = ev.model_.evidence(_embedding(source, params, tags, key_col, key), label, c, member, n_neighbours)
    neighbours = [
        Neighbour(key=None if members_keys is None else members_keys[int(j)].as_py(), label=y, similarity=float(s))
        for j, y, s in zip(evidence.members, evidence.labels, evidence.similarity, strict=True)
    ]
    alpha, beta, value = float(col("ecoval_intrinsic")), float(col("ecoval_extrinsic")), float(col("ecoval_value"))
    return Explanation(
        table=str(TableRef.of(table)),
        key=key,
        label=label,
        mode=col("ecoval_mode"),
        run_id=run_id,
        model=name,
        model_version=version,
        cluster=c,
        value=value,
        percentile=float(col("ecoval_percentile")),
        cluster_share=evidence.share,
        alpha=alpha,
        beta=beta,
        kappa=evidence.kappa,
        cluster_mean_x=evidence.x_mean,
        kappa_term=value - evidence.share,
        suspect=bool(col("ecoval_suspect")),
        suggested_label=col("ecoval_suggested_label") if "ecoval_suggested_label" in row.column_names else None,
        label_confidence=col("ecoval_label_confidence") if "ecoval_label_confidence" in row.column_names else None,
        label_prior=evidence.label_prior,
        prior_weight=evidence.prior_weight,
        neighbours=neighbours,
    )


def text_explanation(e: Explanation) -> list[str]:
    """The explanation as terminal lines."""
    lines = [
        f"row {e.key!r} of {e.table}: label {e.label!r}, valued {e.mode} by run {e.run_id} "
        f"(model {e.model} v{e.model_version})",
        f"  value {e.value:+.6f} (percentile {e.percentile:.2f}){'  SUSPECT' if e.suspect else ''}",
        f"    = cluster {e.cluster} share  {e.cluster_share:+.6f}",
        f"    + kappa term        {e.kappa_term:+.6f}  = kappa {e.kappa:.4g} x (alpha x beta {e.alpha * e.beta:+.3f}"
        f" - cluster mean {e.cluster_mean_x:+.3f})",
        f"  alpha {e.alpha:+.3f} (label agreement with its neighbours and a model that never saw its cluster, "
        f"-1..1); beta {e.beta:.3f} "
        "(redundancy multiplier, 0..1)",
    ]
    lines.append(
        f"  label prior {e.label_prior:.2f} (its label's score by a model that never saw cluster {e.cluster}; "
        f"counts as {e.prior_weight:g} neighbours)"
    )
    if e.suspect and e.suggested_label is not None:
        lines.append(f"  suggested label {e.suggested_label!r} (confidence {e.label_confidence:.2f})")
    lines.append(f"  nearest reference rows of cluster {e.cluster} (the vote):")
    width = max([12, *(len(str(n.key)) for n in e.neighbours)])
    lines.append(f"    {'key':>{width}}  {'label':>10}  similarity")
    lines += [f"    {n.key!s:>{width}}  {n.label!s:>10}  {n.similarity:.3f}" for n in e.neighbours]
    return lines
