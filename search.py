"""Phase 1 of AutoKD (Sec. 3.2, Alg. 1): BOHB (bohb.py) proposes (θ, τ, α) and a budget b of 30, 60
or 120 epochs; a worker evaluates f_KD(θ, b) (train.f_kd: one student of G(θ), trained b epochs with
L_KD from a fixed teacher, scored on a hold-out of the training set); BOHB minimises 1 − accuracy.

    python search.py --dataset cifar10 --gpus 8 --teacher teacher.pt      # the paper: ~300 students
    python search.py --dataset cifar10 --gpus 8 --no-kd --out runs/nago-cifar10   # vanilla NAGO
    python search.py --dataset digits                                      # offline quick start
    python search.py --dataset digits --repeats 5 --out runs/digits-x5     # 5 searches: one arm of Figs. 2-4

Writes search.json (settings), teacher.json, lessons.pt, results.jsonl (every evaluation, appended),
best.json (θ*, τ*, α*, for retrain.py) and, with --study N, study.jsonl (N configurations at every
budget, for Fig. 4). Prints the plan's cost, the teacher's accuracy, then one line per evaluation
with the throughput and time left. --repeats N writes N such folders, repeat-I/ (seed --seed + I).
Re-running resumes (an evaluation that failed for a transient cause runs once more); a finished
search changes nothing. One search per folder: a second one into it is refused.
"""
import concurrent.futures as cf
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bohb
import generator
import kd_loss
import teachers
import train
from data import DATASETS, PRESETS as DATA_PRESETS, load_data
from machinery import cli, files, pool, schema
from machinery.executor import with_worker
from teachers import lessons

# Search settings per data set (paper Sec. 4): budgets in epochs and Hyperband iterations (each trains
# 14 students with η = 2 and budgets 30 -> 120, so 21 give the paper's ~300).
SEARCH_PRESETS = {
    "cifar10": dict(min_budget=30, max_budget=120, iterations=21),
    "cifar100": dict(min_budget=30, max_budget=120, iterations=21),
    "mit67": dict(min_budget=30, max_budget=120, iterations=21),
    "imagenet": dict(min_budget=30, max_budget=120, iterations=21),
    # The offline quick start, sized for a 2-core CPU (README, "Quick start"): one Hyperband iteration
    # of 4 @ 1 -> 2 @ 2 -> 1 @ 4 epochs, 3 @ 2 -> 1 @ 4, 3 @ 4, then a study of 10 random
    # configurations at 1, 2 and 4 epochs for Fig. 4. Why these settings:
    # - batches of 16 (69 steps an epoch on the 1,097 training images): 35 steps of batch 32 left many
    #   1-epoch students at chance (not their BatchNorm statistics: scored with batch statistics they
    #   were at chance too), and 69 take most of them off it (README, "Quick start");
    # - at most 5 nodes per level (27-125 units, not 27-1,000): on a CPU a step costs about the
    #   same per unit whatever the width, and the full box's students cost 3x more per step;
    # - 0.1 M parameters: students far weaker than the teacher, so that it has something to teach;
    # - lr 0.075 at batch 96 is 0.0125 at batch 16, which is also nago.yml's 0.1 at batch 128 scaled to
    #   16: both search protocols train the quick start at one rate (and differ in schedule and clipping).
    "digits": dict(min_budget=1, max_budget=4, iterations=1, max_params=1e5, batch_size=16, lr=0.075,
                   max_nodes=5, study=10),
}
MAX_NODES = generator.SPACE["top_nodes"][2]  # NAGO's largest graph at every level
# The search phase's training protocols (--search-protocol). The paper (Sec. 4): "all remaining
# training parameters were set following Ru et al. (2020)". Both presets follow Ru et al. where they
# state a setting for their search:
#   budgets 30 / 60 / 120 epochs, η = 2     AutoKD Sec. 4 and the released configuration (SEARCH_PRESETS)
#   SGD, momentum 0.9, weight decay 1e-4    released configuration, examples/nas/nago/nago.yml
#   crop and flip, no cutout                its CIFAR-10 transforms (cutout is a final-training setting)
# "darts" (the default) takes DARTS's settings (train.Protocol's defaults) where the paper is silent:
#   batch 96, peak learning rate 0.025      nago.yml has 0.1 at batch 128, but the released README says
#                                           the paper's runs sized the batch to the GPU and scaled the
#                                           rate with it, without saying from what
#   cosine schedule to 0 over the budget    DARTS's; nago.yml's step decay is tied to its 0.1
#   gradient clipping at norm 5             DARTS's; not stated by Ru et al.
# "nago" takes nago.yml's trainer as released (VEGA's Trainer defaults where it is silent):
#   batch 128, peak learning rate 0.1       nago.yml (0.075 at batch 96, scaled linearly)
#   halved every 20 epochs                  nago.yml's StepLR (step_size 20, gamma 0.5), per epoch;
#                                           constant within budgets of 20 epochs or fewer
#   no gradient clipping                    VEGA's Trainer (grad_clip None); Nesterov off (torch's SGD)
# bench/search_protocols.py measures which ranks short-budget students more like longer training.
SEARCH_PROTOCOLS = {
    "darts": train.Protocol(weight_decay=1e-4),
    "nago": train.Protocol(weight_decay=1e-4, batch_size=128, lr=0.1 * train.Protocol.batch_size / 128,
                           schedule="step", lr_step=20, lr_gamma=0.5, grad_clip=0.0),
}
# The quick start's digits teacher, trained into the output folder when no --teacher is given: larger
# than its students in parameters (0.25 M against at most 0.1 M) and in memory per image (0.28 MiB
# against about 0.16, mostly their 1,280-channel head), as the paper's teachers are (Fig. 6).
DIGITS_TEACHER = dict(width=16, layers=8, epochs=20)
# Settings a resumed search must share with the folder it continues.
RESUME_KEYS = ("dataset", "data_dir", "no_kd", "teacher", "min_budget", "max_budget", "eta", "seed",
               "max_params", "max_nodes", "val_size", "stages", "search_protocol", "protocol")
