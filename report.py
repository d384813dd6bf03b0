"""The paper's figures and tables from the logs of search.py and retrain.py.

    python report.py runs/search-cifar100 --compare runs/search-cifar100-nokd \\
        --retrain runs/retrain-cifar100 runs/retrain-cifar100-nokd --out figures/
    python report.py runs/search-digits --retrain runs/retrain-digits     # the quick start's

From a search folder (results.jsonl, and study.jsonl when the search ran with --study), and
optionally a second search to compare (the --no-kd one):
    Fig. 2  accuracy histograms per budget, KD vs no KD: every
            student the search and its study trained                fig2_histograms.png
    Fig. 3  best accuracy found by BOHB vs wall-clock time, per
            budget                                                  fig3_best_vs_time.png
    Fig. 4  Spearman rank correlation between budgets, over the
            study's configurations (each trained at every budget),
            else over those BOHB promoted                           fig4_rank_correlation.png
    KD vs no KD on the same students: the two studies of one --seed train the same architectures
            (printed: the mean difference per budget and how often KD won)
From retrain folders (summary.json):
    Fig. 6  test accuracy vs activation memory per sample           fig6_accuracy_vs_memory.png
    Table 1 mean ± std test accuracy and parameters, and KD minus no KD (printed)
Every figure's numbers are printed as a table too, so the report is useful without matplotlib (an
optional dependency: figures are skipped with a note when it is missing). A correlation that
cannot be computed (fewer than 3 configurations at both budgets, or equal accuracies) is printed
and drawn as "n/a" with the reason, never as nan.
"""

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import common


RECORD_KEYS = ("iteration", "bracket", "rung", "index", "budget", "loss", "info", "started", "finished")
MIN_PAIRS = 3  # Spearman's ρ over fewer configurations says nothing


def read_records(path):
    """The records of a results.jsonl or study.jsonl, each checked. Only reads: a line cut short by a
    running search is left alone."""
    from machinery import schema
    return schema.read_jsonl(path, "search record")[0]


def load_search(folder):
    """(the search's evaluations, its study's evaluations, its label) of a search folder."""
    path = Path(folder) / "results.jsonl"
    if not path.is_file():
        raise common.UserError(f"{folder} has no results.jsonl; give a folder written by search.py.")
    saved = Path(folder) / "search.json"
    settings = common.read_json(str(saved), "search.json").get("settings", {}) if saved.is_file() else {}
    records = read_records(path)
    study = read_records(Path(folder) / "study.jsonl") if (Path(folder) / "study.jsonl").is_file() else []
    if not records:
        raise common.UserError(f"{path} holds no finished evaluation yet; report once the search has some.")
    if all(r["loss"] is None for r in records):
        raise common.UserError(f"every evaluation in {path} failed ({len(records)}); read their errors there, "
                               "fix the cause and run the search again.")
    label = "no KD (NAGO)" if settings.get("no_kd") else "KD (AutoKD)"
    return records, study, f"{label}: {Path(folder).name}"


def accuracies_by_budget(records):
    """{budget: [hold-out accuracy of every successful evaluation]} (Fig. 2)."""
    by_budget = defaultdict(list)
    for r in records:
        if r["loss"] is not None:
            by_budget[r["budget"]].append(r["info"]["accuracy"])
    return dict(sorted(by_budget.items()))


def best_over_time(records):
    """{budget: [(hours since the search started, best accuracy so far at that budget)]} (Fig. 3)."""
    start = min(r["started"] for r in records if r["started"] is not None)
    curves = {}
    for budget, rs in sorted(group(records, lambda r: r["budget"]).items()):
        best, curve = -math.inf, []
        for r in sorted(rs, key=lambda r: r["finished"]):
            if r["loss"] is not None and r["info"]["accuracy"] > best:
                best = r["info"]["accuracy"]
                curve.append(((r["finished"] - start) / 3600, best))
        curves[budget] = curve
    return curves


def accuracy_by_config(records):
    """{configuration: {budget: hold-out accuracy}} of the successful evaluations; a configuration is
    one (iteration, bracket, index) of the Hyperband plan (promoted across rungs), or one index of the
    study (iteration and bracket None)."""
    by_config = group([r for r in records if r["loss"] is not None],
                      lambda r: (r["iteration"], r["bracket"], r["index"]))
    return {key: {r["budget"]: r["info"]["accuracy"] for r in rs} for key, rs in by_config.items()}


def rank_correlations(records):
    """{(b1, b2): (Spearman ρ or None, n, why None)} over the configurations evaluated at both budgets
    (Fig. 4). ρ is None with fewer than MIN_PAIRS configurations, or when all of them scored the same
    at one budget (a rank correlation is then undefined)."""
    accuracy = accuracy_by_config(records)
    budgets = sorted({r["budget"] for r in records})
    out = {}
    for i, b1 in enumerate(budgets):
        for b2 in budgets[i + 1:]:
            pairs = [(a[b1], a[b2]) for a in accuracy.values() if b1 in a and b2 in a]
            if len(pairs) < MIN_PAIRS:
                out[b1, b2] = (None, len(pairs), f"only {len(pairs)} configuration(s) at both budgets")
            elif any(len(set(column)) == 1 for column in zip(*pairs)):
                out[b1, b2] = (None, len(pairs), "all accuracies equal at one budget")
            else:
                out[b1, b2] = (float(spearmanr(*zip(*pairs)).statistic), len(pairs), None)
    return out


