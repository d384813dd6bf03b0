"""Which search protocol (search.SEARCH_PROTOCOLS: darts, nago) ranks students at short budgets more as
longer training ranks them: the same random students trained under each at --short budgets and at a
--long one, and Spearman's ρ between each short budget's hold-out accuracies and the long one's.

    python bench/search_protocols.py                                          # digits, minutes on a CPU
    python bench/search_protocols.py --data-dir /tmp/cifar10-jpeg --record    # and a CIFAR-10 subset

Students: --students θ drawn uniformly from the quick start's box (node counts at most --max-nodes),
architecture seed i for student i, trained without KD (plain cross-entropy: the protocols are
compared, not the teacher). Every (student, budget) is a training from scratch, as search.py runs it
(the cosine spans the budget). Each protocol as search.py resolves it for the data set: digits takes
the preset's batch 16 and rate under both, CIFAR-10 each protocol's own. CIFAR-10: a seeded subset of
--cifar-train / --cifar-val images of the search split at 32 px. Prints per protocol the mean
accuracy per budget and ρ against each protocol's long training and against their mean, with
bootstrap intervals over students, and ρ(nago) − ρ(darts) paired the same way; --record writes the
tables into bench/RESULTS.md.
"""
import argparse
import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import search  # noqa: E402
import train  # noqa: E402
from bench import results  # noqa: E402
from bench.bn_recalibration import students, subset  # noqa: E402
from data import load_data  # noqa: E402

PROTOCOLS = tuple(search.SEARCH_PROTOCOLS)
BOOTSTRAP = 2000  # resamples of the students for the intervals


def protocol(name, dataset):
    """The search's training protocol `name` as search.resolve makes it for `dataset` (its preset's
    batch size and rate, where it sets them)."""
    preset = search.SEARCH_PRESETS[dataset]
    base = search.SEARCH_PROTOCOLS[name]
    return base.replace(batch_size=preset.get("batch_size"), lr=preset.get("lr"))


# ----------------------------------------------------------------------------------------------------
# Training, in worker processes of one torch thread each

DATA = {}


def load(dataset, data_dir, cache_dir, sizes, seed):
    """A worker's data set, loaded once: digits, or the seeded CIFAR-10 subset."""
    if dataset not in DATA:
        if dataset == "digits":
            DATA[dataset] = load_data("digits", split="search")
        else:
            data = load_data("cifar10", data_dir, "search", cache_dir=cache_dir)
            DATA[dataset] = dataclasses.replace(data, train=subset(data.train, sizes[0], seed),
                                                val=subset(data.val, sizes[1], seed + 1))
    return DATA[dataset]


def init_worker():
    torch.set_num_threads(1)


def train_one(job, where):
    """One student at one budget under one protocol: its hold-out accuracy (None if it diverged)."""
    data = load(job["dataset"], *where)
    result, _, _ = train.f_kd(job["theta"], job["budget"], job["student"], data, None,
                              protocol(job["protocol"], job["dataset"]).replace(eval_every=job["budget"]),
                              train.RunOptions(seed=job["student"], log=lambda line: None),
                              {"max_params": job["max_params"]})
    return {**job, "accuracy": result["accuracy"], "wall_s": result["wall_s"]}


def run_jobs(jobs, where, workers):
    """Every job trained in `workers` processes; the results in the jobs' order."""
    done = {}
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=init_worker) as pool:
        futures = {pool.submit(train_one, job, where): i for i, job in enumerate(jobs)}
        for future in cf.as_completed(futures):
            row = done[futures[future]] = future.result()
            accuracy = "diverged" if row["accuracy"] is None else f"{100 * row['accuracy']:5.1f} %"
            print(f"  [{len(done):3d}/{len(jobs)}] {row['dataset']} {row['protocol']:5s} student {row['student']} "
                  f"{row['budget']:2d} epoch(s): {accuracy}  ({row['wall_s']:.0f} s)", flush=True)
    return [done[i] for i in range(len(jobs))]


# ----------------------------------------------------------------------------------------------------
# Rank correlations and their spread

def rho(short, long):
    """Spearman's ρ of two accuracy vectors; nan where one is constant (every student tied)."""
    if np.ptp(short) == 0 or np.ptp(long) == 0:
        return float("nan")
    return float(spearmanr(short, long).statistic)


def accuracies(rows, name, budget, n):
    """The n students' accuracies under protocol `name` at `budget` (a diverged student scores 0)."""
    by_student = {r["student"]: r["accuracy"] or 0.0 for r in rows if r["protocol"] == name and r["budget"] == budget}
    return np.array([by_student[i] for i in range(n)])


