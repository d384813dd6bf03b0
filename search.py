"""Phase 1 of AutoKD: BOHB over the generator hyperparameters θ and the KD parameters (τ, α).

Paper Sec. 3.2 and Alg. 1: BOHB (bohb.py) proposes (θ, τ, α) and a budget b of 30, 60 or 120
epochs; a worker samples one student from G(θ) (generator.py), trains it for b epochs with the KD
loss of Eq. 2 from a fixed teacher (train.py, kd_loss.py, teachers/), and returns 1 − the accuracy on
a held-out part of the training set. One worker per GPU; the parent owns BOHB and the log.

    python search.py --dataset cifar10 --gpus 8 --teacher teacher.pt      # the paper: ~300 students
    python search.py --dataset cifar10 --gpus 8 --no-kd --out runs/nago-cifar10   # vanilla NAGO
    python search.py --dataset digits                                      # offline quick start

The quick start trains a small digits teacher, then runs one scaled-down Hyperband iteration (budgets
of 1 to 4 epochs) on the CPU; it takes a few minutes on a 2-core machine and ends with the path of
best.json. The output folder holds

    search.json     the resolved settings, package versions and code version (checked on resume)
    results.jsonl   every evaluation: θ, τ, α, budget, architecture seed, accuracy, parameters, time,
                    worker (bohb.py's log format, appended and fsync'd)
    best.json       the incumbent θ*, τ*, α* with its evaluations, data set and teacher; rewritten
                    atomically whenever it changes; retrain.py reads it

Re-running the same command resumes: finished evaluations are read from the log, not run again.
"""

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

import bohb
import generator
import kd_loss
import teachers
import train
from data import DATASETS, PRESETS as DATA_PRESETS, load_data

# Search settings per data set (paper Sec. 4): budgets in epochs and Hyperband iterations (each trains
# 14 students with η = 2 and budgets 30 -> 120, so 21 give the paper's ~300).
SEARCH_PRESETS = {
    "cifar10": dict(min_budget=30, max_budget=120, iterations=21),
    "cifar100": dict(min_budget=30, max_budget=120, iterations=21),
    "mit67": dict(min_budget=30, max_budget=120, iterations=21),
    "imagenet": dict(min_budget=30, max_budget=120, iterations=21),
    # the offline quick start: one iteration of 4 @ 1 -> 2 @ 2 -> 1 @ 4 epochs, 3 @ 2 -> 1 @ 4, 3 @ 4,
    # students limited to 0.5 M parameters and batches of 32 (35 steps an epoch, at DARTS's 0.025 peak
    # learning rate: --lr is given for batch 96 and scaled linearly), so a 2-core CPU takes seconds
    "digits": dict(min_budget=1, max_budget=4, iterations=1, max_params=5e5,
                   batch_size=32, lr=0.075),
}
# The digits teacher the quick start trains when none is given (98.75 % test accuracy in 24 s on a
# 2-core CPU).
DIGITS_TEACHER = ["--arch", "darts", "--dataset", "digits", "--split", "final", "--width", "8",
                  "--layers", "5", "--epochs", "20", "--seed", "0"]
# Settings a resumed search must share with the folder it continues.
RESUME_KEYS = ("dataset", "data_dir", "no_kd", "teacher", "min_budget", "max_budget", "eta", "seed",
               "max_params", "val_size", "batch_size", "lr")


# ----------------------------------------------------------------------------------------------------
# Workers: one process per device, each loads the data set and the teacher once

WORKER = {}  # this worker process's device, data, teacher and settings (set by init_worker)


def init_worker(device, settings, threads):
    """Process initialiser: load the data set (settings["split"]: "search" here, "final" for
    retrain.py) and the teacher once per worker; CPU workers share the cores (`threads` each)."""
    if threads:
        torch.set_num_threads(threads)
    data = load_data(settings["dataset"], settings["data_dir"], settings["split"], device=device,
                     val_size=settings["val_size"])
    teacher = None
    if not settings["no_kd"]:
        teacher = teachers.load(settings["teacher"], settings["dataset"], data.num_classes, device)
    WORKER.update(device=device, data=data, teacher=teacher, settings=settings)


