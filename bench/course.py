"""The whole pipeline end to end, timed, as course material: the offline quick start (digits, a CPU)
or the one-GPU CIFAR-10 course run. Each stage is the command a reader would type, printed before it
runs (its output passed through); the script ends with the wall time of every stage and of the whole.

    python bench/course.py                                    # the README's quick start, into runs/
    python bench/course.py --preset cifar10 --download        # the CIFAR-10 course run on one GPU
    python bench/course.py --preset cifar10 --data-dir /tmp/cifar10-jpeg   # ... from an image folder
    python bench/course.py --out runs-fresh --record          # a clean run, times into bench/RESULTS.md
    python bench/course.py --repeats 3 --out runs-x3          # 3 searches per arm: Fig. 3 with its spread

Stages: the data (CIFAR-10: downloaded, or an image folder decoded once into its cache), the
teacher (the digits search trains its own), the KD search with its study, the --no-kd
search (same seed: its study trains the same students), the retraining of G(θ*)'s students with
and without KD (the same architectures), and the report with its figures (in <out>/figures). An
existing output folder is resumed by every stage: time a clean run with a fresh --out. --smoke runs
the quick start's commands at tiny sizes (tests/test_bench.py does, so that they cannot rot).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import results  # noqa: E402
from machinery import cli  # noqa: E402

# The CIFAR-10 course run, sized for about an hour on one H100-class GPU with the step captured
# (docs/cost.md, "The CIFAR-10 course run"; an estimate until measured): a small DARTS teacher
# trained 20 epochs, each search one Hyperband iteration of 4 @ 1 -> 2 @ 2 -> 1 @ 4 epochs ...
# (34 epochs) and a study of 10 configurations at 1, 2 and 4 epochs (70 epochs), students of at
# most 5 nodes per level and 1 M parameters, then 4 students retrained 10 epochs with and without KD.
COURSE_TEACHER = ["--arch", "darts", "--dataset", "cifar10", "--split", "final", "--width", "16", "--layers", "8",
                  "--epochs", "20"]
COURSE_SEARCH = ["--dataset", "cifar10", "--min-budget", "1", "--max-budget", "4", "--iterations", "1", "--study", "10",
                 "--max-nodes", "5", "--max-params", "1000000", "--gpus", "1"]
COURSE_RETRAIN = ["--k", "4", "--runs", "1", "--epochs", "10", "--gpus", "1"]
# --smoke: the quick start's commands at budgets of 1 and 2 epochs, 3 configurations studied, tiny
# students, 2 students retrained for 1 epoch
SMOKE_SEARCH = ["--min-budget", "1", "--max-budget", "2", "--study", "3", "--max-params", "60000", "--max-nodes", "4",
                "--batch-size", "64"]
SMOKE_RETRAIN = ["--k", "2", "--epochs", "1"]


def commands(preset, out, data=(), teacher=None, smoke=False, repeats=1):
    """[(stage, argv)]: the stages of `preset`, writing under `out`; `data` are the data flags
    (--download or --data-dir DIR) of the CIFAR run; `repeats` searches per arm (search.py --repeats,
    whose best.json is then the best of them: the retraining reads it)."""
    dataset = "digits" if preset == "quickstart" else "cifar10"
    search, nokd = f"{out}/search-{dataset}", f"{out}/search-{dataset}-nokd"
    stages = []
    if preset == "quickstart":
        given = ["--teacher", teacher] if teacher else []  # without one, the search trains the digits teacher
        search_flags = ["--dataset", "digits", *(SMOKE_SEARCH if smoke else [])]
        retrain_flags = SMOKE_RETRAIN if smoke else []
    else:
        folder = [flag for flag in data if flag != "--download"]  # --data-dir DIR, or nothing: data/cifar10
        stages.append(("data", ["data.py", "--dataset", "cifar10", *data]))  # downloaded or decoded once
        if teacher is None:
            teacher = f"{out}/teacher-cifar10.pt"
            stages.append(("teacher", ["train.py", *COURSE_TEACHER, *folder, "--save", teacher, "--resume"]))
        given = ["--teacher", teacher]
        search_flags = [*COURSE_SEARCH, *folder]
        retrain_flags = COURSE_RETRAIN
    search_flags += ["--repeats", str(repeats)] if repeats > 1 else []
    stages += [
        ("teacher + KD search" if preset == "quickstart" and not given else "KD search",
         ["search.py", *search_flags, *given, "--out", search]),
        ("no-KD search", ["search.py", *search_flags, "--no-kd", "--out", nokd]),
        ("retrain with KD", ["retrain.py", "--theta", f"{search}/best.json", *retrain_flags]),
        ("retrain without KD", ["retrain.py", "--theta", f"{search}/best.json", "--no-kd", *retrain_flags]),
        ("report", ["report.py", search, "--compare", nokd, "--retrain", f"{out}/retrain-{dataset}",
                    f"{out}/retrain-{dataset}-nokd", "--out", f"{out}/figures"]),
    ]
    return stages


def cpu_seconds():
    """User + system CPU seconds of the finished child processes (and theirs): on an idle machine
    with one worker per core, a stage's wall time is about its CPU time over the cores it uses."""
    t = os.times()
    return t.children_user + t.children_system


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quickstart", choices=("quickstart", "cifar10"),
                   help="quickstart: digits, offline, a CPU; cifar10: the one-GPU course run")
    p.add_argument("--out", default="runs", help="folder of the runs (default runs/, as in the README)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--download", action="store_true", help="cifar10: let torchvision fetch CIFAR-10 into data/cifar10")
    where.add_argument("--data-dir", default=None, help="cifar10: a CIFAR-10 folder (torchvision's, or an image folder)")
    p.add_argument("--teacher", default=None, help="a teacher checkpoint to use instead of training one")
    p.add_argument("--repeats", type=cli.positive_int, default=1,
                   help="searches per arm (search.py --repeats), pooled by the report's Figs. 2-4 (default 1)")
    p.add_argument("--smoke", action="store_true", help="quickstart: tiny sizes, for the tests")
    p.add_argument("--record", action="store_true", help="write the times into bench/RESULTS.md")
    args = p.parse_args()
    if args.preset == "quickstart" and (args.download or args.data_dir):
        p.error("the quick start reads the bundled digits; --download and --data-dir are for --preset cifar10")
    if args.record and args.repeats > 1:
        p.error("--record times the course as documented, one search per arm; drop --repeats or --record")
    data = ["--download"] if args.download else ["--data-dir", args.data_dir] if args.data_dir else []
    times, start = [], time.perf_counter()
    for stage, argv in commands(args.preset, args.out, data, args.teacher, args.smoke, args.repeats):
        print(f"\n$ python {' '.join(argv)}", flush=True)
        t, cpu = time.perf_counter(), cpu_seconds()
        code = subprocess.call([sys.executable, str(ROOT / argv[0]), *argv[1:]])
        times.append((stage, time.perf_counter() - t, cpu_seconds() - cpu))
        if code != 0:
            sys.exit(f"error: `python {' '.join(argv)}` failed (exit {code}); the run stops here. Fix the cause and "
                     f"run this script again: the finished stages are resumed, not repeated.")
    total = time.perf_counter() - start
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(["| stage | wall time | CPU time, all processes |", "|---|---|---|"]
                     + [f"| {stage} | {cli.hms(wall)} | {cli.hms(cpu)} |" for stage, wall, cpu in times]
                     + [f"| **all** | **{cli.hms(total)}** | {cli.hms(sum(c for _, _, c in times))} |", "",
                        f"Load average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores"
                        + (" (above the core count: other jobs shared the machine, and the times are longer "
                           "than on an idle one)." if load > (os.cpu_count() or 1) else ".")])
    print(f"\n{args.preset}: {cli.hms(total)} in all\n\n{text}")
    if args.record and not args.smoke:
        device = "cuda" if args.preset == "cifar10" else "cpu"
        path = results.record(f"course_{args.preset}", f"bench/course.py --preset {args.preset}, end to end",
                              f"python bench/course.py --preset {args.preset} --out runs-fresh --record",
                              f"{results.machine(device)}.\n\n{text}")
        print(f"recorded in {path}")


if __name__ == "__main__":
    main()