# What a search.json written before a setting existed means by its absence.
BEFORE = {"stages": "even", "search_protocol": "darts"}
STUDY = 1  # the study's seeds and draws are derived from (--seed, STUDY, ...), apart from BOHB's
MAX_STUDY = 10_000  # --study: configurations, each trained at every budget


# ----------------------------------------------------------------------------------------------------
# BOHB's objective, run in a worker

def objective(worker, config, budget, job):
    """f_KD(θ, b) in a worker (train.f_kd), as BOHB's loss 1 − hold-out accuracy.

    Interpretation: the architecture seed is derived from the search seed and the configuration's
    place in the Hyperband plan, so one configuration keeps the same network on every rung it is
    promoted to (the budgets then compare training lengths, not samples; paper Fig. 4), and two
    configurations never share a seed."""
    s = worker.settings
    seed = job["arch_seed"] if "arch_seed" in job else generator.derived_seed(s.seed, job["iteration"],
                                                                              job["bracket"], job["index"])
    result, arch, _ = train.f_kd(config, budget, seed, worker.data, worker.source(s.protocol), s.protocol,
                                 worker.options(seed=seed), {"max_params": s.max_params, "stages": s.stages})
    if result["failed"]:
        raise RuntimeError(result["error"])
    return {"loss": 1.0 - result["accuracy"], "accuracy": result["accuracy"], "arch_seed": seed,
            "params": arch["params"], "width": arch["width"], "wall_s": result["wall_s"],
            "images": result["epochs"] * len(worker.data.train), "images_per_s": result["images_per_s"],
            "lessons": result["config"]["lessons"], "capture": result["config"]["capture"],
            "worker": worker.device}


# ----------------------------------------------------------------------------------------------------
# Settings: every flag checked before anything is written

