"""The paper's figures and tables from the logs of search.py and retrain.py: Fig. 2 (accuracy per
budget, KD vs no KD), Fig. 3 (best accuracy vs time), Fig. 4 (rank correlation between budgets),
Fig. 6 and Table 1 (from retrain folders). Every figure's numbers are printed too.

    python report.py runs/search-digits --retrain runs/retrain-digits     # the quick start's
    python report.py runs/kd --compare runs/nokd        # folders of search.py --repeats N --out runs/kd

An arm (the folders before --compare, or after it) is a search folder, a folder of repeat-*/
searches, or several of either, pooled (same data set, --no-kd and budgets). Over several searches,
Fig. 3 is the mean ± std of their best-so-far curves on one grid of minutes, Fig. 4 the mean ± std of
each search's ρ. An undefined ρ or spread prints "n/a" with its reason; a malformed log line is refused.
"""

import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import bohb
from machinery import cli, files, schema


MIN_PAIRS = 3  # Spearman's ρ over fewer configurations says nothing
ARM_KEYS = ("dataset", "no_kd", "min_budget", "max_budget", "eta")  # what the searches of one arm share
PLAN_KEYS = ("min_budget", "max_budget", "eta")
GRID = 200  # points of Fig. 3's common time grid
PRINTED = np.linspace(0, GRID - 1, 6).astype(int)  # the grid points Fig. 3's table prints
COLORS = ("C0", "C1")


# ----------------------------------------------------------------------------------------------------
# Reading the logs

def read_records(path):
    """The records of a results.jsonl or study.jsonl ([] if there is none), each checked, the last
    attempt of each job only (a transient failure run again is one evaluation). Only reads: a line
    cut short by a running search is left alone."""
    return bohb.latest(schema.read_jsonl(path, "search record")[0])


@dataclass
class Search:
    """One search folder: its evaluations, its study's and its search.json settings ({} if none)."""
    folder: Path
    records: list
    study: list
    settings: dict


def read_settings(path):
    if not path.is_file():
        return {}
    saved = files.read_json(str(path), "search.json")
    if not isinstance(saved, dict) or not isinstance(saved.get("settings", {}), dict):
        raise cli.UserError(f"{path} is not a search.json of search.py; repair it or give a folder written by "
                               "search.py.")
    return saved.get("settings", {})


def load_search(folder):
    path = folder / "results.jsonl"
    if not path.is_file():
        raise cli.UserError(f"{folder} has no results.jsonl (nor repeat-*/ searches); give a folder written by "
                               "search.py.")
    settings, records = read_settings(folder / "search.json"), read_records(path)
    if not records:
        raise cli.UserError(f"{path} holds no finished evaluation yet; report once the search has some (or "
                               "name the finished repeats one by one).")
    if all(r["loss"] is None for r in records):
        raise cli.UserError(f"every evaluation in {path} failed ({len(records)}); read their errors there, "
                               "fix the cause and run the search again.")
    return Search(folder, records, read_records(folder / "study.jsonl"), settings)


def search_folders(folder):
    """`folder` when it holds results.jsonl, else its repeat-*/ folders holding a search.json (written
    by search.py --repeats), repeat-2 before repeat-10."""
    folder = Path(folder)
    repeats = sorted((p for p in folder.glob("repeat-*") if (p / "search.json").is_file()),
                     key=lambda p: (len(p.name), p.name))
    return repeats if repeats and not (folder / "results.jsonl").is_file() else [folder]


def check_alike(searches, keys, rule):
    """One line refusing searches whose settings differ in one of `keys`."""
    first = searches[0]
    for other in searches[1:]:
        for key in keys:
            a, b = first.settings.get(key, "not recorded"), other.settings.get(key, "not recorded")
            if a != b:
                raise cli.UserError(f"{first.folder} and {other.folder} differ in {key} ({a} and {b}); {rule}.")


@dataclass
class Arm:
    """The searches drawn as one arm of Figs. 2-4 (KD, or no KD), pooled."""
    label: str
    searches: list

    @property
    def records(self):
        return [r for s in self.searches for r in s.records]

    @property
    def study(self):
        return [r for s in self.searches for r in s.study]

    @property
    def no_kd(self):
        return bool(self.searches[0].settings.get("no_kd"))


