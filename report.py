"""The paper's figures and tables from the logs of search.py and retrain.py.

    python report.py runs/search-cifar100 --compare runs/search-cifar100-nokd \\
        --retrain runs/retrain-cifar100 runs/retrain-cifar100-nokd --out figures/
    python report.py runs/search-digits --retrain runs/retrain-digits     # the quick start's

From a search folder (results.jsonl), and optionally a second search to compare (the --no-kd one):
    Fig. 2  accuracy histograms per budget, KD vs no KD            fig2_histograms.png
    Fig. 3  best accuracy found vs wall-clock time, per budget      fig3_best_vs_time.png
    Fig. 4  Spearman rank correlation between budgets, over the
            configurations evaluated at both                        fig4_rank_correlation.png
From retrain folders (summary.json):
    Fig. 6  test accuracy vs activation memory per sample           fig6_accuracy_vs_memory.png
    Table 1 mean ± std test accuracy and parameters                 (printed)
Every figure's numbers are printed as a table too, so the report is useful without matplotlib (an
optional dependency: figures are skipped with a note when it is missing).
"""

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import common


RECORD_KEYS = ("iteration", "bracket", "rung", "index", "budget", "loss", "info", "started", "finished")


def load_search(folder):
    """The finished evaluations of a search folder, and its label. Only reads: a line cut short by a
    running search is left alone."""
    path = Path(folder) / "results.jsonl"
    if not path.is_file():
        raise common.UserError(f"{folder} has no results.jsonl; give a folder written by search.py.")
    saved = Path(folder) / "search.json"
    settings = common.read_json(str(saved), "search.json").get("settings", {}) if saved.is_file() else {}
    records, _ = common.read_jsonl(path)
    for number, r in enumerate(records, 1):
        missing = [k for k in RECORD_KEYS if not isinstance(r, dict) or k not in r]
        if missing or (r["loss"] is not None and "accuracy" not in r["info"]):
            raise common.UserError(f"{path} line {number} is not a search result (missing "
                                   f"{', '.join(missing) or 'info.accuracy'}); give a folder written by search.py.")
    if not records:
        raise common.UserError(f"{path} holds no finished evaluation yet; report once the search has some.")
    if all(r["loss"] is None for r in records):
        raise common.UserError(f"every evaluation in {path} failed ({len(records)}); read their errors there, "
                               "fix the cause and run the search again.")
    label = "no KD (NAGO)" if settings.get("no_kd") else "KD (AutoKD)"
    return records, f"{label}: {Path(folder).name}"


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


def rank_correlations(records):
    """{(b1, b2): (Spearman ρ, n)} over configurations evaluated at both budgets (Fig. 4): a
    configuration is one (iteration, bracket, index) of the Hyperband plan, promoted across rungs."""
    by_config = group([r for r in records if r["loss"] is not None],
                      lambda r: (r["iteration"], r["bracket"], r["index"]))
    accuracy = {key: {r["budget"]: r["info"]["accuracy"] for r in rs} for key, rs in by_config.items()}
    budgets = sorted({r["budget"] for r in records})
    out = {}
    for i, b1 in enumerate(budgets):
        for b2 in budgets[i + 1:]:
            pairs = [(a[b1], a[b2]) for a in accuracy.values() if b1 in a and b2 in a]
            rho = spearmanr(*zip(*pairs)).statistic if len(pairs) >= 3 else math.nan
            out[b1, b2] = (float(rho), len(pairs))
    return out


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
    for records, label in searches:
        print(f"\n== {label}: {len(records)} evaluations, {sum(r['loss'] is None for r in records)} failed")
        print("Fig. 2  accuracy per budget        n    mean %   best %")
        for budget, accs in accuracies_by_budget(records).items():
            print(f"        {budget:>6g} epochs      {len(accs):>5} {100 * np.mean(accs):>8.2f} {100 * max(accs):>8.2f}")
        print("Fig. 3  best accuracy vs time (hours, best %), per budget")
        for budget, curve in best_over_time(records).items():
            print(f"        {budget:>6g} epochs  " + "  ".join(f"({h:.2f}, {100 * a:.1f})" for h, a in curve))
        print("Fig. 4  Spearman rank correlation between budgets")
        for (b1, b2), (rho, n) in rank_correlations(records).items():
            print(f"        {b1:g} vs {b2:g} epochs: ρ = {rho:.2f} over {n} configurations")
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
    budgets = sorted({b for records, _ in searches for b in accuracies_by_budget(records)})

    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for records, label in searches:
            accs = 100 * np.array(accuracies_by_budget(records).get(budget, []))
            ax.hist(accs, bins=15, alpha=0.6, label=label)
        ax.set(title=f"{budget:g} epochs", xlabel="hold-out accuracy %", ylabel="students")
    axes[0][0].legend(fontsize=7)
    written.append(save(fig, out / "fig2_histograms.png", plt))

    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.2), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for records, label in searches:
            curve = best_over_time(records).get(budget, [])
            if curve:
                hours, best = zip(*curve)
                ax.step(hours, 100 * np.array(best), where="post", label=label)
        ax.set(title=f"{budget:g} epochs", xlabel="wall-clock hours", ylabel="best accuracy %")
    axes[0][0].legend(fontsize=7)
    written.append(save(fig, out / "fig3_best_vs_time.png", plt))

    fig, axes = plt.subplots(1, len(searches), figsize=(4 * len(searches), 3.6), squeeze=False)
    for ax, (records, label) in zip(axes[0], searches):
        b = sorted({r["budget"] for r in records})
        matrix = np.eye(len(b))
        for (b1, b2), (rho, _) in rank_correlations(records).items():
            matrix[b.index(b1), b.index(b2)] = matrix[b.index(b2), b.index(b1)] = rho
        ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
        for i in range(len(b)):
            for j in range(len(b)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set(xticks=range(len(b)), yticks=range(len(b)), xticklabels=[f"{x:g}" for x in b],
               yticklabels=[f"{x:g}" for x in b], title=label)
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
