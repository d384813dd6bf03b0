"""Phase 2 of AutoKD: sample k architectures from the best generator G(θ*) and train them long.

Paper Alg. 1 line 13 and Sec. 4: "we sample 8 architectures from the best found generator, train
them for 600 epochs (with KD, using the optimal temperature and loss weight found during the search),
and report the average performance (top-1 test accuracy)". Training follows DARTS's protocol with
cutout (train.py), on the whole training set, scored on the test set.

    python retrain.py --theta runs/search-cifar10/best.json --gpus 8          # 8 students x 600 epochs
    python retrain.py --theta runs/search-cifar10/best.json --gpus 8 --no-kd  # same students, no KD
    python retrain.py --theta runs/search-digits/best.json                    # quick start, minutes

Prints and writes (to --out) a table: per architecture its seed, test accuracy, parameters, MACs and
activation memory per sample, then mean ± std (sample standard deviation over the k students),
beside the teacher's own figures. Each student is checkpointed every epoch; re-running the same
command resumes: finished students are read from results.jsonl, unfinished ones continue from
their checkpoints.
"""

import argparse
import concurrent.futures as cf
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

import generator
import train
from search import WORKER, DevicePool, add_worker_flags, devices, write_json

# Retraining settings per data set: the paper's k = 8 students x 600 epochs, and a quick start that
# fits the offline demo into minutes on a 2-core CPU.
RETRAIN_PRESETS = {"digits": dict(k=4, epochs=15)}
PAPER = dict(k=8, epochs=train.EPOCHS)
# Settings a resumed retraining must share with the folder it continues.
RESUME_KEYS = ("dataset", "data_dir", "config", "no_kd", "teacher", "k", "epochs", "seed", "max_params")


def train_student(index, seed):
    """One student of G(θ*), trained to completion in a worker (search.init_worker loaded the data
    set's final split and the teacher): test accuracy and the model's profile."""
    s, data = WORKER["settings"], WORKER["data"]
    config = s["config"]
    theta = {k: config[k] for k in generator.SPACE}
    tau, alpha = (train.TAU, 0.0) if s["no_kd"] else (config["tau"], config["alpha"])
    arch = generator.sample(theta, seed, data.image_size, data.num_classes, s["max_params"])
    torch.manual_seed(seed)
    model = generator.build(arch)
    ckpt = Path(s["out"]) / f"student-{seed}.pt"
    result = train.fit(model, data, s["epochs"], WORKER["teacher"] if alpha > 0 else None, tau, alpha,
                       WORKER["device"], seed, save=ckpt, resume=True, eval_every=s["eval_every"],
                       config={"arch": "nago", "arch_options": {"arch": arch}},
                       log=lambda line: print(f"student {index} (seed {seed}): {line}", flush=True))
    if result["failed"]:
        raise RuntimeError(result["error"])
    return {"index": index, "seed": seed, "accuracy": result["accuracy"], "wall_s": result["wall_s"],
            "epochs": result["epochs"], "checkpoint": str(ckpt),
            **generator.profile(model, data.image_size, WORKER["device"])}


def score_teacher():
    """The teacher's test accuracy and profile, for the table's reference row."""
    data, teacher, device = WORKER["data"], WORKER["teacher"], torch.device(WORKER["device"])
    _, dtype = train.resolve_amp("auto", device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    accuracy, _ = train.evaluate(teacher, data, data.test, 4 * train.BATCH_SIZE, autocast, torch.contiguous_format)
    return {"accuracy": accuracy, **generator.profile(teacher, data.image_size, WORKER["device"])}


def run_all(pool, jobs, n_in_flight, on_done):
    """Run (function, args) jobs on the pool with n_in_flight at a time; on_done(job, result, error)."""
    pending, running = list(jobs), {}
    while pending or running:
        while pending and len(running) < n_in_flight:
            fn, args = pending.pop(0)
            running[pool.submit(fn, *args)] = (fn, args)
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for future in done:
            job = running.pop(future)
            on_done(job, *((future.result(), None) if future.exception() is None else (None, future.exception())))


def table(rows, teacher):
    """The retrain table (Table 1 / Fig. 6 numbers) as text."""
    lines = [f"{'student':>8} {'seed':>6} {'test acc %':>10} {'params M':>9} {'MACs M':>9} {'MiB/sample':>10}"]
    for r in rows:
        lines.append(f"{r['index']:>8} {r['seed']:>6} {100 * r['accuracy']:>10.2f} {r['params'] / 1e6:>9.3f} "
                     f"{r['macs'] / 1e6:>9.1f} {r['memory_mb']:>10.3f}")
    acc = 100 * np.array([r["accuracy"] for r in rows])
    std = acc.std(ddof=1) if len(acc) > 1 else 0.0
    lines.append(f"{'mean':>8} {'':>6} {acc.mean():>7.2f} ± {std:.2f} "
                 f"{np.mean([r['params'] for r in rows]) / 1e6:>7.3f} "
                 f"{np.mean([r['macs'] for r in rows]) / 1e6:>9.1f} {np.mean([r['memory_mb'] for r in rows]):>10.3f}")
    if teacher is not None:
        lines.append(f"{'teacher':>8} {'':>6} {100 * teacher['accuracy']:>10.2f} {teacher['params'] / 1e6:>9.3f} "
                     f"{teacher['macs'] / 1e6:>9.1f} {teacher['memory_mb']:>10.3f}")
    return "\n".join(lines), {"mean": acc.mean(), "std": std, "k": len(acc)}


def read_best(path):
    """best.json from search.py, checked: one clear sentence when it is not one."""
    try:
        best = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read --theta {path}: {e.strerror}; give the best.json that search.py wrote.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"--theta {path} is not valid JSON ({e.msg} at line {e.lineno}); "
                         "give the best.json that search.py wrote.") from None
    if not isinstance(best, dict) or not isinstance(best.get("config"), dict) or "dataset" not in best:
        raise ValueError(f"--theta {path} is not a best.json from search.py (it needs 'config' and 'dataset').")
    generator.check_theta({k: v for k, v in best["config"].items() if k not in ("tau", "alpha")})
    return best