def bootstrap(statistic, n, seed):
    """The 5th and 95th percentiles of statistic(indices) over BOOTSTRAP resamples of n students."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(BOOTSTRAP)])
    values = values[np.isfinite(values)]
    return (float(np.percentile(values, 5)), float(np.percentile(values, 95))) if len(values) else (np.nan, np.nan)


def cell(statistic, n, seed, sign=""):
    """'ρ (5th to 95th percentile)' of statistic over the n students and its bootstrap."""
    low, high = bootstrap(statistic, n, seed)
    return f"{statistic(np.arange(n)):{sign}.2f} ({low:{sign}.2f} to {high:{sign}.2f})"


def table(title, rows, short, long, n, seed):
    """Markdown: per protocol the mean accuracy per budget; then, per short budget and protocol, ρ
    against each protocol's long training and against their mean (a reference neither protocol owns:
    under nago's constant rate a short run is the start of its own long run), with bootstrap
    intervals over students, and the paired difference nago − darts."""
    budgets = (*short, long)
    acc = {(p, b): accuracies(rows, p, b, n) for p in PROTOCOLS for b in budgets}
    references = {**{f"{p} at {long}": acc[p, long] for p in PROTOCOLS},
                  "their mean": np.mean([acc[p, long] for p in PROTOCOLS], axis=0)}
    lines = [f"**{title}**, {n} students:", "",
             "| mean hold-out accuracy | " + " | ".join(f"{b} epoch(s)" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for p in PROTOCOLS:
        lines.append(f"| {p} | " + " | ".join(f"{100 * acc[p, b].mean():.1f} %" for b in budgets) + " |")
    lines += ["", f"| Spearman ρ of the short budget against {long} epochs of | " + " | ".join(references) + " |",
              "|---|" + "---|" * len(references)]
    for b in short:
        for p in PROTOCOLS:
            lines.append(f"| {b} epoch(s), {p} | " + " | ".join(
                cell(lambda i, ref=ref: rho(acc[p, b][i], ref[i]), n, seed) for ref in references.values()) + " |")
        lines.append(f"| {b} epoch(s), nago − darts | " + " | ".join(
            cell(lambda i, ref=ref: rho(acc["nago", b][i], ref[i]) - rho(acc["darts", b][i], ref[i]), n, seed, "+")
            for ref in references.values()) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------

def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=8, help="random students per data set")
    p.add_argument("--short", type=int, nargs="+", default=[1, 4], help="short budgets in epochs")
    p.add_argument("--long", type=int, default=12, help="the longer training the short budgets are ranked against")
    p.add_argument("--max-nodes", type=int, default=search.SEARCH_PRESETS["digits"]["max_nodes"],
                   help="most nodes per graph at every level (default: the quick start's 5)")
    p.add_argument("--max-params", type=float, default=search.SEARCH_PRESETS["digits"]["max_params"],
                   help="student parameter limit (default: the quick start's 1e5)")
    p.add_argument("--seed", type=int, default=0, help="seeds the students, the CIFAR subset and the bootstrap")
    p.add_argument("--data-dir", default=None, help="a CIFAR-10 folder (image folder or torchvision's); without "
                                                    "it only digits is measured")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/autokd)")
    p.add_argument("--cifar-train", type=int, default=2000, help="CIFAR-10 training images (a seeded subset)")
    p.add_argument("--cifar-val", type=int, default=500, help="CIFAR-10 hold-out images (a seeded subset)")
    p.add_argument("--cifar-students", type=int, default=None, help="students on CIFAR-10 (default: --students)")
    p.add_argument("--cifar-long", type=int, default=None, help="the longer training on CIFAR-10 (default: --long)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="training processes, one torch thread each")
    p.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    return p


def measure(dataset, n, short, long, args):
    """The table of one data set: n students under both protocols at every budget."""
    thetas = students(n, args.seed, args.max_nodes)
    jobs = [{"dataset": dataset, "protocol": p, "student": i, "theta": theta, "budget": b,
             "max_params": int(args.max_params)}
            for b in (long, *short) for i, theta in enumerate(thetas) for p in PROTOCOLS]  # the long ones first
    where = (args.data_dir, args.cache_dir, (args.cifar_train, args.cifar_val), args.seed)
    print(f"{dataset}: {n} students x budgets {short} and {long} epochs x protocols {', '.join(PROTOCOLS)}: "
          f"{len(jobs)} trainings", flush=True)
    rows = run_jobs(jobs, where, args.workers)
    p = {name: protocol(name, dataset) for name in PROTOCOLS}
    what = "; ".join(f"{name}: batch {q.batch_size}, lr {q.lr * q.batch_size / train.Protocol.batch_size:g}, "
                     f"{q.schedule}, " + (f"clipping at {q.grad_clip:g}" if q.grad_clip else "no clipping")
                     for name, q in p.items())
    title = ("digits (search split: 1,097 training, 300 hold-out images, 16 px)" if dataset == "digits" else
             f"CIFAR-10 (JPEG image folder), {args.cifar_train:,} training and {args.cifar_val:,} hold-out images, 32 px")
    return table(f"{title}, {int(args.max_params):,} parameters ({what})", rows, short, long, n, args.seed)


def given_flags(argv):
    """The command line's flags for the record: the CIFAR-10 folder as DIR, --record left out."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = []
    for before, word in zip([None] + argv, argv):
        if before == "--data-dir":
            flags.append("DIR")
        elif word not in ("--record", "--cache-dir") and before != "--cache-dir":
            flags.append(word)
    return flags


def main(argv=None):
    args = parser().parse_args(argv)
    start = time.perf_counter()
    sections = [measure("digits", args.students, args.short, args.long, args)]
    if args.data_dir:
        sections.append(measure("cifar10", args.cifar_students or args.students, args.short,
                                args.cifar_long or args.long, args))
    command = " ".join(["python bench/search_protocols.py", *given_flags(argv), "--record"])
    text = "\n\n".join(sections) + (f"\n\nρ: over the students; in brackets the 5th to 95th percentile of "
                                    f"{BOOTSTRAP} bootstrap resamples of the students (paired for the "
                                    f"difference). {time.perf_counter() - start:.0f} s in all, {args.workers} "
                                    f"processes of one torch thread.")
    print("\n" + text)
    if args.record:
        path = results.record("search_protocols", "Search protocols: short budgets ranked against longer training "
                              "(bench/search_protocols.py)", command, f"{results.machine()}.\n\n{text}")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