@dataclass(frozen=True)
class Settings:
    """A search's settings, resolved from the data set's preset and the flags and checked (resolve).
    search.json keeps them (to_json); a resumed search must share RESUME_KEYS with them. The workers
    read the data set, the teacher and the lessons from here (train.Worker)."""
    dataset: str
    data_dir: str
    cache_dir: str
    no_kd: bool
    eta: int
    seed: int
    val_size: int
    min_budget: float
    max_budget: float
    iterations: int
    max_nodes: int
    study: int
    stages: str                 # the generator's stage rule (generator.STAGE_RULES)
    search_protocol: str        # the name of `protocol` in SEARCH_PROTOCOLS
    protocol: train.Protocol
    workers_per_gpu: int
    max_params: int
    teacher: str
    slots: list
    ray: str
    lessons: str = None         # the lessons file, or None: computed live (lessons_live says why)
    lessons_live: str = None
    lessons_key: dict = None    # what the lessons are computed from
    split: str = "search"

    def to_json(self):
        """search.json's "settings" (train.settings_json)."""
        return train.settings_json(self)


def resolve(args):
    """(Settings, output folder): the data set's preset, overridden by the flags given, every one checked."""
    preset, protocol = SEARCH_PRESETS[args.dataset], SEARCH_PROTOCOLS[args.search_protocol]
    pick = {key: getattr(args, key) if getattr(args, key) is not None else preset.get(key, default)
            for key, default in (("min_budget", None), ("max_budget", None), ("iterations", None),
                                 ("batch_size", protocol.batch_size), ("lr", protocol.lr),
                                 ("max_nodes", MAX_NODES), ("study", 0))}
    out = Path(args.out or f"runs/search-{args.dataset}{'-nokd' if args.no_kd else ''}")
    teacher = None if args.no_kd else args.teacher or (out / "teacher.pt" if args.dataset == "digits" else None)
    image_size = DATA_PRESETS[args.dataset].image_size
    s = Settings(
        dataset=args.dataset, data_dir=files.absolute(args.data_dir), cache_dir=args.cache_dir, no_kd=args.no_kd,
        eta=args.eta, seed=args.seed, val_size=args.val_size, min_budget=pick["min_budget"],
        max_budget=pick["max_budget"], iterations=pick["iterations"], max_nodes=pick["max_nodes"], study=pick["study"],
        stages=args.stages or "even", search_protocol=args.search_protocol,
        protocol=protocol.replace(batch_size=pick["batch_size"], lr=pick["lr"], capture=args.capture,
                                  deterministic=args.deterministic, eval_every=int(round(pick["max_budget"]))),
        workers_per_gpu=args.workers_per_gpu, teacher=files.absolute(teacher),
        max_params=int(args.max_params or preset.get("max_params") or generator.default_max_params(image_size)),
        slots=pool.slots(args.gpus, args.workers, args.workers_per_gpu, args.ray), ray=args.ray)
    check(s, args)
    return s, out


def check(s, args):
    """Refuse settings that cannot run, each in one sentence naming the flag."""
    if s.min_budget > s.max_budget:
        raise cli.UserError(f"--min-budget {s.min_budget:g} is larger than --max-budget {s.max_budget:g}.")
    bohb.check_whole_budgets(s.min_budget, s.max_budget, s.eta)
    if not 3 < s.max_nodes <= MAX_NODES:
        raise cli.UserError(f"--max-nodes {s.max_nodes} is outside NAGO's node range; give 4 to {MAX_NODES}.")
    largest = {name: high for name, (_, _, high) in box(s).items() if name in generator.SPACE}
    preset = DATA_PRESETS[s.dataset]
    try:  # every θ of the box must fit the limit at width 1, or part of the space could never be trained
        generator.sample(largest, 0, preset.image_size, preset.num_classes, max_params=s.max_params, stages=s.stages)
    except ValueError as e:
        raise cli.UserError(f"the largest θ of the space does not fit --max-params: {e}") from None
    if args.no_kd and args.teacher is not None:
        raise cli.UserError("--no-kd searches θ with cross-entropy alone, so --teacher would go unused; drop one of "
                            "them.")
    if not s.no_kd and s.teacher is None:
        arch = teachers.PAPER_TEACHER.get(s.dataset, "darts")
        raise cli.UserError(f"a KD search needs --teacher CKPT: train one with `python train.py --arch {arch} "
                            f"--dataset {s.dataset} --split final --save teacher.pt` (or pass --no-kd "
                            f"for the vanilla NAGO search).")
    if args.teacher is not None and not args.no_kd and not Path(s.teacher).is_file():
        raise cli.UserError(f"teacher checkpoint {args.teacher} not found; check --teacher.")


