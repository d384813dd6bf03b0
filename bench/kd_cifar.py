"""KD against no KD on the same students, on a CIFAR-10 subset: the paper's Fig. 2 and Fig. 4 claims and
Sec. 3.1's α, in about 5 minutes of one GPU.

    python bench/kd_cifar.py --data-dir data/cifar10-jpeg --out /tmp/kd_cifar --record   # CIFAR-10 image folder
    python bench/kd_cifar.py --data-dir data/cifar10-jpeg --teacher /tmp/kd_cifar/teacher.pt   # an earlier teacher
    python bench/kd_cifar.py --smoke          # the bundled digits at tiny sizes on the CPU (tests run it)

A small DARTS teacher is trained on the subset's training part (train.py) unless --teacher is given.
--students θ are drawn as search.py's study draws them, each trained at every budget twice, with KD
(τ = 4, α = 0.9) and without: the same θ, architecture seed, initial weights, data order and dropout
draws (one student per process), so a pair differs by KD alone. Reported: per budget, the mean paired
accuracy difference with a sign test; Spearman's ρ between budgets with and without KD; α from 0 to 1
on one student. Runs stop at --budget-s, and what finished is reported; every finished run is
appended to <out>/runs.jsonl at once.
"""
import argparse
import concurrent.futures as cf
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import binomtest, spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data as D  # noqa: E402
import search  # noqa: E402
import train as T  # noqa: E402
from bench.results import machine, record  # noqa: E402
from machinery import files, pool as machinery_pool  # noqa: E402
from machinery.executor import with_worker  # noqa: E402
from teachers import lessons  # noqa: E402

TAU, ALPHA = T.TAU, T.ALPHA  # the usual KD setting of the paired runs


# ----------------------------------------------------------------------------------------------------
# The data subset and the teacher (bench/gpu_check.py's mini search uses them too)

def subset_folder(root, out, per_class):
    """An image folder of the first `per_class` training images of each class of `root` (symlinks), so
    that train.py, search.py and the workers read a subset through the usual --data-dir."""
    folder = Path(out) / f"subset-{per_class}"
    for cls in sorted(d for d in (Path(root) / "train").iterdir() if d.is_dir()):
        (folder / "train" / cls.name).mkdir(parents=True, exist_ok=True)
        for image in sorted(cls.iterdir())[:per_class]:
            link = folder / "train" / cls.name / image.name
            if not link.exists():
                link.symlink_to(image.resolve())
    return folder