def evaluate(config, budget, job):
    """Alg. 1's f_KD(θ, b), run in a worker: sample one architecture from G(θ), train it with L_KD
    (τ, α from the proposal; α = 0 with --no-kd) for b epochs, return 1 − hold-out accuracy.

    Interpretation: the architecture seed is derived from the search seed and the configuration's
    place in the Hyperband plan, so one configuration keeps the same network on every rung it is
    promoted to (the budgets then compare training lengths, not samples; paper Fig. 4), and two
    configurations never share a seed."""
    s, data = WORKER["settings"], WORKER["data"]
    theta = {k: config[k] for k in generator.SPACE}
    tau, alpha = (train.TAU, 0.0) if s["no_kd"] else (config["tau"], config["alpha"])
    arch_seed = generator.derived_seed(s["seed"], job["iteration"], job["bracket"], job["index"])
    arch = generator.sample(theta, arch_seed, data.image_size, data.num_classes, s["max_params"])
    torch.manual_seed(arch_seed)  # the initial weights
    model = generator.build(arch)
    result = train.fit(model, data, int(round(budget)), WORKER["teacher"] if alpha > 0 else None, tau, alpha,
                       WORKER["device"], arch_seed, batch_size=s["batch_size"], lr=s["lr"],
                       eval_every=int(round(budget)), log=lambda line: None)
    if result["failed"]:
        raise RuntimeError(result["error"])
    return {"loss": 1.0 - result["accuracy"], "accuracy": result["accuracy"], "arch_seed": arch_seed,
            "params": arch["params"], "width": arch["width"], "wall_s": result["wall_s"],
            "images_per_s": result["images_per_s"], "worker": WORKER["device"]}