def box(settings):
    """The searched space: NAGO's θ ranges (generator.SPACE) with every level's node count at most
    --max-nodes, joined with τ and α (kd_loss.SPACE) unless --no-kd."""
    theta = {name: (kind, low, min(high, settings.max_nodes)) if name.endswith("_nodes") else (kind, low, high)
             for name, (kind, low, high) in generator.SPACE.items()}
    return theta if settings.no_kd else {**theta, **kd_loss.SPACE}


def digits_teacher(path):
    """The quick start's teacher, trained once into the output folder (resumed if interrupted)."""
    if path.is_file() and train.load_checkpoint(path)["epoch"] >= DIGITS_TEACHER["epochs"]:
        return
    print(f"training the digits teacher into {path} ...", flush=True)
    command = ["--arch", "darts", "--dataset", "digits", "--split", "final", "--seed", "0", "--device", "cpu",
               "--save", str(path), "--resume"] + [f"--{k}={v}" for k, v in DIGITS_TEACHER.items()]
    if train.main(command) != 0:
        raise cli.UserError("training the digits teacher failed; see the error above.")


def ready_teacher(settings, data, out, lessons_flag):
    """The settings with the teacher ready: trained first for the digits quick start, loaded once here
    (a wrong teacher is one error now, not one per worker), and where its lessons go (out/lessons.pt,
    or None with the reason they are computed live)."""
    if settings.no_kd:
        return settings
    if settings.dataset == "digits" and settings.teacher == files.absolute(out / "teacher.pt"):
        digits_teacher(out / "teacher.pt")
    teachers.load(settings.teacher, settings.dataset, data.num_classes)
    reason = lessons.why_live(data, cutout=0) if lessons_flag == "auto" else "--lessons off"
    return dataclasses.replace(
        settings, lessons=str((out / "lessons.pt").resolve()) if reason is None else None, lessons_live=reason,
        lessons_key={"teacher": files.file_digest(settings.teacher), "dataset": data.name, "split": "search",
                     "val_size": settings.val_size})


# ----------------------------------------------------------------------------------------------------
# Progress, cost and best.json

def best_record(search, records):
    """best.json's result part: the incumbent (θ, with τ and α unless --no-kd) and its evaluations."""
    best = search.incumbent()
    if best is None:
        return None
    same = [r for r in records if r["config"] == best["config"]]
    return {"config": best["config"], "accuracy": best["info"]["accuracy"], "budget": best["budget"],
            "evaluations": [{k: r[k] for k in ("budget", "loss", "info", "iteration", "bracket", "rung")}
                            for r in same]}