def load_arm(given):
    folders = [f for g in given for f in search_folders(g)]
    resolved = [f.resolve() for f in folders]
    twice = [f for f, r in zip(folders, resolved) if resolved.count(r) > 1]
    if twice:
        raise cli.UserError(f"{twice[0]} is given twice in one arm; give each search once.")
    searches = [load_search(f) for f in folders]
    check_alike(searches, ARM_KEYS, "an arm pools repeats of one search: give searches of one --dataset, --no-kd "
                                    "and budget plan")
    names = [Path(f).resolve().name for f in given]
    label = ("no KD (NAGO): " if searches[0].settings.get("no_kd") else "KD (AutoKD): ") + (
        names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}")
    return Arm(label + (f" ({len(searches)} searches)" if len(searches) > 1 else ""), searches)


def plan_note(arms):
    """A note when the arms ran different budget plans (so a panel may show one arm only), else None."""
    plans = [tuple(arm.searches[0].settings.get(k) for k in PLAN_KEYS) for arm in arms]
    if len(set(plans)) > 1:
        return ("note: the arms ran different budget plans (min_budget, max_budget, eta: "
                f"{' and '.join(map(str, plans))}); a budget's panel shows only the arms trained at it.")
    return None


def load_retrain(folder):
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise cli.UserError(f"{folder} has no summary.json; give a folder written by retrain.py.")
    summary = files.read_json(str(path), "summary.json")
    if not isinstance(summary, dict) or not {"students", "mean", "std", "k"} <= set(summary):
        raise cli.UserError(f"{path} is not a retrain.py summary; give a folder written by retrain.py.")
    return summary, Path(folder).name


# ----------------------------------------------------------------------------------------------------
# The numbers

def accuracies_by_budget(records):
    """{budget: [hold-out accuracy of every successful evaluation]} (Fig. 2)."""
    by_budget = defaultdict(list)
    for r in records:
        if r["loss"] is not None:
            by_budget[r["budget"]].append(r["info"]["accuracy"])
    return dict(sorted(by_budget.items()))


def span(records):
    """(start time, minutes it ran) of one search: from its first start to its last finish."""
    start = min(r["finished"] if r["started"] is None else r["started"] for r in records)
    return start, (max(r["finished"] for r in records) - start) / 60


def best_over_time(records):
    """{budget: [(minutes since the search started, best accuracy so far at that budget)]} (Fig. 3)."""
    start, _ = span(records)
    curves = {}
    for budget, rs in sorted(group(records, lambda r: r["budget"]).items()):
        best, curve = -math.inf, []
        for r in sorted(rs, key=lambda r: r["finished"]):
            if r["loss"] is not None and r["info"]["accuracy"] > best:
                best = r["info"]["accuracy"]
                curve.append(((r["finished"] - start) / 60, best))
        curves[budget] = curve
    return curves


def best_band(searches, budget):
    """Fig. 3 over several searches: (minutes, mean, sample std) of their best-so-far accuracies at
    `budget` on one grid from when every search has a result at it to the end of the shortest
    search; None when there is no such time."""
    curves = [best_over_time(s.records).get(budget) for s in searches]
    if not all(curves):
        return None
    begin, end = max(curve[0][0] for curve in curves), min(span(s.records)[1] for s in searches)
    if begin > end:
        return None
    grid = np.linspace(begin, end, GRID)
    values = np.array([step(curve, grid) for curve in curves])  # (searches, GRID)
    return grid, values.mean(axis=0), values.std(axis=0, ddof=1)


def step(curve, grid):
    """The best-so-far step function `curve` [(minute, best)] read at `grid` (no earlier than its first step)."""
    times, best = map(np.array, zip(*curve))
    return best[np.searchsorted(times, grid, side="right") - 1]


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


def pooled_correlations(searches):
    """Fig. 4 of an arm: {(b1, b2): [(ρ or None, n, why None) of each search]}, each search's ρ over its
    own study, else over what BOHB promoted in it."""
    out = defaultdict(list)
    for s in searches:
        for pair, result in rank_correlations(fig4_records(s.records, s.study)[0]).items():
            out[pair].append(result)
    return dict(sorted(out.items()))


def fig4_source(arm):
    sources = [fig4_records(s.records, s.study)[1] for s in arm.searches]
    if len(set(sources)) == 1:
        return sources[0]
    return f"study in {sources.count('study')} of {len(sources)} searches, else promoted by BOHB"


