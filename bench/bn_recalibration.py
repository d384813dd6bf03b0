"""BatchNorm statistics before a score (train.recalibrate_bn; DESIGN.md, "Interpretation (BatchNorm at
short budgets)"): the hold-out accuracy of short-budget students scored with the running statistics
that training left them, and after re-estimating those on --bn-batches training batches; and what the
re-estimate costs, as a fraction of a training epoch.

    python bench/bn_recalibration.py                                   # digits (bundled), minutes on a CPU
    python bench/bn_recalibration.py --data-dir /tmp/cifar10-jpeg      # and a CIFAR-10 image folder
    python bench/bn_recalibration.py --data-dir /tmp/cifar10-jpeg --record   # also into bench/RESULTS.md

Students: --students configurations drawn uniformly from the quick start's box (search.py's digits
preset: node counts at most 5), seeded. Digits: each trained for every budget of the quick start (1,
2 and 4 epochs, batch 16, 0.1 M parameters, the search split's 1,097 training images). CIFAR-10
(a CPU cannot train a 45,000-image epoch of many students in minutes): a seeded subset of
--cifar-train training images and --cifar-val hold-out images, at --cifar-budgets epochs, batch
--cifar-batch, --cifar-max-params. Each trained student is scored twice, on the same weights: in eval
mode with the running statistics as training left them (the search without recalibration,
bn_batches 0), then after train.recalibrate_bn. Its cost is set beside the training time of one
epoch; for the CIFAR subset also beside a whole 45,000-image epoch at the training rate measured.
Prints a markdown table; --record writes it into bench/RESULTS.md.
"""
import argparse
import dataclasses
import os
import sys
import time
from types import SimpleNamespace
from contextlib import nullcontext

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bohb  # noqa: E402
import search  # noqa: E402
import train  # noqa: E402
from bench import results  # noqa: E402
from data import TensorSplit, load_data  # noqa: E402

CIFAR_EPOCH = 45_000  # training images of the CIFAR-10 search split: what one real epoch costs


def subset(split, n, seed):
    """n images of a TensorSplit drawn at random (a class-sorted image folder's first n would be one
    class)."""
    if n >= len(split):
        return split
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(split))[:n])).to(split.y.device)
    return TensorSplit(split.x[idx], split.y[idx])


def students(n, seed, max_nodes=search.SEARCH_PRESETS["digits"]["max_nodes"]):
    """n configurations of the quick start's box (node counts at most max_nodes), drawn uniformly (θ
    only: no KD here)."""
    space = bohb.Space(search.box(SimpleNamespace(no_kd=True, max_nodes=max_nodes)))
    rng = np.random.default_rng(seed)
    return [space.decode(rng.random(len(space))) for _ in range(n)]


def measure(data, thetas, budgets, protocol, max_params, bn_batches):
    """One row per (student, budget): accuracy before and after recalibration, and the seconds of
    the recalibration and of one training epoch."""
    rows = []
    for index, theta in enumerate(thetas):
        for budget in budgets:
            result, arch, model = train.f_kd(theta, budget, index, data, None,
                                             protocol.replace(eval_every=budget, bn_batches=0),
                                             train.RunOptions(seed=index, log=lambda line: None),
                                             {"max_params": max_params})
            start = time.perf_counter()
            train.recalibrate_bn(model, data, bn_batches, protocol.batch_size, nullcontext(), torch.contiguous_format)
            recal_s = time.perf_counter() - start
            after, _ = train.score(model, data, data.eval, 4 * protocol.batch_size)
            rows.append({"student": index, "units": sum(m["nodes"] for c in arch["cells"] for m in c["modules"]),
                         "params": arch["params"], "budget": budget, "before": result["accuracy"], "after": after,
                         "recal_s": recal_s, "epoch_s": len(data.train) / result["images_per_s"],
                         "images_per_s": result["images_per_s"]})
            r = rows[-1]
            print(f"  student {index} ({r['units']} units, {r['params']:,} params) {budget} epoch(s): "
                  f"{100 * r['before']:5.1f} % -> {100 * r['after']:5.1f} %  (recalibration {r['recal_s']:.2f} s, "
                  f"an epoch {r['epoch_s']:.1f} s)", flush=True)
    return rows