class Progress:
    """One line per finished evaluation with the throughput measured so far and the expected time
    left; the incumbent whenever it changes (and best.json with it)."""

    def __init__(self, search, settings, out, provenance, train_size):
        self.search, self.out, self.provenance, self.train_size = search, out, provenance, train_size
        self.total = settings.iterations * bohb.plan_budget(search.plan)  # epochs in the whole search
        self.jobs = settings.iterations * sum(n for bracket in search.plan for n, _ in bracket)
        self.start, self.images_now = time.time(), 0
        self.records = {bohb.job_key(r): r for r in schema.read_jsonl(out / "results.jsonl", "search record")[0]}
        best = out / "best.json"  # derived from the log; what run() prints of it is required
        self.best = None if not best.is_file() else schema.read_json(
            best, "best.json", fix="delete it: search.py writes it again from results.jsonl",
            accuracy=schema.number(0, 1), budget=schema.number(above=0))
        print(f"plan per Hyperband iteration: {bohb.format_plan(search.plan)}; {settings.iterations} iteration(s)")
        print(self.cost(), flush=True)
        if self.records:
            again = sum(bohb.retry(r) is not None for r in self.records.values())
            print(f"resuming {out / 'results.jsonl'}: {len(self.records)} evaluations already done"
                  + (f"; {again} that failed for a transient cause run once more" if again else ""))

    def cost(self):
        images = self.total * self.train_size
        amount = f"{images / 1e6:,.1f} M" if images >= 1e6 else f"{images:,.0f}"
        return (f"cost: {self.jobs} trainings, {self.total:,.0f} epochs x {self.train_size:,} training images = "
                f"{amount} images through the student (and teacher)")

    def update_best(self):
        """Write best.json if the incumbent differs from the one on disk; True if it did."""
        best = best_record(self.search, self.records.values())
        if best is None or (self.best is not None and {k: self.best.get(k) for k in best} == best):
            return False
        self.best = {**best, **self.provenance}
        files.write_json(self.out / "best.json", self.best)
        return True

    def __call__(self, record):
        self.records[bohb.job_key(record)] = record
        self.images_now += record["info"].get("images", record["budget"] * self.train_size)
        elapsed = time.time() - self.start
        rate = self.images_now / elapsed  # all workers together, capture and lessons included
        done = sum(r["budget"] for r in self.records.values())
        left = max(0.0, (self.total - done) * self.train_size)
        print(f"[{len(self.records):3d}/{self.jobs}] iter {record['iteration']} bracket {record['bracket']} "
              f"rung {record['rung']}  {record['budget']:g} ep  {outcome(record)}  {record['info'].get('wall_s', 0):.0f} s  "
              f"| {rate:,.0f} img/s, eta {cli.hms(left / rate if rate else None)}", flush=True)
        if self.update_best():
            print(f"      incumbent: {100 * self.best['accuracy']:.1f} % at {self.best['budget']:g} epochs  "
                  f"{json.dumps(self.best['config'])}", flush=True)


def outcome(record):
    """'acc 93.1 %', or 'FAILED', '(transient)' where a resume runs it again, and the last line of the
    error, for a progress line."""
    accuracy = record["info"].get("accuracy")
    if accuracy is not None:
        return f"acc {100 * accuracy:5.1f} %"
    transient = " (transient)" if record.get("cause") == "transient" else ""
    return f"FAILED{transient} " + record["error"].strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------
# The study for Fig. 4: the same configurations at every budget

def study_jobs(settings, budgets):
    """--study N: N configurations drawn uniformly from the box, each trained at every budget, whether
    successive halving would promote it or not, so that Fig. 4's rank correlations are measured over
    N configurations rather than the few that BOHB promotes (the paper pools 5 searches). BOHB never
    sees these results. θ and the architecture seeds come from (--seed, STUDY) alone, so that the KD
    and the --no-kd search of one seed study the same N students; τ and α have a stream of their own."""
    theta = bohb.Space({k: v for k, v in box(settings).items() if k in generator.SPACE})
    kd = bohb.Space(kd_loss.SPACE)
    draw_theta = np.random.default_rng([settings.seed, STUDY, 0])
    draw_kd = np.random.default_rng([settings.seed, STUDY, 1])
    jobs = []
    for index in range(settings.study):
        config = theta.decode(draw_theta.random(len(theta)))
        tau_alpha = kd.decode(draw_kd.random(len(kd)))
        config = config if settings.no_kd else {**config, **tau_alpha}
        seed = generator.derived_seed(settings.seed, STUDY, index)
        jobs += [{"iteration": None, "bracket": None, "rung": rung, "index": index, "budget": budget,
                  "config": config, "origin": "study", "arch_seed": seed} for rung, budget in enumerate(budgets)]
    return jobs