def defined(results):
    """([ρ], [configurations]) of the searches that have a ρ, of their [(ρ or None, n, why)]."""
    return [r for r, _, _ in results if r is not None], [n for r, n, _ in results if r is not None]


def rho_text(results, searches):
    """Fig. 4's number as printed: one search's ρ, or the mean ± std across searches, or why not."""
    rhos, ns = defined(results)
    if not rhos:
        return f"n/a ({'in every search: ' * (searches > 1)}{results[0][2]}; run the search with --study 10)"
    if searches == 1:
        return f"ρ = {rhos[0]:.2f} over {ns[0]} configurations"
    spread = f"± {np.std(rhos, ddof=1):.2f}" if len(rhos) > 1 else "(no spread: one search has a ρ)"
    each = f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)} to {max(ns)}"
    return f"ρ = {np.mean(rhos):.2f} {spread} across {len(rhos)} of {searches} searches ({each} configurations each)"


def paired_difference(kd_study, plain_study):
    """{budget: (mean of KD minus no-KD accuracy, KD wins, pairs)} over the students both studies
    trained: the same θ and architecture seed (the same --seed), one with KD and one without."""
    def by_student(study):
        return {(json.dumps({k: v for k, v in r["config"].items() if k not in ("tau", "alpha")}, sort_keys=True),
                 r["info"]["arch_seed"], r["budget"]): r["info"]["accuracy"]
                for r in study if r["loss"] is not None and "arch_seed" in r["info"]}
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


def spread(summary):
    """Table 1's spread across architectures, or why there is none."""
    return f"± {summary['std']:.2f}" if summary["std"] is not None else "n/a (1 architecture)"


# ----------------------------------------------------------------------------------------------------
# Printed tables

def print_tables(arms, retrains):
    note = plan_note(arms) if arms else None
    if note:
        print("\n" + note)
    for arm in arms:
        print_arm(arm)
    kd = [a for a in arms if not a.no_kd]
    plain = [a for a in arms if a.no_kd]
    if kd and plain and kd[0].study and plain[0].study:
        print("\nKD minus no KD on the same students (the two studies train the same architectures)")
        for budget, (mean, wins, n) in paired_difference(kd[0].study, plain[0].study).items():
            print(f"        {budget:>6g} epochs: {100 * mean:+6.2f} points on average; KD better for {wins} of {n}")
    if retrains:
        print_retrains(retrains)


def print_arm(arm):
    records, study = arm.records, arm.study
    configurations = sum(len({r["index"] for r in s.study}) for s in arm.searches)
    print(f"\n== {arm.label}: {len(records)} evaluations, {sum(r['loss'] is None for r in records)} failed"
          + (f"; study: {len(study)} evaluations of {configurations} configurations" if study else ""))
    print("Fig. 2  accuracy per budget (search + study)   n    mean %   best %")
    for budget, accs in accuracies_by_budget(records + study).items():
        print(f"        {budget:>6g} epochs                  {len(accs):>5} {100 * np.mean(accs):>8.2f} "
              f"{100 * max(accs):>8.2f}")
    print_fig3(arm)
    n, source = len(arm.searches), fig4_source(arm)
    print("Fig. 4  Spearman rank correlation between budgets, over " + (
        "the study's configurations (each at every budget)" if source == "study" else
        "the configurations BOHB promoted" if source == "promoted by BOHB" else f"the {source}")
        + (f"; per search, then mean ± std across the {n} searches" if n > 1 else ""))
    for (b1, b2), results in pooled_correlations(arm.searches).items():
        print(f"        {b1:g} vs {b2:g} epochs: {rho_text(results, n)}")


def print_fig3(arm):
    if len(arm.searches) == 1:
        print("Fig. 3  best accuracy found by BOHB vs time (minutes since the search started, best %), per budget")
        for budget, curve in best_over_time(arm.records).items():
            print(f"        {budget:>6g} epochs  " + "  ".join(f"({m:.1f}, {100 * a:.1f})" for m, a in curve))
        return
    print(f"Fig. 3  best accuracy found by BOHB vs time, mean ± std over {len(arm.searches)} searches (minutes "
          "since each search started, best %), per budget")
    for budget in sorted({r["budget"] for r in arm.records}):
        band = best_band(arm.searches, budget)
        print(f"        {budget:>6g} epochs  " + (
            "n/a (not every search has a result at this budget before the shortest one ended)" if band is None else
            "  ".join(dict.fromkeys(f"({m:.1f}, {100 * a:.1f} ± {100 * s:.1f})"  # one point if the band is one
                                    for m, a, s in zip(*(x[PRINTED] for x in band))))))


