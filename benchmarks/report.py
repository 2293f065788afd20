"""Generate the plots (``benchmarks/plots/*.png``) and ``BENCHMARKS.md`` from ``benchmarks/results``.

Nothing here measures: it reads the JSON files the benchmark scripts wrote, so the page always
says what the last run found. A missing result file leaves its section saying so.

Usage: ``python benchmarks/report.py [--results DIR] [--plots DIR] [--out BENCHMARKS.md]``
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from figures import LABELS, X1_PARTS, load_result, plot_cost, plot_quality, plot_removal, plot_scale
from report_systems import batched_section, concurrency_section, scale_section, stack_section

HERE = Path(__file__).resolve().parent
QUALITY = ["P1", "P3", "M1", "D1", "X1"]
BASELINES = [
    "knn_shapley",
    "data_oob",
    "loo",
    "tmc_shapley",
    "cleanlab",
    "cleanlab_logistic",
    "knn_agreement",
    "random",
]
PUBLISHED = {
    "P1": "F1: Data-OOB 0.845, KNN-Shapley (k=100) 0.447, LOO 0.301, Random 0.261 (OpenDataVal example)",
    "P3": "AUROC: Threshold-KNN-Shapley 0.92",
}
MARGIN = 0.03


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def quality_section(results: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Per-protocol tables and the bar of issue 5, one row per protocol."""
    found = {p: r for p in QUALITY if (r := load_result(results, p)) is not None}
    lines = ["## Quality: noisy-label detection and point removal", ""]
    if not found:
        return [*lines, "No quality results: run `make bench`.", ""], found
    lines += [
        "Mean ± standard deviation over the seeds; `rm20` is the test accuracy after removing the top 20% by "
        "value and retraining (lower is better). Trainings are per valuation; wall time is the median.",
        "",
    ]
    for name, r in found.items():
        lines += [
            f"### {name}: {r['dataset']}, split {r['split']}, noise {r['noise']:.0%}, seeds {r['seeds']}",
            "",
            "| method | AUROC | F1 (2-means) | F1 (noise-rate cut) | rm20 | trainings | wall s |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, m in r["methods"].items():
            cut = _ms(m["f1_noise_cut"]) if "f1_noise_cut" in m else "not run"
            lines.append(
                f"| {LABELS.get(method, method)} | {_ms(m['auroc'])} | {_ms(m['f1'])} | {cut} | {_ms(m['rm20'])} | "
                f"{m['trainings']} | {np.median(m['wall_s']):.2f} |"
            )
        ecoval = r["methods"].get("ecoval", {})
        if "suspect_precision" in ecoval:
            lines += [
                "",
                f"`ecoval_suspect` against the flipped rows: precision {_ms(ecoval['suspect_precision'])}, "
                f"recall {_ms(ecoval['suspect_recall'])}.",
            ]
        restored = r["methods"].get("ecoval", {}).get("restored")
        if restored:
            lines += [
                "",
                f"`ecoval_suggested_label` restores the label before the flip on {_ms(restored)} of the flipped rows "
                "EcoVal flags suspect (the suggestion is offered on suspect rows only).",
            ]
        if name in PUBLISHED:
            lines += ["", f"Published reference ({name}): {PUBLISHED[name]}."]
        lines += ["", f"![removal curves {name}](benchmarks/plots/removal_{name}.png)", ""]
    return lines, found


def bar_section(found: dict[str, dict[str, Any]]) -> list[str]:
    """The bar: AUROC within 0.03 of the best baseline, F1 >= KNN-Shapley, rm20 <= Random."""
    lines = [
        "## The bar (issue 5)",
        "",
        f"EcoVal's mean AUROC within {MARGIN} of the best baseline's, its F1 not below exact KNN-Shapley's, its "
        "rm20 not above Random's; beyond the bar, ahead of Data-OOB.",
        "",
        "| protocol | EcoVal AUROC | best baseline AUROC | AUROC bar | F1 EcoVal / KNN | F1 bar | rm20 EcoVal / Random "
        "| rm20 bar | ahead of Data-OOB (AUROC) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in found.items():
        m = {k: {s: float(np.mean(v[s])) for s in ("auroc", "f1", "rm20")} for k, v in r["methods"].items()}
        if "ecoval" not in m:
            continue
        best = max((b for b in BASELINES if b in m and b != "random"), key=lambda b: m[b]["auroc"])
        e = m["ecoval"]
        knn = m.get("knn_shapley", {}).get("f1", float("nan"))
        rnd = m.get("random", {}).get("rm20", float("nan"))
        oob = m.get("data_oob", {}).get("auroc", float("nan"))
        lines.append(
            f"| {name} | {e['auroc']:.3f} | {m[best]['auroc']:.3f} ({LABELS[best]}) | "
            f"{'met' if e['auroc'] >= m[best]['auroc'] - MARGIN else 'MISSED'} | {e['f1']:.3f} / {knn:.3f} | "
            f"{'met' if e['f1'] >= knn else 'MISSED'} | {e['rm20']:.3f} / {rnd:.3f} | "
            f"{'met' if e['rm20'] <= rnd else 'MISSED'} | {'yes' if e['auroc'] > oob else 'no'} |"
        )
    return [*lines, ""]


def detection_bar_section(found: dict[str, dict[str, Any]], results: Path) -> list[str]:
    """Issue 28's bar as gaps to the baselines it names, X1's sets one by one.

    AUROC at or above Data-OOB's and cleanlab's, 2-means F1 above both, rm20 not above Random's
    and Data-OOB's; the AUROC of alpha alone beside the value's.
    """
    lines = [
        "## The detection bar (issue 28)",
        "",
        "EcoVal against the baselines a user would reach for; a gap is EcoVal's mean minus the better "
        "baseline's (AUROC and F1: higher is better; rm20: lower is better). `alpha` is the AUROC of the "
        "intrinsic value alone, what the value's form keeps of it. Rows marked `learner trees` are EcoVal with "
        '`learner="trees"` (gradient boosted trees in the trainings), the option for tabular sets. `suspect` is '
        "`ecoval_suspect`'s precision / recall against the flips (the issue asks 0.8 / 0.8 on P1 and X1).",
        "",
        "| protocol | AUROC | alpha | AUROC - max(Data-OOB, cleanlab) | F1 - max(Data-OOB, cleanlab) "
        "| rm20 - min(Random, Data-OOB) | suspect | bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    parts = {name: r for name in X1_PARTS if (r := load_result(results, name)) is not None}
    rows = [(name, r, method) for method in ("ecoval", "ecoval_trees") for name, r in {**found, **parts}.items()]
    for name, r, method in rows:
        if not {method, "data_oob", "cleanlab", "random"} <= set(r["methods"]):
            continue
        m = {k: {s: float(np.mean(v[s])) for s in ("auroc", "f1", "rm20")} for k, v in r["methods"].items()}
        e, oob, cl, rnd = (m[k] for k in (method, "data_oob", "cleanlab", "random"))
        alpha = r["methods"][method].get("auroc_alpha")
        flag = [r["methods"][method].get(f"suspect_{s}") for s in ("precision", "recall")]
        suspect = "not run" if None in flag else " / ".join(f"{np.mean(v):.3f}" for v in flag)
        shown = name if method == "ecoval" else f"{name}, learner trees"
        gaps = {
            "AUROC": e["auroc"] - max(oob["auroc"], cl["auroc"]),
            "F1": e["f1"] - max(oob["f1"], cl["f1"]),
            "rm20": e["rm20"] - min(rnd["rm20"], oob["rm20"]),
        }
        held = {"AUROC": gaps["AUROC"] >= 0, "F1": gaps["F1"] > 0, "rm20": gaps["rm20"] <= 0}
        missed = [what for what, ok in held.items() if not ok]
        lines.append(
            f"| {shown} | {e['auroc']:.3f} | {'not run' if alpha is None else f'{np.mean(alpha):.3f}'} | "
            f"{gaps['AUROC']:+.3f} | {gaps['F1']:+.3f} | {gaps['rm20']:+.3f} | {suspect} | "
            f"{'met' if not missed else 'MISSED: ' + ', '.join(missed)} |"
        )
    return [*lines, ""]


def cost_section(results: Path) -> list[str]:
    r = load_result(results, "cost")
    lines = ["## Cost: trainings at equal rank stability (P1)", ""]
    if r is None:
        return [*lines, "No cost results.", ""]
    budgets = ", ".join(f"{b}: {s:.3f}" for b, s in r["tmc_stability_by_budget"].items())
    reached = r["tmc_budget_at_equal_stability"]
    lines += [
        "Rank stability: Spearman correlation of the row values of two runs on the same split that differ only in "
        f"the method's own seed (splits {r['seeds']}).",
        "",
        f"- EcoVal: {r['ecoval_trainings']} trainings, stability {r['ecoval_stability']:.3f}.",
        f"- TMC-Shapley stability by budget (trainings): {budgets}.",
        (
            f"- TMC-Shapley reaches EcoVal's stability at {reached} trainings: "
            f"**{r['ratio_at_least']:.0f}x** EcoVal's count."
            if reached
            else f"- TMC-Shapley does not reach EcoVal's stability within "
            f"{max(map(int, r['tmc_stability_by_budget']))} trainings: the ratio is **more than "
            f"{r['ratio_at_least']:.0f}x**."
        ),
        "",
        "| method | trainings | stability | AUROC | wall s |",
        "|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {LABELS[run['method']]} (split {run['split_seed']}) | {run['trainings']} | {run['stability']:.3f} | "
            f"{run['auroc']:.3f} | {run['wall_s']:.1f} |"
        )
    return [*lines, "", "![quality against cost](benchmarks/plots/quality_vs_cost.png)", ""]


def oos_section(results: Path) -> list[str]:
    r = load_result(results, "OOS")
    lines = ["## Out-of-sample pool (OOS)", ""]
    if r is None:
        return [*lines, "No OOS results.", ""]
    lines += [
        "EcoVal fitted on the training split values a pool of 1000 rows it never clustered or trained on (same "
        f"noise rate), seeds {r['seeds']}. Accuracy: logistic regression on the training split plus half the pool.",
        "",
        "| protocol | pool AUROC | pool F1 | accuracy + top-valued half | accuracy + random half | rows/s |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {run['protocol']} ({run['dataset']}) | {_ms(run['auroc'])} | {_ms(run['f1'])} | "
            f"{_ms(run['acc_top_half'])} | {_ms(run['acc_random_half'])} | {np.median(run['rows_per_s']):.0f} |"
        )
    return [*lines, ""]


def quarantine_section(results: Path) -> list[str]:
    r = load_result(results, "quarantine")
    lines = ["## Quarantine preview: expected wrong labels against the injected flips", ""]
    if r is None:
        return [*lines, "No quarantine results (`python benchmarks/quarantine.py`).", ""]
    cuts = list(next(iter(r["protocols"].values())))
    lines += [
        "`ecoval report --preview` expects `sum (1 - alpha_i) / 2` wrong labels among the rows a cut removes (the "
        "label vote's share for the other labels). Each cell: expected / actually flipped rows in the cut, summed "
        f"over seeds {r['seeds']}, and their ratio (1 is calibrated; the bar is 0.9-1.1 on D1, M1 and P1).",
        "",
        "| protocol | " + " | ".join(cuts) + " |",
        "|---|" + "---|" * len(cuts),
    ]
    for name, found in r["protocols"].items():
        cells = [f"{c['expected']:.0f} / {c['actual']} (**{c['ratio']:.2f}**)" for c in found.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Where it holds and where not: within 10% at the 1-5% cuts on D1, M1, P3 and X1-cpu, and at the suspect "
        "cut on D1; P1 (two classes, 20% flips) runs 8-13% low. The two-class suspect cuts (odds 1.5) take rows "
        "whose vote is nearer even, and run 15% low on P1 and 17-18% high on P3 and X1-cpu. Beyond 10% the "
        "estimate runs high "
        "(1.4-2.3x at 20-30%): the extra rows are mostly clean rows whose vote is split, and a split vote is not a "
        "wrong label. On X1-credit, whose labels the features barely predict, it is 2-3x high at every cut. "
        "Tried on seeds 0-9 and not kept: one Platt map over all protocols (fixes D1 and M1 at 20-30%, halves "
        "P1), sharpening the vote's odds, removing the prior's floor from the vote, and an EM estimate of the "
        "noise rate; each moved one protocol toward 1 and another away.",
    ]
    return [*lines, ""]


def exactness_section(results: Path) -> list[str]:
    r = load_result(results, "exactness")
    lines = ["## Exactness against brute-force Shapley", ""]
    if r is None:
        return [*lines, "No exactness results.", ""]
    lines += [
        "Cluster games on real data (300 training rows, 100 validation rows, 10% noise): EcoVal's phi from "
        "2 + p + p(p-1)/2 trainings against the exact Shapley values of the same p-cluster game (all 2^p "
        "coalitions trained with EcoVal's learner, utility and sample). Errors relative to |U(B) - U(empty)|.",
        "",
        "| data | p | exact trainings | max error | mean error | L1 error / L1 of exact | Spearman | Gamma clipped "
        "(runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for g in r["clusters"]:
        groups.setdefault((g["dataset"], g["p"]), []).append(g)
    for (data, p), gs in sorted(groups.items()):
        lines.append(
            f"| {data} | {p} | {gs[0]['trainings_exact']} | {np.mean([g['max_abs_error_rel'] for g in gs]):.3f} | "
            f"{np.mean([g['mean_abs_error_rel'] for g in gs]):.3f} | "
            f"{np.mean([g.get('l1_error_rel', float('nan')) for g in gs]):.3f} | "
            f"{np.mean([g['spearman'] for g in gs]):.3f} | "
            f"{sum(g['gammas_clipped'] for g in gs)}/{len(gs)} |"
        )
    rows = r["rows"]
    lines += [
        "",
        f"Rows (12 rows of 2dplanes, 4095 trainings for exact Shapley; EcoVal's row values are not Shapley values "
        f"by design): Spearman {np.mean([x['spearman'] for x in rows]):.3f}, max error "
        f"{np.mean([x['max_abs_error_rel'] for x in rows]):.2f} of |sum of exact values|.",
        "",
        "On synthetic games without interactions of order 3 or more, phi equals the exact Shapley value to "
        "machine precision; that is a unit test (tests/valuation/test_invariants.py), not a benchmark.",
        "",
    ]
    return lines


def tuning_section(results: Path) -> list[str]:
    lines = ["## What was tried: the label vote and kappa calibration", ""]
    settled, confirm = load_result(results, "tuning"), load_result(results, "tuning_confirm")
    if settled is None:
        return [*lines, "No tuning results.", ""]
    knobs = ["vote_neighbors", "halo_clusters", "prior_weight", "c_kappa"]
    lines += [
        "Mean per protocol (benchmarks/tuning.py): the defaults (marked *) were chosen on seeds "
        f"{settled['seeds']} and confirmed on seeds {confirm['seeds'] if confirm else '(not run)'}. "
        "vote k, halo and m0 are the label vote's neighbours, nearest other clusters and prior weight "
        "(the first row is the spec's vote, in the supervised space).",
        "",
        "| protocol | vote k | halo | m0 | c_kappa | AUROC | F1 | rm20 | AUROC, F1, rm20 (confirm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    confirmed = {(row["protocol"], *(row.get(k) for k in knobs)): row for row in (confirm["rows"] if confirm else [])}
    for row in settled["rows"]:
        mark = "*" if row.get("default") else ""
        again = confirmed.get((row["protocol"], *(row.get(k) for k in knobs)))
        check = f"{again['auroc']:.3f}, {again['f1']:.3f}, {again['rm20']:.3f}" if again else "-"
        lines.append(
            f"| {row['protocol']} | "
            + " | ".join(f"{row.get(k, '-')}{mark}" for k in knobs)
            + f" | {row['auroc']:.3f} | {row['f1']:.3f} | {row['rm20']:.3f} | {check} |"
        )
    r = settled
    if "space" in r:
        lines += [
            "",
            "The intrinsic signal alone (AUROC of -agree_i over all training rows, no clusters), by the space the "
            "neighbours are searched in: the standardised embedding, or the same scaled by the mean absolute "
            "coefficient of a logistic regression on all rows (a supervised clustering space):",
            "",
            "| protocol | " + " | ".join(r["space"]["columns"]) + " |",
            "|---|" + "---|" * len(r["space"]["columns"]),
        ]
        for name, vals in r["space"]["rows"].items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--plots", type=Path, default=HERE / "plots")
    parser.add_argument("--out", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    args.plots.mkdir(parents=True, exist_ok=True)
    quality, found = quality_section(args.results)
    plot_removal(args.results, args.plots)
    plot_quality(found, args.plots)
    plot_cost(args.results, found, args.plots)
    plot_scale(args.results, args.plots)
    page = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/report.py` from `benchmarks/results/*.json` (written by `make bench`); "
        "do not edit by hand. Protocols: `../shared/spec/benchmarks.md`. Machine: 2 CPU cores, no accelerator "
        "unless a section says otherwise.",
        "",
        *bar_section(found),
        *detection_bar_section(found, args.results),
        "![AUROC and F1 per method](benchmarks/plots/quality_auroc_f1.png)",
        "",
        *quality,
        *cost_section(args.results),
        *oos_section(args.results),
        *quarantine_section(args.results),
        *exactness_section(args.results),
        *tuning_section(args.results),
        *batched_section(args.results),
        *scale_section(args.results),
        *concurrency_section(args.results),
        *stack_section(args.results),
    ]
    notes = HERE / "NOTES.md"
    if notes.exists():
        page += [notes.read_text().rstrip(), ""]
    text = "\n".join(page)
    args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
