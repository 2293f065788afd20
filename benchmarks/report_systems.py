"""BENCHMARKS.md's sections on running at scale, where :mod:`report` puts them on the page.

Batched training, scale, the reference set, the neighbour search, near-duplicates, object
storage and a real scheduler; like :mod:`report`, nothing here measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from figures import load_result

TASKS = ("detect", "embed", "decide", "cluster", "train_shard[0]", "fit_model", "propagate", "write", "report")
"""The DAG's tasks whose time the scheduler table shows, in run order."""


def batched_section(results: Path) -> list[str]:
    lines = ["## Batched leave-cluster-out training", ""]
    for name in ("batched_lco", "batched_lco_gpu"):
        r = load_result(results, name)
        if r is None:
            continue
        seconds = ", ".join(f"{k} {v:.2f} s" for k, v in r["seconds"].items())
        ratios = ", ".join(f"{k} {v:.1f}x" for k, v in r["ratio_to_batched"].items())
        lines += [
            f"- {r.get('gpu', 'this 2-core machine') if r['device'] == 'cuda' else 'CPU, this 2-core machine'} "
            f"({r['device']}; {r['dataset']}, {r['models']} models, {r['n_train']} rows, median of {r['repeats']}): "
            f"{seconds}; slower than batched by {ratios}.",
        ]
        if "cpu_seconds_batched" in r:
            lines.append(
                f"  The same batched training on the GPU machine's own CPU (16 cores) took "
                f"{r['cpu_seconds_batched']:.2f} s: "
                f"the GPU is {r['cpu_seconds_batched'] / r['seconds']['batched']:.1f}x faster."
            )
        if "heavy" in r:
            h = r["heavy"]
            lines.append(
                f"  A heavier load ({h['models']} models, p = 40, on {h['n_train']} rows): "
                + ", ".join(f"{d} {s:.2f} s" for d, s in h["seconds"].items())
                + f" ({h['seconds']['cpu'] / h['seconds']['cuda']:.1f}x on {r['gpu']})."
            )
    return [*lines, ""]


