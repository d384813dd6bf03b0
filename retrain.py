"""Phase 2 of AutoKD (Alg. 1 line 13, Sec. 4, Table 1): sample k = 8 architectures from the best
generator G(θ*) and train each for 600 epochs with KD (τ*, α*), 5 runs each (train.f_kd under DARTS's
protocol with cutout, on the whole training set), and report their test accuracy.

    python retrain.py --theta runs/search-cifar10/best.json --gpus 8          # 8 students x 5 runs x 600 epochs
    python retrain.py --theta runs/search-cifar10/best.json --gpus 8 --no-kd  # same students, no KD
    python retrain.py --theta runs/search-digits/best.json                    # quick start, minutes
    python retrain.py --theta runs/search-cifar10/best.json --auxiliary --drop-path-prob 0.2  # + NAGO's head, drop path

Prints and writes (table.txt, summary.json) per architecture its seed, accuracy mean ± std over its
runs, parameters, MACs and memory per sample; the mean over architectures with the spreads across
architectures and across runs; the teacher's figures. Re-running resumes (results.jsonl, checkpoints)
and trains again the students that failed; a larger --k or --runs adds students.
"""
import concurrent.futures as cf
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import generator
import teachers
import train
from data import DATASETS, load_data
from kd_loss import SPACE as KD_SPACE
from machinery import cli, files, pool, schema
from machinery.executor import with_worker
from teachers import lessons

# Retraining per data set: the paper's k = 8 architectures x 5 runs x 600 epochs, and a quick start
# that fits the offline demo into minutes on a 2-core CPU.
PAPER = dict(k=8, runs=5, epochs=train.Protocol.epochs)
RETRAIN_PRESETS = {"digits": dict(k=4, runs=1, epochs=15)}
MAX_K, MAX_RUNS = 1_000, 100  # --k architectures, --runs each: the paper's 8 and 5, with room to spare
RETRAIN_PROTOCOL = train.Protocol()  # DARTS's, with cutout for CIFAR (data.PRESETS)
# Settings a resumed retraining must share with the folder it continues (k and runs may grow).
RESUME_KEYS = ("dataset", "data_dir", "config", "no_kd", "teacher", "epochs", "seed", "max_params", "stages",
               "auxiliary", "drop_path_prob", "protocol")
# What a retrain.json written before a setting existed means by its absence.
BEFORE = {"stages": "even", **train.STUDENT_BUILD}


def train_student(worker, index, seed, repeat):
    """One run of one student of G(θ*), trained to completion in a worker: f_KD(θ*, epochs). Run 0
    trains from the initial weights and data order of `seed`, run r > 0 from others (Table 1
    averages 5 runs per architecture)."""
    s = worker.settings
    checkpoint = Path(s.out) / f"student-{seed}-run{repeat}.pt"
    options = worker.options(seed=seed if repeat == 0 else generator.derived_seed(seed, repeat), save=str(checkpoint),
                             resume=True, log=lambda line: print(f"student {index} run {repeat} (seed {seed}): {line}",
                                                                 flush=True))
    student = {"max_params": s.max_params, "stages": s.stages, "auxiliary": s.auxiliary,
               "drop_path_prob": s.drop_path_prob}
    result, _, model = train.f_kd(s.config, s.epochs, seed, worker.data, worker.source(s.protocol), s.protocol,
                                  options, student)
    if result["failed"]:
        raise RuntimeError(result["error"])
    return {"index": index, "seed": seed, "run": repeat, "accuracy": result["accuracy"], "wall_s": result["wall_s"],
            "epochs": result["epochs"], "checkpoint": str(checkpoint),
            **generator.profile(model, worker.data.image_size, worker.device)}