def print_retrains(retrains):
    print("\nTable 1 / Fig. 6  retrained students (test set)")
    print(f"        {'run':<28} {'k':>3} {'test acc %':>10} {'spread':<20} {'params M':>9} {'MiB/sample':>10}")
    for summary, label in retrains:
        students = summary["students"]
        print(f"        {label:<28} {summary['k']:>3} {summary['mean']:>10.2f} {spread(summary):<20} "
              f"{np.mean([s['params'] for s in students]) / 1e6:>9.3f} "
              f"{np.mean([s['memory_mb'] for s in students]):>10.3f}")
        if summary.get("teacher"):
            t = summary["teacher"]
            print(f"        {'  its teacher':<28} {'':>3} {100 * t['accuracy']:>10.2f} {'':<20} "
                  f"{t['params'] / 1e6:>9.3f} {t['memory_mb']:>10.3f}")
    with_kd = [s for s, _ in retrains if not s.get("no_kd")]
    without = [s for s, _ in retrains if s.get("no_kd")]
    if with_kd and without:
        print(f"        KD minus no KD: {with_kd[0]['mean'] - without[0]['mean']:+.2f} points (spread across "
              f"architectures {spread(with_kd[0])} with KD, {spread(without[0])} without)")


# ----------------------------------------------------------------------------------------------------
# Figures