def scale_section(results: Path) -> list[str]:
    r = load_result(results, "scale")
    lines = ["## Scale", ""]
    if r is None:
        return [*lines, "No scale results.", ""]
    lines += [
        "Synthetic Gaussian-mixture embeddings (d = 64, 10 classes, 5% label noise); each n in a fresh process. "
        "Peak RSS is the Python driver's; on Spark's end to end row, `JVM` is the driver JVM's peak RSS (local mode "
        "runs the executors in it) and its heap setting. The reference set is the default 200,000 rows. Spark's "
        "`night` row appends n/10 rows and values them incrementally in the same process (its peak RSS is the "
        "process's, so at least the refit's). From 50,000 rows `ecoval run` trains, fits the reference state and "
        "trains the removal curve in a spawned child, whose memory is not the driver's.",
        "",
        "| mode | n | stage | wall s | peak RSS MB | rows/s | JVM |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, by_n in r.items():
        if mode == "reference":
            continue
        for n, stages in by_n.items():
            for stage, f in stages.items():
                if "wall_s" not in f:
                    continue
                rate = f"{f['rows_per_s']:.0f}" if "rows_per_s" in f else ""
                jvm = f"{f['jvm_peak_rss_mb']:.0f} MB, heap {f['jvm_heap']}" if "jvm_peak_rss_mb" in f else ""
                lines.append(
                    f"| {mode} | {int(n):,} | {stage} | {f['wall_s']:.1f} | {f['peak_rss_mb']:.0f} | {rate} | {jvm} |"
                )
    lines += ["", "![scale](benchmarks/plots/scale.png)", "", *_reference_lines(r.get("reference", {}))]
    lines += _search_lines(r.get("search", {}))
    return [
        *lines,
        *_near_duplicate_lines(load_result(results, "near_duplicates")),
        *_object_store_lines(load_result(results, "object_store")),
    ]


def _object_store_lines(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    lines = [
        "### A table in S3 beside the same table on local disk",
        "",
        f"`benchmarks/object_store.py`: {r['rows']:,} rows x {r['dims']}-d, `ecoval run` from a shell, a refit then "
        f"a night of {r['night_rows']:,} new rows; S3 is s3proxy 4.1.0 on loopback (buckets on the same disk), so "
        "the ratio is the protocol's cost, not a network's.",
        "",
        "| engine | refit s, local | refit s, S3 | ratio | night s, local | night s, S3 | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    engines = sorted({name.split("/")[0] for name in r["runs"]})
    for engine in engines:
        local, s3 = r["runs"].get(f"{engine}/local"), r["runs"].get(f"{engine}/s3")
        if local and s3:
            lines.append(
                f"| {engine} | {local['refit_s']:.1f} | {s3['refit_s']:.1f} | {s3['refit_s'] / local['refit_s']:.2f} | "
                f"{local['night_s']:.1f} | {s3['night_s']:.1f} | {s3['night_s'] / local['night_s']:.2f} |"
            )
    return [*lines, ""]


def _near_duplicate_lines(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    lines = [
        "### The reference set on near-duplicates",
        "",
        "`benchmarks/near_duplicates.py`: jittered copies (noise of `jitter` x each feature's standard deviation) of "
        "each training row of a real dataset, 10% of labels flipped, 2,000 clean validation rows. `rows_N`: the "
        "default draw (one per row) with N% of the rows as members; `groups_20`: one draw per copy group (copies "
        "are members together or not at all). `twin covered`: share of flipped rows with a clean copy among the "
        "members.",
        "",
        "| dataset | rows | reference | members | AUROC | members' AUROC | non-members' AUROC | twin covered | fit s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, runs in r.items():
        for name, f in runs.items():
            if not isinstance(f, dict):
                continue
            cells = [f.get(k) for k in ("auroc", "auroc_members", "auroc_non_members")]
            shown = " | ".join("" if c is None else f"{c:.4f}" for c in cells)
            lines.append(
                f"| {dataset} | {runs['rows']:,} | {name} | {f['members']:,} | {shown} | "
                f"{f['flipped_with_a_clean_member_twin']:.2f} | {f['wall_s']:.0f} |"
            )
    return [*lines, ""]


def _reference_lines(sweep: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    if not sweep:
        return []
    lines = [
        "### The reference set against every row as reference",
        "",
        "4 overlapping classes (d = 64) with 10% flipped labels; `EcoVal(max_reference_rows=R)` against "
        "`max_reference_rows=n`: noise-detection AUROC and the Spearman correlation of the values.",
        "",
        "| n | reference rows | AUROC | AUROC full | difference | Spearman with full | fit s | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, sizes in sweep.items():
        if "full" not in sizes:
            continue
        full = sizes["full"]["auroc"]
        machine = sizes.get("machine", "2 cores")
        for size, f in sizes.items():
            if size in ("full", "machine"):
                continue
            lines.append(
                f"| {int(n):,} | {int(size):,} | {f['auroc']:.4f} | {full:.4f} | {f['auroc'] - full:+.4f} | "
                f"{f['spearman_with_full']:.3f} | {f['wall_s']:.0f} | {machine} |"
            )
    return [*lines, ""]


def _search_lines(by_n: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    if not by_n:
        return []
    lines = [
        "### The neighbour search: exact against approximate",
        "",
        "`neighbour_search` on n reference rows (200,000: the members per cluster of a million-row fit), on the "
        "mixture above and on the reference sweep's 4 overlapping classes (10% flips): fit time, out-of-sample "
        "rate of 100,000 new rows, the approximate index's lowest recall@k over the clusters, noise-detection "
        "AUROC and the values' Spearman correlation with the exact search's.",
        "",
        "| n | data | search | fit s | rows/s | recall@k | AUROC | Spearman with exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, runs in by_n.items():
        for name, f in runs.items():
            data, search = name.rsplit("_", 1)
            recall = f"{f['neighbour_recall']:.3f}" if "neighbour_recall" in f else ""
            rho = f"{f['spearman_with_exact']:.4f}" if "spearman_with_exact" in f else ""
            lines.append(
                f"| {int(n):,} | {data} | {search} | {f['fit_s']:.0f} | {f['oos_rows_per_s']:,.0f} | {recall} | "
                f"{f['auroc']:.4f} | {rho} |"
            )
    return [*lines, ""]


def stack_section(results: Path) -> list[str]:
    r = load_result(results, "stack")
    lines = ["## Under a real scheduler", ""]
    if r is None:
        return [*lines, "No stack results (`make bench-stack`).", ""]
    startup = r["startup"]
    lines += [
        f"`ecoval_nightly` on a {r['rows']:,}-row table, triggered through Airflow's REST API on the native stack "
        "(Postgres, Redis, Spark standalone master + 1 worker of 3 core slots on the machine's 2 cores, MLflow on "
        "Postgres, Airflow 3 with the "
        f"LocalExecutor). The stack was up in {max(startup[k] for k in ('airflow', 'mlflow', 'spark')):.0f} s "
        f"(Airflow's `db migrate` {startup['airflow_db_migrate']:.0f} s) with {startup['memory_mb']:,.0f} MB "
        "resident."
        + (
            f" `ecoval spark-connect` then started on the master in {startup['spark_connect']:.0f} s (1 core, "
            "512 MB executors); the spark_connect run attaches every Spark step to it (`spark_conn_id`), where the "
            "other Spark runs start an application per task."
            if "spark_connect" in startup
            else ""
        ),
        "",
        "| run | engine | sizing | wall s | " + " | ".join(TASKS) + " |",
        "|---|---|---|---|" + "---|" * len(TASKS),
    ]
    for name, run in r["runs"].items():
        sizing = ", ".join(f"{k}={v}" for k, v in run["sizing"].items()) or "unsized"
        tasks = " | ".join(f"{run['tasks'].get(t, 0.0):.1f}" for t in TASKS)
        lines.append(f"| {name} | {run['engine']} | {sizing} | {run['wall_s']:.0f} | {tasks} |")
    return [*lines, ""]


def concurrency_section(results: Path) -> list[str]:
    r = load_result(results, "concurrency")
    lines = ["## Two valuations on one host", ""]
    if r is None:
        return [*lines, "No concurrency results (`benchmarks/concurrency.py`).", ""]
    lines += [
        f"Each valuation (a protocol's seed-0 split, in a fresh process, its fit timed) alone and then two started "
        f"together on this {r['cores']}-core machine, as Airflow's shard tasks or two runs share a host; `threads` "
        "is EcoVal's bound on BLAS, OpenMP and torch (None: every core). A pair's values equal the lone run's.",
        "",
        "| protocol, learner | threads | alone s | each of a pair s | slower side by side |",
        "|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        pair = max(run["pair_s"])
        threads = "every core" if run["threads"] is None else str(run["threads"])
        lines.append(
            f"| {run['case'].replace(':', ', ')} | {threads} | {run['alone_s']:.1f} | "
            f"{' / '.join(f'{s:.1f}' for s in run['pair_s'])} | {pair / run['alone_s']:.1f}x |"
        )
    return [*lines, ""]