def table(rows, teacher):
    """The retrain table (Table 1 / Fig. 6 numbers) as text, and its statistics: the mean over
    architectures of each one's mean accuracy; the spread across architectures, the sample std of
    those means (None for one architecture); the spread across runs of one architecture, the pooled
    sample std √(Σ (n_i − 1)·s_i² / Σ (n_i − 1)), which weighs an architecture by its runs (None
    when none has two)."""
    by_arch = {}
    for r in rows:
        by_arch.setdefault(r["index"], []).append(r)
    lines = [f"{'student':>8} {'seed':>6} {'runs':>4} {'test acc %':>15} {'params M':>9} {'MACs M':>9} {'MiB/sample':>10}"]
    means, squares, dof = [], 0.0, 0
    for index, runs in sorted(by_arch.items()):
        acc = 100 * np.array([r["accuracy"] for r in runs])
        means.append(acc.mean())
        squares, dof = squares + ((acc - acc.mean()) ** 2).sum(), dof + len(acc) - 1
        spread = f"± {acc.std(ddof=1):<4.2f}" if len(acc) > 1 else ""
        r = runs[0]
        lines.append(f"{index:>8} {r['seed']:>6} {len(acc):>4} {acc.mean():>8.2f} {spread:<6} "
                     f"{r['params'] / 1e6:>9.3f} {r['macs'] / 1e6:>9.1f} {r['memory_mb']:>10.3f}")
    means = np.array(means)
    stats = {"mean": float(means.mean()), "std": float(means.std(ddof=1)) if len(means) > 1 else None,
             "run_std": float(np.sqrt(squares / dof)) if dof else None, "k": len(means), "runs": len(rows)}
    first = [runs[0] for runs in by_arch.values()]
    spread = f"± {stats['std']:<4.2f}" if stats["std"] is not None else ""
    lines.append(f"{'mean':>8} {'':>6} {len(rows):>4} {stats['mean']:>8.2f} {spread:<6} "
                 f"{np.mean([r['params'] for r in first]) / 1e6:>9.3f} {np.mean([r['macs'] for r in first]) / 1e6:>9.1f} "
                 f"{np.mean([r['memory_mb'] for r in first]):>10.3f}")
    lines.append("spread across architectures " + (f"± {stats['std']:.2f}" if stats["std"] is not None else
                                                    "not measured (1 architecture)")
                 + "; across runs of one architecture "
                 + (f"± {stats['run_std']:.2f}" if stats["run_std"] is not None else "not measured (1 run each)"))
    if teacher is not None:
        lines.append(f"{'teacher':>8} {'':>6} {'':>4} {100 * teacher['accuracy']:>8.2f}        "
                     f"{teacher['params'] / 1e6:>9.3f} {teacher['macs'] / 1e6:>9.1f} {teacher['memory_mb']:>10.3f}")
    return "\n".join(lines), stats


def read_best(path):
    """best.json from search.py, checked field by field: one clear sentence when it is not one."""
    best = schema.read_json(path, "best.json", "--theta", dataset=schema.text(*DATASETS))
    train.check_config(best["config"], what=f"{files.json_where(path, '--theta')}: θ")
    return best


@dataclass(frozen=True)
class Settings:
    """A retraining's settings, from best.json and the flags, checked (resolve); retrain.json keeps
    them (to_json) and a resumed retraining must share RESUME_KEYS with them. The workers read the
    data set, the teacher and the lessons from here (train.Worker)."""
    dataset: str
    data_dir: str
    cache_dir: str
    config: dict                # θ*, τ*, α*
    no_kd: bool
    teacher: str
    k: int
    runs: int
    epochs: int
    seed: int
    max_params: int
    stages: str                 # the generator's stage rule, the search's unless --stages
    auxiliary: bool             # the students' auxiliary head (generator.build)
    drop_path_prob: float       # their drop path, ramped from 0 to this
    out: str
    protocol: train.Protocol
    workers_per_gpu: int
    slots: list
    ray: str
    lessons: str = None
    lessons_live: str = None
    lessons_key: dict = None
    split: str = "final"
    val_size: int = None

    def to_json(self):
        """retrain.json's "settings" (train.settings_json)."""
        return train.settings_json(self)


def resolve(args):
    """(Settings, best.json) from best.json and the flags, every one checked; writes nothing."""
    best = read_best(args.theta)
    dataset = best["dataset"]
    preset = {**PAPER, **RETRAIN_PRESETS.get(dataset, {})}
    no_kd = without_kd(args, best)
    teacher = files.absolute(args.teacher or best.get("teacher"))
    if not no_kd and (teacher is None or not Path(teacher).is_file()):
        raise cli.UserError(f"teacher checkpoint {teacher} not found; give --teacher CKPT (or --no-kd).")
    k = args.k or preset["k"]
    if args.seed + k - 1 > cli.MAX_SEED:
        raise cli.UserError(f"--seed {args.seed} with --k {k} makes architecture seeds up to {args.seed + k - 1:,}, "
                            f"beyond {cli.MAX_SEED:,}; give --seed {cli.MAX_SEED - k + 1:,} or less.")
    search = best.get("settings", {})  # the search's data folder, parameter limit and stage rule
    out = Path(args.out or Path(args.theta).parent.parent / f"retrain-{dataset}{'-nokd' if no_kd else ''}")
    return Settings(
        dataset=dataset, data_dir=files.absolute(args.data_dir) or search.get("data_dir"),
        cache_dir=search.get("cache_dir"), config=best["config"], no_kd=no_kd, teacher=None if no_kd else teacher,
        k=k, runs=args.runs or preset["runs"], epochs=args.epochs or preset["epochs"],
        seed=args.seed, max_params=search.get("max_params"), out=files.absolute(out),
        stages=args.stages or search.get("stages", "even"), auxiliary=args.auxiliary, drop_path_prob=args.drop_path_prob,
        protocol=RETRAIN_PROTOCOL.replace(eval_every=args.eval_every, capture=args.capture,
                                          deterministic=args.deterministic),
        workers_per_gpu=args.workers_per_gpu, ray=args.ray,
        slots=pool.slots(args.gpus, args.workers, args.workers_per_gpu, args.ray)), best