def fig4_records(records, study):
    """What Fig. 4 is computed over: the study when it has every budget pair covered, else the
    configurations BOHB promoted (few, and only the best of each rung); and which it is."""
    if study and all(rho is not None for rho, _, _ in rank_correlations(study).values()):
        return study, "study"
    return records, "promoted by BOHB"


def paired_difference(kd_study, plain_study):
    """{budget: (mean of KD minus no-KD accuracy, KD wins, pairs)} over the students both studies
    trained: the same θ and architecture seed (the same --seed), one with KD and one without."""
    def by_student(study):
        return {(json.dumps({k: v for k, v in r["config"].items() if k not in ("tau", "alpha")}, sort_keys=True),
                 r["info"]["arch_seed"], r["budget"]): r["info"]["accuracy"] for r in study if r["loss"] is not None}
    kd, plain = by_student(kd_study), by_student(plain_study)
    out = {}
    for key in sorted(kd.keys() & plain.keys(), key=lambda k: k[2]):
        out.setdefault(key[2], []).append(kd[key] - plain[key])
    return {budget: (float(np.mean(d)), int(np.sum(np.array(d) > 0)), len(d)) for budget, d in out.items()}


def group(items, key):
    out = defaultdict(list)
    for item in items:
        out[key(item)].append(item)
    return out


def load_retrain(folder):
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise common.UserError(f"{folder} has no summary.json; give a folder written by retrain.py.")
    summary = common.read_json(str(path), "summary.json")
    if not isinstance(summary, dict) or not {"students", "mean", "std", "k"} <= set(summary):
        raise common.UserError(f"{path} is not a retrain.py summary; give a folder written by retrain.py.")
    return summary, Path(folder).name


# ----------------------------------------------------------------------------------------------------
# Printed tables

def print_tables(searches, retrains):
    for records, study, label in searches:
        print(f"\n== {label}: {len(records)} evaluations, {sum(r['loss'] is None for r in records)} failed"
              + (f"; study: {len(study)} evaluations of {len({r['index'] for r in study})} configurations" if study else ""))
        print("Fig. 2  accuracy per budget (search + study)   n    mean %   best %")
        for budget, accs in accuracies_by_budget(records + study).items():
            print(f"        {budget:>6g} epochs                  {len(accs):>5} {100 * np.mean(accs):>8.2f} "
                  f"{100 * max(accs):>8.2f}")
        print("Fig. 3  best accuracy found by BOHB vs time (minutes since the search started, best %), per budget")
        for budget, curve in best_over_time(records).items():
            print(f"        {budget:>6g} epochs  " + "  ".join(f"({60 * h:.1f}, {100 * a:.1f})" for h, a in curve))
        chosen, source = fig4_records(records, study)
        print("Fig. 4  Spearman rank correlation between budgets, over " + ("the study's configurations (each at every "
              "budget)" if source == "study" else "the configurations BOHB promoted"))
        for (b1, b2), (rho, n, why) in rank_correlations(chosen).items():
            print(f"        {b1:g} vs {b2:g} epochs: " + (f"ρ = {rho:.2f} over {n} configurations" if why is None
                                                          else f"n/a ({why}; run the search with --study 10)"))
    kd = [s for s in searches if s[2].startswith("KD")]
    plain = [s for s in searches if s[2].startswith("no KD")]
    if kd and plain and kd[0][1] and plain[0][1]:
        print("\nKD minus no KD on the same students (the two studies train the same architectures)")
        for budget, (mean, wins, n) in paired_difference(kd[0][1], plain[0][1]).items():
            print(f"        {budget:>6g} epochs: {100 * mean:+6.2f} points on average; KD better for {wins} of {n}")
    if retrains:
        print("\nTable 1 / Fig. 6  retrained students (test set)")
        print(f"        {'run':<28} {'k':>3} {'accuracy %':>15} {'params M':>9} {'MiB/sample':>10}")
        for summary, label in retrains:
            students = summary["students"]
            spread = f"± {summary['std']:<4.2f}" if summary["std"] is not None else ""  # None: one architecture
            print(f"        {label:<28} {summary['k']:>3} {summary['mean']:>8.2f} {spread:<6} "
                  f"{np.mean([s['params'] for s in students]) / 1e6:>9.3f} "
                  f"{np.mean([s['memory_mb'] for s in students]):>10.3f}")
            if summary.get("teacher"):
                t = summary["teacher"]
                print(f"        {'  its teacher':<28} {'':>3} {100 * t['accuracy']:>8.2f}        "
                      f"{t['params'] / 1e6:>9.3f} {t['memory_mb']:>10.3f}")
        with_kd = [s for s, _ in retrains if not s.get("no_kd")]
        without = [s for s, _ in retrains if s.get("no_kd")]
        if with_kd and without:
            print(f"        KD minus no KD: {with_kd[0]['mean'] - without[0]['mean']:+.2f} points (spread across "
                  f"architectures ± {with_kd[0]['std']:.2f} with KD, ± {without[0]['std']:.2f} without)")