def figures(arms, retrains, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nfigures skipped: matplotlib is not installed (pip install matplotlib)")
        return []
    out.mkdir(parents=True, exist_ok=True)
    budgets = sorted({r["budget"] for arm in arms for r in arm.records + arm.study if r["loss"] is not None})
    drawn = {"fig2_histograms.png": fig2(plt, arms, budgets), "fig3_best_vs_time.png": fig3(plt, arms, budgets),
             "fig4_rank_correlation.png": fig4(plt, arms)}
    if retrains:
        drawn["fig6_accuracy_vs_memory.png"] = fig6(plt, retrains)
    written = [save(fig, out / name, plt) for name, fig in drawn.items()]
    for path in written:
        print(f"wrote {path}")
    return written


def panels(plt, n, height):
    fig, axes = plt.subplots(1, n, figsize=(4 * n, height), squeeze=False)
    return fig, axes[0]


def fig2(plt, arms, budgets):
    every = [accuracies_by_budget(arm.records + arm.study) for arm in arms]
    fig, axes = panels(plt, len(budgets), 3.2)
    for ax, budget in zip(axes, budgets):
        values = [100 * np.array(accuracies.get(budget, [])) for accuracies in every]
        bins = np.histogram_bin_edges(np.concatenate(values), bins=10)  # the same bins for both arms
        for color, accs, arm in zip(COLORS, values, arms):
            ax.hist(accs, bins=bins, alpha=0.55, color=color, label=f"{arm.label} (n={len(accs)})")
            if len(accs):
                ax.axvline(accs.mean(), color=color, linestyle="--", linewidth=1.5)  # the mean
        ax.set(title=f"{budget:g} epoch{'s' * (budget != 1)} (dashed: means)", xlabel="hold-out accuracy %",
               ylabel="students")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    return fig


def fig3(plt, arms, budgets):
    fig, axes = panels(plt, len(budgets), 3.2)
    for ax, budget in zip(axes, budgets):
        for color, arm in zip(COLORS, arms):
            (draw_curve if len(arm.searches) == 1 else draw_band)(ax, arm, budget, color)
        ax.set(title=f"{budget:g} epoch{'s' * (budget != 1)}", xlabel="wall-clock minutes", ylabel="best accuracy %")
    axes[0].legend(fontsize=7)
    return fig


def draw_curve(ax, arm, budget, color):
    """One search's best-so-far steps, a marker at each improvement, held to the search's end."""
    records = arm.records
    curve = best_over_time(records).get(budget, [])
    if curve:
        minutes, best = zip(*curve)
        ax.step(np.array(minutes + (span(records)[1],)), 100 * np.array(best + best[-1:]), where="post", color=color,
                marker="o", markevery=len(minutes) * [True] + [False], label=arm.label)


def draw_band(ax, arm, budget, color):
    band = best_band(arm.searches, budget)
    if band is not None:
        grid, mean, std = band
        ax.plot(grid, 100 * mean, color=color, marker="o", markevery=[0], label=f"{arm.label}: mean ± std")
        ax.fill_between(grid, 100 * (mean - std), 100 * (mean + std), color=color, alpha=0.25)


def fig4(plt, arms):
    fig, axes = panels(plt, len(arms), 3.6)
    for ax, arm in zip(axes, arms):
        b = sorted({r["budget"] for s in arm.searches for r in fig4_records(s.records, s.study)[0]})
        matrix, text = np.eye(len(b)), [["1" for _ in b] for _ in b]
        for (b1, b2), results in pooled_correlations(arm.searches).items():
            i, j, rhos = b.index(b1), b.index(b2), defined(results)[0]
            matrix[i, j] = matrix[j, i] = np.mean(rhos) if rhos else np.nan  # nan is drawn blank
            text[i][j] = text[j][i] = cell_text(results, len(arm.searches))
        ax.imshow(np.ma.masked_invalid(matrix), vmin=-1, vmax=1, cmap="RdBu")
        for i in range(len(b)):
            for j in range(len(b)):
                dark = np.isfinite(matrix[i, j]) and abs(matrix[i, j]) > 0.6
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black")
        ax.set(xticks=range(len(b)), yticks=range(len(b)), xticklabels=[f"{x:g}" for x in b],
               yticklabels=[f"{x:g}" for x in b], xlabel="epochs", title=f"{arm.label}\n({fig4_source(arm)})")
        ax.title.set_fontsize(8)
    return fig


def cell_text(results, searches):
    """A Fig. 4 cell: ρ and its configurations for one search; mean, ± std and searches with a ρ for several."""
    rhos, _ = defined(results)
    if searches == 1:
        rho, n, _ = results[0]
        return f"n/a\nn={n}" if rho is None else f"{rho:.2f}\nn={n}"
    if not rhos:
        return "n/a"
    return f"{np.mean(rhos):.2f}" + (f"\n± {np.std(rhos, ddof=1):.2f}" if len(rhos) > 1 else "") + \
        f"\n{len(rhos)}/{searches} searches"


def fig6(plt, retrains):
    fig, ax = plt.subplots(figsize=(5, 4))
    for summary, label in retrains:
        students = summary["students"]
        ax.scatter([s["memory_mb"] for s in students], [100 * s["accuracy"] for s in students], label=label)
        if summary.get("teacher"):
            t = summary["teacher"]
            ax.scatter([t["memory_mb"]], [100 * t["accuracy"]], marker="*", s=200, label=f"teacher ({label})")
    ax.set(xlabel="activation memory per sample (MiB)", ylabel="test accuracy %")
    ax.legend(fontsize=7)
    return fig


def save(fig, path, plt):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parser():
    p = cli.Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("search", nargs="+", help="the first arm: a search folder written by search.py, a folder of "
                                             "its --repeats (repeat-*/), or several of either, pooled")
    p.add_argument("--compare", nargs="+", default=[], metavar="SEARCH",
                   help="a second arm given the same way, e.g. the --no-kd search(es) (Figs. 2-4)")
    p.add_argument("--retrain", nargs="*", default=[], help="retrain folders written by retrain.py (Fig. 6, Table 1)")
    p.add_argument("--out", default=None, help="folder for the PNG figures (default: <first search>/figures)")
    return p


@cli.cli
def main(argv=None):
    args = parser().parse_args(argv)
    arms = [load_arm(folders) for folders in (args.search, args.compare) if folders]
    check_alike([arm.searches[0] for arm in arms], ("dataset",),
                "--compare draws both arms on the same axes: compare searches of one --dataset")
    retrains = [load_retrain(f) for f in args.retrain]
    print_tables(arms, retrains)
    figures(arms, retrains, Path(args.out or Path(args.search[0]) / "figures"))


if __name__ == "__main__":
    sys.exit(main())