def without_kd(args, best):
    """Whether the students train without KD: with --no-kd, or as the search did (a --no-kd
    best.json). A flag is never ignored: --teacher with --no-kd, or with a θ that has no τ and α
    to distil with, is refused."""
    if args.no_kd and args.teacher is not None:
        raise cli.UserError("--no-kd trains the students with cross-entropy alone, so --teacher would go unused; "
                            "drop one of them.")
    if args.no_kd or set(KD_SPACE) <= set(best["config"]):
        return args.no_kd
    if args.teacher is not None or not best.get("no_kd", False):
        origin = "comes from a --no-kd search" if best.get("no_kd", False) else "has no τ and α"
        raise cli.UserError(f"--theta {args.theta} {origin}: its θ has no KD temperature and weight (τ, α) to "
                            f"distil with; retrain without KD (drop --teacher, or pass --no-kd), or give the best.json "
                            f"of a KD search.")
    return True


def run(args):
    """Alg. 1 line 13: k students of G(θ*), each trained `runs` times for the final epochs with KD
    (τ*, α*), in the workers; then Table 1's row. Re-run, it resumes from results.jsonl and checkpoints
    (a student that failed is not logged, so it trains again). One retraining per folder at a time."""
    settings, best = resolve(args)
    with files.folder_lock(settings.out):
        return run_in_folder(settings, best, Path(settings.out), args)


def run_in_folder(settings, best, out, args):
    """run() in its folder, which it holds: best.json, the data and the teacher checked here, in
    this process, before the first file is written (as search.py does)."""
    check_folder(settings, out)
    data = load_data(settings.dataset, settings.data_dir, "final", cache_dir=settings.cache_dir)
    settings = ready_teacher(settings, data, out, args.lessons)
    if not (out / "retrain.json").is_file():
        files.write_json(out / "retrain.json", {"settings": settings.to_json(), "best": files.absolute(args.theta),
                                                "versions": files.versions()})
    rows, whole = schema.read_jsonl(out / "results.jsonl", "retrain result")
    done = {(r["seed"], r["run"]) for r in rows}
    seeds = [settings.seed + i for i in range(settings.k)]  # k distinct architecture seeds
    jobs = [(i, seed, repeat) for i, seed in enumerate(seeds) for repeat in range(settings.runs)
            if (seed, repeat) not in done]
    print(f"retraining {len(jobs)} of {settings.k} x {settings.runs} students of {json.dumps(best['config'])} "
          f"for {settings.epochs} epochs {'without' if settings.no_kd else 'with'} KD -> {out}", flush=True)
    with train.workers(settings, out) as workers:
        failures = train_all(workers, jobs, rows, out / "results.jsonl", whole)
    rows = sorted((r for r in rows if r["seed"] in seeds and r["run"] < settings.runs), key=lambda r: (r["index"], r["run"]))
    return summarise(settings, best, rows, failures, out)


def check_folder(settings, out):
    """A folder that holds a retraining is resumed only with the settings it was made with, and only
    when its files are whole: all is checked before anything is written."""
    saved = out / "retrain.json"
    if saved.is_file():
        old = {**BEFORE, **schema.read_json(saved, "retrain.json")["settings"]}
        old["protocol"] = train.as_now(old.get("protocol", {}))
        files.check_resume(old, settings.to_json(), RESUME_KEYS, out)
    schema.read_jsonl(out / "results.jsonl", "retrain result")
    if (out / "teacher.json").is_file():
        schema.read_json(out / "teacher.json", "teacher.json")
    files.check_writable(saved, "--out")