def study_left(jobs, path):
    """The study's jobs that its log (study.jsonl, in bohb.py's record format) does not hold yet, and
    those whose last attempt failed for a transient cause, as their next attempt (bohb.retry)."""
    last = {bohb.job_key(r): r for r in schema.read_jsonl(path, "search record")[0]}
    left = []
    for job in jobs:
        record = last.get(bohb.job_key(job))
        again = job if record is None else bohb.retry(record)
        if again is not None:
            left.append(again)
    return left


def budgets(plan):
    """The budgets of a Hyperband plan, smallest first."""
    return sorted({budget for bracket in plan for _, budget in bracket})


def run_study(workers, todo, path):
    """Train the study's jobs `todo`, all queued at once, appending each result to `path`; a failure
    is logged like the search's, and the others go on."""
    if not todo:
        return
    print(f"the study for Fig. 4: {len({job['index'] for job in todo})} random configurations at every budget, "
          f"{len(todo)} trainings, {sum(job['budget'] for job in todo):g} epochs", flush=True)
    records, whole = schema.read_jsonl(path, "search record")
    with files.open_log(path, whole) as log:
        futures = {workers.submit(bohb.run_job, with_worker(objective), job): job for job in todo}
        for future in cf.as_completed(futures):
            error = future.exception()  # the worker itself failed (run_job never raises)
            record = future.result() if error is None else bohb.make_record(
                futures[future], None, None, cli.describe(error), {}, bohb.failure_cause(error))
            files.append_jsonl(log, record, default=bohb.to_json)
            records.append(record)
            print(f"[study {len(records):3d}] configuration {record['index']}  {record['budget']:g} ep  "
                  f"{outcome(record)}", flush=True)


# ----------------------------------------------------------------------------------------------------
# The search

def run(args):
    """Alg. 1: BOHB proposes (θ, τ, α) and a budget, a worker evaluates f_KD, until the plan is done;
    then the study for Fig. 4. --repeats N runs N such searches one after another (seeds --seed to
    --seed + N - 1, one folder each; repeat_folders) with one teacher. Re-run, it resumes from the
    logs; a finished search starts no worker. One run per folder (files.folder_lock)."""
    settings, out = resolve(args)
    with files.folder_lock(out):
        return run_in_folder(settings, out, args)


def run_in_folder(settings, out, args):
    """run() in its folder, which it holds: everything checked before the first file is written."""
    folders = repeat_folders(out, args.repeats)
    for i, folder in enumerate(folders):
        check_folder(dataclasses.replace(settings, seed=settings.seed + i), folder)
    data = load_data(settings.dataset, settings.data_dir, "search", val_size=settings.val_size,
                     cache_dir=settings.cache_dir)  # once here: a wrong folder is one error, a cache made once
    train.check_batch_size(settings.protocol.batch_size, data)
    settings = ready_teacher(settings, data, out, args.lessons)  # one teacher and its lessons for all repeats
    bests = []
    for i, folder in enumerate(folders):
        if len(folders) > 1:
            print(f"\n=== search {i + 1} of {len(folders)}: seed {settings.seed + i} -> {folder}", flush=True)
        bests.append(search_once(dataclasses.replace(settings, seed=settings.seed + i), folder, data))
    best = bests[0] if len(bests) == 1 else best_of_repeats(bests, out)
    print(f"next: python retrain.py --theta {best}")
    return best