def run(args):
    best = read_best(args.theta)
    dataset = best["dataset"]
    preset = {**PAPER, **RETRAIN_PRESETS.get(dataset, {})}
    no_kd = args.no_kd or best.get("no_kd", False)
    teacher = args.teacher or best.get("teacher")
    if not no_kd and (teacher is None or not Path(teacher).is_file()):
        raise ValueError(f"teacher checkpoint {teacher} not found; give --teacher CKPT (or --no-kd).")
    search = best.get("settings", {})  # the search's data folder and parameter limit
    settings = {"dataset": dataset, "data_dir": args.data_dir or search.get("data_dir"), "split": "final",
                "val_size": None, "config": best["config"], "no_kd": no_kd, "teacher": None if no_kd else teacher,
                "k": args.k or preset["k"], "epochs": args.epochs or preset["epochs"], "seed": args.seed,
                "max_params": search.get("max_params"), "eval_every": args.eval_every}
    out = Path(args.out or Path(args.theta).parent.parent /
               f"retrain-{dataset}{'-nokd' if no_kd else ''}")
    out.mkdir(parents=True, exist_ok=True)
    settings["out"] = str(out)
    saved = out / "retrain.json"
    if saved.is_file():
        old = json.loads(saved.read_text())["settings"]
        for key in RESUME_KEYS:
            if old.get(key) != settings.get(key):
                raise ValueError(f"{out} holds a retraining with {key} = {old.get(key)!r}, not {settings.get(key)!r}: "
                                 "re-run with the same flags to resume it, or give another --out.")
    write_json(saved, {"settings": settings, "best": str(args.theta), "versions": train.versions()})

    log = out / "results.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    finished = {r["seed"] for r in rows}
    seeds = [args.seed + i for i in range(settings["k"])]  # k distinct architecture seeds
    jobs = [(train_student, (i, seed)) for i, seed in enumerate(seeds) if seed not in finished]
    teacher_row = json.loads((out / "teacher.json").read_text()) if (out / "teacher.json").is_file() else None
    if teacher_row is None and not no_kd:
        jobs.append((score_teacher, ()))
    print(f"retraining {sum(fn is train_student for fn, _ in jobs)} of {settings['k']} students of {json.dumps(best['config'])} for "
          f"{settings['epochs']} epochs {'without' if no_kd else 'with'} KD -> {out}")
    failures = []

    def on_done(job, result, error):
        nonlocal teacher_row
        if error is not None:
            failures.append(f"{job[0].__name__}{job[1]}: {error}")
            print(f"failed: {failures[-1]}", flush=True)
        elif job[0] is score_teacher:
            teacher_row = result
            write_json(out / "teacher.json", result)
        else:
            rows.append(result)
            with open(log, "a") as f:
                f.write(json.dumps(result) + "\n")
            print(f"student {result['index']} (seed {result['seed']}): test accuracy "
                  f"{100 * result['accuracy']:.2f} %", flush=True)

    workers = devices(args.gpus, args.workers)
    pool = DevicePool(workers, settings)
    try:
        run_all(pool, jobs, len(workers), on_done)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C must not wait for a running training
    if not rows:
        raise ValueError(f"no student finished: {'; '.join(failures)}")
    rows.sort(key=lambda r: r["index"])
    text, stats = table(rows, teacher_row)
    print(text)
    (out / "table.txt").write_text(text + "\n")
    write_json(out / "summary.json", {**stats, "students": rows, "teacher": teacher_row, "config": best["config"],
                                      "dataset": dataset, "no_kd": no_kd, "epochs": settings["epochs"],
                                      "settings": settings, "versions": train.versions()})
    if failures:
        raise ValueError(f"{len(failures)} job(s) failed; re-run the same command to retry them.")
    return out


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--theta", required=True, help="best.json written by search.py")
    p.add_argument("--k", type=int, default=None, help="architectures to sample from G(θ*) (default 8; digits 4)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 600; digits 15)")
    p.add_argument("--no-kd", action="store_true", help="train the same architectures with cross-entropy only")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (default: the one of the search)")
    p.add_argument("--data-dir", default=None, help="data folder (default: the search's)")
    add_worker_flags(p)
    p.add_argument("--seed", type=int, default=0, help="student i uses architecture seed --seed + i")
    p.add_argument("--eval-every", type=int, default=10, help="score on the test set every N epochs and at the end")
    p.add_argument("--out", default=None, help="output folder (default: retrain-<dataset>[-nokd] beside the search)")
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