def ready_teacher(settings, data, out, lessons_flag):
    """The settings with the teacher checked (loaded once here: a wrong teacher is one error now, not
    one per worker) and where its lessons go (out/lessons.pt), or why they are computed live."""
    if settings.no_kd:
        return settings
    teachers.load(settings.teacher, settings.dataset, data.num_classes)
    cutout = RETRAIN_PROTOCOL.cutout if RETRAIN_PROTOCOL.cutout is not None else data.preset.cutout
    reason = lessons.why_live(data, cutout) if lessons_flag == "auto" else "--lessons off"
    if reason is not None:
        return dataclasses.replace(settings, lessons_live=reason)
    return dataclasses.replace(settings, lessons=str(out / "lessons.pt"), lessons_key={
        "teacher": files.file_digest(settings.teacher), "dataset": data.name, "split": "final"})


def train_all(workers, jobs, rows, log, whole):
    """Every job trained, each result appended to `log` and to `rows`; returns the failures."""
    if not jobs:
        return []
    failures = []
    with files.open_log(log, whole) as f:
        futures = {workers.submit(with_worker(train_student), *job): job for job in jobs}
        for future in cf.as_completed(futures):
            if future.exception() is not None:
                failures.append(f"student {futures[future]}: {cli.describe(future.exception())}")
                print(f"failed: {failures[-1]}", flush=True)
                continue
            rows.append(future.result())
            files.append_jsonl(f, rows[-1])
            print(f"student {rows[-1]['index']} run {rows[-1]['run']} (seed {rows[-1]['seed']}): "
                  f"test accuracy {100 * rows[-1]['accuracy']:.2f} %", flush=True)
    return failures


def summarise(settings, best, rows, failures, out):
    """Table 1's row printed and written (table.txt, summary.json); the failures said last."""
    if not rows:
        raise cli.UserError(f"no student finished: {'; '.join(failures)}")
    teacher = schema.read_json(out / "teacher.json", "teacher.json") if (out / "teacher.json").is_file() else None
    text, stats = table(rows, teacher)
    print(text)
    (out / "table.txt").write_text(text + "\n")
    files.write_json(out / "summary.json", {**stats, "students": rows, "teacher": teacher, "config": best["config"],
                                            "dataset": settings.dataset, "no_kd": settings.no_kd,
                                            "epochs": settings.epochs, "settings": settings.to_json(),
                                            "versions": files.versions()})
    if failures:
        raise cli.UserError(f"{len(failures)} job(s) failed; re-run the same command to retry them.")
    return out


def parser():
    p = cli.Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--theta", required=True,
                   help="best.json written by search.py (after --repeats N: OUT/best.json, the best of the N searches)")
    p.add_argument("--k", type=cli.whole(1, MAX_K), default=None,
                   help="architectures to sample from G(θ*) (default 8; digits 4)")
    p.add_argument("--runs", type=cli.whole(1, MAX_RUNS), default=None,
                   help="training runs per architecture (default 5, Table 1; digits 1)")
    p.add_argument("--epochs", type=cli.epochs, default=None, help="training epochs (default 600; digits 15)")
    p.add_argument("--no-kd", action="store_true", help="train the same architectures with cross-entropy only")
    train.add_stages_flag(p, "the search's (best.json), else even")
    p.add_argument("--auxiliary", action="store_true",
                   help="train the students with NAGO's auxiliary head (its cross-entropy weighted 0.4, "
                        "train.Protocol's aux_weight), as NAGO's code can attach it; off by default, as in the search")
    p.add_argument("--drop-path-prob", type=cli.probability_below_one, default=0.0,
                   help="the students' drop path, ramped from 0 to this over the epochs, e.g. 0.2 as DARTS "
                        "(default 0: off, as in the search)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the one of the search)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the search's)")
    pool.add_flags(p)
    p.add_argument("--seed", type=cli.seed, default=0, help="student i uses architecture seed --seed + i")
    p.add_argument("--eval-every", type=cli.epochs, default=10,
                   help="score on the test set every N epochs and at the end")
    p.add_argument("--out", default=None, help="output folder (default: retrain-<dataset>[-nokd] beside the search)")
    p.add_argument("--lessons", default="auto", choices=("auto", "off"),
                   help="auto: the teacher's logits for every view computed once where the augmentation allows")
    train.add_protocol_flags(p, train.EXECUTION)
    return p


@cli.cli
def main(argv=None):
    run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