def search_once(settings, out, data):
    """One search into `out` (resumed from its logs); returns the path of its best.json."""
    provenance = write_provenance(settings, out)
    search = bohb.BOHB(box(settings), settings.min_budget, settings.max_budget, settings.eta, settings.seed)
    progress = Progress(search, settings, out, provenance, len(data.train))
    study = study_left(study_jobs(settings, budgets(search.plan)), out / "study.jsonl")
    with train.workers(settings, out) as workers:
        search.run(with_worker(objective), workers, settings.iterations, out / "results.jsonl",
                   on_result=progress, n_workers=workers.size)
        run_study(workers, study, out / "study.jsonl")
        if not workers.started:
            print("the search is complete; nothing to run")
    return finish(progress, out)


def repeat_folders(out, repeats):
    """The search folders of --repeats N: `out` itself for one search (N = 1), else out/repeat-0 ...
    out/repeat-(N-1), each a whole search (report.py pools them as one arm). A folder of the other
    layout is refused, so that re-running continues the searches it holds."""
    nested = sorted(p.parent.name for p in out.glob("repeat-*/search.json"))
    if repeats == 1 and nested and not (out / "search.json").is_file():
        raise cli.UserError(f"{out} holds the searches of --repeats ({', '.join(nested)}); give --repeats "
                            f"{len(nested)} (or more) to continue them, or another --out.")
    if repeats > 1 and (out / "search.json").is_file():
        raise cli.UserError(f"{out} holds one search (made without --repeats); give another --out for "
                            f"{repeats} repeats.")
    return [out] if repeats == 1 else [out / f"repeat-{i}" for i in range(repeats)]


def best_of_repeats(bests, out):
    """out/best.json: the best of the repeats' best.json (the highest accuracy; the first on a tie),
    which retrain.py reads, with every repeat's result beside it. Returns its path."""
    found = [files.read_json(str(path), "best.json") for path in bests]
    for path, best in zip(bests, found):
        print(f"{path.parent.name}: {100 * best['accuracy']:.1f} % at {best['budget']:g} epochs")
    winner = max(range(len(found)), key=lambda i: found[i]["accuracy"])
    record = {**found[winner], "repeats": [{"best": files.absolute(path), "accuracy": best["accuracy"],
                                            "budget": best["budget"]} for path, best in zip(bests, found)]}
    if not (out / "best.json").is_file() or files.read_json(str(out / "best.json"), "best.json") != record:
        files.write_json(out / "best.json", record)
    print(f"best of {len(bests)} searches: {bests[winner].parent.name}, {100 * record['accuracy']:.1f} % -> "
          f"{out / 'best.json'}")
    return out / "best.json"


def check_folder(settings, out):
    """A folder that holds a search is resumed only with the settings it was made with (BEFORE: what
    an older search.json means by a setting it lacks), and only when its logs are whole: all is
    checked before anything is written."""
    saved = out / "search.json"
    if saved.is_file():
        old = {**BEFORE, **schema.read_json(saved, "search.json")["settings"]}
        old["protocol"] = train.as_now(old.get("protocol", {}))
        files.check_resume(old, settings.to_json(), RESUME_KEYS, out)
    for log in ("results.jsonl", "study.jsonl"):
        schema.read_jsonl(out / log, "search record")


def write_provenance(settings, out):
    """What best.json and search.json say about the search: its data set, teacher and every setting."""
    provenance = {"dataset": settings.dataset, "teacher": settings.teacher, "no_kd": settings.no_kd,
                  "search_dir": files.absolute(out), "settings": settings.to_json(), "versions": files.versions()}
    if not (out / "search.json").is_file():
        files.write_json(out / "search.json", provenance)
    return provenance


def finish(progress, out):
    """best.json brought up to date and the result printed; returns its path."""
    progress.update_best()
    again = sum(bohb.retry(r) is not None for r in progress.records.values())
    if progress.best is None:
        retry = f"; {again} failed for a transient cause: run the same command again to retry them once" if again else ""
        raise cli.UserError(f"no evaluation succeeded{retry}; read the errors in {out / 'results.jsonl'}.")
    if again:
        print(f"{again} evaluation(s) failed for a transient cause (out of memory, a lost worker): run the same "
              f"command again to retry them once", flush=True)
    print(f"best: {100 * progress.best['accuracy']:.1f} % at {progress.best['budget']:g} epochs -> {out / 'best.json'}")
    return out / "best.json"