def table(name, rows, bn_batches, batch_size, full_epoch=None):
    """Markdown: one line per budget (mean over students, and the range), then the cost."""
    lines = [f"**{name}**, {len(rows) // len({r['budget'] for r in rows})} students, recalibration on "
             f"{bn_batches} batches of {batch_size}:", "",
             "| budget | hold-out accuracy before (running statistics) | after recalibration | students better |",
             "|---|---|---|---|"]
    for budget in sorted({r["budget"] for r in rows}):
        rs = [r for r in rows if r["budget"] == budget]
        before, after = np.array([r["before"] for r in rs]), np.array([r["after"] for r in rs])
        lines.append(f"| {budget} epoch(s) | {100 * before.mean():.1f} % ({100 * before.min():.1f}-{100 * before.max():.1f}) "
                     f"| {100 * after.mean():.1f} % ({100 * after.min():.1f}-{100 * after.max():.1f}) "
                     f"| {int((after > before).sum())} of {len(rs)} |")
    fraction = np.mean([r["recal_s"] / r["epoch_s"] for r in rows])
    cost = (f"Cost: {np.mean([r['recal_s'] for r in rows]):.2f} s per recalibration, {100 * fraction:.1f} % of "
            f"the training time of one epoch of these images")
    if full_epoch:
        rate = np.mean([r["images_per_s"] for r in rows])
        cost += (f"; {100 * np.mean([r['recal_s'] for r in rows]) / (full_epoch / rate):.2f} % of a whole "
                 f"{full_epoch:,}-image epoch at the {rate:.0f} images/s measured")
    return "\n".join(lines + ["", cost + "."])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=4, help="configurations per data set")
    p.add_argument("--seed", type=int, default=0, help="seeds the configurations and the CIFAR subset")
    p.add_argument("--budgets", type=int, nargs="+", default=None,
                   help="digits budgets in epochs (default: the quick start's, 1 2 4)")
    p.add_argument("--bn-batches", type=int, default=train.Protocol.bn_batches, help="batches of the re-estimate")
    p.add_argument("--data-dir", default=None, help="a CIFAR-10 folder (image folder or torchvision's); "
                                                    "without it only digits is measured")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/autokd)")
    p.add_argument("--cifar-train", type=int, default=2000, help="CIFAR-10 training images (a seeded subset)")
    p.add_argument("--cifar-val", type=int, default=1000, help="CIFAR-10 hold-out images (a seeded subset)")
    p.add_argument("--cifar-budgets", type=int, nargs="+", default=[1, 2], help="CIFAR-10 budgets in epochs")
    p.add_argument("--cifar-batch", type=int, default=32, help="CIFAR-10 batch size")
    p.add_argument("--cifar-max-params", type=float, default=5e5, help="CIFAR-10 student parameter limit")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest on a busy 2-core CPU)")
    p.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    thetas = students(args.students, args.seed)
    preset = search.SEARCH_PRESETS["digits"]
    budgets = args.budgets or [int(preset["min_budget"] * 2 ** i) for i in range(3)]  # 1, 2, 4: the quick start's
    protocol = search.SEARCH_PROTOCOLS["darts"].replace(batch_size=preset["batch_size"], lr=preset["lr"])
    print(f"digits: {args.students} students x budgets {budgets} epochs", flush=True)
    digits = load_data("digits", split="search")
    sections = [table("digits", measure(digits, thetas, budgets, protocol, int(preset["max_params"]), args.bn_batches),
                      args.bn_batches, protocol.batch_size)]
    command = "python bench/bn_recalibration.py"
    if args.data_dir:
        cifar = load_data("cifar10", args.data_dir, "search", cache_dir=args.cache_dir)
        cifar = dataclasses.replace(cifar, train=subset(cifar.train, args.cifar_train, args.seed),
                                    val=subset(cifar.val, args.cifar_val, args.seed + 1))
        protocol = search.SEARCH_PROTOCOLS["darts"].replace(batch_size=args.cifar_batch)
        print(f"cifar10: {args.students} students x budgets {args.cifar_budgets} epochs on {len(cifar.train):,} "
              f"training and {len(cifar.val):,} hold-out images", flush=True)
        rows = measure(cifar, thetas, args.cifar_budgets, protocol, int(args.cifar_max_params), args.bn_batches)
        sections.append(table(f"CIFAR-10 (JPEG image folder), {len(cifar.train):,} training images, "
                              f"{int(args.cifar_max_params):,} parameters", rows, args.bn_batches, protocol.batch_size,
                              full_epoch=CIFAR_EPOCH))
        command += " --data-dir DIR"
    text = "\n\n".join(sections)
    print("\n" + text)
    if args.record:
        path = results.record("bn_recalibration", "BatchNorm recalibration before a score (bench/bn_recalibration.py)",
                              command, f"{results.machine()}.\n\n{text}")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