class DevicePool(cf.Executor):
    """One single-process executor per device, so that a worker that dies (killed, out of memory in a
    way that takes the process down) fails its own evaluation only and is replaced by a fresh process;
    a shared ProcessPoolExecutor would fail every evaluation in flight."""

    def __init__(self, devices, settings):
        self.settings = settings
        self.threads = max(1, (os.cpu_count() or 1) // devices.count("cpu")) if "cpu" in devices else 0
        self.context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked workers
        self.slots = [{"device": d, "executor": self.start(d), "future": None} for d in devices]

    def start(self, device):
        return cf.ProcessPoolExecutor(1, mp_context=self.context, initializer=init_worker,
                                      initargs=(device, self.settings, self.threads))

    def submit(self, fn, *args, **kwargs):
        slot = next(s for s in self.slots if s["future"] is None or s["future"].done())
        try:
            slot["future"] = slot["executor"].submit(fn, *args, **kwargs)
        except cf.process.BrokenProcessPool:  # its process died: replace it
            slot["executor"].shutdown(wait=False, cancel_futures=True)
            slot["executor"] = self.start(slot["device"])
            slot["future"] = slot["executor"].submit(fn, *args, **kwargs)
        return slot["future"]

    def shutdown(self, wait=True, *, cancel_futures=False):
        for slot in self.slots:
            slot["executor"].shutdown(wait=wait, cancel_futures=cancel_futures)


def devices(gpus, workers):
    """['cuda:0', ..] for --gpus N, else --workers CPU workers."""
    if gpus > 0:
        available = torch.cuda.device_count()
        if gpus > available:
            raise ValueError(f"--gpus {gpus} asks for more GPUs than the {available} this machine has; "
                             f"use --gpus {available}" + (" or --gpus 0 for the CPU" if available else ""))
        return [f"cuda:{i}" for i in range(gpus)]
    return ["cpu"] * workers


# ----------------------------------------------------------------------------------------------------
# The search: settings, progress, best.json

def write_json(path, obj):
    """Write JSON atomically (temp file + rename), so a kill never leaves half a best.json."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def resolve(args):
    """The search settings: the data set's preset, overridden by the flags given."""
    if args.dataset not in SEARCH_PRESETS:
        raise ValueError(f"unknown data set {args.dataset!r}; choose one of {', '.join(SEARCH_PRESETS)}")
    preset = SEARCH_PRESETS[args.dataset]
    s = {"dataset": args.dataset, "data_dir": args.data_dir, "split": "search", "no_kd": args.no_kd, "eta": args.eta,
         "seed": args.seed, "val_size": args.val_size}
    defaults = {"batch_size": train.BATCH_SIZE, "lr": train.LR, **preset}
    for key in ("min_budget", "max_budget", "iterations", "batch_size", "lr"):
        s[key] = getattr(args, key) if getattr(args, key) is not None else defaults[key]
    image_size = DATA_PRESETS[args.dataset].image_size
    s["max_params"] = args.max_params or preset.get("max_params") or generator.default_max_params(image_size)
    largest = {name: high for name, (_, _, high) in generator.SPACE.items()}
    try:  # every θ of the box must fit the limit at width 1, or part of the space could never be trained
        generator.sample(largest, 0, image_size, DATA_PRESETS[args.dataset].num_classes, s["max_params"])
    except ValueError as e:
        raise ValueError(f"the largest θ of the space does not fit --max-params: {e}") from None
    if not 0 < s["min_budget"] <= s["max_budget"]:
        raise ValueError("budgets must satisfy 0 < --min-budget <= --max-budget.")
    s["teacher"] = None if args.no_kd else args.teacher
    if not args.no_kd and args.teacher is None and args.dataset != "digits":
        arch = teachers.PAPER_TEACHER.get(args.dataset, "darts")
        raise ValueError(f"a KD search needs --teacher CKPT: train one with `python train.py --arch {arch} "
                         f"--dataset {args.dataset} --split final --save teacher.pt` "
                         "(or pass --no-kd for the vanilla NAGO search).")
    if s["teacher"] is not None and not Path(s["teacher"]).is_file():
        raise ValueError(f"teacher checkpoint {s['teacher']} not found; check --teacher.")
    return s


def digits_teacher(out):
    """The quick start's teacher: trained once into the output folder (resumed if interrupted)."""
    path = out / "teacher.pt"
    done = path.is_file() and train.load_checkpoint(path)["epoch"] >= int(DIGITS_TEACHER[-3])
    if not done:
        print(f"training the digits teacher into {path} ...")
        if train.main(DIGITS_TEACHER + ["--save", str(path), "--resume", "--device", "cpu"]) != 0:
            raise ValueError("training the digits teacher failed; see the error above.")
    return str(path)


def best_record(search, records):
    """best.json: the incumbent (θ, with τ and α unless --no-kd) and every evaluation of it."""
    best = search.incumbent()
    if best is None:
        return None
    same = [r for r in records if r["config"] == best["config"]]
    return {"config": best["config"], "accuracy": best["info"]["accuracy"], "budget": best["budget"],
            "evaluations": [{k: r[k] for k in ("budget", "loss", "info", "iteration", "bracket", "rung")}
                            for r in same]}


class Progress:
    """One line per finished evaluation, the incumbent when it changes, and an ETA."""

    def __init__(self, search, settings, out, provenance):
        self.search, self.settings, self.out, self.provenance = search, settings, out, provenance
        self.total = settings["iterations"] * bohb.plan_budget(search.plan)  # epochs in the whole search
        self.jobs = settings["iterations"] * sum(n for bracket in search.plan for n, _ in bracket)
        self.start, self.done_before, self.done_now, self.records, self.best = time.time(), 0, 0, [], None

    def resumed(self, records):
        self.records = list(records)
        self.done_before = sum(r["budget"] for r in records)
        self.update_best()

    def update_best(self):
        best = best_record(self.search, self.records)
        if best is not None and best != self.best:
            self.best = best
            write_json(self.out / "best.json", {**best, **self.provenance})
            return True
        return False

    def __call__(self, record):
        self.records.append(record)
        self.done_now += record["budget"]
        elapsed = time.time() - self.start
        remaining = self.total - self.done_before - self.done_now
        eta = elapsed / self.done_now * remaining if self.done_now else math.nan
        acc = record["info"].get("accuracy")
        what = f"acc {100 * acc:5.1f} %" if acc is not None else "FAILED " + record["error"].strip().splitlines()[-1]
        print(f"[{len(self.records):3d}/{self.jobs}] iter {record['iteration']} bracket {record['bracket']} "
              f"rung {record['rung']}  {record['budget']:g} ep  {what}  "
              f"{record['info'].get('wall_s', 0):.0f} s  eta {train.hms(eta) if math.isfinite(eta) else '?'}",
              flush=True)
        if self.update_best():
            print(f"      incumbent: {100 * self.best['accuracy']:.1f} % at {self.best['budget']:g} epochs  "
                  f"{json.dumps(self.best['config'])}", flush=True)


def run(args):
    settings = resolve(args)
    out = Path(args.out or f"runs/search-{args.dataset}{'-nokd' if args.no_kd else ''}")
    out.mkdir(parents=True, exist_ok=True)
    if settings["dataset"] == "digits" and not settings["no_kd"] and settings["teacher"] is None:
        settings["teacher"] = digits_teacher(out)
    # Load the data and the teacher here once: a missing folder or a wrong teacher is one clear error
    # now, not a failure in every worker; and an image folder is decoded into its cache only once.
    data = load_data(settings["dataset"], settings["data_dir"], "search", val_size=settings["val_size"])
    if not settings["no_kd"]:
        teachers.load(settings["teacher"], settings["dataset"], data.num_classes)
    del data
    saved = out / "search.json"
    if saved.is_file():
        old = json.loads(saved.read_text())["settings"]
        for key in RESUME_KEYS:
            if old.get(key) != settings.get(key):
                raise ValueError(f"{out} holds a search with {key} = {old.get(key)!r}, not {settings.get(key)!r}: "
                                 "re-run with the same flags to resume it, or give another --out.")
    provenance = {"dataset": settings["dataset"], "teacher": settings["teacher"], "no_kd": settings["no_kd"],
                  "search_dir": str(out), "settings": settings, "versions": train.versions()}
    write_json(saved, provenance)
    space = dict(generator.SPACE) if settings["no_kd"] else {**generator.SPACE, **kd_loss.SPACE}
    search = bohb.BOHB(space, settings["min_budget"], settings["max_budget"], settings["eta"], settings["seed"])
    progress = Progress(search, settings, out, provenance)
    log = out / "results.jsonl"
    progress.resumed(bohb.read_log(log))
    if progress.records:
        print(f"resuming {log}: {len(progress.records)} evaluations already done")
    print(f"plan per Hyperband iteration: {bohb.format_plan(search.plan)}; {settings['iterations']} iteration(s), "
          f"{progress.jobs} trainings, {progress.total:g} epochs")
    workers = devices(args.gpus, args.workers)
    pool = DevicePool(workers, settings)
    try:
        search.run(evaluate, pool, settings["iterations"], log, on_result=progress, n_workers=len(workers))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C must not wait for a running training
    if progress.best is None:
        raise ValueError(f"no evaluation succeeded; read the errors in {log}.")
    print(f"best: {100 * progress.best['accuracy']:.1f} % at {progress.best['budget']:g} epochs -> "
          f"{out / 'best.json'}")
    print(f"next: python retrain.py --theta {out / 'best.json'}")
    return out / "best.json"


def add_worker_flags(p):
    """--gpus and --workers, shared with retrain.py."""
    p.add_argument("--gpus", type=int, default=torch.cuda.device_count(),
                   help="worker processes, one per GPU (default: every GPU); 0 runs --workers workers on the CPU")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="CPU workers when --gpus 0, sharing the cores (one thread each on 2 cores)")


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set (presets in SEARCH_PRESETS)")
    p.add_argument("--data-dir", default=None, help="data folder (default data/<dataset>; layouts in data.py)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint from train.py (digits: trained if absent)")
    p.add_argument("--no-kd", action="store_true", help="search θ alone with plain cross-entropy (vanilla NAGO)")
    add_worker_flags(p)
    p.add_argument("--out", default=None, help="output folder (default runs/search-<dataset>[-nokd]); "
                                               "an existing one is resumed")
    p.add_argument("--seed", type=int, default=0, help="seeds BOHB and every architecture sample")
    p.add_argument("--min-budget", type=float, default=None, help="smallest budget in epochs (default: preset, 30)")
    p.add_argument("--max-budget", type=float, default=None, help="largest budget in epochs (default: preset, 120)")
    p.add_argument("--eta", type=int, default=2, help="successive halving keeps the best 1/eta (Alg. 1)")
    p.add_argument("--iterations", type=int, default=None,
                   help="Hyperband iterations (default: preset; 21 train ~300 students, as in the paper)")
    p.add_argument("--max-params", type=float, default=None,
                   help="student parameter limit (default: 4.0e6 for 32 px, 6.0e6 for 224 px, paper Sec. 4)")
    p.add_argument("--val-size", type=int, default=None, help="hold-out images (default: 5,000 for CIFAR)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: preset, 96)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate for batch 96, scaled linearly to --batch-size, cosine-decayed over "
                        "the budget (default: preset, 0.025)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