def parser():
    p = cli.Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar10", choices=DATASETS, help="data set (presets in SEARCH_PRESETS)")
    p.add_argument("--data-dir", default=None, help="data folder (default data/<dataset>; layouts in data.py)")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/autokd)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint from train.py (digits: trained if absent)")
    p.add_argument("--no-kd", action="store_true", help="search θ alone with plain cross-entropy (vanilla NAGO)")
    pool.add_flags(p)
    p.add_argument("--out", default=None, help="output folder (default runs/search-<dataset>[-nokd]); an existing "
                                               "one is resumed")
    p.add_argument("--seed", type=cli.seed, default=0, help="seeds BOHB and every architecture sample")
    p.add_argument("--repeats", type=cli.positive_int, default=1,
                   help="run this many searches one after another, seeds --seed, --seed + 1, ..., into "
                        "OUT/repeat-0, OUT/repeat-1, ... (the paper pools 5 per arm in Figs. 2 and 4, 8 in "
                        "Fig. 3); OUT/best.json is then the best of them (default 1: one search in OUT)")
    p.add_argument("--min-budget", type=cli.budget, default=None,
                   help="smallest budget in epochs (default: preset, 30)")
    p.add_argument("--max-budget", type=cli.budget, default=None,
                   help="largest budget in epochs (default: preset, 120)")
    p.add_argument("--eta", type=bohb.eta, default=2, help="successive halving keeps the best 1/eta (Alg. 1)")
    p.add_argument("--iterations", type=cli.whole(1, bohb.MAX_ITERATIONS), default=None,
                   help="Hyperband iterations (default: preset; 21 train ~300 students, as in the paper)")
    p.add_argument("--max-params", type=cli.max_params, default=None,
                   help="student parameter limit, e.g. 4e6 (default: 4.0 M for 32 px, 6.0 M for 224 px, paper Sec. 4)")
    p.add_argument("--max-nodes", type=cli.whole(4, MAX_NODES), default=None,
                   help=f"most nodes per graph at every level, 4 to {MAX_NODES} (default: preset, else {MAX_NODES}, "
                        f"NAGO's); fewer make smaller, faster students")
    p.add_argument("--study", type=cli.whole(0, MAX_STUDY), default=None,
                   help="after the search, train this many random configurations at every budget, for Fig. 4's "
                        "rank correlations (default: preset, else 0); BOHB does not see them")
    p.add_argument("--val-size", type=cli.images, default=None, help="hold-out images (default: 5,000 for CIFAR)")
    p.add_argument("--search-protocol", default="darts", choices=tuple(SEARCH_PROTOCOLS),
                   help="how the students are trained (SEARCH_PROTOCOLS): darts (default; batch 96, lr 0.025, cosine "
                        "over the budget, clipping at 5) or nago (NAGO's released search: batch 128, lr 0.1, halved "
                        "every 20 epochs, no clipping); both SGD momentum 0.9, weight decay 1e-4")
    train.add_stages_flag(p, "even")
    p.add_argument("--batch-size", type=cli.images, default=None,
                   help="batch size (default: preset, else the protocol's: 96 darts, 128 nago)")
    p.add_argument("--lr", type=cli.positive_float, default=None,
                   help="peak learning rate for batch 96, scaled linearly to --batch-size (default: preset, else "
                        "the protocol's: 0.025 darts, 0.075 nago, which is 0.1 at batch 128)")
    p.add_argument("--lessons", default="auto", choices=("auto", "off"),
                   help="auto: compute the teacher's logits for every augmented view once and look them up; "
                        "off: run the teacher at every step")
    train.add_protocol_flags(p, train.EXECUTION)
    return p


@cli.cli
def main(argv=None):
    run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