def train_teacher(path, data, width, layers, epochs, batch_size, device, timeout_s):
    """A DARTS teacher trained by train.py on the search split's training part (the hold-out the
    students are scored on stays unseen), saved at `path` after every epoch. A run that outlives
    `timeout_s` is stopped and its last finished epoch kept. Returns (epochs done, the median epoch's
    training img/s, the last hold-out accuracy), read from the checkpoint."""
    command = [sys.executable, str(ROOT / "train.py"), "--arch", "darts", "--width", str(width), "--layers",
               str(layers), "--dataset", data["dataset"], "--split", "search", "--epochs", str(epochs),
               "--batch-size", str(batch_size), "--device", str(device), "--save", str(path), *data_flags(data)]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=max(1, timeout_s))
        if run.returncode != 0:
            raise RuntimeError(f"train.py failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    except subprocess.TimeoutExpired:
        pass
    if not Path(path).is_file():
        raise RuntimeError(f"the teacher finished no epoch in {timeout_s:.0f} s")
    history = T.load_checkpoint(path)["history"]
    return len(history), statistics.median(row["images_per_s"] for row in history), history[-1]["accuracy"]


def data_flags(data):
    """--data-dir, --val-size and --cache-dir for train.py and search.py, where given."""
    flags = []
    for key in ("data_dir", "val_size", "cache_dir"):
        if data.get(key) is not None:
            flags += [f"--{key.replace('_', '-')}", str(data[key])]
    return flags


# ----------------------------------------------------------------------------------------------------
# The runs: one student, with or without KD, in a worker

def train_one(worker, config, budget, arch_seed, alpha, max_params):
    """f_KD(θ, b) of one student in a worker: KD at `alpha` from the worker's teacher (0: plain
    cross-entropy, the teacher unused). Its initial weights, data order and dropout draws come from
    arch_seed, so runs of one student differ by α alone."""
    teacher = worker.source(worker.settings.protocol) if alpha > 0 else None
    config = {**config, "tau": TAU, "alpha": alpha} if alpha > 0 else config
    result, arch, _ = T.f_kd(config, budget, arch_seed, worker.data, teacher, worker.settings.protocol,
                             worker.options(seed=arch_seed), {"max_params": max_params})
    return {"accuracy": result["accuracy"], "error": result["error"], "params": arch["params"],
            "width": arch["width"], "wall_s": result["wall_s"], "images_per_s": result["images_per_s"],
            "lessons": result["config"]["lessons"]}


def plan(args, budgets):
    """[(student, budget, alpha, config, arch_seed)]: every student at every budget with KD (α = 0.9)
    and without (α = 0), student by student, with the α sweep on student 0 at the largest budget right
    after its own pairs (its α = 0 and 0.9 are the pair's runs), so that a run cut short by --budget-s
    loses students, not the sweep."""
    study = search.study_jobs(SimpleNamespace(seed=args.seed, study=args.students, no_kd=True,
                                              max_nodes=args.max_nodes), budgets)
    runs = [(job["index"], job["budget"], alpha, job["config"], job["arch_seed"])
            for job in study for alpha in (ALPHA, 0.0)]
    first = [job for job in study if job["index"] == 0 and job["budget"] == budgets[-1]][0]
    sweep = [(0, budgets[-1], alpha, first["config"], first["arch_seed"]) for alpha in args.alphas
             if alpha not in (0.0, ALPHA)]
    return runs[:2 * len(budgets)] + sweep + runs[2 * len(budgets):]


# ----------------------------------------------------------------------------------------------------
# The analysis

def analyse(rows, budgets, alphas):
    """From the finished runs: per budget the paired differences (KD − no KD) with their mean and a
    two-sided sign test (ties dropped); Spearman's ρ of each smaller budget against the largest, over
    the students finished at both, with and without KD; the α sweep's accuracies."""
    acc = {(r["student"], r["budget"], r["alpha"]): r["accuracy"] for r in rows if r["accuracy"] is not None}
    out = {"paired": [], "spearman": [], "alpha": []}
    for b in budgets:
        diffs = [acc[s, b, ALPHA] - acc[s, b, 0.0] for s in sorted({k[0] for k in acc})
                 if (s, b, ALPHA) in acc and (s, b, 0.0) in acc]
        wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        p = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else None
        out["paired"].append({"budget": b, "pairs": len(diffs), "mean_diff": float(np.mean(diffs)) if diffs else None,
                              "std_diff": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
                              "kd_wins": wins, "kd_losses": losses, "sign_test_p": p})
    for b in budgets[:-1]:
        for alpha, arm in ((ALPHA, "KD"), (0.0, "no KD")):
            both = [s for s in sorted({k[0] for k in acc}) if (s, b, alpha) in acc and (s, budgets[-1], alpha) in acc]
            rho = spearmanr([acc[s, b, alpha] for s in both], [acc[s, budgets[-1], alpha] for s in both])[0] \
                if len(both) > 2 else None
            out["spearman"].append({"budgets": [b, budgets[-1]], "arm": arm, "students": len(both),
                                    "rho": None if rho is None or np.isnan(rho) else float(rho)})
    out["alpha"] = [{"alpha": a, "accuracy": acc.get((0, budgets[-1], a))} for a in alphas]
    return out


def markdown(result, header):
    """The analysis as three small tables under a header paragraph."""
    def number(v, form):
        return "n/a" if v is None else format(v, form)
    lines = [header, "", "| budget (epochs) | pairs | mean KD − no KD (pp) | std (pp) | KD wins / losses | sign test p |",
             "|---|---|---|---|---|---|"]
    for r in result["paired"]:
        mean, std = (None if v is None else 100 * v for v in (r["mean_diff"], r["std_diff"]))
        lines.append(f"| {r['budget']:g} | {r['pairs']} | {number(mean, '+.2f')} | {number(std, '.2f')} | "
                     f"{r['kd_wins']} / {r['kd_losses']} | {number(r['sign_test_p'], '.3f')} |")
    lines += ["", "| Spearman ρ between budgets | arm | students | ρ |", "|---|---|---|---|"]
    lines += [f"| {r['budgets'][0]:g} vs {r['budgets'][1]:g} epochs | {r['arm']} | {r['students']} | "
              f"{number(r['rho'], '.3f')} |" for r in result["spearman"]]
    lines += ["", "| α (student 0, largest budget) | hold-out accuracy (%) |", "|---|---|"]
    lines += [f"| {r['alpha']:g} | {number(None if r['accuracy'] is None else 100 * r['accuracy'], '.2f')} |"
              for r in result["alpha"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------

def run(args, work):
    """The teacher, the runs until --budget-s, the analysis; `work` holds the subset and the cache."""
    start = time.perf_counter()
    deadline = start + args.budget_s
    out = Path(args.out or tempfile.mkdtemp(prefix="kd_cifar-"))
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else args.device
    budgets = sorted(args.budgets)
    data = {"dataset": args.dataset, "val_size": args.val_size, "cache_dir": args.cache_dir or str(work / "cache"),
            "data_dir": None if args.dataset == "digits" else str(subset_folder(args.data_dir, work, args.per_class))}
    loaded = D.load_data(args.dataset, data["data_dir"], "search", val_size=args.val_size,
                         cache_dir=data["cache_dir"])  # decoded once here, not in every worker
    print(f"{machine(device)}\n{args.dataset}: {len(loaded.train):,} training images, {len(loaded.val):,} held out",
          flush=True)
    teacher = args.teacher
    if teacher is None:
        teacher = out / "teacher.pt"
        train_teacher(teacher, data, args.teacher_width, args.teacher_layers, args.teacher_epochs, args.batch_size,
                      device, args.teacher_share * args.budget_s)
    print(f"{describe_teacher(teacher)}, ready after {time.perf_counter() - start:.0f} s", flush=True)
    runs = plan(args, budgets)
    settings = worker_settings(args, loaded, data, teacher, runs, out)
    rows = train_all(settings, device, runs, args, out, deadline)
    result = analyse(rows, budgets, sorted({0.0, ALPHA, *args.alphas}))
    header = (f"{machine(device)}. {args.dataset}: {len(loaded.train):,} training images, {len(loaded.val):,} held out; "
              f"{describe_teacher(teacher)}; {args.students} students (max {args.max_nodes} nodes per level, "
              f"{args.max_params:,} parameters), batch {args.batch_size}, τ = {TAU:g}, α = {ALPHA:g}; "
              f"{len(rows)}/{len(runs)} runs finished in {time.perf_counter() - start:.0f} s "
              f"(--budget-s {args.budget_s:g}).")
    text = markdown(result, header)
    print("\n" + text)
    files.write_json(out / "kd_cifar.json", {"result": result, "header": header, "finished": len(rows),
                                             "planned": len(runs), "wall_s": time.perf_counter() - start})
    (out / "kd_cifar.md").write_text(text + "\n")
    if args.record:
        record("kd_cifar", "KD against no KD on a CIFAR-10 subset (bench/kd_cifar.py)",
               "python bench/kd_cifar.py --data-dir DIR --record", text)
    return result


def describe_teacher(path):
    """'teacher: DARTS C=16, 8 cells, 10/10 epochs, 61.2 % on the hold-out', from its checkpoint."""
    state = T.load_checkpoint(path)
    options, accuracy = state["config"].get("arch_options", {}), (state.get("history") or [{}])[-1].get("accuracy")
    return (f"teacher: DARTS C={options.get('width', 36)}, {options.get('layers', 20)} cells, {state['epoch']}/"
            f"{state['config'].get('epochs')} epochs" + ("" if accuracy is None else f", {100 * accuracy:.1f} % on the "
                                                         f"{'hold-out' if state['config'].get('split') == 'search' else 'test set'}"))


def worker_settings(args, loaded, data, teacher, runs, out):
    """What train.Worker.load reads: the subset, the teacher, and its lessons file where they pay: when the
    KD runs' epochs outnumber the views of an image (162 for CIFAR), else the teacher runs live."""
    p = loaded.preset
    views = (2 if p.flip else 1) * (2 * p.pad + 1) ** 2
    kd_epochs = sum(budget for _, budget, alpha, _, _ in runs if alpha > 0)
    use_lessons = kd_epochs > views and lessons.why_live(loaded, cutout=0) is None
    protocol = search.SEARCH_PROTOCOLS["darts"].replace(batch_size=args.batch_size, eval_every=int(max(args.budgets)))
    return SimpleNamespace(dataset=args.dataset, data_dir=data["data_dir"], cache_dir=data["cache_dir"], split="search",
                           val_size=args.val_size, no_kd=False, teacher=str(Path(teacher).resolve()), workers_per_gpu=1,
                           protocol=protocol, lessons_live="the short runs see few views",
                           lessons=str(out / "lessons.pt") if use_lessons else None,
                           lessons_key={"teacher": files.file_digest(teacher), "dataset": args.dataset,
                                        "val_size": args.val_size})


def train_all(settings, device, runs, args, out, deadline):
    """Run `runs` in worker processes (one student each, so every run owns its random stream) until
    `deadline`; each finished run is appended to <out>/runs.jsonl at once. Returns the rows."""
    workers = machinery_pool.Pool([(device, 1)] * args.workers, T.Worker.load, (settings,))
    rows = []
    try:
        if settings.teacher:
            T.check_teacher(workers, settings.protocol, settings)
        futures = {workers.submit(with_worker(train_one), config, budget, seed, alpha, args.max_params):
                   (student, budget, alpha) for student, budget, alpha, config, seed in runs}
        with open(out / "runs.jsonl", "ab") as log:
            for future in cf.as_completed(futures, timeout=max(1.0, deadline - time.perf_counter())):
                student, budget, alpha = futures[future]
                row = {"student": student, "budget": budget, "alpha": alpha, **future.result()}
                files.append_jsonl(log, row)
                rows.append(row)
                outcome = "FAILED " + str(row["error"]) if row["accuracy"] is None else f"{100 * row['accuracy']:.2f} %"
                print(f"student {student}  {budget:g} ep  α {alpha:g}  {outcome}", flush=True)
    except cf.TimeoutError:
        print(f"out of time: {len(rows)}/{len(runs)} runs finished", flush=True)
    finally:
        workers.shutdown(wait=False, cancel_futures=True)
    return rows


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="CIFAR-10 as an image folder train/<class>/*.jpg (test/ unused)")
    p.add_argument("--out", default=None, help="folder for runs.jsonl, kd_cifar.json/.md and the teacher trained "
                                               "(default: a new temporary folder)")
    p.add_argument("--cache-dir", default=None, help="decoded image cache (default: a temporary folder)")
    p.add_argument("--teacher", default=None, help="a teacher checkpoint from an earlier run, instead of training one")
    p.add_argument("--per-class", type=int, default=600, help="training images taken from each class (train + hold-out)")
    p.add_argument("--val-size", type=int, default=1000, help="hold-out images the students are scored on")
    p.add_argument("--students", type=int, default=8, help="students (θ and architecture seed), each run with and "
                                                           "without KD at every budget")
    p.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4], help="training budgets in epochs")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                   help="α of the sweep on student 0 (its α = 0 run is the pair's no-KD run)")
    p.add_argument("--batch-size", type=int, default=96, help="batch size of students and teacher")
    p.add_argument("--max-nodes", type=int, default=5, help="most nodes per graph level (the course's box)")
    p.add_argument("--max-params", type=int, default=1_000_000, help="student parameter limit")
    p.add_argument("--teacher-width", type=int, default=16, help="DARTS teacher's initial channels")
    p.add_argument("--teacher-layers", type=int, default=8, help="DARTS teacher's cells")
    p.add_argument("--teacher-epochs", type=int, default=15, help="teacher's epochs (its cosine schedule)")
    p.add_argument("--teacher-share", type=float, default=0.3, help="most of --budget-s the teacher may take")
    p.add_argument("--workers", type=int, default=4, help="worker processes, one student each")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--budget-s", type=float, default=300, help="stop starting runs after this many seconds")
    p.add_argument("--seed", type=int, default=0, help="seeds the students' θ and architecture seeds")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "digits"), help="digits: for --smoke")
    p.add_argument("--smoke", action="store_true", help="the bundled digits at tiny sizes on the CPU")
    p.add_argument("--record", action="store_true", help="write the tables into bench/RESULTS.md")
    return p


SMOKE = dict(dataset="digits", val_size=800, students=3, budgets=[1, 2], alphas=[0.5, 1.0], batch_size=64,
             max_nodes=4, max_params=30_000, teacher_width=4, teacher_layers=3, teacher_epochs=1, workers=1,
             device="cpu")


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.smoke:  # tiny defaults; flags given still count
        p.set_defaults(**SMOKE)
        args = p.parse_args(argv)
        if args.record:
            raise SystemExit("error: --smoke writes nothing into the repository; drop --record")
    elif args.data_dir is None or not (Path(args.data_dir) / "train").is_dir():
        raise SystemExit("error: --data-dir must be a CIFAR-10 image folder with train/<class>/*.jpg (unpack "
                         "cifar10-jpeg.tar.gz into it), or run --smoke")
    work = Path(tempfile.mkdtemp(prefix="kd_cifar-work-"))  # the subset's links and the cache
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