# ----------------------------------------------------------------------------------------------------
# Figures

def figures(searches, retrains, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nfigures skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    every = [accuracies_by_budget(records + study) for records, study, _ in searches]
    budgets = sorted({b for accuracies in every for b in accuracies})

    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        values = [100 * np.array(accuracies.get(budget, [])) for accuracies in every]
        bins = np.histogram_bin_edges(np.concatenate(values), bins=10)  # the same bins for KD and no KD
        for color, accs, (_, _, label) in zip(("C0", "C1"), values, searches):
            ax.hist(accs, bins=bins, alpha=0.55, color=color, label=f"{label} (n={len(accs)})")
            if len(accs):
                ax.axvline(accs.mean(), color=color, linestyle="--", linewidth=1.5)  # the mean
        ax.set(title=f"{budget:g} epoch{'s' * (budget != 1)} (dashed: means)", xlabel="hold-out accuracy %",
               ylabel="students")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    written.append(save(fig, out / "fig2_histograms.png", plt))

    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for records, _, label in searches:
            curve = best_over_time(records).get(budget, [])
            if curve:
                hours, best = zip(*curve)
                end = (max(r["finished"] for r in records) - min(r["started"] for r in records
                                                                 if r["started"] is not None)) / 3600
                ax.step(60 * np.array(hours + (end,)), 100 * np.array(best + best[-1:]), where="post",
                        marker="o", markevery=len(hours) * [True] + [False], label=label)  # held to the search's end
        ax.set(title=f"{budget:g} epoch{'s' * (budget != 1)}", xlabel="wall-clock minutes", ylabel="best accuracy %")
    axes[0][0].legend(fontsize=7)
    written.append(save(fig, out / "fig3_best_vs_time.png", plt))

    fig, axes = plt.subplots(1, len(searches), figsize=(4 * len(searches), 3.6), squeeze=False)
    for ax, (records, study, label) in zip(axes[0], searches):
        chosen, source = fig4_records(records, study)
        b = sorted({r["budget"] for r in chosen})
        matrix, text = np.eye(len(b)), [["1" for _ in b] for _ in b]
        for (b1, b2), (rho, n, _) in rank_correlations(chosen).items():
            i, j = b.index(b1), b.index(b2)
            matrix[i, j] = matrix[j, i] = np.nan if rho is None else rho  # nan is drawn blank
            text[i][j] = text[j][i] = f"n/a\nn={n}" if rho is None else f"{rho:.2f}\nn={n}"
        ax.imshow(np.ma.masked_invalid(matrix), vmin=-1, vmax=1, cmap="RdBu")
        for i in range(len(b)):
            for j in range(len(b)):
                dark = np.isfinite(matrix[i, j]) and abs(matrix[i, j]) > 0.6
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set(xticks=range(len(b)), yticks=range(len(b)), xticklabels=[f"{x:g}" for x in b],
               yticklabels=[f"{x:g}" for x in b], xlabel="epochs", title=f"{label}\n({source})")
        ax.title.set_fontsize(8)
    written.append(save(fig, out / "fig4_rank_correlation.png", plt))

    if retrains:
        fig, ax = plt.subplots(figsize=(5, 4))
        for summary, label in retrains:
            students = summary["students"]
            ax.scatter([s["memory_mb"] for s in students], [100 * s["accuracy"] for s in students], label=label)
            if summary.get("teacher"):
                t = summary["teacher"]
                ax.scatter([t["memory_mb"]], [100 * t["accuracy"]], marker="*", s=200, label=f"teacher ({label})")
        ax.set(xlabel="activation memory per sample (MiB)", ylabel="test accuracy %")
        ax.legend(fontsize=7)
        written.append(save(fig, out / "fig6_accuracy_vs_memory.png", plt))
    for path in written:
        print(f"wrote {path}")
    return written


def save(fig, path, plt):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@common.cli
def main(argv=None):
    p = common.Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("search", help="a search folder written by search.py")
    p.add_argument("--compare", default=None, help="a second search folder, e.g. the --no-kd one (Figs. 2-4)")
    p.add_argument("--retrain", nargs="*", default=[], help="retrain folders written by retrain.py (Fig. 6, Table 1)")
    p.add_argument("--out", default=None, help="folder for the PNG figures (default: <search>/figures)")
    args = p.parse_args(argv)
    searches = [load_search(f) for f in [args.search] + ([args.compare] if args.compare else [])]
    retrains = [load_retrain(f) for f in args.retrain]
    print_tables(searches, retrains)
    figures(searches, retrains, Path(args.out or Path(args.search) / "figures"))


if __name__ == "__main__":
    sys.exit(main())
