"""The Delta tables a run touched: datasets of its parent MLflow run, and OpenLineage datasets.

The MLflow run page lists the source table at the version valued (context ``valuation``), the
validation table at its pinned version (``validation``) and, where the values go to a table of
their own, the values table at the version the MERGE committed (``values``), each with its
schema and row count.

The DAG's ``write`` and ``report`` tasks declare the source table (at the version valued) as their
input and the table the values went to (the values table, or the source when they are written in
place) as their output, so Airflow's OpenLineage listener reports them when the task ends
(nothing is sent unless an OpenLineage transport is configured). ``report``'s input carries the
standard data-quality facets (:func:`openlineage_datasets`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ecoval_ops.lakehouse.tables import TableLike, open_table
from ecoval_ops.tracking import TableInput

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    from ecoval_ops.pipeline.pinned import PinnedRun

__all__ = ["dataset_address", "openlineage_datasets", "table_input"]


def table_input(uri: TableLike, version: int, context: str, digest: str | None = None) -> TableInput:
    """``uri@version`` as a run's dataset: its schema and row count (from the files' footers).

    Args:
        uri: the table.
        version: the version read or written.
        context: its role in the run (:class:`~ecoval_ops.tracking.TableInput`).
        digest: a digest of what the run read; default one of the table version itself.
    """
    import pyarrow as pa

    table = open_table(uri, version)
    schema = pa.schema(table.schema().to_arrow())
    return TableInput(
        uri=str(uri),
        version=version,
        context=context,
        digest=digest or hashlib.sha256(f"{uri}@v{version}".encode()).hexdigest()[:16],
        columns=tuple((f.name, str(f.type), f.nullable) for f in schema),
        rows=int(table.to_pyarrow_dataset().count_rows()),
    )


def dataset_address(uri: TableLike) -> tuple[str, str]:
    """A table's OpenLineage namespace and name, as the naming spec gives them.

    ``file`` and the absolute path for a local table; ``<scheme>://<bucket>`` and the key for an
    object store.
    """
    text = str(uri)
    parts = urlsplit(text)
    if parts.scheme in ("", "file"):
        return "file", Path(parts.path if parts.scheme else text).expanduser().resolve().as_posix()
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def openlineage_datasets(
    run: PinnedRun, figures: Mapping[str, Any] | None = None, written: int | None = None
) -> tuple[list[InputDataset], list[OutputDataset]]:
    """The run's input (the source at the version valued) and output (where the values went).

    Args:
        run: the pinned run.
        figures: the report's figures (:func:`~ecoval_ops.pipeline.review.publish`); with them the
            input carries ``dataQualityMetrics`` (``rowCount``: rows valued; the night's new rows as
            ``count`` of ``ecoval_suspect`` and ``ecoval_percentile``, with their suspects and
            percentiles as ``sum``) and ``dataQualityAssertions`` (each alert rule, ``warn``: an
            alert notifies, it does not fail the run).
        written: the version the MERGE committed; the output's version and, with ``figures``,
            its ``outputStatistics`` (rows valued).
    """
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import (
        data_quality_assertions_dataset,
        data_quality_metrics_input_dataset,
        dataset_version_dataset,
        output_statistics_output_dataset,
    )

    cfg = run.config
    namespace, name = dataset_address(cfg.source.table)
    source: dict[str, Any] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(run.table_version))
    }
    input_facets: dict[str, Any] = {}
    if figures is not None:
        night = figures["night"]
        new_rows = float(night["night_rows"])
        metric = data_quality_metrics_input_dataset.ColumnMetrics
        input_facets["dataQualityMetrics"] = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            rowCount=int(figures["rows_valued"]),
            columnMetrics={
                "ecoval_suspect": metric(count=new_rows, sum=night["night_suspect_share"] * new_rows),
                "ecoval_percentile": metric(count=new_rows, sum=night["night_mean_percentile"] * new_rows),
            },
        )
        input_facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=[
                data_quality_assertions_dataset.Assertion(
                    assertion=f"{rule['metric']} <= {rule['threshold']:.4g}",
                    success=bool(rule["passed"]),
                    column=rule["column"],
                    severity="warn",
                )
                for rule in figures["alert_rules"]
            ]
        )
    inputs = [InputDataset(namespace=namespace, name=name, facets=source, inputFacets=input_facets)]
    out_namespace, out_name = dataset_address(cfg.source.values_table or cfg.source.table)
    out_facets: dict[str, Any] = {}
    if written is not None:
        out_facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(written))
    output_stats: dict[str, Any] = {}
    if figures is not None:
        output_stats["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=int(figures["rows_valued"])
        )
    outputs = [OutputDataset(namespace=out_namespace, name=out_name, facets=out_facets, outputFacets=output_stats)]
    return inputs, outputs
